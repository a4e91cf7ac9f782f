"""Accounts and sessions: AssumeRole with external ID, refresh before expiry, adaptive
retries against a real HTTP peer, errors explained, account validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

from agent.clock import FrozenClock
from checks.aws.session import AccountSession, AwsAccount, explain, session_key
from checks.base import LocalResources, Status
from checks.cloudwatch import CloudWatchCheck
from checks.ec2_status import Ec2StatusCheck
from tests.checks.aws.conftest import REGION, by_target, client, make
from tests.support.http_server import HttpServer, Reply

ROLE = "arn:aws:iam::222222222222:role/kanshi-monitoring"


def assume_role_recorder(calls: list[dict[str, Any]]) -> Any:
    """A client hook recording the parameters of every AssumeRole call."""
    def hook(client: Any) -> None:
        client.meta.events.register("before-parameter-build.sts.AssumeRole",
                                    lambda params, **_: calls.append(dict(params)))
    return hook


@pytest.mark.usefixtures("aws")
def test_an_account_with_a_role_is_read_through_assume_role_with_its_external_id(
        clock: FrozenClock) -> None:
    # moto keeps what is created with the role's credentials in the role's account.
    sts = client("sts").assume_role(RoleArn=ROLE, RoleSessionName="setup")["Credentials"]
    import boto3
    other = boto3.client("ec2", region_name=REGION, aws_access_key_id=sts["AccessKeyId"],
                         aws_secret_access_key=sts["SecretAccessKey"],
                         aws_session_token=sts["SessionToken"])
    theirs = other.run_instances(ImageId="ami-12c6146b", MinCount=1,
                                 MaxCount=1)["Instances"][0]["InstanceId"]
    client("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)  # ours
    account = {"name": "customer", "role_arn": ROLE, "external_id": "kanshi-7f3a",
               "session_name": "kanshi-watch", "regions": [REGION],
               "session_duration": "1h"}
    calls: list[dict[str, Any]] = []
    shared = LocalResources()
    model = AwsAccount.model_validate(account)
    shared.get(session_key(model), lambda: AccountSession(
        model, hooks=(assume_role_recorder(calls),)))

    results = make(Ec2StatusCheck, clock, shared=shared, accounts=[account]).execute()
    make(Ec2StatusCheck, clock, shared=shared, accounts=[account]).execute()

    assert [r.target for r in results] == [f"customer/{REGION}/{theirs}"]
    assert calls == [{"RoleArn": ROLE, "RoleSessionName": "kanshi-watch",
                      "DurationSeconds": 3600, "ExternalId": "kanshi-7f3a"}], \
        "assumed once and shared by the checks of the agent"


@pytest.mark.usefixtures("aws")
def test_assumed_credentials_are_refreshed_before_they_expire() -> None:
    now = [datetime.now(UTC)]
    calls: list[dict[str, Any]] = []
    account = AwsAccount.model_validate({"name": "customer", "role_arn": ROLE,
                                         "regions": [REGION]})
    session = AccountSession(account, time_fetcher=lambda: now[0],
                             hooks=(assume_role_recorder(calls),))
    ec2 = session.client("ec2", REGION, 10.0)

    ec2.describe_instances()
    now[0] += timedelta(minutes=30)
    ec2.describe_instances()
    assert len(calls) == 1, "half an hour into a 1 h session: still valid"
    now[0] += timedelta(minutes=25)  # 5 minutes before expiry: botocore must renew
    ec2.describe_instances()

    assert len(calls) == 2


def test_a_role_that_cannot_be_assumed_makes_the_check_unknown_with_the_reason(
        clock: FrozenClock) -> None:
    # STS AccessDenied is stubbed on the session's own STS client (moto's STS never
    # refuses); the shape and code are those of the STS service model.
    stubbers: list[Stubber] = []

    def deny(made: Any) -> None:
        if made.meta.service_model.service_name == "sts":
            stubber = Stubber(made)
            stubber.add_client_error("assume_role", "AccessDenied", "User: arn:aws:sts::1:"
                                     "assumed-role/kanshi is not authorized to perform: "
                                     "sts:AssumeRole", 403)
            stubber.activate()
            stubbers.append(stubber)

    account = {"name": "customer", "role_arn": ROLE, "regions": [REGION]}
    model = AwsAccount.model_validate(account)
    shared = LocalResources()
    shared.get(session_key(model), lambda: AccountSession(model, hooks=(deny,)))

    results = make(CloudWatchCheck, clock, shared=shared, accounts=[account],
                   resources={"lambda": ["fn"]}).execute()

    whole = by_target(results)[""]
    assert whole.status is Status.UNKNOWN
    assert whole.message.startswith(f"cannot read CloudWatch for account customer (role {ROLE})"
                                    f": {REGION}: cannot assume the role")
    assert "trust policy must allow" in whole.message and len(stubbers) == 1


def test_the_container_identity_is_used_when_no_role_is_given() -> None:
    account = AwsAccount.model_validate({"name": "own", "regions": [REGION]})
    session = AccountSession(account)

    credentials = session._boto_session().get_credentials()

    assert credentials is not None and credentials.access_key == "testing"
    assert "container's own credentials" in account.describe()


def test_every_client_retries_in_adaptive_mode_with_the_accounts_attempts() -> None:
    account = AwsAccount.model_validate({"name": "own", "regions": [REGION],
                                         "api_attempts": 7})

    cw = AccountSession(account).client("cloudwatch", REGION, 12.0)

    assert cw.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert cw.meta.config.read_timeout == 12.0


EC2_THROTTLED = Reply(503, (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
    "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>r1</RequestID></Response>"))
EC2_NO_INSTANCES = Reply(200, (
    '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>r2</requestId><reservationSet/></DescribeInstancesResponse>"))


@pytest.mark.real
def test_throttled_calls_are_retried_against_a_real_http_peer(
        monkeypatch: pytest.MonkeyPatch, clock: FrozenClock) -> None:
    # A real HTTP server on loopback speaks EC2's error format: botocore's adaptive
    # retries, not a stub, decide what happens.
    with HttpServer() as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        server.respond(EC2_THROTTLED, EC2_THROTTLED, EC2_NO_INSTANCES)
        account = {"name": "own", "regions": [REGION], "api_attempts": 3}

        after_retries = by_target(make(Ec2StatusCheck, clock, accounts=[account]).execute())
        server.respond(EC2_THROTTLED, EC2_THROTTLED)
        gave_up = by_target(make(Ec2StatusCheck, clock, accounts=[
            {**account, "api_attempts": 2}]).execute())

        assert len(server.requests) == 5
    assert "" not in after_retries and after_retries["own"].status is Status.UNKNOWN
    assert "no instance" in after_retries["own"].message
    assert gave_up[""].status is Status.UNKNOWN
    assert "throttled by AWS on ec2:DescribeInstances in ap-northeast-1 " \
           "(RequestLimitExceeded), gave up after 2 attempts in adaptive retry mode" \
        in gave_up[""].message


def client_error(code: str, operation: str, message: str = "no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(("error", "kind", "words"), [
    pytest.param(client_error("AccessDenied", "AssumeRole"), "denied",
                 "trust policy must allow", id="assume-role-denied"),
    pytest.param(client_error("UnauthorizedOperation", "DescribeInstances"), "denied",
                 "lacks ec2:DescribeInstances", id="ec2-denied"),
    pytest.param(client_error("RequestExpired", "DescribeInstances"), "expired",
                 "credentials have expired", id="expired"),
    pytest.param(client_error("InvalidClientTokenId", "DescribeInstances"), "credentials",
                 "does not accept the credentials", id="bad-key"),
    pytest.param(client_error("SubscriptionRequiredException", "DescribeEvents"),
                 "subscription", "Business, Enterprise On-Ramp or Enterprise support",
                 id="health-needs-support-plan"),
    pytest.param(NoCredentialsError(), "credentials", "give the container an IAM role",
                 id="no-credentials"),
    pytest.param(EndpointConnectionError(endpoint_url="https://ec2.example"), "unreachable",
                 "cannot reach AWS", id="unreachable"),
])
def test_errors_are_explained_with_what_to_change(error: Exception, kind: str,
                                                   words: str) -> None:
    explained = explain(error, "ec2:DescribeInstances", 5, REGION)

    assert explained.kind == kind and words in explained.reason


@pytest.mark.parametrize("account", [
    pytest.param({"name": "a", "regions": ["tokyo"]}, id="region-code"),
    pytest.param({"name": "a", "regions": []}, id="no-region"),
    pytest.param({"name": "a", "regions": [REGION, REGION]}, id="region-twice"),
    pytest.param({"name": "a", "regions": [REGION], "role_arn": "kanshi"}, id="role-arn"),
    pytest.param({"name": "a", "regions": [REGION], "session_name": "has space"},
                 id="session-name"),
    pytest.param({"name": "a", "regions": [REGION], "session_duration": "13h"},
                 id="session-too-long"),
    pytest.param({"name": "a", "regions": [REGION], "secret": "x"}, id="unknown-key"),
])
def test_a_bad_account_is_refused_at_load(account: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AwsAccount.model_validate(account)


def test_the_external_id_never_shows_in_a_repr_or_a_config_dump() -> None:
    account = AwsAccount.model_validate({"name": "a", "regions": [REGION],
                                         "role_arn": ROLE, "external_id": "s3cr3t-id"})

    assert "s3cr3t-id" not in repr(account) and "s3cr3t-id" not in str(account.model_dump())
    assert "s3cr3t-id" not in account.fingerprint()


def test_a_cloudwatch_check_watches_one_account_and_says_why() -> None:
    account = {"name": "a", "regions": [REGION]}

    with pytest.raises(pydantic.ValidationError, match="one account per cloudwatch check"):
        CloudWatchCheck.Config.model_validate({"accounts": [account, {**account, "name": "b"}],
                                               "tags": {"Env": "prod"}})
