"""Reading metrics: GetMetricData in batches of up to 500 queries, over a settled window.

All metric queries of one account + region in a cycle go through GetMetricData
(CloudWatch API reference: at most 500 ``MetricDataQueries`` per request; a
response with more than 100,800 datapoints is paged with ``NextToken``).
Identical queries are sent once. Batches of one region run a few at a time.

The window ends at the last period boundary at least ``delay`` before now, so
its newest period is complete in CloudWatch: a period still filling up would
read low (a Sum) or unsettled (an Average) and alert falsely, while waiting a
fixed 10 minutes (``prometheus/cloudwatch_exporter``'s default ``delay_seconds:
600``) makes every alert 10 minutes late. The automatic delay is 60 s for
1-minute periods, 40 % of longer ones, at most 3 minutes: AWS services deliver
a period's datapoints within a minute or two of its end.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from checks.aws.session import call

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

#: GetMetricData's limit of queries per request (CloudWatch API reference).
MAX_QUERIES = 500
#: Batches of one region in flight at once (GetMetricData's default quota is 50 TPS).
WORKERS = 4
_STAT_KEY = {"Average": "average", "Sum": "sum", "Minimum": "minimum",
             "Maximum": "maximum", "SampleCount": "sampleCount"}

Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch metric and statistic, as GetMetricData's ``MetricStat``."""

    namespace: str
    metric: str
    dimensions: Dimensions
    stat: str
    period: int

    def as_stat(self) -> dict[str, Any]:
        return {"Metric": {"Namespace": self.namespace, "MetricName": self.metric,
                           "Dimensions": [{"Name": k, "Value": v}
                                          for k, v in self.dimensions]},
                "Period": self.period, "Stat": self.stat}


@dataclass
class Series:
    """Datapoints newest first; ``error`` when CloudWatch could not answer this query."""

    points: list[tuple[datetime, float]] = field(default_factory=list)
    error: str = ""

    @property
    def newest(self) -> tuple[datetime, float] | None:
        return self.points[0] if self.points else None


@dataclass(frozen=True)
class Window:
    """``[start, end)``; ``end`` is a period boundary ``delay`` or more before now."""

    start: datetime
    end: datetime


def auto_delay(period: float) -> float:
    """Seconds to wait after a period ends before reading it (see the module doc)."""
    return 60.0 if period <= 60 else min(180.0, 0.4 * period)


def window(now: datetime, period: float, delay: float | None, periods: int) -> Window:
    """The last ``periods`` complete periods before ``now − delay``."""
    settle = auto_delay(period) if delay is None else delay
    cutoff = (now - timedelta(seconds=settle)).timestamp()
    end = math.floor(cutoff / period) * period
    return Window(datetime.fromtimestamp(end - period * periods, UTC),
                  datetime.fromtimestamp(end, UTC))


def fetch(client: BaseClient, queries: Iterable[MetricQuery], span: Window,
          where: str = "") -> dict[MetricQuery, Series]:
    """Every query's datapoints in ``span``: ⌈unique queries / 500⌉ GetMetricData calls."""
    unique = list(dict.fromkeys(queries))
    batches = [unique[i:i + MAX_QUERIES] for i in range(0, len(unique), MAX_QUERIES)]
    if len(batches) <= 1:
        return _batch(client, batches[0], span, where) if batches else {}
    out: dict[MetricQuery, Series] = {}
    with ThreadPoolExecutor(min(WORKERS, len(batches))) as pool:
        # Each task runs in a copy of this context: its calls count for this run.
        futures = [pool.submit(contextvars.copy_context().run, _batch, client, b, span, where)
                   for b in batches]
        for future in futures:
            out.update(future.result())
    return out


def _batch(client: BaseClient, batch: list[MetricQuery], span: Window,
           where: str) -> dict[MetricQuery, Series]:
    ids = {f"q{n}": query for n, query in enumerate(batch)}
    series = {key: Series() for key in ids}
    params: dict[str, Any] = {
        "MetricDataQueries": [{"Id": key, "MetricStat": q.as_stat(), "ReturnData": True}
                              for key, q in ids.items()],
        "StartTime": span.start, "EndTime": span.end, "ScanBy": "TimestampDescending"}
    while True:
        answer = call(client, "GetMetricData", where=where, **params)
        for result in answer.get("MetricDataResults", []):
            _merge(series.get(result["Id"]), result)
        token = answer.get("NextToken")
        if not token:
            break
        params["NextToken"] = token
    for one in series.values():
        one.points.sort(key=lambda p: p[0], reverse=True)  # pages may interleave
    return {ids[key]: value for key, value in series.items()}


def _merge(series: Series | None, result: Mapping[str, Any]) -> None:
    if series is None:
        return
    series.points += list(zip(result.get("Timestamps", []), result.get("Values", []),
                              strict=False))
    if result.get("StatusCode") in ("InternalError", "Forbidden"):
        messages = "; ".join(m.get("Value", "") for m in result.get("Messages", []))
        series.error = f"CloudWatch answered {result['StatusCode']} for this metric" + (
            f": {messages}" if messages else "")


def lightsail_series(client: BaseClient, instance: str, metric: str, stat: str, unit: str,
                     period: int, span: Window, where: str = "") -> Series:
    """A Lightsail instance metric (Lightsail keeps its metrics out of CloudWatch)."""
    answer = call(client, "GetInstanceMetricData", where=where, instanceName=instance,
                  metricName=metric, period=period, startTime=span.start, endTime=span.end,
                  unit=unit, statistics=[stat])
    key = _STAT_KEY.get(stat, stat)
    points = [(d["timestamp"], float(d[key])) for d in answer.get("metricData", [])
              if key in d]
    return Series(sorted(points, key=lambda p: p[0], reverse=True))
