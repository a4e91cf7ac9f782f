"""``kanshi health``: exit 0 if the agent's heartbeat is fresh, 1 otherwise.

Made for health probes — Docker's ``HEALTHCHECK``, a Kubernetes exec probe, a
Nagios/Zabbix command: one line of output, and only the codes 0 (healthy) and
1 (unhealthy). Docker reserves exit code 2, so a config that cannot be read is
reported as unhealthy (1) here, not with the usual config exit code.

It reads the heartbeat the agent writes into its store every
``agent.heartbeat`` seconds; ``kanshi status`` shows the same verdict with
everything else.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

from agent.cli.common import ago, echo, existing_store, load_or_exit
from agent.cli.status import HEARTBEATS_MISSED
from agent.store import StoreError
from agent.store.runs import AgentRun

HEALTHY, UNHEALTHY = 0, 1


def add_parser(sub: Any, config_option: Any) -> None:
    parser = sub.add_parser("health", help="exit 0 if the agent is running (fresh heartbeat), "
                                           "1 if not — for HEALTHCHECK and probes")
    config_option(parser)
    parser.add_argument("--max-age", type=float, default=None, metavar="SECONDS",
                        help="oldest acceptable heartbeat (default: "
                             f"{HEARTBEATS_MISSED} × agent.heartbeat)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def health(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config, code=UNHEALTHY)
    store = existing_store(config)  # exits 1 when there is none or it cannot be opened
    try:
        run = store.runs.latest()
    except (StoreError, sqlite3.Error) as exc:
        return _say(args, f"unhealthy: cannot read the store: {exc}", UNHEALTHY)
    finally:
        store.close()
    max_age = args.max_age or HEARTBEATS_MISSED * config.root.agent.heartbeat
    verdict, code = judge(run, max_age, datetime.now(UTC))
    return _say(args, verdict, code)


def judge(run: AgentRun | None, max_age: float, now: datetime) -> tuple[str, int]:
    """The verdict on the latest agent run: (one line, exit code)."""
    if run is None:
        return "unhealthy: the agent has never run with this state", UNHEALTHY
    if run.stopped_at is not None:
        return "unhealthy: the agent stopped (clean stop recorded)", UNHEALTHY
    silent = (now - run.last_seen_at).total_seconds()
    if silent > max_age:
        return (f"unhealthy: last heartbeat {ago(silent)} ago (pid {run.pid}), "
                f"more than {max_age:g} s"), UNHEALTHY
    if not _pid_alive(run):
        return f"unhealthy: pid {run.pid} is gone (crashed or killed)", UNHEALTHY
    return f"healthy: pid {run.pid}, heartbeat {ago(silent)} ago", HEALTHY


def _pid_alive(run: AgentRun) -> bool:
    if run.host != os.uname().nodename:
        return True  # another host (or container) wrote it: only the heartbeat can tell
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _say(args: argparse.Namespace, line: str, code: int) -> int:
    if not args.quiet:
        echo(line)
    return code
