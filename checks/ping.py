"""Server liveness by ICMP ping (SPEC §1: every 10 minutes, 24/365).

One sweep per run over all targets through the agent's shared ICMP engine
(:mod:`checks.icmp`), one :class:`Result` per target. Thresholds default to
monitoring-plugins ``check_icmp``: loss 40 % / 80 %, round trip 200 ms / 500 ms
(judged on the average). Every probe lost is CRITICAL "unreachable" whatever
the thresholds say; a target we could not measure (name not resolved, ICMP not
permitted) is UNKNOWN, never CRITICAL.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Status, worst
from checks.icmp import DEFAULT_MAX_PPS, IcmpEngine, PingStats
from checks.types import Duration, DurationThresholds, PercentThresholds, expected_error

logger = logging.getLogger(__name__)

_MAX_COUNT = 100


class PingConfig(CheckConfig):
    """Options of a ``type: ping`` check (documented in config/example.yaml)."""

    targets: tuple[str, ...] = Field(min_length=1)
    count: int = 3
    probe_interval: Duration = 1.0
    probe_timeout: Duration = 1.0
    loss: PercentThresholds = PercentThresholds(warning=40, critical=80)
    rtt: DurationThresholds = DurationThresholds(warning=0.2, critical=0.5)
    method: Literal["auto", "raw", "dgram", "exec"] = "auto"
    max_pps: float = DEFAULT_MAX_PPS

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if isinstance(value, str):  # a lone "host" in YAML is one target, not letters
            value = [value]
        if not isinstance(value, list | tuple) or not value:
            raise expected_error("a list of at least one host name or IP address", value)
        seen: set[str] = set()
        for item in value:
            if not isinstance(item, str) or len(item.split()) != 1:
                raise expected_error("a host name or IP address without spaces", item)
            if item.strip() in seen:
                raise PydanticCustomError("kanshi", "expected each target once, got {got} twice",
                                          {"got": f'"{item.strip()}"'})
            seen.add(item.strip())
        return [item.strip() for item in value]

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        if value not in ("auto", "raw", "dgram", "exec"):
            raise expected_error("one of auto, raw, dgram, exec", value)
        return value

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= _MAX_COUNT:
            raise expected_error(f"a whole number of probes from 1 to {_MAX_COUNT}", value)
        return value

    @field_validator("max_pps", mode="before")
    @classmethod
    def _max_pps(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise expected_error("packets per second, 0 or more (0 = unpaced)", value)
        return value

    def shortest_sweep(self) -> float:
        """Seconds a sweep takes at least, so a loader can compare it with the timeout."""
        pacing = len(self.targets) * self.count / self.max_pps if self.max_pps else 0.0
        return max((self.count - 1) * self.probe_interval, pacing) + self.probe_timeout


class PingCheck(Check):
    """ICMP echo to every target; loss then round-trip time decide the status."""

    type_name: ClassVar[str] = "ping"
    Config: ClassVar[type[CheckConfig]] = PingConfig
    default_interval: ClassVar[float] = 600.0  # SPEC §1: ICMP ping every 10 min

    @classmethod
    def minimum_timeout(cls, config: CheckConfig) -> float:
        assert isinstance(config, PingConfig)
        return config.shortest_sweep()

    def run(self) -> list[Result]:
        config: PingConfig = self.config  # type: ignore[assignment]
        engine = self._engine(config)
        targets = list(config.targets)
        needed = engine.estimate(len(targets), count=config.count,
                                 interval=config.probe_interval, timeout=config.probe_timeout)
        if needed > self.timeout:
            return [Result(Status.UNKNOWN, _too_slow(t, config, needed, self.timeout), t)
                    for t in targets]
        try:
            stats = engine.ping_sync(targets, count=config.count,
                                     interval=config.probe_interval,
                                     timeout=config.probe_timeout, wait=self.timeout)
        except TimeoutError:
            return [Result(Status.UNKNOWN, _overran(t, self.timeout), t) for t in targets]
        return [judge(stats[t], config) for t in targets]

    def _engine(self, config: PingConfig) -> IcmpEngine:
        """The agent's shared engine: one ICMP socket for every ping check alike."""
        key = "icmp"
        if config.method != "auto" or config.max_pps != DEFAULT_MAX_PPS:
            key = f"icmp:{config.method}:{config.max_pps:g}"
        engine: IcmpEngine = self.context.shared.get(
            key, lambda: IcmpEngine(method=config.method, max_pps=config.max_pps))
        return engine


def judge(stats: PingStats, config: PingConfig) -> Result:
    """The result for one target's :class:`PingStats`."""
    label = _label(stats)
    if stats.error:
        return Result(Status.UNKNOWN, f"{label}: {stats.error}", stats.target)
    metrics = _metrics(stats)
    if not stats.received:
        text = (f"{label} unreachable: {stats.sent}/{stats.sent} probes lost "
                f"(timeout {_seconds(config.probe_timeout)} each)")
        return Result(Status.CRITICAL, _with_reason(text, stats), stats.target, metrics)
    loss_status = config.loss.judge(stats.loss_percent)
    rtt_status = config.rtt.judge(stats.rtt_avg or 0.0)
    loss = f"{stats.loss_percent:.0f}% loss{_over(loss_status, config.loss, _percent)}"
    rtt = f"rtt avg {_ms(stats.rtt_avg or 0.0)}{_over(rtt_status, config.rtt, _ms)}"
    replies = f"({stats.received}/{stats.sent} replies)"
    if rtt_status.is_problem and not loss_status.is_problem:
        text = f"{label} slow: {rtt}, {loss} {replies}"
    else:
        head = "losing packets" if loss_status.is_problem else "reachable"
        head += " and slow" if loss_status.is_problem and rtt_status.is_problem else ""
        text = f"{label} {head}: {loss}, {rtt} {replies}"
    status = worst([loss_status, rtt_status])
    return Result(status, _with_reason(text, stats), stats.target, metrics)


def _metrics(stats: PingStats) -> dict[str, float]:
    metrics = {"loss_percent": stats.loss_percent, "sent": float(stats.sent),
               "received": float(stats.received)}
    if stats.received:
        metrics |= {"rtt_min_seconds": stats.rtt_min or 0.0,
                    "rtt_avg_seconds": stats.rtt_avg or 0.0,
                    "rtt_max_seconds": stats.rtt_max or 0.0}
    return metrics


def _label(stats: PingStats) -> str:
    """``db1 (10.0.0.5)`` for names, the address alone for addresses."""
    if stats.address and stats.address != stats.target:
        return f"{stats.target} ({stats.address})"
    return stats.target


def _with_reason(text: str, stats: PingStats) -> str:
    return f"{text}; {stats.reason}" if stats.reason else text


def _over(status: Status, thresholds: PercentThresholds | DurationThresholds,
          show: Any) -> str:
    if status is Status.CRITICAL:
        return f" (critical at {show(thresholds.critical)})"
    if status is Status.WARNING:
        return f" (warning at {show(thresholds.warning)})"
    return ""


def _percent(value: float) -> str:
    return f"{value:g}%"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1000:g} ms"


def _too_slow(target: str, config: PingConfig, needed: float, timeout: float) -> str:
    targets = f"{len(config.targets)} target{'s' if len(config.targets) > 1 else ''}"
    return (f"{target}: not pinged: {targets} × {config.count} probes "
            f"({_seconds(config.probe_interval)} apart, {_seconds(config.probe_timeout)} "
            f"timeout) need about {needed:.1f} s but the check timeout is {timeout:g} s; "
            "lower count, probe_interval or probe_timeout, or raise the check's timeout")


def _overran(target: str, timeout: float) -> str:
    return (f"{target}: no verdict: the ping sweep did not finish within the check "
            f"timeout ({timeout:g} s); raise the check's timeout or ping fewer targets")
