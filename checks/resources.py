"""Host resources (NTT EC2 row): ``cpu``, ``memory`` (with swap), ``load``, ``network``.

Four check types in one module because they share the counter sampler; each has
its own thresholds and interval, and returns one result per item (``cpu``;
``memory`` and ``swap``; ``load``; one per network interface).

CPU and network are **rates** between two readings of cumulative counters
(``/proc/stat``, ``/proc/net/dev`` via psutil), never totals since boot. The
previous reading is kept in ``context.state`` (JSON) with the boot id and the
monotonic time it was taken. Without a usable previous reading — first run, a
reboot, a reading older than ``max_sample_age``, an interface that is new or
whose counters went back (re-created, driver reset, a 32-bit counter wrapped:
the three cannot be told apart, so none is guessed) — the check takes two
readings ``first_sample`` apart within this run instead (``null``: no rate until
the next run).

Definitions:

- CPU used % = 100 − idle − iowait, of all CPU time including steal, as psutil's
  ``cpu_percent`` and top(1) count it (iowait is idle time waiting for I/O;
  steal is time the hypervisor gave another guest — on EC2 a throttled burstable
  instance shows it, so it counts as used and is also reported on its own);
- memory used % = (total − available) / total, ``available`` being the kernel's
  MemAvailable estimate that free(1) shows: page cache that can be dropped is
  not "used";
- swap used % = (SwapTotal − SwapFree) / SwapTotal; no swap is OK "no swap";
- load average per CPU = load / online CPUs, as Zabbix's template judges it.

Defaults follow the Zabbix "Linux by Zabbix agent" template: CPU critical 90 %
({$CPU.UTIL.CRIT}), memory 90 % ({$MEMORY.UTIL.MAX}), swap warning at 50 % used
({$SWAP.PFREE.MIN.WARN}: 50 % free), 1-minute load per CPU warning 1.5
({$LOAD_AVG_PER_CPU.MAX.WARN}). Network has no default thresholds: link speeds
differ too much.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator

from checks.base import Check, CheckConfig, Clock, Result, Status, worst
from checks.types import Duration, OptionalDuration, PercentThresholds, Thresholds, expected_error

logger = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Key in ``context.state`` holding the last counter reading.
STATE_KEY = "counters"

#: A named set of counters per item, e.g. ``{"eth0": {"bytes_recv": 12, …}}``.
Counters = dict[str, dict[str, float]]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's random id (changes at every boot); "" where the kernel lacks it."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# -- counters sampled between runs ---------------------------------------------------------


@dataclass
class Delta:
    """How much each counter of one item grew, over how many seconds."""

    counters: dict[str, float]
    seconds: float
    note: str = ""

    def rate(self, name: str) -> float:
        return self.counters.get(name, 0.0) / self.seconds


@dataclass
class Sampled:
    """Per item: a :class:`Delta`, or why there is none yet."""

    deltas: dict[str, Delta] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)


@dataclass
class Reading:
    at: float
    items: Counters


class CounterSampler:
    """Differences of cumulative counters between runs, kept in ``state``."""

    def __init__(self, state: MutableMapping[str, Any], clock: Clock,
                 read: Callable[[], Counters], *, first_sample: float | None,
                 max_age: float, boot: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.state, self.clock, self.read = state, clock, read
        self.first_sample, self.max_age, self.boot = first_sample, max_age, boot
        self.sleep = sleep

    def measure(self) -> Sampled:
        """Deltas since the previous run (or over a short sample where there is none)."""
        now = Reading(self.clock.monotonic(), self.read())
        previous = self._previous(now.at)
        fresh = self._without_base(previous, now)
        base: dict[str, Reading] = {} if isinstance(previous, str) else \
            {k: previous for k in now.items if k not in fresh}
        notes: dict[str, str] = {}
        if fresh and self.first_sample:
            base.update(dict.fromkeys(fresh, now))
            now, notes, fresh = self._sample(), fresh, {}
        out = Sampled(pending=fresh)
        self._compare(out, base, now, notes)
        for item in now.items.keys() - base.keys() - fresh.keys():
            out.pending[item] = "appeared during the sample"
        self.state[STATE_KEY] = {"boot": self.boot, "at": now.at, "items": now.items}
        return out

    def _previous(self, at: float) -> Reading | str:
        """The stored reading, or why it cannot be used."""
        saved = self.state.get(STATE_KEY)
        if not isinstance(saved, dict) or not isinstance(saved.get("items"), dict):
            return "first run"
        if saved.get("boot") != self.boot:
            return "the host rebooted since the last run"
        if not isinstance(saved.get("at"), int | float):
            return "first run"
        age = at - float(saved["at"])
        if age <= 0:
            return "the last reading is not older than this one (clock went back?)"
        if age > self.max_age:
            return f"the last reading is {age:.0f} s old (more than max_sample_age)"
        return Reading(float(saved["at"]), saved["items"])

    def _without_base(self, previous: Reading | str, now: Reading) -> dict[str, str]:
        """Items that need a fresh base, with the reason."""
        if isinstance(previous, str):
            return dict.fromkeys(now.items, previous)
        fresh = {}
        for item, counters in now.items.items():
            before = previous.items.get(item)
            if not isinstance(before, dict):
                fresh[item] = "new since the last run"
            elif any(counters[k] < before.get(k, 0.0) for k in counters):
                fresh[item] = ("counters went back since the last run (reset, re-created "
                               "or wrapped)")
        return fresh

    def _sample(self) -> Reading:
        assert self.first_sample is not None
        self.sleep(self.first_sample)
        return Reading(self.clock.monotonic(), self.read())

    def _compare(self, out: Sampled, base: Mapping[str, Reading], now: Reading,
                 notes: Mapping[str, str]) -> None:
        for item, start in base.items():
            counters = now.items.get(item)
            if counters is None:
                continue  # gone during the sample: no result, as if removed before
            before, seconds = start.items[item], now.at - start.at
            deltas = {k: v - before.get(k, 0.0) for k, v in counters.items()}
            if seconds <= 0:
                out.pending[item] = "no time passed between the two readings"
                continue
            if any(d < 0 for d in deltas.values()):
                out.pending[item] = "counters went back during the sample"
                continue
            note = f"{notes[item]}: measured over a {seconds:.1f} s sample" \
                if item in notes else ""
            out.deltas[item] = Delta(deltas, seconds, note)


class SampledConfig(CheckConfig):
    """Options of the checks that compute rates between runs."""

    #: Seconds between two readings when no usable previous one exists; null = none.
    first_sample: OptionalDuration = 1.0
    #: A previous reading older than this is not used (an average over a day of
    #: downtime says nothing about now).
    max_sample_age: Duration = 3600.0


class SampledCheck(Check):
    """Base of ``cpu`` and ``network``: a sampler over ``context.state``."""

    config: SampledConfig
    default_interval: ClassVar[float] = 60.0

    @classmethod
    def minimum_timeout(cls, config: CheckConfig) -> float:
        assert isinstance(config, SampledConfig)
        return config.first_sample or 0.0

    def sampler(self, read: Callable[[], Counters]) -> CounterSampler:
        sample = self.config.first_sample
        if sample is not None:
            sample = min(sample, self.timeout / 2)  # leave time to read and judge
        return CounterSampler(self.context.state, self.context.clock, read,
                              first_sample=sample, max_age=self.config.max_sample_age,
                              boot=boot_id())


def _pending(target: str, reason: str) -> Result:
    return Result(Status.OK, f"{target}: no rate yet ({reason}); the next run measures it",
                  target)


# -- cpu -----------------------------------------------------------------------------------


class CpuConfig(SampledConfig):
    """Options of a ``type: cpu`` check."""

    threshold: PercentThresholds = PercentThresholds(warning=80.0, critical=90.0)
    iowait: PercentThresholds = PercentThresholds()
    steal: PercentThresholds = PercentThresholds()


def read_cpu_times() -> Counters:
    import psutil

    return {"cpu": dict(psutil.cpu_times()._asdict())}


def cpu_percentages(delta: dict[str, float]) -> dict[str, float] | None:
    """Percent of CPU time per state; ``None`` when no CPU time passed."""
    # The kernel counts guest time inside user/nice too (psutil _cpu_tot_time).
    total = sum(delta.values()) - delta.get("guest", 0.0) - delta.get("guest_nice", 0.0)
    if total <= 0:
        return None
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    share = {k: 100.0 * delta.get(k, 0.0) / total
             for k in ("user", "nice", "system", "iowait", "irq", "softirq", "steal", "idle")}
    share["used"] = 100.0 * (total - idle) / total
    return share


class CpuCheck(SampledCheck):
    """CPU use over the time since the last run."""

    type_name: ClassVar[str] = "cpu"
    config: CpuConfig
    Config: ClassVar[type[CpuConfig]] = CpuConfig

    def run(self) -> Result:
        config = self.config
        sampled = self.sampler(read_cpu_times).measure()
        if "cpu" in sampled.pending or "cpu" not in sampled.deltas:
            return _pending("cpu", sampled.pending.get("cpu", "no reading"))
        delta = sampled.deltas["cpu"]
        share = cpu_percentages(delta.counters)
        if share is None:
            return _pending("cpu", "no CPU time passed between the readings")
        return judge_cpu(share, delta, config)


def judge_cpu(share: dict[str, float], delta: Delta, config: CpuConfig) -> Result:
    """The result for CPU shares measured over ``delta.seconds``."""
    checks = [("used", config.threshold), ("iowait", config.iowait), ("steal", config.steal)]
    statuses = [t.judge(share[k]) for k, t in checks]
    breaches = [f"{k}{_breach(s, t, '{:g}%')}"
                for s, (k, t) in zip(statuses, checks, strict=True) if s.is_problem]
    text = (f"CPU {share['used']:.1f}% used over {delta.seconds:.0f} s (user "
            f"{share['user'] + share['nice']:.1f}%, system {share['system']:.1f}%, iowait "
            f"{share['iowait']:.1f}%, steal {share['steal']:.1f}%)")
    if breaches:
        text += f" — {', '.join(breaches)}"
    if delta.note:
        text += f"; {delta.note}"
    metrics = {f"{k}_percent": v for k, v in share.items()}
    metrics["sample_seconds"] = delta.seconds
    return Result(worst(statuses), text, "cpu", metrics)


# -- memory --------------------------------------------------------------------------------


class MemoryConfig(CheckConfig):
    """Options of a ``type: memory`` check."""

    threshold: PercentThresholds = PercentThresholds(warning=80.0, critical=90.0)
    swap: PercentThresholds = PercentThresholds(warning=50.0)


class MemoryCheck(Check):
    """Memory in use (total − available) and swap in use."""

    type_name: ClassVar[str] = "memory"
    config: MemoryConfig
    Config: ClassVar[type[MemoryConfig]] = MemoryConfig
    default_interval: ClassVar[float] = 60.0

    def run(self) -> list[Result]:
        import psutil

        config = self.config
        mem, swap = psutil.virtual_memory(), psutil.swap_memory()
        return [judge_memory(mem.total, mem.available, config.threshold),
                judge_swap(swap.total, swap.free, config.swap)]


def judge_memory(total: int, available: int, threshold: PercentThresholds) -> Result:
    """Memory used % as free(1)'s "available" implies it."""
    used = total - available
    percent = 100.0 * used / total if total else 0.0
    status = threshold.judge(percent)
    text = (f"memory {percent:.1f}% used ({_bytes(used)} of {_bytes(total)}, "
            f"{_bytes(available)} available){_breach(status, threshold, '{:g}%')}")
    return Result(status, text, "memory", {
        "used_percent": percent, "used_bytes": float(used),
        "available_bytes": float(available), "total_bytes": float(total)})


def judge_swap(total: int, free: int, threshold: PercentThresholds) -> Result:
    """Swap used %; a host without swap is OK."""
    if total <= 0:
        return Result(Status.OK, "no swap configured", "swap", {"total_bytes": 0.0})
    used = total - free
    percent = 100.0 * used / total
    status = threshold.judge(percent)
    text = (f"swap {percent:.1f}% used ({_bytes(used)} of {_bytes(total)})"
            f"{_breach(status, threshold, '{:g}%')}")
    return Result(status, text, "swap", {
        "used_percent": percent, "used_bytes": float(used), "total_bytes": float(total)})


# -- load ----------------------------------------------------------------------------------


class LoadConfig(CheckConfig):
    """Options of a ``type: load`` check."""

    per_cpu: bool = True
    load1: Thresholds = Thresholds(warning=1.5)
    load5: Thresholds = Thresholds()
    load15: Thresholds = Thresholds()


class LoadCheck(Check):
    """Load average over 1, 5 and 15 minutes, by default per online CPU."""

    type_name: ClassVar[str] = "load"
    config: LoadConfig
    Config: ClassVar[type[LoadConfig]] = LoadConfig
    default_interval: ClassVar[float] = 60.0

    def run(self) -> Result:
        config = self.config
        return judge_load(os.getloadavg(), os.cpu_count() or 1, config)


def judge_load(loads: tuple[float, float, float], cpus: int, config: LoadConfig) -> Result:
    """The result for the three load averages on ``cpus`` online CPUs."""
    per_cpu = tuple(v / cpus for v in loads)
    judged = per_cpu if config.per_cpu else loads
    windows = (("1-min", config.load1), ("5-min", config.load5), ("15-min", config.load15))
    statuses = [t.judge(v) for (_, t), v in zip(windows, judged, strict=True)]
    what = " per CPU" if config.per_cpu else ""
    breaches = "".join(
        f"; {name}{what} {v:.2f}{_breach(s, t, '{:g}')}"
        for (name, t), v, s in zip(windows, judged, statuses, strict=True) if s.is_problem)
    text = (f"load average {_three(loads)} (1, 5, 15 min) on {cpus} CPUs = "
            f"{_three(per_cpu)} per CPU{breaches}")
    metrics = {"load1": loads[0], "load5": loads[1], "load15": loads[2],
               "load1_per_cpu": per_cpu[0], "load5_per_cpu": per_cpu[1],
               "load15_per_cpu": per_cpu[2], "cpus": float(cpus)}
    return Result(worst(statuses), text, "load", metrics)


def _three(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# -- network -------------------------------------------------------------------------------

#: psutil's names → our metric names (per second).
_NET_RATES = {
    "bytes_recv": "in_bytes_per_second", "bytes_sent": "out_bytes_per_second",
    "packets_recv": "in_packets_per_second", "packets_sent": "out_packets_per_second",
    "errin": "in_errors_per_second", "errout": "out_errors_per_second",
    "dropin": "in_drops_per_second", "dropout": "out_drops_per_second",
}


def _globs(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise expected_error("a list of interface names or globs such as eth*", value)
    return value


#: Interface names or fnmatch globs; a lone string is one name.
Globs = Annotated[tuple[str, ...], BeforeValidator(_globs)]


class NetworkConfig(SampledConfig):
    """Options of a ``type: network`` check."""

    include: Globs = ()
    exclude: Globs = ("lo",)
    #: Thresholds in bytes per second, received / sent.
    inbound: Thresholds = Thresholds()
    outbound: Thresholds = Thresholds()

    def selects(self, name: str) -> bool:
        """Whether interface ``name`` is watched: an exact ``include`` beats ``exclude``."""
        if name in self.include:
            return True
        if self.include and not any(fnmatch.fnmatchcase(name, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in self.exclude)

    def named(self) -> list[str]:
        """Interfaces named exactly (no glob characters) in ``include``."""
        return [n for n in self.include if not any(c in n for c in "*?[")]


def read_net_counters() -> Counters:
    import psutil

    # nowrap=False: psutil would otherwise add the old value on a decrease and
    # hide a reset from us (and disagree with /proc/net/dev).
    nics = psutil.net_io_counters(pernic=True, nowrap=False)
    return {name: dict(c._asdict()) for name, c in nics.items()}


class NetworkCheck(SampledCheck):
    """Receive and send rates per interface since the last run."""

    type_name: ClassVar[str] = "network"
    config: NetworkConfig
    Config: ClassVar[type[NetworkConfig]] = NetworkConfig

    def run(self) -> list[Result]:
        config = self.config

        def read() -> Counters:
            return {k: v for k, v in read_net_counters().items() if config.selects(k)}

        sampled = self.sampler(read).measure()
        results = [judge_network(n, d, config) for n, d in sorted(sampled.deltas.items())]
        results += [_pending(n, why) for n, why in sorted(sampled.pending.items())]
        seen = set(sampled.deltas) | set(sampled.pending)
        results += [Result(Status.CRITICAL, f"{n}: no such network interface (named in "
                           "include); is it down and removed, or renamed?", n)
                    for n in config.named() if n not in seen]
        if not results:
            return [Result(Status.UNKNOWN, "no network interface matches include/exclude "
                           f"(present: {', '.join(sorted(read_net_counters()))})")]
        return results


def judge_network(name: str, delta: Delta, config: NetworkConfig) -> Result:
    """The result for one interface's counter deltas."""
    rates = {metric: delta.rate(key) for key, metric in _NET_RATES.items()}
    inbound, outbound = rates["in_bytes_per_second"], rates["out_bytes_per_second"]
    statuses = [config.inbound.judge(inbound), config.outbound.judge(outbound)]
    text = (f"{name} in {_rate(inbound)}{_breach(statuses[0], config.inbound, '{:g} B/s')}"
            f", out {_rate(outbound)}{_breach(statuses[1], config.outbound, '{:g} B/s')}"
            f" over {delta.seconds:.0f} s")
    errors = rates["in_errors_per_second"] + rates["out_errors_per_second"]
    if errors:
        text += f"; {errors:.2f} errors/s"
    if delta.note:
        text += f"; {delta.note}"
    rates["sample_seconds"] = delta.seconds
    return Result(worst(statuses), text, name, rates)


# -- formatting ----------------------------------------------------------------------------


def _breach(status: Status, thresholds: Thresholds, form: str) -> str:
    limit = {Status.CRITICAL: thresholds.critical, Status.WARNING: thresholds.warning}
    value = limit.get(status)
    return "" if value is None else f" ≥ {status.name.lower()} {form.format(value)}"


def _bytes(count: float) -> str:
    """``1.5 GiB`` — binary units, as free -h shows them."""
    value, index = float(count), 0
    while value >= 1024 and index < len(_UNITS) - 1:
        value, index = value / 1024, index + 1
    return f"{count:.0f} B" if index == 0 else f"{value:.1f} {_UNITS[index]}"


def _rate(per_second: float) -> str:
    """Bytes/s in binary units, with the bit rate network people think in."""
    return f"{_bytes(per_second)}/s ({per_second * 8 / 1e6:.2f} Mbit/s)"
