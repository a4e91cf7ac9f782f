"""Components of SPEC §2 beyond EC2: how each is found and which dimensions it reads.

moto holds the resources (ELBv2, RDS, SQS, DynamoDB, API Gateway, CloudWatch
metrics); Lightsail is not in moto, so a Stubber answers for it with shapes from
the Lightsail service model (said in that test).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from agent.clock import FrozenClock
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


def run(clock: FrozenClock, shared: LocalResources | None = None,
        **options: Any) -> dict[str, Any]:
    options.setdefault("accounts", [ACCOUNT])
    return by_target(make(CloudWatchCheck, clock, shared=shared, **options).execute())


def only(component: str, *items: str) -> list[dict[str, Any]]:
    """Overrides switching a component's items off except ``items``."""
    return [{"component": component, "enabled": False},
            *({"component": component, "item": i, "enabled": True} for i in items)]


def test_target_groups_are_told_apart_as_alb_or_nlb_and_carry_their_load_balancer(
        clock: FrozenClock) -> None:
    elb, ec2 = client("elbv2"), client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24",
                                 AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
               for n, z in ((1, "a"), (2, "c"))]
    tags = [{"Key": "Env", "Value": "prod"}]
    alb = elb.create_load_balancer(Name="web", Subnets=subnets, Type="application")
    nlb = elb.create_load_balancer(Name="tcp", Subnets=subnets, Type="network")
    http = elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                   Tags=tags)["TargetGroups"][0]
    tcp = elb.create_target_group(Name="tcp-tg", Protocol="TCP", Port=25, VpcId=vpc,
                                  Tags=tags)["TargetGroups"][0]
    for lb, tg, protocol in ((alb, http, "HTTP"), (nlb, tcp, "TCP")):
        elb.create_listener(LoadBalancerArn=lb["LoadBalancers"][0]["LoadBalancerArn"],
                            Protocol=protocol, Port=tg["Port"], DefaultActions=[
                                {"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    web_lb = alb["LoadBalancers"][0]["LoadBalancerArn"].split(":loadbalancer/")[1]
    web_tg = http["TargetGroupArn"].split(":")[-1]
    put("AWS/ApplicationELB", "HealthyHostCount", {"TargetGroup": web_tg,
                                                   "LoadBalancer": web_lb}, 0.0,
        minutes_ago(clock, 2))

    results = run(clock, tags={"Env": "prod"}, components=["alb", "nlb"])

    healthy = results[f"{REGION}/alb/web-tg/healthy_hosts"]
    assert healthy.status is Status.CRITICAL and "< critical 1" in healthy.message
    assert f"{REGION}/nlb/tcp-tg/healthy_hosts" in results
    assert results[f"{REGION}/alb/web-tg/target_5xx"].status is Status.OK


def test_rds_and_aurora_instances_are_told_apart_by_engine(clock: FrozenClock) -> None:
    rds = client("rds")
    rds.create_db_instance(DBInstanceIdentifier="orders", Engine="postgres",
                           DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                           MasterUsername="admin", MasterUserPassword="password123")
    rds.create_db_cluster(DBClusterIdentifier="books", Engine="aurora-postgresql",
                          MasterUsername="admin", MasterUserPassword="password123")
    rds.create_db_instance(DBInstanceIdentifier="books-1", Engine="aurora-postgresql",
                           DBInstanceClass="db.r6g.large", DBClusterIdentifier="books")
    put("AWS/RDS", "FreeableMemory", {"DBInstanceIdentifier": "orders"}, 100 * 2**20,
        minutes_ago(clock, 4))

    results = run(clock, resources={"rds": ["orders", "books-1"]},
                  components=["rds", "aurora"])

    memory = results[f"{REGION}/rds/orders/freeable_memory"]
    assert memory.status is Status.CRITICAL and "100.0 MiB ≤ critical 128.0 MiB" in \
        memory.message
    assert f"{REGION}/rds/orders/swap" in results
    assert f"{REGION}/aurora/books-1/cpu" in results
    assert f"{REGION}/aurora/books-1/swap" not in results, "Aurora: CPU and memory only"


def test_an_items_dimensions_found_by_list_metrics_give_one_result_each(
        clock: FrozenClock) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    for path, used in (("/", 45.0), ("/data", 93.0)):
        put("CWAgent", "disk_used_percent", {"InstanceId": instance, "path": path,
                                             "device": "nvme0n1p1", "fstype": "xfs"},
            used, minutes_ago(clock, 4))

    results = run(clock, resources={"ec2": [instance]}, overrides=only("ec2", "disk"))

    assert results[f"{REGION}/ec2/{instance}/disk[/]"].status is Status.OK
    data = results[f"{REGION}/ec2/{instance}/disk[/data]"]
    assert data.status is Status.CRITICAL and "/data" in data.message


def test_dynamodb_system_errors_are_summed_over_its_operations(clock: FrozenClock) -> None:
    for operation, errors in (("GetItem", 4.0), ("PutItem", 7.0)):
        put("AWS/DynamoDB", "SystemErrors", {"TableName": "orders", "Operation": operation},
            errors, minutes_ago(clock, 4))

    results = run(clock, resources={"dynamodb": ["orders"]})

    errors = results[f"{REGION}/dynamodb/orders/system_errors"]
    assert errors.status is Status.CRITICAL and errors.metrics == {"system_errors_count": 11}
    assert f"{REGION}/dynamodb/user_errors" in results, "region-wide item of the component"


def test_ses_send_failure_rate_is_rejects_over_sends_for_the_region(
        clock: FrozenClock) -> None:
    put("AWS/SES", "Send", {}, 200.0, minutes_ago(clock, 4))
    put("AWS/SES", "Reject", {}, 6.0, minutes_ago(clock, 4))
    put("AWS/SES", "Reputation.BounceRate", {}, 0.02, minutes_ago(clock, 4))

    results = run(clock, components=["ses"])

    failures = results[f"{REGION}/ses/send_failure_rate"]
    assert failures.status is Status.WARNING and "3.0%" in failures.message
    bounce = results[f"{REGION}/ses/bounce_rate"]
    assert bounce.status is Status.OK and bounce.metrics == {"bounce_rate_percent": 2.0}


def test_sqs_queues_found_by_tag_read_their_queue_name_dimension(clock: FrozenClock) -> None:
    client("sqs").create_queue(QueueName="orders", tags={"Env": "prod"})
    put("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", {"QueueName": "orders"},
        116000.0, minutes_ago(clock, 4))

    results = run(clock, tags={"Env": "prod"}, components=["sqs"])

    assert results[f"{REGION}/sqs/orders/in_flight"].status is Status.CRITICAL
    assert f"{REGION}/sqs/orders/dead_letter" not in results, "off unless turned on"


def test_api_gateway_apis_found_by_tag_are_read_by_their_name(clock: FrozenClock) -> None:
    api = client("apigateway").create_rest_api(name="shop", tags={"Env": "prod"})["id"]
    put("AWS/ApiGateway", "5XXError", {"ApiName": "shop"}, 12.0, minutes_ago(clock, 4))
    # moto's tagging API does not list API Gateway: a Stubber answers GetResources
    # (shape from the service model) with the API's ARN; GetRestApis is moto's.
    shared = LocalResources()
    tagging = client("resourcegroupstaggingapi")
    stubber = Stubber(tagging)
    stubber.add_response("get_resources", {"ResourceTagMappingList": [
        {"ResourceARN": f"arn:aws:apigateway:{REGION}::/restapis/{api}",
         "Tags": [{"Key": "Env", "Value": "prod"}]},
        {"ResourceARN": f"arn:aws:apigateway:{REGION}::/restapis/{api}/stages/v1",
         "Tags": [{"Key": "Env", "Value": "prod"}]}]})
    stubber.activate()
    shared.get(client_key(AwsAccount.model_validate(ACCOUNT), "resourcegroupstaggingapi",
                          REGION, 30.0), lambda: tagging)

    results = run(clock, shared=shared, tags={"Env": "prod"}, components=["apigateway"])

    assert results[f"{REGION}/apigateway/shop/errors_5xx"].status is Status.CRITICAL
    assert not any("/v1/" in t for t in results), "a stage is not an API"


def test_cloudfront_is_read_in_us_east_1_whatever_the_accounts_regions(
        clock: FrozenClock) -> None:
    put("AWS/CloudFront", "5xxErrorRate", {"DistributionId": "E2ABC", "Region": "Global"},
        7.5, minutes_ago(clock, 4), region="us-east-1")

    results = run(clock, resources={"cloudfront": ["E2ABC"]})

    rate = results["us-east-1/cloudfront/E2ABC/error_rate_5xx"]
    assert rate.status is Status.CRITICAL and "7.5%" in rate.message


def test_lightsail_is_read_from_its_own_metric_api(clock: FrozenClock) -> None:
    # Not in moto: a Stubber answers with the shapes of the Lightsail service model
    # (GetInstances, GetInstanceMetricData), which botocore validates.
    shared = LocalResources()
    account = AwsAccount.model_validate(ACCOUNT)
    lightsail = client("lightsail")
    stubber = Stubber(lightsail)
    stubber.add_response("get_instances", {"instances": [
        {"name": "blog", "arn": f"arn:aws:lightsail:{REGION}:123456789012:Instance/x",
         "state": {"code": 16, "name": "running"}, "tags": []}]})
    at = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    answers = {"StatusCheckFailed": {"maximum": 1.0}, "CPUUtilization": {"average": 12.0}}
    for metric, point in answers.items():
        stubber.add_response("get_instance_metric_data", {
            "metricName": metric, "metricData": [{**point, "timestamp": at,
                                                  "unit": "Count"}]},
            {"instanceName": "blog", "metricName": metric, "period": ANY, "startTime": ANY,
             "endTime": ANY, "unit": ANY, "statistics": ANY})
    stubber.activate()
    shared.get(client_key(account, "lightsail", REGION, 30.0), lambda: lightsail)

    results = run(clock, shared=shared, resources={"lightsail": ["blog"]},
                  overrides=only("lightsail", "status_check", "cpu"))

    assert results[f"{REGION}/lightsail/blog/status_check"].status is Status.CRITICAL
    assert results[f"{REGION}/lightsail/blog/cpu"].metrics == {"cpu_percent": 12.0}
    stubber.assert_no_pending_responses()


def test_expanded_pods_missing_at_discovery_say_how_to_get_their_metrics(
        clock: FrozenClock) -> None:
    results = run(clock, resources={"eks": ["main"]}, overrides=only("eks", "node_cpu"))

    node = results[f"{REGION}/eks/main/node_cpu"]
    assert node.status is Status.OK, "missing: ok for pods and nodes that come and go"
    assert "Container Insights" in node.message or "no node_cpu_utilization" in node.message


def test_resources_of_a_component_read_their_overrides_by_tag_and_by_id(
        clock: FrozenClock) -> None:
    web, batch = run_instances(2, {"Env": "prod"})
    client("ec2").create_tags(Resources=[batch], Tags=[{"Key": "Role", "Value": "batch"}])
    for instance in (web, batch):
        put("AWS/EC2", "CPUUtilization", {"InstanceId": instance}, 92.0, minutes_ago(clock, 4))
    overrides = [*only("ec2", "cpu"),
                 {"component": "ec2", "item": "cpu", "tags": {"Role": "batch"},
                  "warning": 95, "critical": 99},
                 {"component": "ec2", "item": "cpu", "resource": web, "critical": 91}]

    results = run(clock, tags={"Env": "prod"}, components=["ec2"], overrides=overrides)

    assert results[f"{REGION}/ec2/{batch}/cpu"].status is Status.OK
    assert results[f"{REGION}/ec2/{web}/cpu"].status is Status.CRITICAL
    assert "≥ critical 91.0%" in results[f"{REGION}/ec2/{web}/cpu"].message


