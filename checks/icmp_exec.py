"""The last-resort ICMP method: run the system ``ping`` binary and read its summary.

Used when neither a raw nor a datagram ICMP socket is permitted but ``ping``
is (it is usually installed with ``cap_net_raw`` or setuid). One process per
target, so concurrency is bounded by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from dataclasses import dataclass

_TRANSMITTED = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
# iputils: "rtt min/avg/max/mdev = a/b/c/d ms"; busybox: "round-trip min/avg/max = a/b/c ms"
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)(?:/[\d.]+)? ms")
_ERROR_LINE = re.compile(r"^From (\S+)(?: \S+)? icmp_seq=\d+ (.+)$", re.MULTILINE)
_LOCAL_FAILURE = re.compile(r"unreachable|no route", re.IGNORECASE)
_NOT_PERMITTED = ("operation not permitted", "permission denied", "lacking privilege")


@dataclass(frozen=True)
class ExecOutcome:
    """What one ``ping`` run reported (RTTs in seconds)."""

    sent: int = 0
    received: int = 0
    rtt: tuple[float, float, float] | None = None
    reason: str = ""
    error: str = ""


def find_ping() -> str | None:
    """Path of the system ``ping``, if installed."""
    return shutil.which("ping") or next(
        (p for p in ("/usr/bin/ping", "/bin/ping") if os.access(p, os.X_OK)), None)


def ping_argv(ping: str, address: str, *, count: int, interval: float,
              timeout: float) -> list[str]:
    """The argument list (never a shell string) for one target."""
    return [ping, "-n", "-c", str(count), "-i", f"{interval:g}", "-W", f"{timeout:g}",
            address]


async def run_ping(argv: list[str], *, limit: float) -> ExecOutcome:
    """Run ``ping``; kill it if it outlives ``limit`` seconds."""
    env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
    except OSError as exc:  # EPERM: file caps beyond our bounding set (containers)
        return ExecOutcome(error=f"cannot run {argv[0]}: {exc.strerror or exc}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return ExecOutcome(error=f"{argv[0]} did not finish within {limit:g} s")
    return parse_ping_output(out.decode(errors="replace"), err.decode(errors="replace"),
                             proc.returncode or 0)


def parse_ping_output(stdout: str, stderr: str, returncode: int) -> ExecOutcome:
    """Counts, RTTs and the last error line from iputils or busybox ``ping`` output."""
    counts = _TRANSMITTED.search(stdout)
    if counts is None:
        detail = (stderr.strip() or stdout.strip() or f"exit status {returncode}")
        detail = detail.splitlines()[-1]
        if _LOCAL_FAILURE.search(detail):  # "connect: Network is unreachable": lost probes
            return ExecOutcome(reason=f"send failed: {detail}")
        return ExecOutcome(error=f"ping failed: {detail}")
    rtt = _RTT.search(stdout)
    errors = _ERROR_LINE.findall(stdout)
    reason = ""
    if errors:
        source, text = errors[-1]
        reason = f"{text.strip().lower()} (reported by ping, from {source.rstrip(':')})"
    seconds = (float(rtt.group(1)) / 1000, float(rtt.group(2)) / 1000,
               float(rtt.group(3)) / 1000) if rtt else None
    return ExecOutcome(sent=int(counts.group(1)), received=int(counts.group(2)), rtt=seconds,
                       reason=reason)


def is_permission_problem(outcome: ExecOutcome) -> bool:
    """Whether ``ping`` failed because ICMP is not permitted (not because of the target)."""
    return any(word in outcome.error.lower() for word in _NOT_PERMITTED)
