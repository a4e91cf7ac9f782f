"""Maintenance windows added by operators (config windows live in the config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts


@dataclass(frozen=True)
class StoredWindow:
    id: int
    targets: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime                 # ended_at, if it was ended early
    reason: str
    created_by: str
    ended_early: bool


class MaintenanceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, targets: tuple[str, ...], starts_at: datetime, ends_at: datetime,
            reason: str, created_by: str, now: datetime) -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO maintenance_windows (targets, starts_at, ends_at, reason,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (json.dumps(list(targets)), ts(starts_at), ts(ends_at), reason, created_by,
                 ts(now)))
            return int(cur.fetchone()[0])

    def end(self, window_id: int, at: datetime) -> bool:
        """End a window now (or cancel one not started yet); False if none was open."""
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE maintenance_windows SET ended_at = ? WHERE id = ? AND ended_at IS NULL"
                " AND ends_at > ?", (ts(at), window_id, ts(at))).rowcount == 1

    def overlapping(self, first: datetime, last: datetime) -> list[StoredWindow]:
        """Windows that overlap ``[first, last)``."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM maintenance_windows WHERE COALESCE(ended_at, ends_at) > ?"
                " AND starts_at < ? ORDER BY starts_at", (ts(first), ts(last))).fetchall()
        return [_window(r) for r in rows]

    def recent(self, limit: int = 50) -> list[StoredWindow]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM maintenance_windows ORDER BY starts_at DESC"
                                " LIMIT ?", (limit,)).fetchall()
        return [_window(r) for r in rows]


def _window(row: Any) -> StoredWindow:
    # A window covers no time before it was made: the past cannot be re-labelled
    # maintenance after the fact (it would rewrite SLA results).
    start = max(parse_ts(row["starts_at"]), parse_ts(row["created_at"]))
    planned_end = parse_ts(row["ends_at"])
    ended = row["ended_at"]
    end = min(parse_ts(ended), planned_end) if ended else planned_end
    return StoredWindow(row["id"], tuple(json.loads(row["targets"])), start, max(start, end),
                        row["reason"], row["created_by"], ended is not None)
