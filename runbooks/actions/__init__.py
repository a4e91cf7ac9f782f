"""Runbook actions. ``REGISTRY`` maps an action name to ``module:Class``; modules
are imported on first use (AWS actions import boto3 only when a runbook uses one)."""

REGISTRY: dict[str, str] = {
    "command.run": "runbooks.actions.host:RunCommand",
    "service.start": "runbooks.actions.host:ServiceStart",
    "service.stop": "runbooks.actions.host:ServiceStop",
    "service.restart": "runbooks.actions.host:ServiceRestart",
    "service.status": "runbooks.actions.host:ServiceStatus",
    "host.reboot": "runbooks.actions.host:Reboot",
    "host.schedule_fsck": "runbooks.actions.host:ScheduleFsck",
    "host.largest_directories": "runbooks.actions.host:LargestDirectories",
    "wait.port": "runbooks.actions.wait:WaitPort",
    "wait.ping": "runbooks.actions.wait:WaitPing",
    "wait.http": "runbooks.actions.wait:WaitHttp",
    "notify.contact": "runbooks.actions.people:NotifyContact",
    "ask.contact": "runbooks.actions.people:AskContact",
    "escalate.people": "runbooks.actions.people:Escalate",
}
