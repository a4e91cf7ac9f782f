"""aws_health: moto has no AWS Health API, so a botocore Stubber answers for it with
the DescribeEvents / DescribeEventDetails / DescribeAffectedEntities shapes of the
Health service model (botocore validates both requests and responses).

The incident path is the agent's own: one result raises an incident (max attempts
1), a closed event recovers it, and the notice goes out once per change."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

import checks
from agent.clock import FrozenClock
from agent.config import load_config
from agent.service import Agent
from checks.aws.session import AwsAccount, client_key
from checks.aws_health import AwsHealthCheck
from checks.base import LocalResources, Status
from tests.checks.aws.conftest import ACCOUNT, REGION, START, by_target, client, make
from tests.support.scripted import RecordingNotifier, Script

ARN = ("arn:aws:health:ap-northeast-1::event/EC2/AWS_EC2_OPERATIONAL_ISSUE/"
       "AWS_EC2_OPERATIONAL_ISSUE_7XKQ2")
MAINTENANCE = ("arn:aws:health:ap-northeast-1::event/RDS/AWS_RDS_MAINTENANCE_SCHEDULED/"
               "AWS_RDS_MAINTENANCE_SCHEDULED_91AB")
ELSEWHERE = "arn:aws:health:eu-west-1::event/EC2/AWS_EC2_OPERATIONAL_ISSUE/AWS_EC2_X"


def health_event(arn: str, category: str, status: str, region: str = REGION) -> dict[str, Any]:
    service, code = arn.split("/")[1], arn.split("/")[2]
    return {"arn": arn, "service": service, "eventTypeCode": code,
            "eventTypeCategory": category, "region": region, "statusCode": status,
            "startTime": START - timedelta(hours=1), "lastUpdatedTime": START}


def stub_health(stubber: Stubber, events: list[dict[str, Any]],
                descriptions: dict[str, str], entities: dict[str, list[str]]) -> None:
    stubber.add_response("describe_events", {"events": events},
                         {"filter": ANY, "maxResults": 100})
    shown = [e for e in events if e["region"] in (REGION, "global")]
    if shown:
        stubber.add_response("describe_event_details", {"successfulSet": [
            {"event": {"arn": e["arn"]},
             "eventDescription": {"latestDescription": descriptions.get(e["arn"], "")}}
            for e in shown], "failedSet": []}, {"eventArns": [e["arn"] for e in shown]})
    live = [e["arn"] for e in shown if e["statusCode"] != "closed"]
    if live:
        stubber.add_response("describe_affected_entities", {"entities": [
            {"eventArn": arn, "entityValue": value} for arn in live
            for value in entities.get(arn, [])]}, {"filter": {"eventArns": live}})


def stubbed_health(shared: LocalResources, account: dict[str, Any] = ACCOUNT) -> Stubber:
    health = client("health", "us-east-1")
    stubber = Stubber(health)
    stubber.activate()
    shared.get(client_key(AwsAccount.model_validate(account), "health", "us-east-1", 30.0),
               lambda: health)
    return stubber


def test_each_event_is_one_result_judged_by_its_category_and_status(
        clock: FrozenClock) -> None:
    shared = LocalResources()
    stubber = stubbed_health(shared)
    stub_health(stubber, [health_event(ARN, "issue", "open"),
                          health_event(MAINTENANCE, "scheduledChange", "upcoming"),
                          health_event(ELSEWHERE, "issue", "open", "eu-west-1")],
                {ARN: "We are investigating increased API error rates.\n\nMore soon."},
                {ARN: [f"i-0{n:016x}" for n in range(7)]})

    results = by_target(make(AwsHealthCheck, clock, shared=shared, accounts=[ACCOUNT])
                        .execute())

    issue = results[f"prod/{REGION}/EC2/AWS_EC2_OPERATIONAL_ISSUE_7XKQ2"]
    assert issue.status is Status.CRITICAL
    assert "EC2 issue (open) in ap-northeast-1, prod" in issue.message
    assert "increased API error rates. More soon." in issue.message
    assert "affected: i-00000000000000000" in issue.message and "(+2 more)" in issue.message
    upcoming = results[f"prod/{REGION}/RDS/AWS_RDS_MAINTENANCE_SCHEDULED_91AB"]
    assert upcoming.status is Status.WARNING and "scheduled change (upcoming)" in \
        upcoming.message
    assert not any("eu-west-1" in t for t in results), "not a watched region"
    assert results["prod"].status is Status.OK and "2 AWS Health event(s)" in \
        results["prod"].message
    stubber.assert_no_pending_responses()


def test_without_a_support_plan_the_check_says_what_it_needs(clock: FrozenClock) -> None:
    shared = LocalResources()
    stubber = stubbed_health(shared)
    stubber.add_client_error("describe_events", "SubscriptionRequiredException",
                             "The AWS Premium Support Subscription is required.")

    (result,) = make(AwsHealthCheck, clock, shared=shared, accounts=[ACCOUNT]).execute()

    assert result.status is Status.UNKNOWN and result.target == ""
    assert "Business, Enterprise On-Ramp or Enterprise support plan" in result.message


@pytest.fixture
def health_agent(tmp_path: Path, scripted: dict[str, Script],
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Agent, Stubber]]:
    monkeypatch.setitem(checks.REGISTRY, "aws_health", "checks.aws_health:AwsHealthCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""
        agent: {name: watcher, state_dir: state}
        notifiers: [{name: pager, type: recording}]
        checks:
          - name: health
            type: aws_health
            timeout: 30s
            accounts: [{name: prod, regions: [ap-northeast-1]}]
        """), encoding="utf-8")
    agent = Agent(load_config(path, environ={}), clock=FrozenClock(START))
    stubber = stubbed_health(agent.shared)
    yield agent, stubber
    agent.store.close()


def test_an_event_is_forwarded_once_and_again_when_it_closes(
        health_agent: tuple[Agent, Stubber]) -> None:
    agent, stubber = health_agent
    runs = [[health_event(ARN, "issue", "open")]] * 3 + [[health_event(ARN, "issue",
                                                                        "closed")]]
    for events in runs:
        stub_health(stubber, events, {ARN: "Increased error rates."}, {ARN: ["i-0abc"]})
        agent.run_check("health")
        agent.dispatcher.run_once()
        agent.clock.advance(600)  # type: ignore[attr-defined]

    sent = [(a.kind, a.status) for a in RecordingNotifier.sent["pager"]]
    assert sent == [("problem", "CRITICAL"), ("recovery", "OK")]
    (incident,) = agent.store.incidents.find(open_only=False)
    assert incident.target.endswith("AWS_EC2_OPERATIONAL_ISSUE_7XKQ2")
    assert incident.resolved_at is not None
