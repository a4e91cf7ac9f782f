"""Check families. ``REGISTRY`` maps a config ``type`` to ``module:Class``.

Modules are imported on first use, so a family that is not configured costs
nothing at start-up (a CloudWatch check must never import boto3 unless used).
"""

REGISTRY: dict[str, str] = {
    "ping": "checks.ping:PingCheck",
    "disk": "checks.disk:DiskCheck",
    "inode": "checks.disk:InodeCheck",
    "plugin": "checks.plugin:PluginCheck",
    "metric_plugin": "checks.metricplugin:MetricPluginCheck",
    "postgres": "checks.postgres:PostgresCheck",
    "mysql": "checks.mysql:MysqlCheck",
    "process": "checks.process:ProcessCheck",
    "service": "checks.service:ServiceCheck",
    "raid": "checks.raid:RaidCheck",
    "filecount": "checks.filecount:FileCountCheck",
    "cpu": "checks.resources:CpuCheck",
    "memory": "checks.resources:MemoryCheck",
    "load": "checks.resources:LoadCheck",
    "network": "checks.resources:NetworkCheck",
    "tcp": "checks.tcp:TcpCheck",
    "http": "checks.http:HttpCheck",
    "ftp": "checks.ftp:FtpCheck",
    "smtp": "checks.smtp:SmtpCheck",
    "pop3": "checks.mailbox:Pop3Check",
    "imap": "checks.mailbox:ImapCheck",
    "logfile": "checks.logfile:LogfileCheck",
    "syslog": "checks.syslog:SyslogCheck",
    "cloudwatch": "checks.cloudwatch:CloudWatchCheck",
    "ec2_status": "checks.ec2_status:Ec2StatusCheck",
    "ec2_events": "checks.ec2_status:Ec2EventsCheck",
    "aws_health": "checks.aws_health:AwsHealthCheck",
}
