"""``kanshi aws cost | setup [--dry-run]``: what AWS monitoring costs, and the initial setup.

Both read the AWS accounts from the configured AWS checks (``cloudwatch``,
``ec2_status``, ``ec2_events``, ``aws_health``) and discover their resources
as the checks do (free describe calls, plus ListMetrics where an item's
dimensions come from CloudWatch).

- ``cost``: per cloudwatch check and region, the resources, the metric queries
  of one run and what a month of runs at the check's interval costs at list
  prices; the other AWS checks use free APIs; the alarms ``setup`` would create.
- ``setup``: per cloudwatch check and region, the SNS topic for alarm
  notification, its subscriptions and the catalogue's alarms (NTT 別紙4).
  ``--dry-run`` prints the plan and changes nothing; a second run changes
  nothing and says so.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from agent.cli.common import echo, fail, load_or_exit
from agent.cli.table import table
from agent.config import CheckSpec, Config
from agent.paths import default_config

#: Check types whose config has ``accounts``.
AWS_TYPES = ("cloudwatch", "ec2_status", "ec2_events", "aws_health")


def add_parser(subparsers: Any) -> None:
    """Add ``aws`` with its actions ``cost`` and ``setup [--dry-run]``."""
    aws_parser = subparsers.add_parser("aws", help="AWS monitoring: monthly cost estimate, "
                                                   "initial alarm setup")
    _config_option(aws_parser)
    actions = aws_parser.add_subparsers(dest="aws_command", required=True, metavar="ACTION")
    cost = actions.add_parser("cost", help="API calls and metrics a month, and what they "
                                           "cost at list prices")
    _config_option(cost, on_action=True)
    setup = actions.add_parser("setup", help="create the SNS topic and CloudWatch alarms "
                                             "for the discovered resources (idempotent)")
    _config_option(setup, on_action=True)
    setup.add_argument("--dry-run", action="store_true",
                       help="print what would be created or changed, change nothing")


def _config_option(parser: argparse.ArgumentParser, on_action: bool = False) -> None:
    # As agent.cli's own: on an action it must not reset a value given before it.
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS if on_action else None,
                        help=f"config file (default: $KANSHI_CONFIG or {default_config()})")


def aws(args: argparse.Namespace) -> int:
    """Run ``kanshi aws <action>``; the exit code is 0, or 1 when AWS could not be read."""
    config = load_or_exit(args.config)
    specs = [s for s in config.checks if s.type_name in AWS_TYPES]
    if not specs:
        fail("no AWS check in the config (types: " + ", ".join(AWS_TYPES) + ")", 1)
    if args.aws_command == "cost":
        return _cost(config, specs)
    return _setup(config, specs, dry_run=args.dry_run)


# -- cost -----------------------------------------------------------------------------------


@dataclass
class _Row:
    check: str
    account: str
    region: str
    resources: int
    queries: int
    calls: int
    interval: float
    metrics_month: float
    requests_month: float
    usd: float


def _cost(config: Config, specs: list[CheckSpec]) -> int:
    from checks.aws.cost import ALARM_PER_MONTH

    rows: list[_Row] = []
    alarms, failed = 0, False
    for spec in specs:
        if spec.type_name != "cloudwatch":
            rows += [_free_row(spec, a.name) for a in spec.config.accounts]  # type: ignore[attr-defined]
            continue
        for region, surveyed in _surveys(spec):
            if isinstance(surveyed, str):
                echo(f"{spec.name} {region}: {surveyed}", err=True)
                failed = True
                continue
            row, alarm_count = _cloudwatch_row(spec, region, *surveyed)
            rows.append(row)
            alarms += alarm_count
    echo(table(("CHECK", "ACCOUNT", "REGION", "RESOURCES", "QUERIES/RUN", "CALLS/RUN",
                "INTERVAL", "METRICS/MONTH", "REQUESTS/MONTH", "USD/MONTH"),
               [_cells(r) for r in rows]))
    total = sum(r.usd for r in rows)
    echo(f"\nabout ${total:.2f} a month at US East list prices (GetMetricData $0.01 per "
         "1,000 metrics; other CloudWatch APIs $0.01 per 1,000 requests, the first 1 million "
         "a month free; EC2, tagging, STS and AWS Health calls are free)")
    echo(f"alarms `kanshi aws setup` would keep: {alarms} × ${ALARM_PER_MONTH:.2f} = "
         f"${alarms * ALARM_PER_MONTH:.2f} a month")
    return 1 if failed else 0


def _free_row(spec: CheckSpec, account: str) -> _Row:
    return _Row(spec.name, account, "-", 0, 0, 0, spec.interval, 0, 0, 0.0)


def _cloudwatch_row(spec: CheckSpec, region: str, watches: list[Any],
                    listing_calls: int) -> tuple[_Row, int]:
    from checks.aws.collect import MAX_QUERIES
    from checks.aws.cost import monthly
    from checks.aws.setup import alarmable

    measured = [w for w in watches if w.verdict is None and w.item.source != "lightsail"]
    by_period: dict[int, set[Any]] = {}
    for watch in measured:
        by_period.setdefault(int(watch.item.period), set()).update(watch.queries())
    queries = sum(len(q) for q in by_period.values())
    calls = sum(math.ceil(len(q) / MAX_QUERIES) for q in by_period.values())
    discovery = spec.config.discovery_interval  # type: ignore[attr-defined]
    # ListMetrics runs at each discovery: per run, its share of the month.
    listing_per_run = listing_calls * spec.interval / discovery
    month = monthly(queries, listing_per_run, spec.interval)
    account = spec.config.accounts[0].name  # type: ignore[attr-defined]
    alarms = sum(1 for w in watches if alarmable(w))
    resources = len({(w.resource.component, w.resource.id) for w in watches if w.resource})
    return _Row(spec.name, account, region, resources, queries, calls, spec.interval,
                month.metrics, month.requests, month.usd), alarms


def _cells(row: _Row) -> tuple[object, ...]:
    free = row.region == "-"
    return (row.check, row.account, row.region, row.resources if not free else "-",
            row.queries if not free else "-", row.calls if not free else "-",
            f"{row.interval / 60:g}m", f"{row.metrics_month:,.0f}",
            f"{row.requests_month:,.0f}", "free API" if free else f"${row.usd:.2f}")


def _surveys(spec: CheckSpec) -> list[tuple[str, tuple[list[Any], int] | str]]:
    """(region, (watches, ListMetrics calls) or why it failed) for a cloudwatch check."""
    from checks.aws import catalogue
    from checks.aws.cost import metering
    from checks.aws.plan import plan, survey
    from checks.aws.session import AwsError
    from checks.base import LocalResources
    from checks.cloudwatch import region_visits

    account = spec.config.accounts[0]  # type: ignore[attr-defined]
    shared = LocalResources()
    out: list[tuple[str, tuple[list[Any], int] | str]] = []
    try:
        for region, scope, first in region_visits(spec.config):  # type: ignore[arg-type]
            clients = _clients(shared, account, region, spec.timeout)
            try:
                with metering() as usage:
                    found = survey(clients, region, scope, catalogue.load(), first_region=first)
                out.append((region, (plan(found, scope, catalogue.load()),
                                     usage.calls["cloudwatch:ListMetrics"])))
            except AwsError as exc:
                out.append((region, exc.reason))
    finally:
        shared.close()
    return out


def _clients(shared: Any, account: Any, region: str, timeout: float) -> Any:
    """``clients(service, region)`` sharing ``shared`` (one session per account)."""
    from checks.aws.session import shared_client

    return lambda service, where=region: shared_client(shared, account, service, where,
                                                       timeout)


# -- setup ----------------------------------------------------------------------------------


def _setup(config: Config, specs: list[CheckSpec], *, dry_run: bool) -> int:
    from checks.aws import catalogue
    from checks.aws.plan import plan, survey
    from checks.aws.session import AwsError
    from checks.aws.setup import SETUP_ACTIONS, Report, setup_region
    from checks.base import LocalResources
    from checks.cloudwatch import region_visits

    watched = [s for s in specs if s.type_name == "cloudwatch"]
    if not watched:
        fail("no cloudwatch check in the config: setup makes alarms for its resources", 1)
    report, failed, shared = Report(), False, LocalResources()
    try:
        for spec in watched:
            account = spec.config.accounts[0]  # type: ignore[attr-defined]
            for region, scope, first in region_visits(spec.config):  # type: ignore[arg-type]
                clients = _clients(shared, account, region, spec.timeout)
                try:
                    found = survey(clients, region, scope, catalogue.load(),
                                   first_region=first)
                    setup_region(clients, region,
                                 plan(found, scope, catalogue.load()),
                                 spec.config.setup, dry_run=dry_run,  # type: ignore[attr-defined]
                                 report=report)
                except AwsError as exc:
                    failed = True
                    echo(f"{spec.name} {region}: {exc.reason}", err=True)
                    if exc.kind == "denied":
                        echo("setup needs, beyond the monitoring policy: "
                             + ", ".join(SETUP_ACTIONS), err=True)
    finally:
        shared.close()
    _print_report(report, dry_run)
    return 1 if failed else 0


def _print_report(report: Any, dry_run: bool) -> None:
    for change in report.changes:
        echo(change.line(dry_run))
    kept = (f"{report.unchanged_topics} topic(s), {report.unchanged_subscriptions} "
            f"subscription(s) and {report.unchanged_alarms} alarm(s) already as planned")
    if report.changed == 0:
        echo(f"nothing to change: {kept}")
    elif dry_run:
        echo(f"dry run: {report.changed} change(s) planned, nothing changed; {kept}")
    else:
        echo(f"{report.changed} change(s) made; {kept}")
