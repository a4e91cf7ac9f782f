"""The durable notification outbox: write first, send later, retry until delivered.

A notice is rendered and stored in the same transaction as the incident event
that caused it (so a crash can neither lose it nor invent it). The
:class:`Dispatcher` claims due notices, sends them, records every attempt and
retries with exponential backoff until ``give_up_after``; a notice still
undelivered after ``fallback_after`` (or failed for good) is copied once to the
channel's fallback. Each channel's notices of one incident go out in order.
"""

from __future__ import annotations

import logging
import threading
import zoneinfo
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from agent.config import NotifierSpec
from agent.config.models import OutboxSettings
from agent.store import Store
from agent.store.notifications import Notification
from checks.base import Clock
from notifiers.base import Alert, Notifier, NotifierError
from notifiers.render import render

logger = logging.getLogger(__name__)

#: A claimed notice is someone's for this long; a crashed sender's claim then lapses.
LEASE = timedelta(minutes=5)


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
        subject, body = render(context, locale)
        return {**context, "locale": locale, "subject": subject, "body": body}


class Dispatcher:
    """Delivers due notices in background threads."""

    def __init__(self, store: Store, clock: Clock, settings: OutboxSettings,
                 notifiers: Mapping[str, Notifier], outbox: Outbox,
                 scrub: Any = str, workers: int = 4) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.notifiers = notifiers
        self.outbox = outbox
        self.scrub = scrub
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="notify")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due notices now (called after something was enqueued)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let sends in flight finish (up to ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("outbox pass failed; retrying in a moment")
            self._wake.wait(self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        due = self.store.notifications.next_due()
        if due is None:
            return 5.0
        return min(5.0, max(0.05, (due - self.clock.now()).total_seconds()))

    def run_once(self) -> int:
        """Queue fallbacks, then claim and deliver what is due; return how many were tried."""
        self._queue_fallbacks()
        self.store.notifications.expire(self.clock.now())
        claimed = self.store.notifications.claim_due(self.clock.now(), self.clock.now() + LEASE,
                                                     limit=50)
        if self._stop.is_set():
            for n in claimed:
                self.store.notifications.release(n.id)
            return 0
        for future in [self._pool.submit(self._deliver, n) for n in claimed]:
            future.result()
        return len(claimed)

    def _deliver(self, notification: Notification) -> None:
        notifier = self.notifiers.get(notification.channel)
        started, t0 = self.clock.now(), self.clock.monotonic()
        error, permanent = None, False
        if notifier is None:
            error, permanent = f"channel '{notification.channel}' is no longer configured", True
        else:
            alert = Alert.from_dict({**notification.payload, "notification_id": notification.id})
            try:
                notifier.send(alert)
            except NotifierError as exc:
                error, permanent = str(exc), exc.permanent
            except Exception as exc:  # a notifier bug must not stop the outbox
                error = f"{type(exc).__name__}: {exc}"
        duration = self.clock.monotonic() - t0
        if error is None:
            self._delivered(notification, started, duration)
        else:
            self._failed(notification, started, duration, self.scrub(error), permanent)

    def _delivered(self, n: Notification, at: datetime, duration: float) -> None:
        with self.store.db.tx():
            self.store.notifications.delivered(n.id, at, duration)
            if n.incident_id is not None:
                self.store.incidents.add_event(
                    n.incident_id, at, "notified", message=f"{n.kind} notice via {n.channel}",
                    data={"notification_id": n.id, "channel": n.channel, "kind": n.kind,
                          "attempt": n.attempts + 1})
        logger.info("notice #%d (%s) delivered via %s", n.id, n.kind, n.channel)

    def _failed(self, n: Notification, at: datetime, duration: float, error: str,
                permanent: bool) -> None:
        attempt = n.attempts + 1
        retry_at = None if permanent else at + timedelta(seconds=self.backoff(attempt))
        final = "failed"
        if retry_at is not None and retry_at >= n.expires_at:
            retry_at, final = None, "expired"
        self.store.notifications.failed(n.id, at, duration, error, retry_at, final)
        if retry_at is None:
            logger.error("notice #%d via %s %s after %d attempt(s): %s", n.id, n.channel,
                         "failed for good" if final == "failed" else "given up", attempt, error)
        else:
            logger.warning("notice #%d via %s failed (attempt %d, next try %s): %s", n.id,
                           n.channel, attempt, f"{retry_at:%H:%M:%S} UTC", error)

    def backoff(self, attempt: int) -> float:
        """Seconds before try ``attempt + 1``: doubling from ``retry_initial`` to ``retry_max``."""
        return float(min(self.settings.retry_initial * 2 ** (attempt - 1),
                         self.settings.retry_max))

    def _queue_fallbacks(self) -> None:
        with_fallback = {name for name, spec in self.outbox.channels.items() if spec.fallback}
        for n in self.store.notifications.needing_fallback(self.clock.now(), with_fallback):
            if n.origin_id is None:  # a fallback copy never falls back again
                target = self.outbox.channels[n.channel].fallback
                assert target is not None
                with self.store.db.tx():
                    self.outbox.enqueue({**n.payload}, [target], event_id=n.event_id,
                                        origin_id=n.id)
                    self.store.notifications.mark_fallback_queued(n.id)
                logger.warning("notice #%d via %s undelivered (%s); copied to fallback %s",
                               n.id, n.channel, n.last_error or n.state, target)
            else:
                self.store.notifications.mark_fallback_queued(n.id)
