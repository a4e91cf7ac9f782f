"""The durable notification outbox: write first, send later (``agent.dispatch``).

A notice is rendered and stored in the same transaction as the incident event
that caused it, so a crash can neither lose it nor invent it.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from agent.config import NotifierSpec
from agent.config.models import OutboxSettings
from agent.store import Store
from checks.base import Clock
from notifiers.render import render

logger = logging.getLogger(__name__)


class Outbox:
    """Renders notices and stores them for delivery."""

    def __init__(self, store: Store, clock: Clock, settings: OutboxSettings,
                 channels: Mapping[str, NotifierSpec], timezone: str) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.channels = channels
        self.zone = zoneinfo.ZoneInfo(timezone)

    def enqueue(self, fields: dict[str, Any], channels: Iterable[str], *,
                event_id: int | None, origin_id: int | None = None) -> list[int]:
        """Store one notice per enabled channel; return their ids."""
        now = self.clock.now()
        context = self._context(fields)
        ids = []
        for name in channels:
            spec = self.channels.get(name)
            if spec is None or not spec.enabled:
                continue
            ids.append(self.store.notifications.add(
                incident_id=fields.get("incident_id"), event_id=event_id, channel=name,
                kind=fields["kind"], payload=self._payload(context, spec.locale), now=now,
                fallback_at=now + timedelta(seconds=self.settings.fallback_after),
                expires_at=now + timedelta(seconds=self.settings.give_up_after),
                origin_id=origin_id))
        return ids

    def _context(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Everything a template may use, JSON-safe (times as ISO and local text)."""
        context = dict(fields)
        for key, local in (("detected_at", "detected_local"), ("at", "at_local")):
            moment = fields.get(key)
            if isinstance(moment, datetime):
                context[key] = moment.isoformat()
                context[local] = moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        context.setdefault("outage", context.get("outage_seconds"))
        return context

    @staticmethod
    def _payload(context: dict[str, Any], locale: str) -> dict[str, Any]:
        try:
            subject, body = render(context, locale)
        except Exception:  # a template bug must not cost the incident or the notice
            logger.exception("rendering a %s notice failed; sending it unformatted",
                             context.get("kind"))
            subject, body = plain(context)
        return {**context, "locale": locale, "subject": subject, "body": body}


def plain(context: dict[str, Any]) -> tuple[str, str]:
    """A notice without templates: the facts, in English."""
    what = f"{context.get('check')} {context.get('target') or ''} on {context.get('host')}"
    subject = f"[kanshi] {context.get('kind')} {context.get('status')}: {' '.join(what.split())}"
    body = "\n".join(f"{key}: {context.get(key)}" for key in (
        "message", "status", "previous_status", "severity", "detected_at", "at",
        "incident_id")) + "\n"
    return subject, body
