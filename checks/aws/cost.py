"""What AWS monitoring costs: API calls and metrics requested, counted and priced.

Every client kanshi makes carries a botocore ``before-parameter-build`` hook
(:func:`install_meter`) that adds each call to the :class:`Usage` of the code
running it (a context variable, so checks sharing a client count apart, and
worker threads started with ``contextvars.copy_context()`` count for their run).

Prices are CloudWatch's public list prices for US East (N. Virginia),
https://aws.amazon.com/cloudwatch/pricing/ ("Paid tier" → API, Metrics,
Alarms): GetMetricData is billed per metric requested, the other CloudWatch
APIs per request; EC2/ELB/RDS Describe calls, the Resource Groups Tagging API,
STS and AWS Health cost nothing. Other regions differ by a few percent; the
monthly figure is an estimate before the free tier (1 million API requests a
month, which does not cover GetMetricData).
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: USD per metric requested with GetMetricData.
GET_METRIC_DATA_PER_METRIC = 0.01 / 1000
#: USD per request of the other CloudWatch APIs (ListMetrics, PutMetricData, …).
CLOUDWATCH_REQUEST = 0.01 / 1000
#: USD per standard-resolution metric alarm per month.
ALARM_PER_MONTH = 0.10
#: USD per custom metric per month (first 10,000 metrics), e.g. published host metrics.
CUSTOM_METRIC_PER_MONTH = 0.30
#: AWS bills a month as 730 hours (its pricing calculator's convention).
MONTH_SECONDS = 730 * 3600.0
#: The service whose calls are billed (IAM prefix).
BILLED_SERVICE = "cloudwatch"

_CURRENT: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("kanshi_aws_usage",
                                                                        default=None)


@dataclass
class Usage:
    """API calls (``cloudwatch:GetMetricData`` → count) and metrics requested."""

    calls: Counter[str] = field(default_factory=Counter)
    metrics_requested: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, action: str, metrics: int = 0) -> None:
        with self._lock:
            self.calls[action] += 1
            self.metrics_requested += metrics

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def billed_requests(self) -> int:
        """CloudWatch requests billed per request (all but GetMetricData)."""
        return sum(n for action, n in self.calls.items()
                   if action.startswith(f"{BILLED_SERVICE}:")
                   and action != "cloudwatch:GetMetricData")

    def cost(self) -> float:
        """USD these calls cost."""
        return (self.metrics_requested * GET_METRIC_DATA_PER_METRIC
                + self.billed_requests() * CLOUDWATCH_REQUEST)


@contextmanager
def metering(usage: Usage | None = None) -> Iterator[Usage]:
    """Count the AWS calls made inside the block (and in tasks copying its context)."""
    usage = usage if usage is not None else Usage()
    token = _CURRENT.set(usage)
    try:
        yield usage
    finally:
        _CURRENT.reset(token)


def install_meter(client: Any) -> None:
    """Count every call ``client`` makes into the current :class:`Usage`."""
    prefix = _iam_prefix(client.meta.service_model.endpoint_prefix)
    client.meta.events.register("before-parameter-build",
                                lambda params, model, **_: _count(prefix, params, model))


def _count(prefix: str, params: dict[str, Any], model: Any) -> None:
    usage = _CURRENT.get()
    if usage is None:
        return
    metrics = 0
    if model.name == "GetMetricData":  # billed per metric: expressions reuse metrics
        metrics = sum(1 for q in params.get("MetricDataQueries", ()) if "MetricStat" in q)
    usage.add(f"{prefix}:{model.name}", metrics)


def _iam_prefix(endpoint_prefix: str) -> str:
    return {"monitoring": "cloudwatch", "tagging": "tag"}.get(endpoint_prefix,
                                                               endpoint_prefix)


@dataclass(frozen=True)
class Estimate:
    """A month of one check at its interval."""

    runs: float
    metrics: float
    requests: float
    usd: float


def monthly(metrics_per_run: float, billed_requests_per_run: float,
            interval: float) -> Estimate:
    """What a month costs when every run requests and calls as given."""
    runs = MONTH_SECONDS / interval
    metrics, requests = metrics_per_run * runs, billed_requests_per_run * runs
    usd = metrics * GET_METRIC_DATA_PER_METRIC + requests * CLOUDWATCH_REQUEST
    return Estimate(runs, metrics, requests, usd)
