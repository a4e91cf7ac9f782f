"""``kanshi report incident ID`` and ``kanshi report month YYYY-MM``."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime

from agent.cli.common import echo, existing_store, fail, load_or_exit
from agent.clock import SystemClock
from agent.config import Config
from agent.outbox import Outbox
from agent.reports.incident import incident_report
from agent.reports.monthly import monthly_report
from agent.store import Store


def report(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config, write=getattr(args, "send", False))
    try:
        if args.report_command == "month":
            return _month(args, config, store)
        return _incident(args, config, store)
    finally:
        store.close()


def _incident(args: argparse.Namespace, config: Config, store: Store) -> int:
    incident = store.incidents.get(args.id)
    if incident is None:
        fail(f"no incident #{args.id}", 1)
    lang = args.lang or config.root.agent.locale
    now = datetime.now(UTC)
    made = incident_report(config, store, incident, now, lang, args.kind, args.format)
    echo(made.text.rstrip("\n"))
    if args.send:
        _send(config, store, incident.id, made.kind, lang, now)
    return 0


def _send(config: Config, store: Store, incident_id: int, kind: str, lang: str,
          now: datetime) -> None:
    """Queue the report to the customer channels; the agent delivers it, and the
    delivery — not this command — stops the report's clock."""
    incident = store.incidents.get(incident_id)
    assert incident is not None
    channels = [n.name for n in config.enabled_notifiers if n.audience == "customer"]
    if not channels:
        fail("no enabled customer channel to send the report to", 1)
    outbox = Outbox(store, SystemClock(), config.root.outbox,
                    {n.name: n for n in config.notifiers}, config.root.business_hours.timezone)
    # Each channel gets the report in its own language.
    for name in channels:
        spec = next(n for n in config.notifiers if n.name == name)
        text = incident_report(config, store, incident, now, spec.locale, kind).text
        fields = {"kind": f"{kind}_report", "incident_id": incident.id,
                  "dedup_key": incident.dedup_key, "host": config.root.agent.name,
                  "check": incident.check, "target": incident.target,
                  "status": incident.status.name, "previous_status": incident.status.name,
                  "severity": incident.severity, "message": f"{kind} report",
                  "detected_at": incident.opened_at, "at": now, "attempts": None,
                  "outage_seconds": None, "flap_percent": None, "report": text}
        with store.db.tx():
            event = store.incidents.add_event(incident.id, now, "report_queued",
                                              message=f"{kind} report queued for {name}",
                                              data={"report": kind, "channel": name})
            outbox.enqueue(fields, [name], event_id=event)
    echo(f"\n(queued for {', '.join(channels)}; the running agent delivers it)", err=True)


def _month(args: argparse.Namespace, config: Config, store: Store) -> int:
    try:
        month = date.fromisoformat(f"{args.month}-01")
    except ValueError:
        fail(f"expected a month such as 2026-11, got {args.month!r}", 2)
    lang = args.lang or config.root.agent.locale
    echo(monthly_report(config, store, month, datetime.now(UTC), lang, args.format).rstrip("\n"))
    return 0

