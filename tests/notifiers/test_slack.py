"""The Slack notifier against a real HTTP server on 127.0.0.1 playing Slack.

Slack itself cannot be reached from here (tests talk to 127.0.0.0/8 only), so
the local server answers the way Slack documents for incoming webhooks:
``200 ok``, or a 4xx/5xx whose body is an error code (Slack changelog
2016-05-17, "Improving error conditions for Incoming Webhooks").
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from notifiers.base import Notifier, NotifierError
from notifiers.slack import SECTION_CHARS, SlackConfig, SlackNotifier
from tests.support.http_server import HttpServer, LoopbackTLS, Reply
from tests.support.notifiers import Peers, make_alert

# The webhook URL is the credential: its path must never show up anywhere.
TOKEN = "XXXXSECRETXXXXtoken42"
TARGET = f"/services/T0KANSHI/B0KANSHI/{TOKEN}"
OK = Reply(200, body="ok", headers={"Content-Type": "text/html"})


def make_notifier(base_url: str, **options: Any) -> SlackNotifier:
    settings = {"url": base_url + TARGET, "timeout": "1s"} | options
    return SlackNotifier("ops-slack", SlackConfig.model_validate(settings))


def failure(notifier: SlackNotifier, **changes: Any) -> NotifierError:
    with pytest.raises(NotifierError) as caught:
        notifier.send(make_alert(**changes))
    return caught.value


def everything_said(err: BaseException, notifier: Notifier,
                    caplog: pytest.LogCaptureFixture) -> str:
    """The error, its traceback, reprs and every log line but the test server's."""
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("tests.")]
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)),
                      repr(notifier), repr(notifier.config), str(notifier.config), *logs])


@pytest.fixture
def peers() -> Iterator[Peers]:
    peers = Peers()
    yield peers
    peers.close()


@pytest.fixture
def slack() -> Iterator[HttpServer]:
    with HttpServer(default=OK) as server:
        yield server


# -- the message ------------------------------------------------------------------

def test_it_posts_the_subject_with_an_emoji_and_the_body_in_a_coloured_attachment(
        slack: HttpServer) -> None:
    make_notifier(slack.url).send(make_alert())

    [request] = slack.requests
    assert request.path == TARGET
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "text": ":red_circle: 【障害】web01: CRITICAL",
        "attachments": [{"color": "#E01E5A", "blocks": [{
            "type": "section",
            "text": {"type": "plain_text", "emoji": False, "text": "ディスク使用率 95%"}}]}]}


def test_japanese_text_arrives_intact(slack: HttpServer) -> None:
    make_notifier(slack.url).send(make_alert(body="復旧しました。障害時間は 3分 です。"))

    [request] = slack.requests
    block = request.json()["attachments"][0]["blocks"][0]
    assert block["text"]["text"] == "復旧しました。障害時間は 3分 です。"


@pytest.mark.parametrize(("changes", "emoji", "colour"), [
    pytest.param({"status": "CRITICAL"}, ":red_circle:", "#E01E5A", id="critical is red"),
    pytest.param({"status": "WARNING"}, ":large_yellow_circle:", "#ECB22E",
                 id="warning is yellow"),
    pytest.param({"status": "UNKNOWN"}, ":white_circle:", "#9E9E9E", id="unknown is grey"),
    pytest.param({"kind": "recovery", "status": "OK"}, ":large_green_circle:", "#2EB67D",
                 id="a recovery is green"),
    pytest.param({"kind": "flapping_stop", "status": "OK"}, ":large_green_circle:",
                 "#2EB67D", id="flapping that stopped at OK is green"),
    pytest.param({"kind": "flapping_start", "status": "CRITICAL"},
                 ":twisted_rightwards_arrows:", "#ECB22E", id="flapping has its own emoji"),
    pytest.param({"kind": "escalation", "status": "CRITICAL"}, ":red_circle:", "#E01E5A",
                 id="an escalation looks like its status"),
    pytest.param({"kind": "failure_report"}, ":page_facing_up:", "#36C5F0",
                 id="a report is blue"),
])
def test_the_emoji_and_colour_follow_the_status_or_kind(
        slack: HttpServer, changes: dict[str, Any], emoji: str, colour: str) -> None:
    make_notifier(slack.url).send(make_alert(**changes))

    sent = slack.requests[0].json()
    assert sent["text"].startswith(emoji + " ")
    assert sent["attachments"][0]["color"] == colour


def test_slack_control_characters_in_the_subject_are_escaped(slack: HttpServer) -> None:
    make_notifier(slack.url).send(make_alert(subject="<!channel> a&b > c"))

    assert slack.requests[0].json()["text"] == ":red_circle: &lt;!channel&gt; a&amp;b &gt; c"


def test_a_long_body_is_clipped_to_the_section_limit(slack: HttpServer) -> None:
    make_notifier(slack.url).send(make_alert(body="障" * 5000))

    text = slack.requests[0].json()["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(text) == SECTION_CHARS
    assert text.endswith("…")


def test_an_empty_body_sends_the_subject_alone(slack: HttpServer) -> None:
    make_notifier(slack.url).send(make_alert(body=""))

    assert slack.requests[0].json() == {"text": ":red_circle: 【障害】web01: CRITICAL"}


def test_each_send_is_exactly_one_attempt(slack: HttpServer) -> None:
    slack.respond(Reply(500, body="rollup_error"))

    failure(make_notifier(slack.url))

    assert len(slack.requests) == 1


def test_it_delivers_again_once_slack_is_back(slack: HttpServer) -> None:
    notifier = make_notifier(slack.url)
    slack.stop()
    assert not failure(notifier).permanent

    slack.start()
    notifier.send(make_alert())
    assert len(slack.requests) == 1


# -- the failure-mode table ----------------------------------------------------------

Arrange = Callable[[Peers], str]

FAILURES = [
    pytest.param(lambda p: p.nobody(), False, "refused",
                 id="connection refused is transient"),
    pytest.param(lambda p: p.http(Reply(200, body="ok", delay=5)), False, "no response from",
                 id="a response slower than timeout is transient"),
    pytest.param(lambda p: p.raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), False, "not HTTP",
                 id="a malformed HTTP response is transient"),
    pytest.param(lambda p: p.raw(b""), False, "not HTTP",
                 id="a peer hanging up without a word is transient"),
    pytest.param(lambda p: p.http(Reply(200, body="ok"), tls=LoopbackTLS()), False,
                 "certificate verify failed",
                 id="a certificate we do not trust is an error"),
    pytest.param(lambda p: p.http(Reply(200, body="<html>Proxy login</html>")), False,
                 "without Slack's \"ok\"", id="200 without ok (a proxy) is transient"),
    pytest.param(lambda p: p.http(Reply(200)), False, "an empty body",
                 id="200 with an empty body is transient"),
    pytest.param(lambda p: p.http(Reply(301, headers={
        "Location": f"https://hooks.example.jp{TARGET}"})), True, "redirects are not followed",
        id="301 is permanent and names the host only"),
    pytest.param(lambda p: p.http(Reply(400, body="invalid_payload")), True,
                 "invalid_payload — Slack could not parse", id="400 invalid_payload is permanent"),
    pytest.param(lambda p: p.http(Reply(400, body="user_not_found")), True,
                 "user of this webhook", id="400 user_not_found is permanent"),
    pytest.param(lambda p: p.http(Reply(400, body="no_text")), True, "no_text",
                 id="400 no_text is permanent"),
    pytest.param(lambda p: p.http(Reply(401)), True, "HTTP 401",
                 id="401 is permanent"),
    pytest.param(lambda p: p.http(Reply(403, body="action_prohibited")), True,
                 "forbids this webhook", id="403 action_prohibited is permanent"),
    pytest.param(lambda p: p.http(Reply(403, body="invalid_token")), True,
                 "token is wrong", id="403 invalid_token is permanent"),
    pytest.param(lambda p: p.http(Reply(404, body="channel_not_found")), True,
                 "channel of this webhook no longer exists",
                 id="404 channel_not_found is permanent"),
    pytest.param(lambda p: p.http(Reply(404, body="no_service")), True, "was revoked",
                 id="404 no_service is permanent"),
    pytest.param(lambda p: p.http(Reply(410, body="channel_is_archived")), True, "archived",
                 id="410 channel_is_archived is permanent"),
    pytest.param(lambda p: p.http(Reply(413)), True, "too large", id="413 is permanent"),
    pytest.param(lambda p: p.http(Reply(429, body="rate_limited",
                                        headers={"Retry-After": "30"})),
                 False, "asks to retry after 30 s",
                 id="429 is transient and honours Retry-After"),
    pytest.param(lambda p: p.http(Reply(500, body="rollup_error")), False, "HTTP 500",
                 id="500 rollup_error is transient"),
    pytest.param(lambda p: p.http(Reply(502)), False, "HTTP 502", id="502 is transient"),
    pytest.param(lambda p: p.http(Reply(503)), False, "HTTP 503", id="503 is transient"),
    pytest.param(lambda p: p.http(Reply(504)), False, "HTTP 504", id="504 is transient"),
]


@pytest.mark.parametrize(("arrange", "permanent", "says"), FAILURES)
def test_each_failure_mode_is_classified_without_leaking_the_webhook_url(
        peers: Peers, caplog: pytest.LogCaptureFixture,
        arrange: Arrange, permanent: bool, says: str) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier(arrange(peers))

    started = time.monotonic()
    err = failure(notifier)

    assert time.monotonic() - started < 10
    assert err.permanent is permanent
    assert says in str(err)
    assert TOKEN not in everything_said(err, notifier, caplog)


def test_a_successful_post_logs_no_part_of_the_url(
        slack: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    make_notifier(slack.url).send(make_alert())

    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("tests."))
    assert "delivered" in logs
    assert TOKEN not in logs


# -- configuration -------------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"url": f"ftp://hooks.slack.com{TARGET}"}, "https:// URL",
                 id="a non-http url"),
    pytest.param({"url": f"https:///{TOKEN}"}, "https:// URL", id="a url without a host"),
    pytest.param({"channel": "#ops"}, "channel", id="an unknown key"),
])
def test_bad_settings_are_refused_without_echoing_the_url(
        options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_notifier("https://hooks.slack.com", **options)
    assert says in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_the_url_does_not_show_in_the_config_or_notifier_repr() -> None:
    notifier = make_notifier("https://hooks.slack.com")
    assert TOKEN not in f"{notifier!r} {notifier.config!r} {notifier.config}"
