"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per incident.

Every event carries the incident's stable ``dedup_key``, so PagerDuty folds a
reminder into the open alert and a recovery resolves exactly that alert. That
also makes a retried event harmless: a second trigger only adds a log entry to
the open alert, a second resolve is dropped (PagerDuty developer docs, "Alert
De-Duplication"). Response contract (Events API v2 overview, "Response Codes &
Retry Logic"): 202 accepted; 400 invalid event (do not retry); 429 rate limited
and 5xx (retry later).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, ClassVar, Literal

import requests
from pydantic import Field, SecretStr, field_validator

from notifiers.base import Alert, NotifierConfig, NotifierError
from notifiers.http import HttpConfig, HttpNotifier, HttpStatusError, redact_url

logger = logging.getLogger(__name__)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PdSeverity = Literal["critical", "error", "warning", "info"]

#: Alert kind → event action. Kinds left out (at_risk, reports) are not alerts:
#: a report sent as a trigger would re-open a resolved alert.
ACTIONS: dict[str, str] = {
    **dict.fromkeys(("problem", "change", "flapping_start", "escalation", "reminder",
                     "emergency", "unrecorded"), "trigger"),
    **dict.fromkeys(("recovery", "flapping_stop", "vanished"), "resolve"),
    # The agent forwards a person's acknowledgement (agent.policy.watch).
    "acknowledged": "acknowledge",
}

#: kanshi severity (Microsoft Unified Support, SPEC §5) → PagerDuty severity.
#: B is "warning", not "error": PagerDuty's Dynamic Notifications page "error"
#: (high urgency, escalates) around the clock, but SPEC §5 works B in business
#: hours only — "warning" is low urgency and does not escalate.
DEFAULT_SEVERITIES: dict[str, PdSeverity] = {
    "1": "critical", "A": "critical", "B": "warning", "C": "info"}

SUMMARY_CHARS = 1024   # payload.summary limit
DEDUP_KEY_CHARS = 255  # dedup_key limit


class PagerDutyConfig(HttpConfig):
    """``routing_key``: the Events API v2 integration key of a service (a secret)."""

    routing_key: SecretStr
    url: str = EVENTS_URL
    severities: dict[Literal["1", "A", "B", "C"], PdSeverity] = Field(default_factory=dict)
    """Overrides of DEFAULT_SEVERITIES, e.g. ``{B: error}``."""
    client_url: str | None = None

    @field_validator("severities", mode="before")
    @classmethod
    def _numeric_keys(cls, value: Any) -> Any:
        # YAML reads `1: critical` with an integer key; the scale names it "1".
        if isinstance(value, dict):
            return {str(k) if isinstance(k, int) else k: v for k, v in value.items()}
        return value

    @field_validator("routing_key")
    @classmethod
    def _key_shape(cls, key: SecretStr) -> SecretStr:
        value = key.get_secret_value()
        if not value or len(value) > 128 or any(c.isspace() for c in value):
            raise ValueError("expected the integration key (32 characters, no spaces)")
        return key

    @field_validator("url", "client_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (not url.startswith(("http://", "https://"))
                                or redact_url(url) == "<invalid url>"):
            raise ValueError("expected an http:// or https:// URL with a host")
        return url

    def severity_of(self, severity: str) -> PdSeverity:
        """PagerDuty's severity for a kanshi one; unknown ones page (critical)."""
        overrides = {str(key): value for key, value in self.severities.items()}
        return {**DEFAULT_SEVERITIES, **overrides}.get(severity, "critical")


class PagerDutyNotifier(HttpNotifier):
    """Sends each incident transition as an Events API v2 event."""

    forwards_acknowledgement = True

    type_name: ClassVar[str] = "pagerduty"
    Config: ClassVar[type[NotifierConfig]] = PagerDutyConfig
    config: PagerDutyConfig

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` with one POST, or skip a kind that is no alert."""
        event = self.event(alert)
        if event is None:
            logger.debug("notifier %s: a %s notice is not a PagerDuty event; skipped",
                         self.name, alert.kind)
            return
        key = self.config.routing_key.get_secret_value()
        self.post(self.config.url, json={"routing_key": key, **event}, secrets=[key])

    def event(self, alert: Alert) -> dict[str, Any] | None:
        """The event for ``alert``, without the routing key; None for no event."""
        action = ACTIONS.get(alert.kind)
        if action is None:
            return None
        event: dict[str, Any] = {"event_action": action, "dedup_key": dedup_key(alert)}
        if action == "trigger":
            event |= self._trigger_fields(alert)
        return event

    def _trigger_fields(self, alert: Alert) -> dict[str, Any]:
        fields: dict[str, Any] = {"client": "kanshi", "payload": {
            "summary": alert.subject[:SUMMARY_CHARS] or alert.message[:SUMMARY_CHARS],
            "source": alert.target or alert.host,
            "severity": self.config.severity_of(alert.severity),
            "timestamp": alert.at,
            "component": alert.check,
            "group": alert.host,
            "custom_details": {"details": alert.body, "status": alert.status,
                               "severity": alert.severity, "incident": alert.incident_id},
        }}
        if self.config.client_url:
            fields["client_url"] = self.config.client_url
        return fields

    def raise_for_response(self, response: requests.Response) -> None:
        """202 with ``{"status": "success"}``; a 400 explains itself in JSON."""
        status = response.status_code
        if 200 <= status < 300:
            if _answer(response).get("status") != "success":
                raise _not_accepted(response)
            return
        if status == 400:
            raise HttpStatusError(
                f"PagerDuty refused the event (HTTP 400 from {redact_url(response.url)}): "
                f"{_problem(response)} — check routing_key of notifier \"{self.name}\"",
                status=status, permanent=True)
        super().raise_for_response(response)


def dedup_key(alert: Alert) -> str:
    """``alert.dedup_key``, shortened stably (with a hash) past PagerDuty's limit."""
    key = alert.dedup_key or f"kanshi:{alert.check}:{alert.target}"
    if len(key) <= DEDUP_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[:DEDUP_KEY_CHARS - 17]}~{digest}"


def _answer(response: requests.Response) -> dict[str, Any]:
    try:
        answer = json.loads(response.text)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _problem(response: requests.Response) -> str:
    answer = _answer(response)
    message = str(answer.get("message") or "no reason given")
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + "; ".join(str(e) for e in errors)[:300]
    return message


def _not_accepted(response: requests.Response) -> NotifierError:
    # Events are idempotent per dedup_key, so retrying an unclear answer is safe.
    body = " ".join(response.text.split())[:80] or "an empty body"
    return NotifierError(
        f"HTTP {response.status_code} from {redact_url(response.url)} without PagerDuty's "
        f"\"success\" (got {body!r}) — is url the Events API v2 endpoint?", permanent=False)
