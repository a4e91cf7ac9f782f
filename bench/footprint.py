"""Resident memory and CPU of `kanshi run` on the default config, beside its peers.

Starts the agent as ``./run`` does (embedded default config, a throw-away state
directory), waits (60 s by default), and prints RSS and CPU seconds and whether
boto3 was imported. In the same run it measures node_exporter, monit and
zabbix_agent2 (Debian packages prometheus-node-exporter, monit, zabbix-agent2)
the same way, each doing comparable work (this host's filesystems; monit also
pings 127.0.0.1), all bound to loopback, and prints kanshi's ratio to each.

    .venv/bin/python bench/footprint.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

TARGET_RSS_MB = 45.0

# A wrapper that runs `kanshi run` and, at exit, records whether boto3 was loaded.
KANSHI = """
import atexit, runpy, sys
flag = sys.argv.pop(1)
atexit.register(lambda: open(flag, "w").write(str("boto3" in sys.modules)))
sys.argv = ["kanshi", "run", "--log-level", "WARNING"]
runpy.run_module("agent.cli", run_name="__main__")
"""


@dataclass
class Figures:
    name: str
    rss_mb: float
    cpu_s: float
    note: str = ""


def measure(name: str, argv: list[str], seconds: float,
            env: dict[str, str] | None = None) -> Figures:
    """Run ``argv`` for ``seconds``, then read its RSS and CPU time and stop it."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, **(env or {})})
    try:
        time.sleep(seconds)
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise SystemExit(f"{name} exited early ({process.returncode}): {err[-800:]}")
        proc = psutil.Process(process.pid)
        cpu = proc.cpu_times()
        return Figures(name, proc.memory_info().rss / 2**20, cpu.user + cpu.system)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def kanshi(seconds: float, work: Path) -> Figures:
    flag = work / "boto3-loaded"
    figures = measure("kanshi run", [sys.executable, "-c", KANSHI, str(flag)], seconds,
                      env={"KANSHI_STATE_DIR": str(work / "kanshi-state")})
    loaded = flag.read_text() if flag.exists() else "?"
    figures.note = {"True": "boto3 imported", "False": "boto3 not imported"}.get(
        loaded, "boto3: unknown")
    return figures


def node_exporter(seconds: float, work: Path) -> Figures | None:
    binary = shutil.which("prometheus-node-exporter")
    if binary is None:
        return None
    return measure("node_exporter", [binary, "--web.listen-address=127.0.0.1:19100"], seconds)


def monit(seconds: float, work: Path) -> Figures | None:
    binary = shutil.which("monit")
    if binary is None:
        return None
    control = work / "monitrc"
    control.write_text(f"""set daemon 10
set idfile {work}/monit.id
set statefile {work}/monit.state
set pidfile {work}/monit.pid
check filesystem rootfs with path /
  if space usage > 90% then alert
  if inode usage > 50% then alert
check host localhost with address 127.0.0.1
  if failed ping then alert
""")
    control.chmod(0o600)
    return measure("monit", [binary, "-I", "-c", str(control)], seconds)


def zabbix_agent2(seconds: float, work: Path) -> Figures | None:
    binary = shutil.which("zabbix_agent2")
    if binary is None:
        return None
    conf = work / "zabbix_agent2.conf"
    conf.write_text(f"""LogType=console
Server=127.0.0.1
ListenIP=127.0.0.1
ListenPort=19050
ServerActive=
ControlSocket={work}/zabbix.sock
PidFile={work}/zabbix.pid
""")
    return measure("zabbix_agent2", [binary, "-f", "-c", str(conf)], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kanshi-footprint-") as tmp:
        work = Path(tmp)
        ours = kanshi(args.seconds, work)
        peers = [f for f in (node_exporter(args.seconds, work), monit(args.seconds, work),
                             zabbix_agent2(args.seconds, work)) if f is not None]
    print(f"after {args.seconds:g} s on the default config:")
    for row in [ours, *peers]:
        ratio = "" if row is ours else (f"kanshi/{row.name}: RSS {ours.rss_mb / row.rss_mb:.1f}x")
        print(f"  {row.name:<14} RSS {row.rss_mb:6.1f} MB  CPU {row.cpu_s:6.2f} s  "
              f"{row.note}{ratio}")
    missing = {"node_exporter", "monit", "zabbix_agent2"} - {p.name for p in peers}
    if missing:
        print(f"  not installed, not measured: {', '.join(sorted(missing))}")
    verdict = "met" if ours.rss_mb <= TARGET_RSS_MB else "MISSED"
    print(f"target ≤ {TARGET_RSS_MB:g} MB RSS: {verdict}")


if __name__ == "__main__":
    main()
