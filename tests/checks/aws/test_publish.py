"""Host metrics published to CloudWatch (moto) land under the CloudWatch agent's names,
so the cloudwatch check's ``cwagent`` items read them back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agent.clock import FrozenClock
from checks.aws.publish import MAX_PER_CALL, CloudWatchPublisher, PublishSettings, imds
from checks.base import Result, Status
from checks.cloudwatch import CloudWatchCheck
from checks.disk import disk_usage
from checks.resources import judge_memory, judge_swap
from checks.types import PercentThresholds
from tests.checks.aws.conftest import ACCOUNT, REGION, START, by_target, client, make, run_instances
from tests.support.http_server import HttpServer, Reply

LIMITS = PercentThresholds(warning=80, critical=90)


def host_results(at: Any) -> list[Result]:
    """What kanshi's own memory and disk checks return on a host."""
    import os

    disk = disk_usage(os.statvfs("/"))
    results = [judge_memory(8 * 2**30, 1 * 2**30, LIMITS), judge_swap(2**30, 2**29, LIMITS),
               Result(Status.OK, disk.text, "/", disk.metrics),
               Result(Status.OK, "inodes", "/", {"used_percent": 3.0, "used_inodes": 5.0}),
               Result(Status.OK, "load", "load", {"load1": 0.5})]
    return [r.stamped("host", at, 0.1) for r in results]


@pytest.mark.usefixtures("aws")
def test_published_memory_disk_and_swap_are_read_back_by_the_cloudwatch_check(
        clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    publisher = CloudWatchPublisher(PublishSettings(region=REGION, instance_id=instance))

    publisher.publish(host_results(START - timedelta(minutes=4)))

    assert publisher.last_error == "" and publisher.published == 3
    results = by_target(make(CloudWatchCheck, clock, accounts=[ACCOUNT],
                             resources={"ec2": [instance]}).execute())
    memory = results[f"{REGION}/ec2/{instance}/memory"]
    assert memory.status is Status.WARNING and memory.metrics == {"memory_percent": 87.5}
    assert results[f"{REGION}/ec2/{instance}/swap"].metrics == {"swap_percent": 50.0}
    assert results[f"{REGION}/ec2/{instance}/disk[/]"].status in (Status.OK, Status.WARNING,
                                                                   Status.CRITICAL)


@pytest.mark.usefixtures("aws")
def test_publishing_batches_1000_metrics_per_put_metric_data() -> None:
    publisher = CloudWatchPublisher(PublishSettings(region=REGION,
                                                    instance_id="i-0123456789abcdef0"))
    calls: list[int] = []
    publisher._cloudwatch().meta.events.register(
        "before-parameter-build.cloudwatch.PutMetricData",
        lambda params, **_: calls.append(len(params["MetricData"])))
    disks = [Result(Status.OK, "d", f"/srv/{n}", {"used_percent": 1.0, "size_bytes": 1.0})
             .stamped("disk", START, 0.0) for n in range(2500)]

    publisher.publish(disks)

    assert calls == [MAX_PER_CALL, MAX_PER_CALL, 500]
    pages = client("cloudwatch").get_paginator("list_metrics").paginate(
        Namespace="CWAgent", MetricName="disk_used_percent")
    paths = {d["Value"] for page in pages for m in page["Metrics"] for d in m["Dimensions"]
             if d["Name"] == "path"}
    assert len(paths) == 2500


def test_a_failure_to_publish_is_kept_and_logged_never_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    with HttpServer() as server:  # a metadata service that refuses: not on EC2
        server.respond(Reply(403), Reply(403))
        publisher = CloudWatchPublisher(PublishSettings(region=REGION,
                                                        imds_endpoint=server.url))
        publisher.publish(host_results(START))

    assert "HTTP Error 403" in publisher.last_error and "set instance_id" in publisher.last_error
    assert "publishing host metrics to CloudWatch failed" in caplog.text


@pytest.mark.real
def test_the_instance_id_comes_from_imdsv2_with_a_session_token() -> None:
    with HttpServer() as server:
        server.respond(Reply(200, "token-abc"), Reply(200, "i-0fedcba9876543210\n"))

        found = imds(server.url, "instance-id", 2.0)

        token, read = server.requests
    assert found == "i-0fedcba9876543210"
    assert token.method == "PUT" and token.path == "/latest/api/token"
    assert read.path == "/latest/meta-data/instance-id"
    assert read.headers["x-aws-ec2-metadata-token"] == "token-abc"


def test_publishing_can_be_switched_off() -> None:
    publisher = CloudWatchPublisher(PublishSettings(enabled=False))

    publisher.publish(host_results(START))

    assert publisher.published == 0 and publisher.last_error == ""


@pytest.mark.usefixtures("aws")
def test_the_agent_publishes_its_memory_and_disk_results_when_configured(
        frozen_agent: Any) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    agent = frozen_agent(f"""
        agent: {{name: web1, state_dir: state}}
        cloudwatch_publish: {{region: {REGION}, instance_id: {instance}}}
        checks:
          - {{name: mem, type: memory}}
          - {{name: root, type: disk}}
          - {{name: lo, type: ping, targets: [127.0.0.1]}}
        notifiers: [{{name: out, type: file, path: alerts.jsonl}}]
    """)

    for name in ("mem", "root", "lo"):
        agent.run_check(name)

    assert agent.publisher is not None and agent.publisher.last_error == ""
    names = {m["MetricName"] for m in client("cloudwatch").list_metrics(
        Namespace="CWAgent")["Metrics"]}
    assert names == {"mem_used_percent", "swap_used_percent", "disk_used_percent"} or \
        names == {"mem_used_percent", "disk_used_percent"}  # a host without swap


def test_the_agent_has_no_publisher_unless_configured(frozen_agent: Any) -> None:
    agent = frozen_agent("""
        agent: {name: web1, state_dir: state}
        checks: [{name: mem, type: memory}]
        notifiers: [{name: out, type: file, path: alerts.jsonl}]
    """)

    assert agent.publisher is None
