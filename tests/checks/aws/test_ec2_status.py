"""ec2_status and ec2_events: moto for instances and their states; a Stubber for what
moto never reports (impaired status checks, scheduled events), with the
DescribeInstances / DescribeInstanceStatus shapes of the EC2 service model."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from agent.clock import FrozenClock
from checks.aws.session import AwsAccount, client_key
from checks.base import LocalResources, Status
from checks.ec2_status import Ec2EventsCheck, Ec2StatusCheck
from tests.checks.aws.conftest import ACCOUNT, REGION, START, by_target, client, make, run_instances

ID = "i-0123456789abcdef0"


def stubbed_ec2(shared: LocalResources, state: str, status: dict[str, Any],
                account: dict[str, Any] = ACCOUNT) -> Stubber:
    """EC2 answering one instance in ``state`` with ``status`` (service-model shapes)."""
    ec2 = client("ec2")
    stubber = Stubber(ec2)
    stubber.add_response("describe_instances", {"Reservations": [{"Instances": [{
        "InstanceId": ID, "State": {"Code": 16, "Name": state},
        "Tags": [{"Key": "Name", "Value": "db1"}]}]}]}, {"Filters": ANY})
    if state != "terminated":
        stubber.add_response("describe_instance_status", {"InstanceStatuses": [{
            "InstanceId": ID, "InstanceState": {"Code": 16, "Name": state}, **status}]},
            {"InstanceIds": [ID], "IncludeAllInstances": ANY})
    stubber.activate()
    key = client_key(AwsAccount.model_validate(account), "ec2", REGION, 30.0)
    shared.get(key, lambda: ec2)
    return stubber


def check_status(status: str, since: datetime | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"Name": "reachability", "Status":
                              "failed" if status == "impaired" else "passed"}
    if since:
        detail["ImpairedSince"] = since
    return {"Status": status, "Details": [detail]}


@pytest.mark.usefixtures("aws")
def test_running_instances_with_passing_checks_are_ok(clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod", "Name": "web"})

    results = by_target(make(Ec2StatusCheck, clock, accounts=[ACCOUNT],
                             tags={"Env": "prod"}).execute())

    result = results[f"prod/{REGION}/{instance}"]
    assert result.status is Status.OK and "(web): status checks passed" in result.message


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(("stopped", "status"), [
    pytest.param("critical", Status.CRITICAL, id="default-critical"),
    pytest.param("ok", Status.OK, id="stopped-on-purpose"),
])
def test_a_stopped_instance_is_judged_as_configured(clock: FrozenClock, stopped: str,
                                                    status: Status) -> None:
    (instance,) = run_instances(1)
    client("ec2").stop_instances(InstanceIds=[instance])

    results = by_target(make(Ec2StatusCheck, clock, accounts=[ACCOUNT], instances=[instance],
                             stopped=stopped).execute())

    assert results[f"prod/{REGION}/{instance}"].status is status
    assert "is stopped" in results[f"prod/{REGION}/{instance}"].message


@pytest.mark.usefixtures("aws")
def test_an_instance_named_in_the_config_but_terminated_is_critical(
        clock: FrozenClock) -> None:
    (instance,) = run_instances(1)
    client("ec2").terminate_instances(InstanceIds=[instance])

    results = by_target(make(Ec2StatusCheck, clock, accounts=[ACCOUNT],
                             instances=[instance]).execute())

    assert results[f"prod/{instance}"].status is Status.CRITICAL
    assert "terminated?" in results[f"prod/{instance}"].message


@pytest.mark.parametrize(("system", "instance", "words"), [
    pytest.param("impaired", "ok", "system status check failed since 2026-11-02 00:50 UTC: "
                 "AWS's side", id="system"),
    pytest.param("ok", "impaired", "instance status check failed", id="instance"),
])
def test_a_failed_status_check_is_critical_with_what_to_do(
        clock: FrozenClock, system: str, instance: str, words: str) -> None:
    shared = LocalResources()
    since = START - timedelta(minutes=17)
    stubber = stubbed_ec2(shared, "running", {
        "SystemStatus": check_status(system, since if system == "impaired" else None),
        "InstanceStatus": check_status(instance)})

    results = by_target(make(Ec2StatusCheck, clock, shared=shared, accounts=[ACCOUNT])
                        .execute())

    result = results[f"prod/{REGION}/{ID}"]
    assert result.status is Status.CRITICAL and words in result.message
    assert "db1" in result.message
    stubber.assert_no_pending_responses()


def test_insufficient_data_is_unknown_and_initializing_is_ok(clock: FrozenClock) -> None:
    shared = LocalResources()
    stubbed_ec2(shared, "running", {"SystemStatus": check_status("insufficient-data"),
                                    "InstanceStatus": check_status("initializing")})

    result = make(Ec2StatusCheck, clock, shared=shared, accounts=[ACCOUNT]).execute()[0]

    assert result.status is Status.UNKNOWN and "insufficient data" in result.message


def event(code: str, starts_in: timedelta, description: str) -> dict[str, Any]:
    return {"InstanceEventId": "instance-event-0abc", "Code": code,
            "Description": description, "NotBefore": START + starts_in,
            "NotAfter": START + starts_in + timedelta(hours=2)}


@pytest.mark.parametrize(("scheduled", "status", "words"), [
    pytest.param(event("instance-retirement", timedelta(days=10),
                       "The instance is running on degraded hardware"), Status.WARNING,
                 "stop and start the instance", id="retirement-ahead"),
    pytest.param(event("system-reboot", timedelta(hours=6), "scheduled reboot"),
                 Status.CRITICAL, "reschedule it", id="reboot-within-a-day"),
    pytest.param(event("system-maintenance", timedelta(days=-1),
                       "[Completed] Network maintenance"), Status.OK, "[Completed]",
                 id="completed"),
])
def test_scheduled_events_are_one_result_each(clock: FrozenClock, scheduled: dict[str, Any],
                                              status: Status, words: str) -> None:
    shared = LocalResources()
    stubbed_ec2(shared, "running", {"Events": [scheduled]})

    results = by_target(make(Ec2EventsCheck, clock, shared=shared, accounts=[ACCOUNT],
                             critical_within="1d").execute())

    result = results[f"prod/{REGION}/{ID}/{scheduled['Code']}"]
    assert result.status is status and words in result.message
    assert results["prod"].status is Status.OK and "1 scheduled event" in results["prod"].message
    assert Ec2EventsCheck.default_max_attempts == 1


def test_one_broken_account_never_stops_the_others(clock: FrozenClock) -> None:
    broken = {"name": "broken", "regions": [REGION], "role_arn":
              "arn:aws:iam::333333333333:role/kanshi"}
    shared = LocalResources()
    stubbed_ec2(shared, "running", {"SystemStatus": check_status("ok"),
                                    "InstanceStatus": check_status("ok")})
    ec2 = client("ec2")
    stubber = Stubber(ec2)
    stubber.add_client_error("describe_instances", "UnauthorizedOperation",
                             "You are not authorized to perform this operation.")
    stubber.activate()
    shared.get(client_key(AwsAccount.model_validate(broken), "ec2", REGION, 30.0),
               lambda: ec2)

    results = by_target(make(Ec2StatusCheck, clock, shared=shared,
                             accounts=[ACCOUNT, broken]).execute())

    assert results[f"prod/{REGION}/{ID}"].status is Status.OK
    assert results[""].status is Status.UNKNOWN
    assert "broken ap-northeast-1: access denied" in results[""].message
    assert "lacks ec2:DescribeInstances" in results[""].message
    assert "other accounts and regions were read" in results[""].message


