"""Graph data: bounded, gaps kept, metrics sorted into the right graph."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from agent.web.graphs import MAX_POINTS, charts, downsample, family_of, format_value
from checks.base import Result, Status

START = datetime(2025, 1, 6, tzinfo=UTC)
ZONE = zoneinfo.ZoneInfo("Asia/Tokyo")


def test_a_month_of_minutes_is_reduced_to_a_bounded_number_of_points() -> None:
    points = [(START + timedelta(minutes=m), float(m % 60)) for m in range(30 * 24 * 60)]
    sampled = downsample(points, START, START + timedelta(days=30))
    assert len(sampled) == MAX_POINTS
    assert all(p is not None for p in sampled)


def test_an_empty_stretch_breaks_the_line() -> None:
    history = [Result(Status.OK, "", "cpu", {"user_percent": 10.0}, "cpu",
                      START + timedelta(minutes=m)) for m in (*range(0, 20), *range(40, 60))]
    (chart,) = charts("cpu", "cpu", history, START, START + timedelta(hours=1), ZONE)
    assert len(chart.series[0].lines) == 2


@pytest.mark.parametrize(("check", "metric", "key"), [
    pytest.param("cpu", "user_percent", "graph_cpu", id="cpu"),
    pytest.param("memory", "used_percent", "graph_memory", id="memory"),
    pytest.param("disk", "used_percent", "graph_disk", id="disk"),
    pytest.param("network", "in_bytes_per_second", "graph_network", id="network"),
    pytest.param("ping", "rtt_avg_seconds", "graph_response", id="response"),
])
def test_each_metric_goes_on_its_graph(check: str, metric: str, key: str) -> None:
    family = family_of(check, metric)
    assert family is not None and family.key == key


def test_measurement_details_are_not_graphed() -> None:
    assert family_of("cpu", "sample_seconds") is None
    assert family_of("cpu", "idle_percent") is None


def test_values_read_as_people_expect() -> None:
    assert format_value(0.12, "s") == "120 ms"
    assert format_value(2_500_000, "B/s") == "2.5 MB/s"
    assert format_value(42.4, "%") == "42%"
