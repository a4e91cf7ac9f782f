"""Prometheus Alertmanager API v2: each incident is one alert, fired and resolved.

``POST {url}/api/v2/alerts`` with one alert whose labels identify the incident
(alertname = check, check, target, host, severity, dedup_key, plus the
configured static ``labels``) and whose annotations carry the rendered text.
Alertmanager merges posts with the same labels into one alert, so every post
about an incident must carry the same labels: the status (CRITICAL/WARNING…),
which changes, is an annotation.

A firing alert gets ``endsAt = at + firing_ttl``: kanshi posts on transitions
only, and without ``endsAt`` Alertmanager would resolve the alert by itself
after its ``resolve_timeout`` (5 m by default) while the incident is still
open. A resolving notice posts ``endsAt = at``, which resolves it at once.
Alertmanager answers 200 or 400/422 with the reason: the shared judging fits.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator

from checks.types import OptionalDuration
from notifiers.base import Alert, NotifierConfig
from notifiers.http import HttpNotifier, redact_url
from notifiers.webhook import WebhookConfig

logger = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
FIRING = frozenset({"problem", "change", "flapping_start", "escalation", "reminder",
                    "emergency", "unrecorded"})
RESOLVING = frozenset({"recovery", "flapping_stop", "vanished"})
BUILTIN_LABELS = ("alertname", "check", "target", "host", "severity", "dedup_key")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # Prometheus data model
#: A week: an open incident over a long weekend stays firing; a lost recovery
#: (the outbox gave up) leaves a stale alert for at most this long.
DEFAULT_FIRING_TTL = 7 * 86400.0
#: How far Alertmanager's clock may lag ours and a recovery still resolve at once.
CLOCK_SKEW = timedelta(seconds=60)


class AlertmanagerConfig(WebhookConfig):
    """``url`` is Alertmanager's base URL (with its route prefix, if any)."""

    labels: dict[str, str] = Field(default_factory=dict)
    firing_ttl: OptionalDuration = DEFAULT_FIRING_TTL
    generator_url: str | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"expected a label name such as team or env, got {name!r}")
            if name in BUILTIN_LABELS:
                raise ValueError(f"label {name} is set by kanshi (it identifies the incident)")
        return labels

    @field_validator("generator_url")
    @classmethod
    def _generator_url(cls, url: str | None) -> str | None:
        if url is not None and (not url.startswith(("http://", "https://"))
                                or redact_url(url) == "<invalid url>"):
            raise ValueError("expected an http:// or https:// URL with a host")
        return url


class AlertmanagerNotifier(HttpNotifier):
    """Fires and resolves one Alertmanager alert per incident."""

    type_name: ClassVar[str] = "alertmanager"
    Config: ClassVar[type[NotifierConfig]] = AlertmanagerConfig
    config: AlertmanagerConfig

    def send(self, alert: Alert) -> None:
        """Post ``alert`` once; kinds that are no alert state (reports…) are skipped."""
        posted = self.alert(alert)
        if posted is None:
            logger.debug("notifier %s: a %s notice is no alert state; skipped",
                         self.name, alert.kind)
            return
        cfg = self.config
        headers = {name: value.get_secret_value() for name, value in cfg.headers.items()}
        auth = None
        if cfg.username is not None and cfg.password is not None:
            auth = (cfg.username, cfg.password.get_secret_value())
        url = cfg.url.get_secret_value().rstrip("/") + API_PATH
        self.post(url, json=[posted], headers=headers, auth=auth)

    def alert(self, alert: Alert) -> dict[str, Any] | None:
        """The postable alert for ``alert``, or None for a kind that is no state."""
        if alert.kind not in FIRING | RESOLVING:
            return None
        posted: dict[str, Any] = {"labels": self.labels(alert),
                                  "annotations": describe(alert)}
        starts, at = _instant(alert.detected_at), _instant(alert.at)
        if starts is not None:
            posted["startsAt"] = _rfc3339(starts)
        if (ends := self._ends_at(alert, starts, at)) is not None:
            posted["endsAt"] = _rfc3339(ends)
        if self.config.generator_url:
            posted["generatorURL"] = self.config.generator_url
        return posted

    def labels(self, alert: Alert) -> dict[str, str]:
        """The identity of the incident's alert: the same in every post about it."""
        own = {"alertname": alert.check, "check": alert.check, "target": alert.target,
               "host": alert.host, "severity": alert.severity, "dedup_key": alert.dedup_key}
        # An empty value is the same as no label in Prometheus' data model.
        return {**self.config.labels, **{k: v for k, v in own.items() if v}}

    def _ends_at(self, alert: Alert, starts: datetime | None,
                 at: datetime | None) -> datetime | None:
        now = datetime.now(UTC)
        if alert.kind in RESOLVING:
            return _resolved_at(at or now, starts, now)
        # An unrecorded notice never gets a recovery (it has no incident); it is
        # repeated while the store is broken, so Alertmanager's timeout fits it.
        if alert.kind == "unrecorded" or self.config.firing_ttl is None:
            return None
        return (at or now) + timedelta(seconds=self.config.firing_ttl)


def _resolved_at(at: datetime, starts: datetime | None, now: datetime) -> datetime:
    """``endsAt`` for a resolving post: ``at``, but surely in Alertmanager's past.

    Alertmanager keeps the later ``endsAt`` of a still-firing alert when merging
    (``types.Alert.Merge``): a resolve whose ``endsAt`` is in *its* future — a
    clock a little behind ours — would leave the alert firing for firing_ttl.
    It refuses ``endsAt`` before ``startsAt`` (HTTP 400).
    """
    ends = min(at, now - CLOCK_SKEW)
    return max(ends, starts) if starts is not None else ends


def describe(alert: Alert) -> dict[str, str]:
    """What people read: the rendered subject and body, and the current status."""
    found = {"summary": alert.subject, "description": alert.body, "message": alert.message,
             "status": alert.status, "kind": alert.kind}
    if alert.incident_id:
        found["incident"] = str(alert.incident_id)
    return {name: value for name, value in found.items() if value}


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
