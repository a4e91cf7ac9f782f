"""Result history as small line charts: downsampled series, drawn as inline SVG.

No JavaScript library and no build step: the server computes the polyline
points and a template draws them. A period of any length is reduced to at most
:data:`MAX_POINTS` buckets (the mean of each), so a 30-day page stays small.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from checks.base import Result

#: Selectable periods (label → length).
PERIODS: dict[str, timedelta] = {"1h": timedelta(hours=1), "6h": timedelta(hours=6),
                                 "24h": timedelta(hours=24), "7d": timedelta(days=7),
                                 "30d": timedelta(days=30)}
DEFAULT_PERIOD = "24h"
MAX_POINTS = 240
WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 10, 24
#: Metrics that describe the measurement, not the measured (never graphed).
NOT_GRAPHED = frozenset({"sample_seconds", "certificate_expires_in_seconds", "sent",
                         "received", "value", "total_bytes",
                         # CPU shares that are noise beside used/user/system/iowait/steal
                         "idle_percent", "nice_percent", "irq_percent", "softirq_percent",
                         "guest_percent", "guest_nice_percent"})


@dataclass(frozen=True)
class Family:
    """One kind of graph: which metrics it draws and in what unit."""

    key: str          # graph_cpu … (a message key)
    unit: str         # % | B/s | s | ""


@dataclass(frozen=True)
class Series:
    name: str
    css: str                      # s0 … s5
    lines: tuple[str, ...]        # SVG polyline "x,y x,y …" (one per unbroken stretch)
    last: float | None


@dataclass(frozen=True)
class Chart:
    family: Family
    target: str
    series: tuple[Series, ...]
    y_ticks: tuple[tuple[float, str], ...]    # (y pixel, label)
    x_ticks: tuple[tuple[float, str], ...]
    width: int = WIDTH
    height: int = HEIGHT


def family_of(check_type: str, metric: str) -> Family | None:
    """Which graph a metric belongs on (None: not graphed)."""
    if metric in NOT_GRAPHED:
        return None
    if metric.endswith("_percent"):
        key = {"cpu": "graph_cpu", "memory": "graph_memory", "disk": "graph_disk",
               "filecount": "graph_disk"}.get(check_type, "graph_other")
        return Family(key, "%")
    if metric.endswith("_bytes_per_second"):
        return Family("graph_network", "B/s")
    if metric.endswith("_seconds"):
        return Family("graph_response", "s")
    return None


def charts(check_type: str, target: str, history: Sequence[Result], start: datetime,
           end: datetime, zone: object) -> list[Chart]:
    """The charts of one target's history between ``start`` and ``end``."""
    grouped: dict[Family, dict[str, list[tuple[datetime, float]]]] = {}
    for result in history:
        if result.at is None:
            continue
        for name, value in result.metrics.items():
            family = family_of(check_type, name)
            if family is not None and _finite(value):
                grouped.setdefault(family, {}).setdefault(name, []).append((result.at,
                                                                            float(value)))
    order = ["graph_cpu", "graph_memory", "graph_disk", "graph_network", "graph_response",
             "graph_other"]
    return [_chart(family, target, data, start, end, zone)
            for family, data in sorted(grouped.items(), key=lambda kv: order.index(kv[0].key))]


def downsample(points: Iterable[tuple[datetime, float]], start: datetime, end: datetime,
               buckets: int = MAX_POINTS) -> list[tuple[int, float] | None]:
    """The mean of each of ``buckets`` equal slices of [start, end]; None where empty."""
    span = max((end - start).total_seconds(), 1e-9)
    sums = [0.0] * buckets
    counts = [0] * buckets
    for at, value in points:
        index = int((at - start).total_seconds() / span * buckets)
        if 0 <= index <= buckets:
            index = min(index, buckets - 1)
            sums[index] += value
            counts[index] += 1
    return [(i, sums[i] / counts[i]) if counts[i] else None for i in range(buckets)]


def _chart(family: Family, target: str, data: dict[str, list[tuple[datetime, float]]],
           start: datetime, end: datetime, zone: object) -> Chart:
    sampled = {name: downsample(points, start, end) for name, points in sorted(data.items())}
    values = [p[1] for s in sampled.values() for p in s if p is not None]
    low, high = _bounds(family, values)
    bucket = max((end - start).total_seconds(), 1e-9) / MAX_POINTS
    series = tuple(Series(name, f"s{i % 6}",
                          _lines(points, low, high, _max_gap(data[name], bucket)),
                          data[name][-1][1] if data[name] else None)
                   for i, (name, points) in enumerate(sampled.items()))
    return Chart(family, target, series, _y_ticks(family, low, high),
                 _x_ticks(start, end, zone))


def _bounds(family: Family, values: list[float]) -> tuple[float, float]:
    if family.unit == "%":
        return 0.0, 100.0
    high = max(values, default=1.0)
    return 0.0, (high * 1.1 if high > 0 else 1.0)


def _max_gap(points: list[tuple[datetime, float]], bucket: float) -> int:
    """Empty buckets a line may bridge: those between two samples of the usual spacing
    (a check run every 10 min leaves most 15 s buckets of an hour empty); a longer
    silence — the agent or the check stopped — breaks the line so it stays visible."""
    gaps = sorted((b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points))
    usual = gaps[len(gaps) // 2] if gaps else 0.0
    return max(2, math.ceil(2.5 * usual / bucket))


def _lines(points: list[tuple[int, float] | None], low: float, high: float,
           max_gap: int = 2) -> tuple[str, ...]:
    """Polylines, broken where more than ``max_gap`` buckets in a row are empty."""
    lines: list[str] = []
    current: list[str] = []
    empty = 0
    for point in points:
        if point is None:
            empty += 1
            if empty > max_gap and current:
                lines.append(" ".join(current))
                current = []
            continue
        empty = 0
        x = LEFT + (WIDTH - LEFT - RIGHT) * (point[0] + 0.5) / len(points)
        y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - (point[1] - low) / (high - low))
        current.append(f"{x:.1f},{y:.1f}")
    if current:
        lines.append(" ".join(current))
    return tuple(_single(line) for line in lines)


def _single(line: str) -> str:
    """A lone point is drawn as a short flat segment (a polyline of one point is invisible)."""
    if " " in line:
        return line
    x, y = (float(v) for v in line.split(","))
    return f"{x - 1.5:.1f},{y:.1f} {x + 1.5:.1f},{y:.1f}"


def _y_ticks(family: Family, low: float, high: float) -> tuple[tuple[float, str], ...]:
    ticks = []
    for i in range(5):
        value = low + (high - low) * i / 4
        y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - i / 4)
        ticks.append((y, format_value(value, family.unit)))
    return tuple(ticks)


def _x_ticks(start: datetime, end: datetime, zone: object) -> tuple[tuple[float, str], ...]:
    span = end - start
    fmt = "%H:%M" if span <= timedelta(days=1) else "%m-%d %H:%M"
    ticks = []
    for i in range(5):
        moment = start + span * i / 4
        x = LEFT + (WIDTH - LEFT - RIGHT) * i / 4
        ticks.append((x, moment.astimezone(zone).strftime(fmt)))  # type: ignore[arg-type]
    return tuple(ticks)


def format_value(value: float, unit: str) -> str:
    """``42%``, ``1.5 MB/s``, ``120 ms``."""
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "B/s":
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {prefix}B/s"
        return f"{value:.0f} B/s"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    return f"{value:g}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)
