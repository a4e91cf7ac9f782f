"""``kanshi maintenance add | list | end``: windows with no notices and no runbooks."""

from __future__ import annotations

import argparse
import zoneinfo
from datetime import UTC, datetime, timedelta

from agent.cli.common import echo, existing_store, fail, load_or_exit, local_time, login_name
from agent.cli.table import table
from agent.config import Config
from agent.policy.maintenance import MaintenanceSchedule
from agent.store import Store
from checks.types import parse_duration


def maintenance(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config, write=args.maintenance_command in ("add", "end"))
    try:
        action = {"add": _add, "list": _list, "end": _end}[args.maintenance_command]
        return action(args, config, store)
    finally:
        store.close()


def _add(args: argparse.Namespace, config: Config, store: Store) -> int:
    now = datetime.now(UTC)
    start = parse_moment(args.start, config, now)
    if start < now:
        echo("note: a window cannot cover the past; it starts now", err=True)
        start = now
    end = _end_of(args, config, start, now)
    who = args.by or login_name()
    targets = tuple(args.target)
    with store.db.tx():
        window = store.maintenance.add(targets, start, end, args.reason, who, now)
        store.audit.write(now, who, "maintenance.add", f"maintenance/{window}",
                          {"targets": list(targets), "start": start.isoformat(),
                           "end": end.isoformat(), "reason": args.reason})
    echo(f"maintenance window #{window}: {', '.join(targets)} from "
         f"{local_time(config, start)} to {local_time(config, end)} ({args.reason})")
    return 0


def _end_of(args: argparse.Namespace, config: Config, start: datetime,
            now: datetime) -> datetime:
    if (args.end is None) == (args.duration is None):
        fail("give the end with --to TIME or --for DURATION (one of them)", 2)
    if args.duration is not None:
        try:
            return start + timedelta(seconds=parse_duration(args.duration))
        except ValueError:
            fail(f"--for: expected a duration such as 90m or 2h, got {args.duration!r}", 2)
    end = parse_moment(args.end, config, now)
    if end <= start:
        fail("--to must be after --from", 2)
    return end


def parse_moment(text: str, config: Config, now: datetime) -> datetime:
    """``now`` or an ISO date-time; without an offset it is in the contract's time zone."""
    if text == "now":
        return now
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"expected a date-time such as 2026-12-01T02:00 or 'now', got {text!r}", 2)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(config.root.business_hours.timezone))
    return moment


def _list(args: argparse.Namespace, config: Config, store: Store) -> int:
    now = datetime.now(UTC)
    schedule = MaintenanceSchedule(config.root.maintenance, config.root.business_hours.timezone,
                                   store.maintenance)
    windows = schedule.windows(now, now + timedelta(days=args.days))
    if not windows:
        echo(f"no maintenance window in the next {args.days} days")
        return 0
    rows = [(w.name, "active" if w.start <= now < w.end else "planned", ", ".join(w.targets),
             local_time(config, w.start), local_time(config, w.end), w.reason or "-")
            for w in windows]
    echo(table(("WINDOW", "STATE", "TARGETS", "FROM", "TO", "REASON"), rows))
    return 0


def _end(args: argparse.Namespace, config: Config, store: Store) -> int:
    now = datetime.now(UTC)
    who = args.by or login_name()
    with store.db.tx():
        if not store.maintenance.end(args.id, now):
            fail(f"no open maintenance window #{args.id} (only windows added with "
                 "`kanshi maintenance add` can be ended here; config windows live in the "
                 "config)", 1)
        store.audit.write(now, who, "maintenance.end", f"maintenance/{args.id}")
    echo(f"maintenance window #{args.id} ended at {local_time(config, now)}")
    return 0
