"""Slack incoming webhook: the rendered subject with a status emoji, the body in a
coloured attachment.

The webhook URL is the credential (anyone holding it can post), so it is a
``SecretStr`` and never shown. Slack answers ``200 ok`` or a 4xx/5xx whose body
is a short error code (``invalid_payload``, ``channel_not_found``…; Slack
changelog 2016-05-17 "Improving error conditions for Incoming Webhooks").
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr, field_validator

from notifiers.base import Alert, NotifierConfig, NotifierError
from notifiers.http import (
    TRANSIENT_4XX,
    HttpConfig,
    HttpNotifier,
    HttpStatusError,
    redact_url,
)

#: Slack's limit for a section block's text (Block Kit reference).
SECTION_CHARS = 3000
#: What the operator should do about each error code Slack documents for webhooks.
ERROR_HINTS = {
    "invalid_payload": "Slack could not parse the message (a kanshi bug: please report it)",
    "no_text": "Slack found no text in the message (a kanshi bug: please report it)",
    "too_many_attachments": "Slack refused the attachments (a kanshi bug: please report it)",
    "user_not_found": "the user of this webhook no longer exists; create a new webhook",
    "channel_not_found": "the channel of this webhook no longer exists; create a new webhook",
    "channel_is_archived": "the channel of this webhook is archived; unarchive it or "
                           "create a new webhook",
    "action_prohibited": "the workspace forbids this webhook to post there",
    "posting_to_general_channel_denied": "only admins may post to that channel",
    "no_service": "the webhook was revoked or its app removed; create a new webhook",
    "no_service_id": "the webhook URL is incomplete; copy it again",
    "no_team": "the workspace of this webhook no longer exists",
    "team_disabled": "the workspace of this webhook is disabled",
    "invalid_token": "the webhook URL's token is wrong; copy it again",
}


class SlackConfig(HttpConfig):
    """``url``: the incoming webhook URL (https://hooks.slack.com/services/…), a secret."""

    url: SecretStr

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        # The message must not quote the URL: it is the secret.
        try:
            parts = urlsplit(url.get_secret_value())
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises on a non-numeric port
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("expected the webhook's https:// URL")
        return url


class SlackNotifier(HttpNotifier):
    """Posts each alert to a Slack channel through an incoming webhook."""

    type_name: ClassVar[str] = "slack"
    Config: ClassVar[type[NotifierConfig]] = SlackConfig
    config: SlackConfig

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` with one POST (the outbox retries)."""
        self.post(self.config.url.get_secret_value(), json=payload(alert))

    def raise_for_response(self, response: requests.Response) -> None:
        """Slack's contract: ``200`` with the body ``ok``; errors name a code."""
        if 200 <= response.status_code < 300:
            if response.text.strip() != "ok":
                raise _not_ok(response)
            return
        code = _error_code(response)
        if code in ERROR_HINTS and _permanent(response.status_code):
            # Slack's code says more than the HTTP status (a 403 is not "credentials").
            raise HttpStatusError(
                f"HTTP {response.status_code} from {redact_url(response.url)}: {code} — "
                f"{ERROR_HINTS[code]}", status=response.status_code, permanent=True)
        super().raise_for_response(response)


def _permanent(status: int) -> bool:
    return 400 <= status < 500 and status not in TRANSIENT_4XX


def _error_code(response: requests.Response) -> str:
    return response.text.strip()[:64]


def _not_ok(response: requests.Response) -> NotifierError:
    # A proxy or captive portal answering in Slack's place: the message may not
    # have arrived, and a duplicate beats a lost alert, so the outbox retries.
    body = " ".join(response.text.split())[:80] or "an empty body"
    return NotifierError(
        f"HTTP {response.status_code} from {redact_url(response.url)} without Slack's \"ok\" "
        f"(got {body!r}) — is url an incoming webhook, or is a proxy answering?",
        permanent=False)


# -- the message ------------------------------------------------------------------

#: (emoji, attachment colour) by what the notice says; colours are Slack's brand palette.
_GOOD = (":large_green_circle:", "#2EB67D")
_LOOK = {
    "CRITICAL": (":red_circle:", "#E01E5A"),
    "WARNING": (":large_yellow_circle:", "#ECB22E"),
    "UNKNOWN": (":white_circle:", "#9E9E9E"),
    "OK": _GOOD,
}
_KIND_LOOK = {
    "recovery": _GOOD, "vanished": (":white_check_mark:", "#9E9E9E"),
    "flapping_start": (":twisted_rightwards_arrows:", "#ECB22E"),
    "at_risk": (":hourglass_flowing_sand:", "#ECB22E"),
    "failure_report": (":page_facing_up:", "#36C5F0"),
    "post_incident_report": (":page_facing_up:", "#36C5F0"),
}


def look(alert: Alert) -> tuple[str, str]:
    """The emoji and colour of ``alert``: by kind where that says more, else by status."""
    return _KIND_LOOK.get(alert.kind) or _LOOK.get(alert.status, _LOOK["UNKNOWN"])


def payload(alert: Alert) -> dict[str, object]:
    """The webhook body: ``text`` (what notifications show) and one coloured attachment."""
    emoji, colour = look(alert)
    message: dict[str, object] = {"text": f"{emoji} {escape(alert.subject)}"}
    if alert.body.strip():
        # plain_text: the rendered body is not Slack markup (a "*" must stay a "*").
        section = {"type": "section", "text": {"type": "plain_text", "emoji": False,
                                               "text": _clip(alert.body, SECTION_CHARS)}}
        message["attachments"] = [{"color": colour, "blocks": [section]}]
    return message


def escape(text: str) -> str:
    """Slack's three control characters in ``text`` fields (Slack "Formatting text")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
