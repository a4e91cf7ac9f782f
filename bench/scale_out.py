"""Checks per second and notice latency with 1, 2 and 3 agents on one PostgreSQL.

The baseline is one agent, measured in the same run. Starts a throw-away
PostgreSQL cluster on loopback (as the tests do: Debian package postgresql,
root), then for each agent count: a fresh database, N ``kanshi run`` processes
on one config of ``--checks`` TCP checks (interval ``--interval``) against a
local listener, and a webhook channel to a local HTTP receiver. It counts
results stored during ``--seconds`` after the agents have spread the work, then
queues ``--notices`` notices and reports the time from queueing to delivery
(median and 95th percentile, from the store's timestamps).

    sudo .venv/bin/python bench/scale_out.py [--checks 300] [--interval 1] [--seconds 10]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.store import open_store
from agent.store.db import parse_ts, ts
from checks.base import Status
from tests.support.http_server import HttpServer
from tests.support.postgres import PostgresServer, _base_dir
from tests.support.stores import postgres_url


def run(agents: int, server: PostgresServer, receiver: HttpServer, args: argparse.Namespace,
        work: Path) -> tuple[float, float, float]:
    url = postgres_url(server, server.create_database())
    store = open_store(work, url=url)
    port = int(receiver.url.rsplit(":", 1)[1])
    checks = "".join(f"  - {{name: c{i}, type: tcp, host: 127.0.0.1, port: {port},"
                     f" interval: {args.interval}s}}\n" for i in range(args.checks))
    config = work / f"kanshi-{agents}.yaml"
    config.write_text(f"""
agent: {{name: bench, state_dir: {work / "state"}, heartbeat: 2s}}
store: {{url: "{url}", lease: 6s}}
api: {{enabled: false}}
scheduler: {{spread: {args.interval}s, workers: 16}}
notifiers: [{{name: hook, type: webhook, url: "{receiver.url}/hook", timeout: 5s}}]
checks:
{checks}""", encoding="utf-8")
    procs = [subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(config),
                               "--log-level", "ERROR"], stdout=subprocess.DEVNULL)
             for _ in range(agents)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = {lease.agent for lease in store.leases.all()}
            if len(store.leases.all()) == args.checks + 1 and len(held) == agents:
                break
            time.sleep(0.5)
        time.sleep(args.interval * 2)
        with store.db.read() as conn:
            before = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        time.sleep(args.seconds)
        with store.db.read() as conn:
            after = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        rate = (after - before) / args.seconds
        latencies = notices(store, args.notices)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        store.close()
    return rate, statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]


def notices(store: object, count: int) -> list[float]:
    from agent.store import Store

    assert isinstance(store, Store)
    now = datetime.now(UTC)
    with store.db.tx():
        for i in range(count):
            incident = store.incidents.create("bench", f"n{i}", Status.CRITICAL, "B", "x", now)
            store.notifications.add(
                incident_id=incident, event_id=None, channel="hook", kind="problem",
                payload={"kind": "problem", "incident_id": incident, "dedup_key": f"b/{i}",
                         "host": "bench", "check": "bench", "target": f"n{i}",
                         "status": "CRITICAL", "previous_status": "OK", "severity": "B",
                         "message": "x", "detected_at": ts(now), "at": ts(now),
                         "attempts": 1, "outage_seconds": None, "flap_percent": None,
                         "locale": "en", "subject": "x", "body": "x"},
                now=now, fallback_at=now + timedelta(hours=1), expires_at=now + timedelta(days=1))
    deadline = time.monotonic() + 120
    while store.notifications.counts().get("delivered", 0) < count:
        if time.monotonic() > deadline:
            raise SystemExit("notices were not all delivered within 120 s")
        time.sleep(0.2)
    with store.db.read() as conn:
        rows = conn.execute("SELECT created_at, delivered_at FROM notifications").fetchall()
    return [(parse_ts(r[1]) - parse_ts(r[0])).total_seconds() for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--notices", type=int, default=500)
    args = parser.parse_args()
    server = PostgresServer(_base_dir("kanshi-bench-pg-"), password=secrets.token_urlsafe(12),
                            tls=None)
    work = Path(mkdtemp(prefix="kanshi-bench-"))
    try:
        server.init()
        server.start(max_connections="40")
        with HttpServer() as receiver:
            rows = [(n, *run(n, server, receiver, args, work)) for n in (1, 2, 3)]
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    print(f"{args.checks} TCP checks every {args.interval} s, {args.notices} notices, "
          "one PostgreSQL on loopback")
    print(f"{'agents':>6} {'checks/s':>9} {'vs 1':>6} {'notice p50 s':>13} {'notice p95 s':>13}")
    for n, rate, p50, p95 in rows:
        print(f"{n:>6} {rate:>9.1f} {rate / base:>5.2f}x {p50:>13.3f} {p95:>13.3f}")


if __name__ == "__main__":
    main()
