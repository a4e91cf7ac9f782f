"""``kanshi incidents list | show ID | ack ID``."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from datetime import UTC, datetime
from typing import Any

from agent.cli.common import ago, echo, existing_store, fail, load_or_exit, local_time
from agent.cli.table import table
from agent.config import Config
from agent.store import Store
from agent.store.incidents import Incident


def incidents(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config, write=args.incidents_command == "ack")
    try:
        action = {"list": _list, "show": _show, "ack": _ack}[args.incidents_command]
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
    if args.json:
        echo(json.dumps({**_incident_json(incident),
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
    who = args.by or _login_name()
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


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return f"uid {os.getuid()}"


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
