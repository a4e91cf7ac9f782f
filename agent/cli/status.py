"""``kanshi status``: is the agent alive, what do its checks say, what is queued."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from datetime import UTC, datetime

from agent.cli.common import ago, echo, existing_store, load_or_exit, local_time
from agent.cli.table import table
from agent.config import Config
from agent.store import Store
from agent.store.runs import AgentRun
from checks.base import Status

#: Missing this many heartbeats in a row means the agent is not running.
HEARTBEATS_MISSED = 3


def status(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config)
    try:
        if store.db.shared:
            alive = _shared_agents(config, store)
        else:
            alive = _agent_line(config, store.runs.latest())
        _checks(config, store)
        _queues(store)
    finally:
        store.close()
    return 0 if alive else 1


def _agent_line(config: Config, run: AgentRun | None) -> bool:
    now = datetime.now(UTC)
    if run is None:
        echo("agent:      never started")
        return False
    silent = (now - run.last_seen_at).total_seconds()
    if run.stopped_at is not None:
        echo(f"agent:      stopped at {local_time(config, run.stopped_at)} (clean stop)")
        return False
    if silent > HEARTBEATS_MISSED * config.root.agent.heartbeat or not _pid_alive(run):
        echo(f"agent:      NOT RUNNING — last heartbeat {ago(silent)} ago from pid {run.pid}, "
             "no clean stop recorded (crashed or killed?)")
        return False
    echo(f"agent:      running on {run.host} (pid {run.pid}, kanshi {run.version}, up "
         f"{ago((now - run.started_at).total_seconds())}, heartbeat {ago(silent)} ago)")
    return True


def _shared_agents(config: Config, store: Store) -> bool:
    """Agents on a shared store: who is live, and which checks each holds the lease of."""
    now = datetime.now(UTC)
    leases = [lease for lease in store.leases.all() if lease.expires_at > now]
    agents = [a for a in store.leases.agents() if a.live(now) or
              (now - a.seen_at).total_seconds() < 86400]
    live = [a for a in agents if a.live(now)]
    echo(f"agents:     {len(live)} live on a shared store "
         f"(lease {config.root.store.lease:g} s)")
    rows = []
    for agent in agents:
        held = sorted(lease.name.removeprefix("check:") for lease in leases
                      if lease.agent == agent.id)
        state = "live" if agent.live(now) else \
            ("stopped" if agent.stopped_at else "DEAD (lease lapsed)")
        rows.append((agent.id, state, f"{ago((now - agent.seen_at).total_seconds())} ago",
                     str(len(held)), ", ".join(held) or "-"))
    if rows:
        echo(table(("AGENT", "STATE", "SEEN", "LEASES", "RUNS"), rows))
    unowned = sorted({f"check:{c.name}" for c in config.enabled_checks}
                     - {lease.name for lease in leases})
    if unowned:
        echo(f"unowned:    {', '.join(n.removeprefix('check:') for n in unowned)} "
             "(being handed over)")
    return bool(live)


def _pid_alive(run: AgentRun) -> bool:
    if run.host != os.uname().nodename:
        return True  # another host's process: only the heartbeat can tell
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checks(config: Config, store: Store) -> None:
    latest = store.checks.latest()
    counts = Counter(r.status.name for r in latest)
    pending = sum(1 for r in latest if r.state.soft)
    summary = ", ".join(f"{counts.get(s.name, 0)} {s.name}" for s in Status)
    echo(f"targets:    {summary}; {pending} waiting for confirmation")
    open_incidents = store.incidents.find(open_only=True, limit=10_000)
    acked = sum(1 for i in open_incidents if i.acknowledged_by)
    echo(f"incidents:  {len(open_incidents)} open ({acked} acknowledged)")
    if latest:
        echo()
        rows = [(r.check, r.target or "(check)", _state_text(r.status, r.state.hard_status,
                                                             r.state.soft),
                 local_time(config, r.at), r.message) for r in latest]
        echo(table(("CHECK", "TARGET", "STATUS", "LAST RUN", "MESSAGE"), rows))


def _state_text(status: Status, hard: Status, soft: bool) -> str:
    if soft:
        return f"{status.name} (soft, confirmed {hard.name})"
    return status.name


def _queues(store: Store) -> None:
    counts = store.notifications.counts()
    echo()
    echo("notices:    " + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                    ("pending", "sending", "delivered", "failed", "expired")))
