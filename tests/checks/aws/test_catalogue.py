"""The catalogue: SPEC §2's table as data, and how overrides change it."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import checks
from checks.aws.catalogue import Item, Override, fmt, load, resolve
from checks.aws.publish import _cwagent_name
from checks.base import Result, Status
from checks.cloudwatch import CloudWatchCheck

#: SPEC §2 (NTT East 別紙5): each row and the catalogue items that answer it.
SPEC_ROWS: dict[str, set[str]] = {
    "ec2": {"connectivity", "status_check", "cpu", "memory", "disk", "swap", "network_in",
            "network_out", "load", "process_queue", "port", "process", "service", "log",
            "url", "plugins", "metric_plugins"},
    "ecs": {"cpu_reservation", "memory_reservation", "task_cpu", "task_memory",
            "task_network_in", "task_network_out", "port", "log", "plugins"},
    "eks": {"failed_nodes", "pods_per_node", "node_cpu", "node_memory", "node_filesystem",
            "pod_cpu", "pod_memory", "pod_cpu_of_limit", "pod_memory_of_limit",
            "pod_network_in", "pod_network_out", "port", "log", "plugins"},
    "lambda": {"errors", "duration", "throttles"},
    "efs": {"burst_credits", "client_connections", "io_limit", "permitted_throughput",
            "data_read_ops", "data_read_bytes", "data_write_ops", "data_write_bytes"},
    "rds": {"cpu", "freeable_memory", "swap"},
    "aurora": {"cpu", "freeable_memory"},
    "redshift": {"cpu", "disk_used", "query_duration"},
    "elasticache": {"cpu", "freeable_memory", "swap"},
    "dynamodb": {"read_throttles", "write_throttles", "system_errors", "user_errors"},
    "clb": {"healthy_hosts"},
    "nlb": {"healthy_hosts"},
    "alb": {"healthy_hosts", "target_5xx", "elb_5xx"},
    "cloudfront": {"error_rate_5xx"},
    "apigateway": {"requests", "errors_4xx", "errors_5xx", "cache_hits", "cache_misses",
                   "latency"},
    "waf": {"allowed", "blocked", "counted", "passed"},
    "sqs": {"in_flight", "dead_letter", "deleted"},
    "ses": {"bounce_rate", "complaint_rate", "send_failure_rate"},
    "connect": {"concurrent_calls", "calls_over_quota", "throttled_calls", "missed_calls",
                "packet_loss", "flow_errors", "flow_fatal_errors", "recording_upload_errors",
                "queue_size", "queue_max_wait"},
    "lightsail": {"status_check", "cpu", "burst_capacity", "network_in", "network_out",
                  "connectivity", "memory", "disk", "load", "port", "process", "service",
                  "log", "url"},
    "stepfunctions": {"executions_aborted", "executions_failed", "executions_started",
                      "executions_succeeded", "executions_timed_out", "execution_time",
                      "executions_throttled", "activities_failed", "activity_run_time",
                      "lambda_functions_failed", "lambda_function_run_time",
                      "service_integrations_failed", "service_integration_run_time"},
}


def test_the_catalogue_has_every_row_of_spec_section_2() -> None:
    catalogue = load()

    assert {k: set(c.items) for k, c in catalogue.components.items()} == SPEC_ROWS


def test_host_items_name_a_kanshi_check_that_exists() -> None:
    for component in load().components.values():
        for item in component.items.values():
            if item.source == "host":
                assert item.check in checks.REGISTRY, (component.key, item.key)


def test_the_in_guest_items_use_the_names_the_publisher_writes() -> None:
    ec2 = load().component("ec2").items
    published = {_cwagent_name(Result(Status.OK, "", target, metrics))[0]
                 for target, metrics in (("memory", {"used_percent": 1.0}),
                                         ("swap", {"used_percent": 1.0}),
                                         ("/", {"used_percent": 1.0, "size_bytes": 1.0}))}

    assert {ec2[i].metric for i in ("memory", "swap", "disk")} == published
    assert all(ec2[i].namespace == "CWAgent" and ec2[i].source == "cwagent"
               for i in ("memory", "swap", "disk"))


def test_the_disk_default_follows_spec_section_1() -> None:
    disk = load().component("ec2").items["disk"]

    assert (disk.warning, disk.critical, disk.alarm) == (80.0, 90.0, True)


@pytest.mark.parametrize(("comparison", "value", "status"), [
    pytest.param(">=", 90.0, Status.CRITICAL, id="at-critical"),
    pytest.param(">=", 85.0, Status.WARNING, id="between"),
    pytest.param("<=", 100.0, Status.CRITICAL, id="low-is-worse"),
    pytest.param("<", 1.0, Status.OK, id="strictly-below"),
])
def test_items_judge_with_their_comparison(comparison: str, value: float,
                                           status: Status) -> None:
    levels = {">=": (80, 90), "<=": (200, 128), "<": (None, 1)}.get(comparison, (80, 90))
    item = Item(title="t", namespace="N", metric="M", comparison=comparison,
                warning=levels[0], critical=levels[1])

    assert item.judge(value) is status


def test_overrides_apply_least_specific_first() -> None:
    cpu = load().component("ec2").items["cpu"]
    overrides = (
        Override(component="ec2", item="cpu", resource="i-1", critical=99),
        Override(component="ec2", item="cpu", tags={"Env": "dev"}, critical=95, warning=90),
        Override(component="ec2", critical=92),
    )

    mine = resolve(cpu, "ec2", overrides, {"i-1"}, {"Env": "dev"})
    dev = resolve(cpu, "ec2", overrides, {"i-2"}, {"Env": "dev"})
    other = resolve(cpu, "ec2", overrides, {"i-3"}, {})

    assert (mine.warning, mine.critical) == (90, 99)
    assert (dev.warning, dev.critical) == (90, 95)
    assert (other.warning, other.critical) == (80, 92)


def test_a_null_threshold_in_an_override_switches_that_level_off() -> None:
    cpu = load().component("ec2").items["cpu"]
    override = Override.model_validate({"component": "ec2", "item": "cpu", "warning": None})

    assert resolve(cpu, "ec2", (override,), {"i-1"}, {}).warning is None


@pytest.mark.parametrize(("override", "words"), [
    pytest.param({"component": "lamda"}, "did you mean 'lambda'", id="component"),
    pytest.param({"component": "ec2", "item": "cpux"}, "did you mean 'cpu'", id="item"),
    pytest.param({"component": "ec2", "item": "cpu", "warning": 95}, "before critical",
                 id="misordered"),
    pytest.param({"component": "rds", "item": "freeable_memory", "critical": 999e9},
                 "before critical", id="misordered-low-is-worse"),
    pytest.param({"component": "ec2", "period": "90s"}, "whole minutes", id="period"),
    pytest.param({"component": "ec2", "stat": "Median"}, "CloudWatch statistic", id="stat"),
])
def test_a_bad_override_is_refused_with_a_reason(override: dict[str, Any],
                                                 words: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=words):
        Override.model_validate(override)


@pytest.mark.parametrize(("config", "words"), [
    pytest.param({}, "nothing to watch", id="nothing"),
    pytest.param({"components": ["rdss"], "tags": {"a": "b"}}, "did you mean 'rds'",
                 id="component"),
    pytest.param({"resources": {"stepfunctions": ["orders"]}}, "state machine ARNs",
                 id="state-machine-by-name"),
])
def test_a_cloudwatch_config_that_cannot_work_is_refused(config: dict[str, Any],
                                                          words: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=words):
        CloudWatchCheck.Config.model_validate(
            {"accounts": [{"name": "a", "regions": ["ap-northeast-1"]}], **config})


@pytest.mark.parametrize(("value", "unit", "text"), [
    pytest.param(93.24, "percent", "93.2%", id="percent"),
    pytest.param(1.5 * 2**30, "bytes", "1.5 GiB", id="bytes"),
    pytest.param(12 * 2**20, "bytes_per_second", "12.0 MiB/s", id="rate"),
    pytest.param(0.25, "seconds", "0.25 s", id="seconds"),
    pytest.param(3.0, "count", "3", id="count"),
])
def test_values_read_as_a_person_expects(value: float, unit: str, text: str) -> None:
    assert fmt(value, unit) == text
