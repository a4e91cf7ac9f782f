"""The SNS notifier: delivery through moto, failures from botocore's Stubber and real peers.

AWS cannot be reached from here (tests talk to 127.0.0.0/8 only). Delivery is
checked end to end in moto (``mock_aws``): a topic with an SQS queue subscribed,
the message read back from the queue. Service errors come from botocore's
``Stubber``; transport failures and SNS-shaped HTTP errors from real servers on
127.0.0.1 given as ``endpoint_url``, so botocore's own parsing is exercised.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from pydantic import ValidationError

from notifiers.base import NotifierError
from notifiers.sns import SUBJECT_CHARS, SnsConfig, SnsNotifier
from tests.support.http_server import HttpServer, Reply
from tests.support.notifiers import Peers, make_alert

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"  # moto's default account
ACCESS_KEY = "AKIAKANSHITESTKEY042"
SECRET_KEY = "kanshi/SECRET+access+key/0123456789abcd"
SESSION_TOKEN = "FwoGZXIvYXdzKANSHI-session-token-0123456789"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:kanshi-alerts"


def make_notifier(topic_arn: str = TOPIC_ARN, **options: Any) -> SnsNotifier:
    settings = {"topic_arn": topic_arn, "timeout": "1s", "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY, "session_token": SESSION_TOKEN} | options
    return SnsNotifier("ops-sns", SnsConfig.model_validate(settings))


def failure(notifier: SnsNotifier) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(make_alert())
    return caught.value


def everything_said(err: BaseException, notifier: SnsNotifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """The error, its traceback, reprs and every log line (botocore's DEBUG too)."""
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config), *logs])


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


# -- delivery through moto -------------------------------------------------------------

class Aws:
    """A moto account with a topic and an SQS queue subscribed to it."""

    def __init__(self, topic: str = "kanshi-alerts") -> None:
        fifo = topic.endswith(".fifo")
        self.sns = boto3.client("sns", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        attributes = {"FifoTopic": "true"} if fifo else {}
        self.topic_arn = self.sns.create_topic(Name=topic, Attributes=attributes)["TopicArn"]
        queue = "kanshi-inbox.fifo" if fifo else "kanshi-inbox"
        self.queue_url = self.sqs.create_queue(
            QueueName=queue, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def received(self) -> list[dict[str, Any]]:
        """The SNS envelopes that reached the queue."""
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=0)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield Aws()


def test_a_published_alert_reaches_a_subscribed_queue(aws: Aws) -> None:
    make_notifier(aws.topic_arn).send(make_alert())

    [envelope] = aws.received()
    assert envelope["TopicArn"] == aws.topic_arn
    assert envelope["Subject"] == "【障害】web01: CRITICAL"
    assert envelope["Message"] == "ディスク使用率 95%"


def test_message_attributes_let_subscriptions_filter(aws: Aws) -> None:
    make_notifier(aws.topic_arn).send(make_alert(severity="A", target=""))

    [envelope] = aws.received()
    values = {name: a["Value"] for name, a in envelope["MessageAttributes"].items()}
    assert values == {"kind": "problem", "status": "CRITICAL", "severity": "A",
                      "check": "disk", "host": "kanshi01", "dedup_key": "disk:web01:/"}


def test_a_subject_sns_would_refuse_is_cleaned_and_clipped(aws: Aws) -> None:
    make_notifier(aws.topic_arn).send(make_alert(subject="障害\n" + "あ" * 300))

    [envelope] = aws.received()
    assert len(envelope["Subject"]) == SUBJECT_CHARS
    assert envelope["Subject"].startswith("障害 あ")
    assert "\n" not in envelope["Subject"]


def test_an_empty_body_publishes_the_subject(aws: Aws) -> None:
    make_notifier(aws.topic_arn).send(make_alert(body=""))

    assert aws.received()[0]["Message"] == "【障害】web01: CRITICAL"


def test_a_fifo_topic_gets_the_ids_sns_requires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        aws = Aws("kanshi-alerts.fifo")
        notifier = make_notifier(aws.topic_arn)
        # moto, like SNS, refuses a FIFO publish without MessageGroupId.
        notifier.send(make_alert())
        notifier.send(make_alert(notification_id=43, kind="recovery", status="OK"))

        assert [e["Message"] for e in aws.received()] == ["ディスク使用率 95%"] * 2


def test_fifo_ids_are_stable_for_a_retry_and_differ_between_notices() -> None:
    from notifiers.sns import publish_arguments

    fifo = TOPIC_ARN + ".fifo"
    first = publish_arguments(fifo, make_alert())
    retry = publish_arguments(fifo, make_alert())
    recovery = publish_arguments(fifo, make_alert(notification_id=43, kind="recovery"))

    assert first["MessageGroupId"] == recovery["MessageGroupId"] == "disk:web01:/"
    assert first["MessageDeduplicationId"] == retry["MessageDeduplicationId"]
    assert first["MessageDeduplicationId"] != recovery["MessageDeduplicationId"]
    assert "MessageGroupId" not in publish_arguments(TOPIC_ARN, make_alert())


def test_a_missing_topic_in_moto_is_permanent(aws: Aws) -> None:
    err = failure(make_notifier(f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic"))

    assert err.permanent
    assert "NotFound" in str(err)


# -- service errors via Stubber ---------------------------------------------------------

SERVICE_ERRORS = [
    pytest.param("Throttling", 400, "Rate exceeded", False, id="Throttling is transient"),
    pytest.param("ThrottlingException", 400, "Rate exceeded", False,
                 id="ThrottlingException is transient"),
    pytest.param("KMSThrottling", 400, "KMS rate exceeded", False,
                 id="KMSThrottling is transient"),
    pytest.param("InternalError", 500, "", False, id="InternalError 500 is transient"),
    pytest.param("ServiceUnavailable", 503, "", False, id="ServiceUnavailable is transient"),
    pytest.param("SomethingNew", 502, "", False, id="an unknown code with a 5xx is transient"),
    pytest.param("NotFound", 404, "Topic does not exist", True, id="NotFound is permanent"),
    pytest.param("AuthorizationError", 403, "User is not authorized to perform SNS:Publish",
                 True, id="AuthorizationError is permanent"),
    pytest.param("InvalidClientTokenId", 403, "The security token included is invalid.",
                 True, id="InvalidClientTokenId is permanent"),
    pytest.param("SignatureDoesNotMatch", 403,
                 f"Credential={ACCESS_KEY}/20240501/{REGION}/sns/aws4_request", True,
                 id="SignatureDoesNotMatch is permanent and its echo of the key is scrubbed"),
    pytest.param("InvalidParameter", 400, "Invalid parameter: Subject", True,
                 id="InvalidParameter is permanent"),
    pytest.param("KMSDisabled", 400, "", True, id="KMSDisabled is permanent"),
]


@pytest.mark.parametrize(("code", "status", "message", "permanent"), SERVICE_ERRORS)
def test_each_service_error_is_classified_without_leaking_credentials(
        caplog: pytest.LogCaptureFixture, code: str, status: int, message: str,
        permanent: bool) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier()

    with Stubber(notifier.client) as stub:
        stub.add_client_error("publish", service_error_code=code, service_message=message,
                              http_status_code=status)
        err = failure(notifier)

    assert err.permanent is permanent
    assert f"SNS answered {code} (HTTP {status})" in str(err)
    assert leaked(everything_said(err, notifier, caplog)) == []


def test_a_permanent_error_names_the_fix() -> None:
    notifier = make_notifier()
    with Stubber(notifier.client) as stub:
        stub.add_client_error("publish", service_error_code="AuthorizationError",
                              http_status_code=403)
        err = failure(notifier)

    assert "allow sns:Publish on topic_arn" in str(err)


# -- transport failures and HTTP error classes against real local peers -------------------

def sns_error(status: int, code: str, message: str = "") -> Reply:
    """An error as SNS's query protocol sends it."""
    body = (f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error>'
            f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>0</RequestId></ErrorResponse>")
    return Reply(status, body=body, headers={"Content-Type": "text/xml"})


Arrange = Callable[[Peers], str]

TRANSPORT_FAILURES = [
    pytest.param(lambda p: p.nobody(), False, "cannot reach http://127.0.0.1",
                 id="connection refused is transient"),
    pytest.param(lambda p: p.raw(None), False, "no answer from",
                 id="a silent peer times out, transient"),
    pytest.param(lambda p: p.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), False, "cannot reach",
                 id="a malformed HTTP response is transient"),
    pytest.param(lambda p: p.raw(b""), False, "cannot reach",
                 id="a peer hanging up without a word is transient"),
    pytest.param(lambda p: p.http(Reply(200, body="<html>proxy</html>")), False,
                 "not an SNS response", id="200 that is not an SNS answer is transient"),
    pytest.param(lambda p: p.http(sns_error(400, "Throttling", "Rate exceeded")), False,
                 "Throttling (HTTP 400)", id="400 Throttling is transient"),
    pytest.param(lambda p: p.http(sns_error(400, "InvalidParameter", "Invalid parameter")),
                 True, "InvalidParameter (HTTP 400)", id="400 InvalidParameter is permanent"),
    pytest.param(lambda p: p.http(sns_error(403, "AuthorizationError", ACCESS_KEY)), True,
                 "AuthorizationError (HTTP 403)", id="403 is permanent and scrubbed"),
    pytest.param(lambda p: p.http(sns_error(404, "NotFound", "Topic does not exist")), True,
                 "NotFound (HTTP 404)", id="404 is permanent"),
    pytest.param(lambda p: p.http(Reply(429)), False, "not an SNS response",
                 id="a bodiless 429 (a proxy) is transient"),
    pytest.param(lambda p: p.http(sns_error(500, "InternalError")), False,
                 "InternalError (HTTP 500)", id="500 is transient"),
    pytest.param(lambda p: p.http(Reply(502)), False, "(HTTP 502)", id="502 is transient"),
    pytest.param(lambda p: p.http(sns_error(503, "ServiceUnavailable")), False,
                 "(HTTP 503)", id="503 is transient"),
    pytest.param(lambda p: p.http(Reply(504)), False, "(HTTP 504)", id="504 is transient"),
]


@pytest.mark.parametrize(("arrange", "permanent", "says"), TRANSPORT_FAILURES)
def test_each_transport_failure_is_classified_without_leaking_credentials(
        peers: Peers, caplog: pytest.LogCaptureFixture,
        arrange: Arrange, permanent: bool, says: str) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier(endpoint_url=arrange(peers))

    started = time.monotonic()
    err = failure(notifier)

    assert time.monotonic() - started < 10
    assert err.permanent is permanent
    assert says in str(err)
    assert leaked(everything_said(err, notifier, caplog)) == []


def test_each_send_is_exactly_one_attempt_botocore_does_not_retry() -> None:
    with HttpServer(default=sns_error(500, "InternalError")) as server:
        failure(make_notifier(endpoint_url=server.url))
        assert len(server.requests) == 1


def test_signed_requests_carry_the_keys_but_the_debug_log_does_not(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpServer(default=sns_error(403, "AuthorizationError")) as server:
        failure(make_notifier(endpoint_url=server.url))
        [request] = server.requests

    assert ACCESS_KEY in request.headers["authorization"]
    assert request.headers["x-amz-security-token"] == SESSION_TOKEN
    botocore_lines = [r.getMessage() for r in caplog.records if r.name.startswith("botocore")]
    assert any("Authorization" in line for line in botocore_lines)
    assert leaked("\n".join(botocore_lines)) == []


def test_role_credentials_are_masked_in_the_debug_log_too(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials from the environment (as from an instance role) are not in the config.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    caplog.set_level(logging.DEBUG)
    with HttpServer(default=sns_error(403, "AuthorizationError")) as server:
        notifier = SnsNotifier("ops-sns", SnsConfig.model_validate(
            {"topic_arn": TOPIC_ARN, "endpoint_url": server.url}))
        err = failure(notifier)

    assert leaked(everything_said(err, notifier, caplog)) == []


@pytest.fixture
def peers() -> Iterator[Peers]:
    peers = Peers()
    yield peers
    peers.close()


# -- configuration ----------------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"topic_arn": "kanshi-alerts"}, "topic ARN", id="a topic name, not an ARN"),
    pytest.param({"topic_arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q"}, "topic ARN",
                 id="an ARN of another service"),
    pytest.param({"secret_access_key": None}, "together", id="a key id without its secret"),
    pytest.param({"access_key_id": None, "secret_access_key": None}, "session_token needs",
                 id="a session token alone"),
    pytest.param({"profile": "ops"}, "either profile or access keys",
                 id="a profile and keys at once"),
    pytest.param({"endpoint_url": "sns.local"}, "http:// or https://",
                 id="an endpoint without a scheme"),
    pytest.param({"topic": "x"}, "topic", id="an unknown key"),
])
def test_bad_settings_are_refused_without_echoing_credentials(
        options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier(**options)
    assert says in str(caught.value)
    assert leaked(str(caught.value)) == []


def test_the_region_defaults_to_the_topics() -> None:
    notifier = make_notifier(f"arn:aws:sns:eu-west-1:{ACCOUNT}:t")
    assert notifier.client.meta.region_name == "eu-west-1"


def test_credentials_do_not_show_in_the_config_or_notifier_repr() -> None:
    notifier = make_notifier()
    assert leaked(f"{notifier!r} {notifier.config!r} {notifier.config}") == []


def test_a_missing_profile_fails_the_send_not_the_agents_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    notifier = SnsNotifier("ops-sns", SnsConfig.model_validate(
        {"topic_arn": TOPIC_ARN, "profile": "kanshi-ops"}))

    err = failure(notifier)

    assert err.permanent
    assert "ProfileNotFound" in str(err)
    notifier.close()
