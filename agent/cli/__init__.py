"""The ``kanshi`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.paths import default_config

#: Exit code for a config that cannot be used (as argparse uses for bad usage).
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kanshi", description="Monitoring and alerting agent with leveled recovery.")
    parser.add_argument("--version", action="version", version=f"kanshi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent until Ctrl-C / SIGTERM")
    _config_option(run)
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    check = sub.add_parser("check", help="run checks once, print a table, exit with the "
                                         "Nagios code of the worst result")
    _config_option(check)
    check.add_argument("names", nargs="*", metavar="NAME", help="checks to run")
    check.add_argument("--all", action="store_true", help="run every enabled check")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    config = sub.add_parser("config", help="work with config files")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_check = config_sub.add_parser("check", help="validate a config file, list every "
                                                       "error")
    config_check.add_argument("file", nargs="?", help="config file (default: the agent's)")

    status = sub.add_parser("status", help="state of the agent, its checks and notices")
    _config_option(status)

    incidents = sub.add_parser("incidents", help="list, show and acknowledge incidents")
    _config_option(incidents)
    inc_sub = incidents.add_subparsers(dest="incidents_command", required=True,
                                       metavar="ACTION")
    inc_list = inc_sub.add_parser("list", help="open incidents (all with --all)")
    _config_option(inc_list, on_action=True)
    inc_list.add_argument("--all", action="store_true", help="include resolved incidents")
    inc_list.add_argument("--limit", type=int, default=50)
    inc_list.add_argument("--json", action="store_true")
    inc_show = inc_sub.add_parser("show", help="one incident with its timeline and notices")
    _config_option(inc_show, on_action=True)
    inc_show.add_argument("id", type=int)
    inc_show.add_argument("--json", action="store_true")
    inc_ack = inc_sub.add_parser("ack", help="acknowledge an incident")
    _config_option(inc_ack, on_action=True)
    inc_ack.add_argument("id", type=int)
    inc_ack.add_argument("--by", help="who acknowledges (default: your login name)")
    inc_ack.add_argument("--comment", default="", help="a note for the timeline")
    inc_sev = inc_sub.add_parser("severity", help="raise or lower an incident's severity")
    _config_option(inc_sev, on_action=True)
    inc_sev.add_argument("id", type=int)
    inc_sev.add_argument("--to", required=True, choices=["1", "A", "B", "C"])
    inc_sev.add_argument("--reason", required=True, help="why (recorded on the timeline)")
    inc_sev.add_argument("--by", help="who decides (default: your login name)")

    maintenance = sub.add_parser("maintenance", help="maintenance windows: add, list, end")
    _config_option(maintenance)
    m_sub = maintenance.add_subparsers(dest="maintenance_command", required=True,
                                       metavar="ACTION")
    m_add = m_sub.add_parser("add", help="add a window (no notices, no automatic runbooks)")
    _config_option(m_add, on_action=True)
    m_add.add_argument("--target", action="append", required=True,
                       help="check name or check/target glob (repeatable; * for all)")
    m_add.add_argument("--from", dest="start", default="now",
                       help="start: ISO date-time (agent time zone if no offset) or 'now'")
    m_add.add_argument("--to", dest="end", help="end: ISO date-time")
    m_add.add_argument("--for", dest="duration", help="or a duration such as 2h")
    m_add.add_argument("--reason", required=True)
    m_add.add_argument("--by", help="who (default: your login name)")
    m_list = m_sub.add_parser("list", help="windows now and ahead (config and added)")
    _config_option(m_list, on_action=True)
    m_list.add_argument("--days", type=int, default=14, help="how far ahead (default 14)")
    m_end = m_sub.add_parser("end", help="end an added window now")
    _config_option(m_end, on_action=True)
    m_end.add_argument("id", type=int)
    m_end.add_argument("--by", help="who (default: your login name)")

    from agent.cli.runbook import add_parser as add_runbook_parser

    add_runbook_parser(sub, _config_option)

    from agent.cli.token import add_parser as add_token_parser

    add_token_parser(sub, _config_option)

    from agent.cli.health import add_parser as add_health_parser

    add_health_parser(sub, _config_option)

    from agent.cli.aws import add_parser as add_aws_parser

    add_aws_parser(sub)

    report = sub.add_parser("report", help="failure, post-incident and monthly reports")
    _config_option(report)
    r_sub = report.add_subparsers(dest="report_command", required=True, metavar="KIND")
    r_inc = r_sub.add_parser("incident", help="the failure report of an incident (or the "
                                             "post-incident report once recovered)")
    _config_option(r_inc, on_action=True)
    r_inc.add_argument("id", type=int)
    r_inc.add_argument("--kind", choices=["failure", "post_incident"], default=None,
                       help="default: post_incident once recovered, failure before")
    r_inc.add_argument("--lang", choices=["ja", "en"], default=None)
    r_inc.add_argument("--format", choices=["md", "html"], default="md")
    r_inc.add_argument("--send", action="store_true",
                       help="deliver it to the customer channels (stops its clock when "
                            "delivered)")
    r_month = r_sub.add_parser("month", help="the monthly service report")
    _config_option(r_month, on_action=True)
    r_month.add_argument("month", help="YYYY-MM")
    r_month.add_argument("--lang", choices=["ja", "en"], default=None)
    r_month.add_argument("--format", choices=["md", "html"], default="md")
    return parser


def _config_option(parser: argparse.ArgumentParser, on_action: bool = False) -> None:
    # On an action (`incidents show -c F`) it must not reset a value given before it.
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS if on_action else None,
                        help=f"config file (default: $KANSHI_CONFIG or {default_config()})")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kanshi`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:  # `kanshi status | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from agent.cli.run import run
        return run(args)
    if args.command == "check":
        from agent.cli.check import check
        return check(args)
    if args.command == "config":
        from agent.cli.config_check import config_check
        return config_check(args)
    if args.command == "status":
        from agent.cli.status import status
        return status(args)
    if args.command == "maintenance":
        from agent.cli.maintenance import maintenance
        return maintenance(args)
    if args.command == "runbook":
        from agent.cli.runbook import runbook
        return runbook(args)
    if args.command == "report":
        from agent.cli.report import report
        return report(args)
    if args.command == "health":
        from agent.cli.health import health
        return health(args)
    if args.command == "token":
        from agent.cli.token import token
        return token(args)
    if args.command == "aws":
        from agent.cli.aws import aws
        return aws(args)
    from agent.cli.incidents import incidents
    return incidents(args)

