"""``kanshi incidents list | show ID | ack ID | severity ID``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from agent.cli.common import (
    ago,
    echo,
    existing_store,
    fail,
    load_or_exit,
    local_time,
    login_name,
)
from agent.cli.table import table
from agent.config import Config
from agent.policy.clocks import ClockResult
from agent.policy.contract import Contract
from agent.store import Store
from agent.store.incidents import Incident


def incidents(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config, write=args.incidents_command in ("ack", "severity"))
    try:
        action = {"list": _list, "show": _show, "ack": _ack,
                  "severity": _severity}[args.incidents_command]
        return action(args, config, store)
    finally:
        store.close()


def _list(args: argparse.Namespace, config: Config, store: Store) -> int:
    found = store.incidents.find(open_only=not args.all, limit=args.limit)
    if args.json:
        echo(json.dumps([_incident_json(i) for i in found], ensure_ascii=False, indent=2))
        return 0
    if not found:
        echo("no open incidents" if not args.all else "no incidents")
        return 0
    now = datetime.now(UTC)
    rows = [(f"#{i.id}", i.status.name if i.is_open else "resolved", i.severity, i.check,
             i.target or "(check)", local_time(config, i.opened_at),
             ago(((i.resolved_at or now) - i.opened_at).total_seconds()),
             i.acknowledged_by or "-", i.message) for i in found]
    echo(table(("ID", "STATUS", "SEV", "CHECK", "TARGET", "OPENED", "FOR", "ACK", "MESSAGE"),
               rows))
    return 0


def _show(args: argparse.Namespace, config: Config, store: Store) -> int:
    incident = _get(store, args.id)
    events = store.incidents.events(incident.id)
    notices = store.notifications.for_incident(incident.id)
    clocks = Contract(config, store).clocks(incident, events, datetime.now(UTC))
    if args.json:
        echo(json.dumps({**_incident_json(incident),
                         "clocks": [clock_json(c) for c in clocks],
                         "timeline": [{"at": e.at.isoformat(), "kind": e.kind,
                                       "status": e.status.name if e.status is not None else None,
                                       "message": e.message, "actor": e.actor, "data": e.data}
                                      for e in events],
                         "notices": [{"id": n.id, "channel": n.channel, "kind": n.kind,
                                      "state": n.state, "attempts": n.attempts,
                                      "last_error": n.last_error} for n in notices]},
                        ensure_ascii=False, indent=2))
        return 0
    state = "open" if incident.is_open else f"resolved {local_time(config, incident.resolved_at)}"
    echo(f"incident #{incident.id}: {incident.check} {incident.target or '(check)'} — "
         f"{incident.status.name}, severity {incident.severity}, {state}")
    echo(f"  opened:       {local_time(config, incident.opened_at)}")
    echo(f"  acknowledged: {incident.acknowledged_by or 'no'}")
    echo(f"  message:      {incident.message}")
    echo("\nclocks:")
    echo(clock_table(config, clocks))
    echo("\ntimeline:")
    echo(table(("AT", "EVENT", "STATUS", "BY", "DETAIL"),
               [(local_time(config, e.at), e.kind, e.status.name if e.status is not None else "",
                 e.actor or "-", e.message) for e in events]))
    if notices:
        echo("\nnotices:")
        echo(table(("ID", "CHANNEL", "KIND", "STATE", "ATTEMPTS", "LAST ERROR"),
                   [(f"#{n.id}", n.channel, n.kind, n.state, n.attempts, n.last_error or "")
                    for n in notices]))
    return 0


def _ack(args: argparse.Namespace, config: Config, store: Store) -> int:
    incident = _get(store, args.id)
    who = args.by or login_name()
    if not incident.is_open:
        fail(f"incident #{incident.id} is already resolved; nothing to acknowledge", 1)
    now = datetime.now(UTC)
    with store.db.tx():
        store.incidents.add_event(incident.id, now, "acknowledged", actor=who,
                                  message=args.comment)
        store.audit.write(now, who, "incident.acknowledge", f"incident/{incident.id}",
                          {"comment": args.comment})
    echo(f"incident #{incident.id} acknowledged by {who}")
    return 0


def _severity(args: argparse.Namespace, config: Config, store: Store) -> int:
    incident = _get(store, args.id)
    who = args.by or login_name()
    if not incident.is_open:
        fail(f"incident #{incident.id} is resolved: its record is final", 1)
    if incident.severity == args.to:
        fail(f"incident #{incident.id} already has severity {args.to}", 1)
    now = datetime.now(UTC)
    with store.db.tx():
        store.incidents.add_event(incident.id, now, "severity_changed", actor=who,
                                  message=args.reason,
                                  data={"from": incident.severity, "to": args.to})
        store.incidents.update(incident.id, severity=args.to)
        store.audit.write(now, who, "incident.severity", f"incident/{incident.id}",
                          {"from": incident.severity, "to": args.to, "reason": args.reason})
    echo(f"incident #{incident.id}: severity {incident.severity} → {args.to} by {who}")
    return 0


def clock_table(config: Config, clocks: list[ClockResult]) -> str:
    """Clocks as rows: name, state, each deadline, counted time, what was left out."""
    rows = []
    for c in clocks:
        deadlines = ", ".join(f"{d.label} {local_time(config, d.due)} {d.state}"
                              for d in c.deadlines) or "-"
        left_out = "; ".join(f"{i.reason} {local_time(config, i.start, False)}–"
                             f"{local_time(config, i.end, False)}" for i in c.excluded)
        rows.append((c.name, c.state, deadlines, ago(c.elapsed.total_seconds()) if c.started
                     else "-", left_out or "-"))
    return table(("CLOCK", "STATE", "DEADLINES", "COUNTED", "EXCLUDED"), rows)


def clock_json(c: ClockResult) -> dict[str, Any]:
    return {"name": c.name, "state": c.state,
            "started": c.started.isoformat() if c.started else None,
            "stopped": c.stopped.isoformat() if c.stopped else None,
            "counted_seconds": c.elapsed.total_seconds(),
            "deadlines": [{"label": d.label, "due": d.due.isoformat(), "state": d.state}
                          for d in c.deadlines],
            "excluded": [{"start": i.start.isoformat(), "end": i.end.isoformat(),
                          "reason": i.reason} for i in c.excluded]}


def _get(store: Store, incident_id: int) -> Incident:
    incident = store.incidents.get(incident_id)
    if incident is None:
        fail(f"no incident #{incident_id}", 1)
    return incident


def _incident_json(i: Incident) -> dict[str, Any]:
    return {"id": i.id, "check": i.check, "target": i.target, "status": i.status.name,
            "severity": i.severity, "message": i.message, "opened_at": i.opened_at.isoformat(),
            "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
            "flapping": i.flapping, "acknowledged_by": i.acknowledged_by}
