"""ICMP sweep: kanshi's engine beside fping, measured alike in the same run.

    sudo .venv/bin/python bench/ping_sweep.py [--runs 3] [--skip-paced]

1. 10,000 live addresses in 127.0.0.0/8, one probe each: kanshi (unpaced),
   ``fping -i0`` (unpaced) and fping with its default pacing (10 ms between
   packets, so ~100 s; ``--skip-paced`` leaves it out).
2. 100 dead addresses, one probe each with a 1 s timeout, inside a network
   namespace this script creates and removes (a ``dummy`` interface, or a veth
   pair with ARP off where the kernel lacks the dummy driver, drops everything:
   nothing leaves the machine).

Both tools run as child processes; wall time is measured around the child and
CPU time from ``getrusage(RUSAGE_CHILDREN)``, so kanshi's figures include the
interpreter start-up, as fping's include its own. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_FPING_LINE = re.compile(r"xmt/rcv/%loss = (\d+)/(\d+)/")
_DEAD_NET = "10.199.0"

#: The kanshi side, run as ``python -c``: it imports only what an agent would for
#: a sweep (not this script's argparse/statistics/tempfile), then one unpaced sweep.
CHILD = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from checks.icmp import IcmpEngine
targets = open(sys.argv[1]).read().split()
engine = IcmpEngine(max_pps=0)
started = time.perf_counter()
results = engine.ping_sync(targets, count=1, timeout=float(sys.argv[2]))
elapsed = time.perf_counter() - started
engine.close()
print(json.dumps({{"replies": sum(s.received for s in results.values()),
                  "sweep_seconds": elapsed, "method": engine.method}}))
"""
#: The same child without the sweep: what CPython start-up, imports and exit cost.
STARTUP = f"import sys; sys.path.insert(0, {str(REPO)!r}); import checks.icmp"


@dataclass(frozen=True)
class Run:
    """One child process: replies counted, wall and CPU seconds."""

    replies: int
    wall: float
    cpu: float
    inner: float | None = None  # kanshi only: the sweep itself, without start-up


def measure(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``argv`` to completion; its wall and CPU (user + system) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def run_kanshi(prefix: list[str], targets: Path, timeout: float) -> Run:
    proc, wall, cpu = measure([*prefix, sys.executable, "-c", CHILD, str(targets),
                               str(timeout)])
    if proc.returncode != 0:
        raise SystemExit(f"kanshi child failed:\n{proc.stderr}")
    out = json.loads(proc.stdout)
    return Run(out["replies"], wall, cpu, out["sweep_seconds"])


def run_fping(prefix: list[str], targets: Path, timeout: float, *, paced: bool) -> Run:
    pacing = [] if paced else ["-i0"]
    argv = [*prefix, "fping", "-q", "-c1", f"-t{int(timeout * 1000)}", *pacing,
            "-f", str(targets)]
    proc, wall, cpu = measure(argv)
    replies = sum(int(m.group(2)) for m in _FPING_LINE.finditer(proc.stderr))
    return Run(replies, wall, cpu)


@contextlib.contextmanager
def dead_namespace() -> Iterator[list[str]]:
    """A namespace whose 10.199.0.0/24 is a black hole: probes vanish, no replies."""
    name = f"kanshi-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip = ["ip", "-n", name]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        # A dummy link drops what it is given. Kernels without the dummy driver get
        # a veth pair with ARP off: frames reach the peer addressed to another MAC.
        if subprocess.run([*ip, "link", "add", "dead0", "type", "dummy"],
                          capture_output=True, check=False).returncode:
            subprocess.run([*ip, "link", "add", "dead0", "type", "veth", "peer", "dead1"],
                           check=True)
            subprocess.run([*ip, "link", "set", "dead0", "arp", "off"], check=True)
            subprocess.run([*ip, "link", "set", "dead1", "up"], check=True)
        subprocess.run([*ip, "addr", "add", f"{_DEAD_NET}.1/24", "dev", "dead0"], check=True)
        subprocess.run([*ip, "link", "set", "dead0", "up"], check=True)
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def targets_file(directory: Path, name: str, addresses: list[str]) -> Path:
    path = directory / name
    path.write_text("\n".join(addresses) + "\n")
    return path


def loopback(count: int) -> list[str]:
    return [f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, count + 1)]


def show(label: str, run: Run, total: int) -> None:
    inner = f"   (sweep itself {run.inner:.3f} s)" if run.inner is not None else ""
    print(f"  {label:<22} {run.replies:>6}/{total:<6} wall {run.wall:7.3f} s  "
          f"cpu {run.cpu:7.3f} s{inner}")


def ratios(kanshi: list[Run], fping: list[Run]) -> str:
    """kanshi/fping for the medians and for the best runs (this VM's noise is one-sided)."""
    def ratio(pick: Callable[[list[float]], float], field: str) -> float:
        ours = pick([getattr(r, field) for r in kanshi])
        theirs = pick([getattr(r, field) for r in fping])
        return ours / max(theirs, 1e-9)

    return (f"kanshi/fping -i0: wall {ratio(statistics.median, 'wall'):.2f}x median, "
            f"{ratio(min, 'wall'):.2f}x best; cpu {ratio(statistics.median, 'cpu'):.2f}x "
            f"median, {ratio(min, 'cpu'):.2f}x best")


def bench_reachable(tmp: Path, count: int, runs: int, paced: bool) -> None:
    path = targets_file(tmp, "reachable.txt", loopback(count))
    print(f"{count} reachable loopback targets, 1 probe each, timeout 1 s")
    kanshi: list[Run] = []
    fping: list[Run] = []
    for _ in range(runs):
        kanshi.append(run_kanshi([], path, 1.0))
        show("kanshi (unpaced)", kanshi[-1], count)
        fping.append(run_fping([], path, 1.0, paced=False))
        show("fping -i0", fping[-1], count)
    if paced:
        show("fping (default pacing)", run_fping([], path, 1.0, paced=True), count)
    print(f"  {ratios(kanshi, fping)}")
    startup = [measure([sys.executable, "-c", STARTUP]) for _ in range(runs)]
    wall = statistics.median(w for _, w, _ in startup)
    cpu = statistics.median(c for _, _, c in startup)
    sweep = statistics.median(r.inner or 0.0 for r in kanshi)
    print(f"  of kanshi's wall time, CPython start-up + import + exit alone take {wall:.3f} s "
          f"(cpu {cpu:.3f} s); the sweep itself {sweep:.3f} s = "
          f"{sweep / statistics.median(r.wall for r in fping):.2f}x fping -i0's whole run")


def bench_unreachable(tmp: Path, count: int, runs: int) -> None:
    path = targets_file(tmp, "dead.txt", [f"{_DEAD_NET}.{i}" for i in range(2, count + 2)])
    print(f"{count} unreachable targets (own netns, black-hole link), 1 probe each, "
          "timeout 1 s")
    kanshi: list[Run] = []
    fping: list[Run] = []
    with dead_namespace() as prefix:
        for _ in range(runs):
            kanshi.append(run_kanshi(prefix, path, 1.0))
            show("kanshi (unpaced)", kanshi[-1], count)
            fping.append(run_fping(prefix, path, 1.0, paced=False))
            show("fping -i0", fping[-1], count)
        show("fping (default pacing)", run_fping(prefix, path, 1.0, paced=True), count)
    print(f"  {ratios(kanshi, fping)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--unreachable", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-paced", action="store_true",
                        help="leave out fping with default pacing on the reachable set (~100 s)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("fping") is None:
        raise SystemExit("needs root (raw ICMP, ip netns) and fping (apt install fping)")
    with tempfile.TemporaryDirectory(prefix="kanshi-bench-") as tmp:
        bench_reachable(Path(tmp), args.targets, args.runs, not args.skip_paced)
        bench_unreachable(Path(tmp), args.unreachable, args.runs)


if __name__ == "__main__":
    main()
