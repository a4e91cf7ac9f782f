"""Choose how to send ICMP, once, and say why (raw socket → ping socket → ping(8)).

DESIGN pitfalls: as root raw sockets work; unprivileged ICMP "ping sockets" are
off here (``net.ipv4.ping_group_range = 1 0``); in a container the agent needs
``CAP_NET_RAW`` or a ping_group_range. The exec fallback is tried by pinging
127.0.0.1 once — never another address.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Literal

from checks.icmp_exec import find_ping, is_permission_problem, ping_argv, run_ping
from checks.icmp_socket import SocketKind, open_icmp_socket

logger = logging.getLogger(__name__)

Method = Literal["auto", "raw", "dgram", "exec"]
NOT_PERMITTED = "ICMP not permitted: needs CAP_NET_RAW or net.ipv4.ping_group_range"
#: Concurrent ``ping`` processes in the exec fallback (named in the log line).
EXEC_CONCURRENCY = 32


@dataclass
class Choice:
    """The method settled on, with its socket or ``ping`` path, or why there is none."""

    method: str  # raw | dgram | exec | none
    sock: socket.socket | None = None
    ping: str = ""
    reason: str = ""


async def choose(method: Method) -> Choice:
    """The first permitted method (``auto``: raw, dgram, exec), logged once with why."""
    order: list[str] = ["raw", "dgram", "exec"] if method == "auto" else [method]
    failures: list[str] = []
    for candidate in order:
        choice = await _try_method(candidate, failures)
        if choice is not None:
            _log_choice(method, choice, failures)
            return choice
    reason = f"{NOT_PERMITTED} ({'; '.join(failures)}; {_ping_group_note()})"
    logger.warning("%s", reason)
    return Choice("none", reason=reason)


async def _try_method(candidate: str, failures: list[str]) -> Choice | None:
    if candidate == "exec":
        return await _try_exec(failures)
    kind: SocketKind = "raw" if candidate == "raw" else "dgram"
    try:
        return Choice(candidate, sock=open_icmp_socket(socket.AF_INET, kind))
    except OSError as exc:
        failures.append(f"{kind} socket: {exc.strerror or exc}")
        return None


async def _try_exec(failures: list[str]) -> Choice | None:
    ping = find_ping()
    if ping is None:
        failures.append("no ping binary installed")
        return None
    # Loopback only: the probe must not send traffic anywhere else.
    outcome = await run_ping(ping_argv(ping, "127.0.0.1", count=1, interval=1.0, timeout=1.0),
                             limit=5.0)
    if is_permission_problem(outcome):
        failures.append(f"ping: {outcome.error}")
        return None
    return Choice("exec", ping=ping)


def _log_choice(requested: str, choice: Choice, failures: list[str]) -> None:
    if requested != "auto":
        logger.info("ICMP: using method %s as configured", choice.method)
    elif choice.method == "raw":
        logger.info("ICMP: using a raw socket")
    elif choice.method == "dgram":
        logger.warning("ICMP: %s; using an unprivileged ICMP datagram socket "
                       "(net.ipv4.ping_group_range admits gid %d)", failures[0], os.getgid())
    else:
        logger.warning("ICMP: %s; falling back to the system ping binary %s "
                       "(one process per target, at most %d at once)",
                       "; ".join(failures), choice.ping, EXEC_CONCURRENCY)


def _ping_group_note() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as f:
            current = " ".join(f.read().split())
    except OSError:
        return f"our gid is {os.getgid()}"
    return f"net.ipv4.ping_group_range is \"{current}\", our gid is {os.getgid()}"
