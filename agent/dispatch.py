"""Deliver the outbox: one worker per channel, retries, fallback, expiry.

Each channel has its own worker thread that claims that channel's due notices
(oldest first, each incident's in order) and sends them one at a time — so a
slow or hung channel (an SMTP server that never answers, a terminal someone
paused) delays only itself. Every attempt is recorded; a failure is retried with
doubling backoff until ``give_up_after``; a notice still undelivered after
``fallback_after`` (or failed for good) is copied once to the channel's
fallback, unless that channel already carries this or a later notice of the
incident. A separate housekeeping pass does the copying and expiry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from agent.config.models import OutboxSettings
from agent.outbox import Outbox
from agent.store import Store
from agent.store.notifications import Notification
from checks.base import Clock
from notifiers.base import Alert, Notifier, NotifierError

logger = logging.getLogger(__name__)

#: A claimed notice is its worker's for this long; a crashed sender's claim then lapses.
LEASE = timedelta(minutes=5)
#: Notices one worker claims at a time (it sends them one by one).
BATCH = 10
#: Longest sleep of an idle worker; wake() cuts it short.
IDLE = 5.0
#: Notice kinds that carry a report to the customer.
REPORTS = {"failure_report": "failure report", "post_incident_report": "post-incident report"}


class Dispatcher:
    """Runs a worker per configured channel plus a housekeeping loop."""

    def __init__(self, store: Store, clock: Clock, settings: OutboxSettings,
                 notifiers: Mapping[str, Notifier], outbox: Outbox,
                 scrub: Callable[[str], str] = str, owner: str | None = None) -> None:
        self.store = store
        #: This agent's id on a shared store (claims are marked with it), else None.
        self.owner = owner
        self.clock = clock
        self.settings = settings
        self.notifiers = notifiers
        self.outbox = outbox
        self.scrub = scrub
        self._stop = threading.Event()
        self._wakes = {name: threading.Event() for name in [*notifiers, ""]}
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Reclaim notices a dead process left half-sent, then start the workers.

        Alone on a store (the state directory's lock held) every claim is a dead
        process's; on a shared one only those of agents whose lease has lapsed.
        """
        if self.owner is None:
            released = self.store.notifications.release_all()
        else:
            released = self.store.notifications.release_dead(self.clock.now(), self.owner)
        if released:
            logger.warning("%d notice(s) were being sent when kanshi last stopped; "
                           "they will be sent again", released)
        for name in self.notifiers:
            self._spawn(f"notify:{name}", self._channel_loop, name)
        self._spawn("outbox", self._housekeeping_loop)

    def _spawn(self, name: str, target: Callable[..., None], *args: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def wake(self) -> None:
        """Look for due notices now (called after something was enqueued)."""
        for event in self._wakes.values():
            event.set()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop claiming, let sends in flight finish; True if every worker ended in time."""
        self._stop.set()
        self.wake()
        deadline = self.clock.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self.clock.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            logger.error("still sending after %g s, left behind: %s (their notices will be "
                         "sent again at the next start)", timeout, ", ".join(stuck))
        return not stuck

    @property
    def alive(self) -> bool:
        """Every worker is still running (or none was started)."""
        return all(t.is_alive() for t in self._threads) or self._stop.is_set()

    # -- loops -------------------------------------------------------------------

    def _channel_loop(self, channel: str) -> None:
        wake = self._wakes[channel]
        while not self._stop.is_set():
            pause = IDLE
            try:
                self.deliver_due(channel)
                pause = self._pause(channel)
            except Exception:
                logger.exception("delivering notices via %s failed; retrying shortly", channel)
            wake.wait(pause)
            wake.clear()

    def _housekeeping_loop(self) -> None:
        wake = self._wakes[""]
        while not self._stop.is_set():
            try:
                self.housekeeping()
            except Exception:
                logger.exception("outbox housekeeping failed; retrying shortly")
            wake.wait(1.0)
            wake.clear()

    def _pause(self, channel: str) -> float:
        due = self.store.notifications.next_due(channel)
        if due is None:
            return IDLE
        return min(IDLE, max(0.05, (due - self.clock.now()).total_seconds()))

    def run_once(self) -> int:
        """One synchronous pass over everything (tests, and `kanshi` tools)."""
        self.housekeeping()
        return sum(self.deliver_due(name) for name in self.notifiers)

    # -- housekeeping --------------------------------------------------------------

    def housekeeping(self) -> None:
        """Copy overdue notices to fallbacks, fail orphans, expire the hopeless."""
        now = self.clock.now()
        orphans = self.store.notifications.fail_unconfigured(now, set(self.notifiers))
        if orphans:
            logger.error("%d notice(s) for channels no longer configured were dropped", orphans)
        self._queue_fallbacks(now)
        self.store.notifications.expire(now)

    def _queue_fallbacks(self, now: datetime) -> None:
        with_fallback = {name for name, spec in self.outbox.channels.items() if spec.fallback}
        for n in self.store.notifications.needing_fallback(now, with_fallback):
            target = self.outbox.channels[n.channel].fallback
            with self.store.db.tx():
                if not self.store.notifications.mark_fallback_queued(n.id):
                    continue  # another agent's housekeeping got there first
                if n.origin_id is not None or target is None or self._covered(n, target):
                    continue  # a copy never falls back again; no stale or second copy
                self.outbox.enqueue({**n.payload}, [target], event_id=n.event_id, origin_id=n.id)
            logger.warning("notice #%d via %s undelivered (%s); copied to fallback %s", n.id,
                           n.channel, n.last_error or n.state, target)

    def _covered(self, n: Notification, channel: str) -> bool:
        """``channel`` already has this notice or a later one of the same incident."""
        if n.incident_id is None or n.event_id is None:
            return False
        return self.store.notifications.has_event_since(channel, n.incident_id, n.event_id)

    # -- delivery -----------------------------------------------------------------------

    def deliver_due(self, channel: str) -> int:
        """Claim and send ``channel``'s due notices; return how many were tried."""
        now = self.clock.now()
        claimed = self.store.notifications.claim_due(now, now + LEASE, BATCH, channel,
                                                     self.owner)
        tried = 0
        for notification in claimed:
            if self._stop.is_set():
                self.store.notifications.release(notification.id)
                continue
            self._deliver(notification)
            tried += 1
        return tried

    def _deliver(self, notification: Notification) -> None:
        notifier = self.notifiers[notification.channel]
        alert = Alert.from_dict({**notification.payload, "notification_id": notification.id})
        started, t0 = self.clock.now(), self.clock.monotonic()
        error, permanent, asked = None, False, None
        try:
            notifier.send(alert)
        except NotifierError as exc:
            error, permanent, asked = str(exc), exc.permanent, exc.retry_after
        except Exception as exc:  # a notifier bug must not stop the outbox
            error = f"{type(exc).__name__}: {exc}"
        duration = self.clock.monotonic() - t0
        if error is None:
            self._delivered(notification, started, duration)
        else:
            self._failed(notification, started, duration, self.scrub(error), permanent, asked)

    def _delivered(self, n: Notification, at: datetime, duration: float) -> None:
        spec = self.outbox.channels.get(n.channel)
        data = {"notification_id": n.id, "channel": n.channel, "kind": n.kind,
                "attempt": n.attempts + 1, "audience": spec.audience if spec else "customer"}
        # Delivery, not queueing, is what stops a clock (first notice, report sent).
        kind, what = "notified", f"{n.kind} notice"
        if n.kind in REPORTS:
            kind, what = "report_sent", REPORTS[n.kind]
            data["report"] = n.kind.removesuffix("_report")
        with self.store.db.tx():
            self.store.notifications.delivered(n.id, at, duration)
            if n.incident_id is not None:
                self.store.incidents.add_event(n.incident_id, at, kind,
                                               message=f"{what} via {n.channel}", data=data)
        logger.info("notice #%d (%s) delivered via %s", n.id, n.kind, n.channel)

    def _failed(self, n: Notification, at: datetime, duration: float, error: str,
                permanent: bool, asked: float | None = None) -> None:
        attempt = n.attempts + 1
        wait = max(self.backoff(attempt), asked or 0.0)  # honour the peer's Retry-After
        retry_at = None if permanent else at + timedelta(seconds=wait)
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
        return float(min(self.settings.retry_initial * 2 ** min(attempt - 1, 60),
                         self.settings.retry_max))
