"""The notification outbox and its delivery attempts.

States: ``pending`` → ``sending`` (claimed, with a lease) → ``delivered``; or
``failed`` (a permanent error) / ``expired`` (gave up after ``give_up_after``).
A ``sending`` row whose lease ran out — the agent died mid-send — is claimable
again, so nothing is lost to a crash. On a shared (PostgreSQL) store several
agents claim at once: the inner SELECT takes its rows ``FOR UPDATE SKIP LOCKED``,
so each notice goes to exactly one of them, and ``claimed_by`` lets a dead
agent's claims be given back as soon as its agent lease lapses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts

_CLAIM = """
UPDATE notifications SET state = 'sending', claimed_until = :lease, claimed_by = :owner
WHERE id IN (
    SELECT n.id FROM notifications n
    WHERE n.channel = :channel
      AND ((n.state = 'pending' AND n.next_attempt_at <= :now)
           OR (n.state = 'sending' AND n.claimed_until < :now))
      AND NOT EXISTS (  -- keep each channel's notices of one incident in order
          SELECT 1 FROM notifications p
          WHERE p.channel = n.channel AND p.id < n.id
            AND p.incident_id IS NOT DISTINCT FROM n.incident_id
            AND p.state IN ('pending', 'sending'))
    ORDER BY n.id LIMIT :limit{skip_locked})
RETURNING *
"""


@dataclass(frozen=True)
class Notification:
    id: int
    incident_id: int | None
    event_id: int | None
    channel: str
    kind: str
    payload: dict[str, Any]
    state: str
    created_at: datetime
    next_attempt_at: datetime
    fallback_at: datetime
    expires_at: datetime
    attempts: int
    delivered_at: datetime | None
    last_error: str | None
    origin_id: int | None


@dataclass(frozen=True)
class Attempt:
    at: datetime
    duration: float
    ok: bool
    error: str | None


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, *, incident_id: int | None, event_id: int | None, channel: str, kind: str,
            payload: dict[str, Any], now: datetime, fallback_at: datetime,
            expires_at: datetime, origin_id: int | None = None) -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO notifications (incident_id, event_id, channel, kind, payload,"
                " created_at, next_attempt_at, fallback_at, expires_at, origin_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (incident_id, event_id, channel, kind, json.dumps(payload, ensure_ascii=False),
                 ts(now), ts(now), ts(fallback_at), ts(expires_at), origin_id))
            return int(cur.fetchone()[0])

    def claim_due(self, now: datetime, lease_until: datetime, limit: int,
                  channel: str, owner: str | None = None) -> list[Notification]:
        """Atomically take up to ``limit`` of ``channel``'s notices that are due."""
        with self.db.tx() as conn:
            rows = conn.execute(_CLAIM.format(skip_locked=self.db.skip_locked),
                                {"lease": ts(lease_until), "now": ts(now), "limit": limit,
                                 "channel": channel, "owner": owner}).fetchall()
        return sorted((_notification(r) for r in rows), key=lambda n: n.id)

    def delivered(self, notification_id: int, at: datetime, duration: float) -> None:
        with self.db.tx() as conn:
            self._attempt(conn, notification_id, at, duration, None)
            conn.execute("UPDATE notifications SET state = 'delivered', delivered_at = ?,"
                         " attempts = attempts + 1, claimed_until = NULL, last_error = NULL"
                         " WHERE id = ?", (ts(at), notification_id))

    def failed(self, notification_id: int, at: datetime, duration: float, error: str,
               retry_at: datetime | None, final_state: str = "failed") -> None:
        """Record a failed attempt; retry at ``retry_at`` or stop in ``final_state``."""
        with self.db.tx() as conn:
            self._attempt(conn, notification_id, at, duration, error)
            state = "pending" if retry_at is not None else final_state
            conn.execute("UPDATE notifications SET state = ?, attempts = attempts + 1,"
                         " next_attempt_at = COALESCE(?, next_attempt_at), claimed_until = NULL,"
                         " last_error = ? WHERE id = ?",
                         (state, None if retry_at is None else ts(retry_at), error,
                          notification_id))

    def release_all(self) -> int:
        """Give back every claim (at start, when no other sender can be alive)."""
        with self.db.tx() as conn:
            return conn.execute("UPDATE notifications SET state = 'pending', claimed_until = NULL,"
                                " claimed_by = NULL WHERE state = 'sending'").rowcount

    def release_dead(self, now: datetime, me: str) -> int:
        """Give back claims of agents that are no longer live (a shared store)."""
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE notifications SET state = 'pending', claimed_until = NULL,"
                " claimed_by = NULL WHERE state = 'sending' AND (claimed_by IS NULL OR"
                " (claimed_by != ? AND claimed_by NOT IN (SELECT id FROM agents"
                " WHERE expires_at > ? AND stopped_at IS NULL)))", (me, ts(now))).rowcount

    def fail_unconfigured(self, now: datetime, channels: set[str]) -> int:
        """Stop notices waiting for a channel that is no longer configured."""
        marks = ",".join("?" * len(channels)) or "''"
        with self.db.tx() as conn:
            return conn.execute(
                f"UPDATE notifications SET state = 'failed', claimed_until = NULL,"
                f" last_error = 'the channel is no longer configured (removed or disabled)'"
                f" WHERE state IN ('pending', 'sending') AND channel NOT IN ({marks})",
                tuple(sorted(channels))).rowcount

    def has_event_since(self, channel: str, incident_id: int, event_id: int) -> bool:
        """Does ``channel`` carry a notice of ``incident_id`` for this or a later event?"""
        with self.db.read() as conn:
            row = conn.execute("SELECT 1 FROM notifications WHERE channel = ? AND"
                               " incident_id = ? AND event_id >= ? LIMIT 1",
                               (channel, incident_id, event_id)).fetchone()
        return row is not None

    def release(self, notification_id: int) -> None:
        """Give a claimed notice back untouched (e.g. on shutdown)."""
        with self.db.tx() as conn:
            conn.execute("UPDATE notifications SET state = 'pending', claimed_until = NULL,"
                         " claimed_by = NULL WHERE id = ? AND state = 'sending'",
                         (notification_id,))

    def needing_fallback(self, now: datetime, channels: set[str]) -> list[Notification]:
        """Undelivered notices past their fallback time (or given up) on ``channels``."""
        if not channels:
            return []
        marks = ",".join("?" * len(channels))
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM notifications WHERE fallback_queued = 0 AND state != 'delivered'"
                f" AND (fallback_at <= ? OR state IN ('failed', 'expired'))"
                f" AND channel IN ({marks}) ORDER BY id", (ts(now), *sorted(channels))).fetchall()
        return [_notification(r) for r in rows]

    def mark_fallback_queued(self, notification_id: int) -> bool:
        """Mark the notice's fallback as handled; False if another agent already did."""
        with self.db.tx() as conn:
            return conn.execute("UPDATE notifications SET fallback_queued = 1 WHERE id = ?"
                                " AND fallback_queued = 0", (notification_id,)).rowcount == 1

    def expire(self, now: datetime) -> int:
        """Stop retrying notices past their ``expires_at``."""
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE notifications SET state = 'expired' WHERE state = 'pending'"
                " AND expires_at <= ?", (ts(now),)).rowcount

    def get(self, notification_id: int) -> Notification | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM notifications WHERE id = ?",
                               (notification_id,)).fetchone()
        return _notification(row) if row else None

    def for_incident(self, incident_id: int) -> list[Notification]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM notifications WHERE incident_id = ? ORDER BY id",
                                (incident_id,)).fetchall()
        return [_notification(r) for r in rows]

    def attempts(self, notification_id: int) -> list[Attempt]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM notification_attempts WHERE notification_id = ?"
                                " ORDER BY id", (notification_id,)).fetchall()
        return [Attempt(parse_ts(r["at"]), r["duration"], bool(r["ok"]), r["error"])
                for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of notices per state."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM notifications GROUP BY state")
            return {r[0]: r[1] for r in rows.fetchall()}

    def next_due(self, channel: str) -> datetime | None:
        """When ``channel``'s earliest pending notice becomes due."""
        with self.db.read() as conn:
            row = conn.execute("SELECT MIN(next_attempt_at) FROM notifications"
                               " WHERE state = 'pending' AND channel = ?", (channel,)).fetchone()
        return parse_ts(row[0]) if row and row[0] else None

    @staticmethod
    def _attempt(conn: Any, notification_id: int, at: datetime, duration: float,
                 error: str | None) -> None:
        conn.execute("INSERT INTO notification_attempts (notification_id, at, duration, ok, error)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (notification_id, ts(at), duration, int(error is None), error))


def _notification(row: Any) -> Notification:
    delivered = row["delivered_at"]
    return Notification(row["id"], row["incident_id"], row["event_id"], row["channel"],
                        row["kind"], json.loads(row["payload"]), row["state"],
                        parse_ts(row["created_at"]), parse_ts(row["next_attempt_at"]),
                        parse_ts(row["fallback_at"]), parse_ts(row["expires_at"]),
                        row["attempts"], None if delivered is None else parse_ts(delivered),
                        row["last_error"], row["origin_id"])
