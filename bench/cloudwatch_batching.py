"""CloudWatch collection: kanshi's batched GetMetricData beside one call per metric.

    .venv/bin/python bench/cloudwatch_batching.py [--sizes 100 1000 5000] [--runs 1]

Both sides read the same N metrics (Lambda ``Errors``, Sum over the last complete
5-minute period, one datapoint each) from the same moto server — a
``moto.server.ThreadedMotoServer`` on 127.0.0.1, so every API call is a real HTTP
request over loopback with botocore's serialisation and parsing:

- **kanshi**: one run of the ``cloudwatch`` check with N functions named in its
  config (only the ``errors`` item on) — GetMetricData in batches of 500;
- **baseline**: one GetMetricStatistics per metric, one after another, as
  prometheus/cloudwatch_exporter does by default (``use_get_metric_data: false``).

Prints API calls, wall time and datapoints found for both, with ratios; never
asserts. moto's own work grows with the data it holds (it scans every stored
datapoint for each query, in both APIs), so at large N the wall times measure
moto's Python as much as the protocol; the call counts are exact.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PERIOD = 300
REGION = "ap-northeast-1"


@dataclass(frozen=True)
class Side:
    calls: int
    seconds: float
    found: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--runs", type=int, default=1, help="runs per size (median shown)")
    args = parser.parse_args()
    server = _start_server()
    try:
        rows = [(n, *_measure(server, n, args.runs)) for n in args.sizes]
    finally:
        server.stop()
    _print(rows)


def _start_server() -> Any:
    """moto on 127.0.0.1 with fake credentials: nothing leaves the machine."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    return server


def _measure(server: Any, n: int, runs: int) -> tuple[Side, Side]:
    kanshi, baseline = [], []
    for _ in range(runs):
        names, span = _fresh_data(n)
        kanshi.append(_kanshi(names))
        baseline.append(_baseline(names, span))
    return _median(kanshi), _median(baseline)


def _fresh_data(n: int) -> tuple[list[str], Any]:
    """Reset moto and put one Errors datapoint per function in the last settled period."""
    import urllib.request

    import boto3

    from checks.aws.collect import window

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset",
                                                  method="POST"), timeout=30).read()
    span = window(datetime.now(UTC), PERIOD, None, 2)
    at = span.end - timedelta(seconds=PERIOD / 2)
    names = [f"fn-{i:05d}" for i in range(n)]
    cw = boto3.client("cloudwatch", region_name=REGION)
    for start in range(0, n, 1000):
        cw.put_metric_data(Namespace="AWS/Lambda", MetricData=[
            {"MetricName": "Errors", "Value": 1.0, "Timestamp": at, "Unit": "Count",
             "Dimensions": [{"Name": "FunctionName", "Value": name}]}
            for name in names[start:start + 1000]])
    return names, span


def _kanshi(names: list[str]) -> Side:
    from agent.clock import SystemClock
    from checks.base import CheckContext, LocalResources
    from checks.cloudwatch import CloudWatchCheck

    config = CloudWatchCheck.Config.model_validate({
        "accounts": [{"name": "bench", "regions": [REGION]}],
        "resources": {"lambda": names},
        "overrides": [{"component": "lambda", "enabled": False},
                      {"component": "lambda", "item": "errors", "enabled": True}]})
    shared = LocalResources()
    check = CloudWatchCheck("bench", config, timeout=600,
                            context=CheckContext(clock=SystemClock(), shared=shared))
    check.execute()  # warm: session and client made, as in a running agent
    started = time.perf_counter()
    results = check.execute()
    elapsed = time.perf_counter() - started
    shared.close()
    usage = next(r for r in results if r.target == "usage")
    found = sum(1 for r in results if r.metrics.get("errors_count") is not None)
    return Side(int(usage.metrics["api_calls"]), elapsed, found)


def _baseline(names: list[str], span: Any) -> Side:
    import boto3

    cw = boto3.client("cloudwatch", region_name=REGION)
    cw.list_metrics(Namespace="AWS/Lambda", MetricName="Errors",
                    Dimensions=[{"Name": "FunctionName", "Value": names[0]}])  # warm
    found, started = 0, time.perf_counter()
    for name in names:
        answer = cw.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName="Errors",
            Dimensions=[{"Name": "FunctionName", "Value": name}], StartTime=span.start,
            EndTime=span.end, Period=PERIOD, Statistics=["Sum"])
        found += bool(answer["Datapoints"])
    return Side(len(names), time.perf_counter() - started, found)


def _median(sides: list[Side]) -> Side:
    return Side(sides[0].calls, statistics.median(s.seconds for s in sides),
                min(s.found for s in sides))


def _print(rows: list[tuple[int, Side, Side]]) -> None:
    header = (f"{'metrics':>8}  {'kanshi calls':>12}  {'kanshi s':>9}  {'found':>6}  "
              f"{'baseline calls':>14}  {'baseline s':>10}  {'found':>6}  "
              f"{'calls ratio':>11}  {'time ratio':>10}")
    print(header)
    print("-" * len(header))
    for n, kanshi, base in rows:
        print(f"{n:>8}  {kanshi.calls:>12}  {kanshi.seconds:>9.3f}  {kanshi.found:>6}  "
              f"{base.calls:>14}  {base.seconds:>10.3f}  {base.found:>6}  "
              f"{base.calls / kanshi.calls:>10.0f}×  {base.seconds / kanshi.seconds:>9.1f}×")


if __name__ == "__main__":
    main()
