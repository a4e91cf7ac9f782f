"""The cloudwatch check against moto: discovery, batching, windows, judging, failures.

Resources are created in moto and metric data put with ``put_metric_data``; the
check reads them back through GetMetricData exactly as it would from AWS. Where a
failure cannot be produced by moto (throttling, denied access, expired
credentials, paged answers, Lightsail) a botocore Stubber stands in for the one
client, with error codes and response shapes from the service model.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from agent.clock import FrozenClock
from checks.aws.collect import MAX_QUERIES, auto_delay, window
from checks.aws.session import AwsAccount, client_key
from checks.base import LocalResources, Status
from checks.cloudwatch import CloudWatchCheck
from tests.checks.aws.conftest import (
    ACCOUNT,
    REGION,
    by_target,
    client,
    make,
    minutes_ago,
    put,
    run_instances,
)

pytestmark = pytest.mark.usefixtures("aws")


def cloudwatch(clock: FrozenClock, **options: Any) -> CloudWatchCheck:
    options.setdefault("accounts", [ACCOUNT])
    check = make(CloudWatchCheck, clock, **options)
    assert isinstance(check, CloudWatchCheck)
    return check


def count_calls(shared: LocalResources, account: dict[str, Any], operation: str,
                sizes: list[int] | None = None, region: str = REGION) -> list[int]:
    """Count ``operation`` calls of the check's shared CloudWatch client (and their
    query counts) with a botocore event hook."""
    from checks.aws.session import shared_client

    calls: list[int] = []
    cw = shared_client(shared, AwsAccount.model_validate(account), "cloudwatch", region, 30.0)

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params.get("MetricDataQueries", [])))

    cw.meta.events.register(f"before-parameter-build.cloudwatch.{operation}", record)
    return calls


# -- judging ----------------------------------------------------------------------------------


def test_a_tagged_instance_over_its_cpu_threshold_is_critical_and_says_against_what(
        clock: FrozenClock) -> None:
    hot, warm = run_instances(2, {"Env": "prod", "Name": "web"})
    put("AWS/EC2", "CPUUtilization", {"InstanceId": hot}, 95.0, minutes_ago(clock, 5))
    put("AWS/EC2", "CPUUtilization", {"InstanceId": warm}, 85.0, minutes_ago(clock, 5))

    results = by_target(cloudwatch(clock, tags={"Env": "prod"}, components=["ec2"]).execute())

    cpu = results[f"{REGION}/ec2/{hot}/cpu"]
    assert cpu.status is Status.CRITICAL
    assert "CPU utilisation 95.0% ≥ critical 90.0%" in cpu.message
    assert "(web)" in cpu.message and "CPUUtilization Average 5m" in cpu.message
    assert cpu.metrics == {"cpu_percent": 95.0}
    assert results[f"{REGION}/ec2/{warm}/cpu"].status is Status.WARNING
    assert "" not in results, "a complete run has no whole-check result"


@pytest.mark.parametrize(("item", "status", "words"), [
    pytest.param("status_check", Status.UNKNOWN, "treated as unknown", id="unknown"),
    pytest.param("network_in", Status.OK, "treated as ok", id="not-breaching"),
    pytest.param("memory", Status.UNKNOWN, "install the CloudWatch agent", id="agent-hint"),
])
def test_missing_data_is_treated_as_the_catalogue_says(clock: FrozenClock, item: str,
                                                       status: Status, words: str) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})

    results = by_target(cloudwatch(clock, tags={"Env": "prod"}, components=["ec2"]).execute())

    result = results[f"{REGION}/ec2/{instance}/{item}"]
    assert result.status is status and words in result.message


def test_an_override_can_make_missing_data_breaching(clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    overrides = [{"component": "ec2", "item": "network_in", "missing": "critical"}]

    results = by_target(cloudwatch(clock, resources={"ec2": [instance]},
                                   overrides=overrides).execute())

    assert results[f"{REGION}/ec2/{instance}/network_in"].status is Status.CRITICAL


def test_a_stopped_instance_is_ok_and_not_measured(clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    client("ec2").stop_instances(InstanceIds=[instance])

    results = cloudwatch(clock, resources={"ec2": [instance]}).execute()

    mine = [r for r in results if instance in r.target]
    assert mine and all(r.status is Status.OK and "is stopped" in r.message for r in mine)


def test_an_instance_named_in_the_config_but_gone_is_critical(clock: FrozenClock) -> None:
    results = by_target(cloudwatch(clock, resources={"ec2": ["i-0123456789abcdef0"]})
                        .execute())

    gone = results[f"{REGION}/ec2/i-0123456789abcdef0"]
    assert gone.status is Status.CRITICAL and "not found" in gone.message


# -- windows --------------------------------------------------------------------------------


def test_the_window_ends_at_the_last_settled_period_boundary() -> None:
    now = datetime(2026, 11, 2, 1, 7, 30, tzinfo=UTC)

    five = window(now, 300, None, 2)
    one = window(now, 60, None, 2)

    assert auto_delay(300) == 120 and auto_delay(60) == 60 and auto_delay(3600) == 180
    assert (five.start, five.end) == (now.replace(minute=55, hour=0, second=0),
                                      now.replace(minute=5, second=0))
    assert (one.start, one.end) == (now.replace(minute=4, second=0),
                                    now.replace(minute=6, second=0))


def test_a_period_still_filling_is_not_read_but_the_last_complete_one_is(
        clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    # 01:07:30 now: [01:05, 01:10) is still filling, [01:00, 01:05) is complete.
    put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, 99.0, minutes_ago(clock, 1))
    put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, 40.0, minutes_ago(clock, 4))

    results = by_target(cloudwatch(clock, resources={"ec2": [instance]}).execute())

    cpu = results[f"{REGION}/ec2/{instance}/cpu"]
    assert cpu.status is Status.OK and cpu.metrics == {"cpu_percent": 40.0}
    assert "period ending 01:05 UTC" in cpu.message, "2.5 minutes old, not 10"


def test_a_configured_delay_moves_the_window(clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, 40.0, minutes_ago(clock, 4))

    results = by_target(cloudwatch(clock, resources={"ec2": [instance]}, delay="10m",
                                   window_periods=1).execute())

    assert results[f"{REGION}/ec2/{instance}/cpu"].status is Status.UNKNOWN


# -- batching -------------------------------------------------------------------------------


def test_1200_metric_queries_in_one_region_take_exactly_3_get_metric_data_calls(
        clock: FrozenClock) -> None:
    functions = [f"fn-{n:03d}" for n in range(400)]  # × errors, duration, throttles
    for name in functions[:3]:
        put("AWS/Lambda", "Errors", {"FunctionName": name}, 2.0, minutes_ago(clock, 5))
    check = cloudwatch(clock, resources={"lambda": functions})
    calls = count_calls(check.context.shared, ACCOUNT, "GetMetricData")  # type: ignore[arg-type]

    results = check.execute()

    assert calls == [500, 500, 200]
    assert max(calls) <= MAX_QUERIES
    usage = by_target(results)["usage"]
    assert usage.metrics["get_metric_data_calls"] == 3
    assert usage.metrics["metrics_requested"] == 1200
    assert usage.metrics["cost_usd"] == pytest.approx(1200 * 0.01 / 1000)
    errors = by_target(results)[f"{REGION}/lambda/fn-000/errors"]
    assert errors.status is Status.WARNING and errors.metrics == {"errors_count": 2.0}
    assert len([r for r in results if r.target.endswith("/errors")]) == 400


def test_get_metric_data_pages_are_followed(clock: FrozenClock) -> None:
    # moto never pages; AWS does past 100,800 datapoints: a Stubber gives two pages
    # shaped as the CloudWatch service model says.
    account = AwsAccount.model_validate(ACCOUNT)
    shared = LocalResources()
    stubbed = client("cloudwatch")
    stubber = Stubber(stubbed)
    at = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    stubber.add_response("get_metric_data", {
        "MetricDataResults": [{"Id": "q0", "Timestamps": [at - timedelta(minutes=5)],
                               "Values": [10.0], "StatusCode": "PartialData"}],
        "NextToken": "page-2"})
    stubber.add_response("get_metric_data", {
        "MetricDataResults": [{"Id": "q0", "Timestamps": [at], "Values": [97.0],
                               "StatusCode": "Complete"}]})
    stubber.activate()
    shared.get(client_key(account, "cloudwatch", REGION, 30.0), lambda: stubbed)
    overrides = [{"component": "lambda", "enabled": False},
                 {"component": "lambda", "item": "errors", "enabled": True}]

    results = by_target(cloudwatch(clock, shared=shared, resources={"lambda": ["fn"]},
                                   overrides=overrides).execute())

    assert results[f"{REGION}/lambda/fn/errors"].metrics == {"errors_count": 97.0}
    stubber.assert_no_pending_responses()


# -- discovery cycles -------------------------------------------------------------------------


def test_new_resources_are_picked_up_on_the_next_discovery_cycle(clock: FrozenClock) -> None:
    run_instances(1, {"Env": "prod"})
    check = cloudwatch(clock, tags={"Env": "prod"}, components=["ec2"],
                       discovery_interval="1h")
    first = {r.target.split("/")[2] for r in check.execute() if "/ec2/" in r.target}
    (later,) = run_instances(1, {"Env": "prod"})

    clock.advance(300)
    cached = {r.target.split("/")[2] for r in check.execute() if "/ec2/" in r.target}
    clock.advance(3600)
    rediscovered = {r.target.split("/")[2] for r in check.execute() if "/ec2/" in r.target}

    assert len(first) == 1 and cached == first
    assert rediscovered == first | {later}


def test_a_terminated_instance_is_no_longer_reported_so_its_incidents_close(
        clock: FrozenClock) -> None:
    keep, gone = run_instances(2, {"Env": "prod"})
    check = cloudwatch(clock, tags={"Env": "prod"}, components=["ec2"],
                       discovery_interval="5m")
    assert any(gone in r.target for r in check.execute())
    client("ec2").terminate_instances(InstanceIds=[gone])

    clock.advance(600)
    results = check.execute()

    assert not any(gone in r.target for r in results)
    assert any(keep in r.target for r in results)
    assert all(r.target for r in results), "no whole-check result: the agent closes the rest"


# -- failures ---------------------------------------------------------------------------------


def stub_error(shared: LocalResources, service: str, operation: str, code: str,
               message: str, times: int = 1, region: str = REGION,
               account: dict[str, Any] | None = None) -> Stubber:
    """A client of ``service`` in ``shared`` whose ``operation`` fails with ``code``."""
    stubbed = client(service, region)
    stubber = Stubber(stubbed)
    for _ in range(times):
        stubber.add_client_error(operation, service_error_code=code, service_message=message,
                                 http_status_code=400)
    stubber.activate()
    key = client_key(AwsAccount.model_validate(account or ACCOUNT), service, region, 30.0)
    shared.get(key, lambda: stubbed)
    return stubber


@pytest.mark.parametrize(("code", "words"), [
    pytest.param("ThrottlingException", ["throttled by AWS on cloudwatch:GetMetricData",
                                         "adaptive retry mode", "lengthen the interval"],
                 id="throttling"),
    pytest.param("AccessDeniedException", ["access denied", "lacks cloudwatch:GetMetricData",
                                           "config/iam/kanshi-monitoring.json"],
                 id="access-denied"),
    pytest.param("ExpiredTokenException", ["credentials have expired",
                                           "calling cloudwatch:GetMetricData"],
                 id="expired-credentials"),
])
def test_aws_trouble_is_one_unknown_that_says_what_to_change(
        clock: FrozenClock, code: str, words: list[str]) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    shared = LocalResources()
    stub_error(shared, "cloudwatch", "get_metric_data", code, "no")

    results = cloudwatch(clock, shared=shared, resources={"ec2": [instance]},
                         overrides=[{"component": "ec2", "enabled": False},
                                    {"component": "ec2", "item": "cpu", "enabled": True}]
                         ).execute()

    whole = by_target(results)[""]
    assert whole.status is Status.UNKNOWN
    assert all(w in whole.message for w in words), whole.message
    assert f"{REGION}:" in whole.message and "prod" in whole.message
    assert not any(r.target.endswith("/cpu") for r in results), \
        "its resources keep their last status instead of vanishing"


def test_a_broken_region_does_not_stop_the_others(clock: FrozenClock) -> None:
    account = {"name": "prod", "regions": [REGION, "us-west-2"]}
    (here,) = run_instances(1, {"Env": "prod"})
    run_instances(1, {"Env": "prod"}, region="us-west-2")
    put("AWS/EC2", "CPUUtilization", {"InstanceId": here}, 10.0, minutes_ago(clock, 4))
    shared = LocalResources()
    stub_error(shared, "resourcegroupstaggingapi", "get_resources", "AccessDeniedException",
               "not authorized to perform tag:GetResources", region="us-west-2",
               account=account)

    results = by_target(cloudwatch(clock, shared=shared, accounts=[account],
                                   tags={"Env": "prod"}, components=["ec2"]).execute())

    assert results[f"{REGION}/ec2/{here}/cpu"].status is Status.OK
    whole = results[""]
    assert whole.status is Status.UNKNOWN and "us-west-2" in whole.message
    assert "tag:GetResources" in whole.message and "other regions were measured" in whole.message


def test_a_failed_discovery_falls_back_to_the_last_one(clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, 10.0, minutes_ago(clock, 4))
    state: dict[str, Any] = {}
    cloudwatch(clock, state=state, tags={"Env": "prod"}, components=["ec2"],
               discovery_interval="5m").execute()
    shared = LocalResources()
    stub_error(shared, "resourcegroupstaggingapi", "get_resources", "ThrottlingException",
               "Rate exceeded")

    clock.advance(600)
    results = by_target(cloudwatch(clock, state=state, shared=shared, tags={"Env": "prod"},
                                   components=["ec2"], discovery_interval="5m").execute())

    assert "" not in results
    assert f"{REGION}/ec2/{instance}/cpu" in results
    assert "using the last one" in results["usage"].message


def test_a_check_never_raises_on_unexpected_trouble(clock: FrozenClock) -> None:
    shared = LocalResources()
    stub_error(shared, "cloudwatch", "get_metric_data", "InternalFailure", "boom")

    results = cloudwatch(clock, shared=shared, resources={"lambda": ["fn"]}).execute()

    assert by_target(results)[""].status is Status.UNKNOWN
    assert "InternalFailure" in by_target(results)[""].message


# -- imports ----------------------------------------------------------------------------------


def test_validating_an_aws_config_never_imports_boto3() -> None:
    code = ("import sys, checks.cloudwatch, checks.ec2_status, checks.aws_health, "
            "checks.aws.publish, agent.cli.aws\n"
            "checks.cloudwatch.CloudWatchCheck.Config.model_validate({'accounts': "
            "[{'name': 'a', 'regions': ['ap-northeast-1']}], 'tags': {'Env': 'prod'}})\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


