"""The shipped IAM policy (config/iam/kanshi-monitoring.json) grants exactly what the
monitoring code calls: every check type runs against moto (and Stubbers for Health and
Lightsail, which moto lacks) while a botocore event hook on every client records the
operations; the recorded IAM actions must equal the policy's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from agent.clock import FrozenClock
from checks.aws.session import AccountSession, AwsAccount, client_key, session_key
from checks.aws_health import AwsHealthCheck
from checks.base import LocalResources
from checks.cloudwatch import CloudWatchCheck
from checks.ec2_status import Ec2EventsCheck, Ec2StatusCheck
from tests.checks.aws.conftest import REGION, client, make, run_instances

POLICY = Path(__file__).parents[3] / "config" / "iam" / "kanshi-monitoring.json"
ROLE = "arn:aws:iam::123456789012:role/kanshi-monitoring"
#: IAM prefixes that differ from the endpoint prefix (IAM service authorization reference).
_PREFIX = {"monitoring": "cloudwatch", "tagging": "tag"}


class Recorder:
    """Records the IAM action of every call a client makes (before-parameter-build)."""

    def __init__(self) -> None:
        self.actions: set[str] = set()

    def __call__(self, client: Any) -> None:
        prefix = client.meta.service_model.endpoint_prefix
        client.meta.events.register("before-parameter-build",
                                    lambda model, **_: self._add(prefix, model.name))

    def _add(self, prefix: str, operation: str) -> None:
        iam = _PREFIX.get(prefix, prefix)
        self.actions.add("apigateway:GET" if iam == "apigateway" else f"{iam}:{operation}")


def policy_actions() -> set[str]:
    document = json.loads(POLICY.read_text(encoding="utf-8"))
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def stubbed(shared: LocalResources, account: AwsAccount, service: str, region: str,
            recorder: Recorder) -> Stubber:
    made = client(service, region)
    recorder(made)
    stubber = Stubber(made)
    shared.get(client_key(account, service, region, 30.0), lambda: made)
    return stubber


@pytest.mark.usefixtures("aws")
def test_the_policy_grants_exactly_the_calls_the_checks_make(clock: FrozenClock) -> None:
    recorder = Recorder()
    raw = {"name": "prod", "regions": [REGION], "role_arn": ROLE}
    account = AwsAccount.model_validate(raw)
    shared = LocalResources()
    shared.get(session_key(account), lambda: AccountSession(account, hooks=(recorder,)))
    make_resources()
    lightsail = stubbed(shared, account, "lightsail", REGION, recorder)
    lightsail.add_response("get_instances", {"instances": [{"name": "blog", "tags": []}]})
    lightsail.add_response("get_instance_metric_data", {"metricData": []},
                           {"instanceName": "blog", "metricName": "CPUUtilization",
                            "period": ANY, "startTime": ANY, "endTime": ANY, "unit": ANY,
                            "statistics": ANY})
    lightsail.activate()
    health = stubbed(shared, account, "health", "us-east-1", recorder)
    arn = "arn:aws:health:ap-northeast-1::event/EC2/AWS_EC2_ISSUE/AWS_EC2_ISSUE_1"
    health.add_response("describe_events", {"events": [{
        "arn": arn, "service": "EC2", "region": REGION, "statusCode": "open",
        "eventTypeCategory": "issue", "eventTypeCode": "AWS_EC2_ISSUE"}]})
    health.add_response("describe_event_details", {"successfulSet": [], "failedSet": []})
    health.add_response("describe_affected_entities", {"entities": []})
    health.activate()
    lightsail_cpu = [{"component": "lightsail", "enabled": False},
                     {"component": "lightsail", "item": "cpu", "enabled": True}]

    for check in (
            make(CloudWatchCheck, clock, shared=shared, accounts=[raw], tags={"Env": "prod"},
                 components=["ec2", "rds", "alb", "apigateway", "lightsail"],
                 resources={"apigateway": ["shop"], "lightsail": ["blog"]},
                 overrides=lightsail_cpu),
            make(Ec2StatusCheck, clock, shared=shared, accounts=[raw]),
            make(Ec2EventsCheck, clock, shared=shared, accounts=[raw]),
            make(AwsHealthCheck, clock, shared=shared, accounts=[raw])):
        assert all(r.target for r in check.execute()), f"{check.type_name} ran cleanly"

    assert "sts:AssumeRole" in recorder.actions, "the role was assumed"
    # AssumeRole is the container identity's permission (on the role's ARN), not the
    # monitoring role's: the monitoring policy is everything else, and nothing more.
    assert recorder.actions - {"sts:AssumeRole"} == policy_actions()


def make_resources() -> None:
    """One resource of each kind discovery must describe, tagged Env=prod."""
    run_instances(1, {"Env": "prod"})
    client("rds").create_db_instance(
        DBInstanceIdentifier="orders", Engine="postgres", DBInstanceClass="db.t3.micro",
        AllocatedStorage=20, MasterUsername="admin", MasterUserPassword="password123",
        Tags=[{"Key": "Env", "Value": "prod"}])
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    client("elbv2").create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                        Tags=[{"Key": "Env", "Value": "prod"}])
    client("apigateway").create_rest_api(name="shop")


def test_the_policy_is_read_only() -> None:
    writes = ("Put", "Create", "Delete", "Update", "Modify", "Start", "Stop", "Reboot",
              "Terminate", "Attach", "Detach", "Tag", "Untag")
    for action in policy_actions():
        operation = action.split(":", 1)[1]
        assert not operation.startswith(writes), action
