"""Latest results, confirmation state, result history and checks' private memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.confirm import CheckState
from agent.store.db import Database, parse_ts, ts
from checks.base import Result, Status


@dataclass(frozen=True)
class LatestResult:
    """One row of "what does each check say right now"."""

    check: str
    target: str
    status: Status
    message: str
    metrics: dict[str, float]
    at: datetime
    duration: float
    state: CheckState


class CheckStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def states(self, check: str) -> dict[str, CheckState]:
        """Confirmation state of every target of ``check``."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM check_state WHERE check_name = ?",
                                (check,)).fetchall()
        return {row["target"]: _state(row) for row in rows}

    def record(self, result: Result, state: CheckState) -> None:
        """Store ``result`` in history and as the latest, with its new state."""
        at = ts(result.at) if result.at else ts(state.hard_since)
        metrics = json.dumps(result.metrics, sort_keys=True)
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO results (check_name, target, status, message, metrics, at, duration)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (result.check, result.target, int(result.status), result.message, metrics, at,
                 result.duration))
            conn.execute(
                "INSERT INTO check_state (check_name, target, status, message, metrics,"
                " last_run_at, duration, hard_status, hard_since, pending_status, pending_count,"
                " pending_since, history, flapping) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (check_name, target) DO UPDATE SET status = excluded.status,"
                " message = excluded.message, metrics = excluded.metrics,"
                " last_run_at = excluded.last_run_at, duration = excluded.duration,"
                " hard_status = excluded.hard_status, hard_since = excluded.hard_since,"
                " pending_status = excluded.pending_status,"
                " pending_count = excluded.pending_count, pending_since = excluded.pending_since,"
                " history = excluded.history, flapping = excluded.flapping",
                (result.check, result.target, int(result.status), result.message, metrics, at,
                 result.duration, int(state.hard_status), ts(state.hard_since),
                 None if state.pending_status is None else int(state.pending_status),
                 state.pending_count,
                 None if state.pending_since is None else ts(state.pending_since),
                 state.history, int(state.flapping)))

    def settle(self, check: str, target: str, at: datetime) -> None:
        """Mark (check, target) confirmed OK since ``at`` (its recovery was verified)."""
        with self.db.tx() as conn:
            conn.execute("UPDATE check_state SET hard_status = 0, hard_since = ?,"
                         " pending_status = NULL, pending_count = 0, pending_since = NULL"
                         " WHERE check_name = ? AND target = ?", (ts(at), check, target))

    def forget(self, check: str, target: str | None = None) -> None:
        """Drop the state of one target, or of every target of ``check``."""
        with self.db.tx() as conn:
            if target is None:
                conn.execute("DELETE FROM check_state WHERE check_name = ?", (check,))
            else:
                conn.execute("DELETE FROM check_state WHERE check_name = ? AND target = ?",
                             (check, target))

    def latest(self) -> list[LatestResult]:
        """The latest result of every (check, target), worst first is the caller's job."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM check_state ORDER BY check_name, target").fetchall()
        return [LatestResult(r["check_name"], r["target"], Status(r["status"]), r["message"],
                             json.loads(r["metrics"]), parse_ts(r["last_run_at"]),
                             r["duration"], _state(r)) for r in rows]

    def checks_with_state(self) -> set[str]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT DISTINCT check_name FROM check_state").fetchall()
        return {r[0] for r in rows}

    def history(self, check: str, target: str, since: datetime) -> list[Result]:
        """Results of one (check, target) since ``since``, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM results WHERE check_name = ? AND target = ? AND at >= ?"
                " ORDER BY at", (check, target, ts(since))).fetchall()
        return [Result(Status(r["status"]), r["message"], r["target"], json.loads(r["metrics"]),
                       r["check_name"], parse_ts(r["at"]), r["duration"]) for r in rows]

    def prune_history(self, before: datetime) -> int:
        """Delete results older than ``before``; return how many went."""
        with self.db.tx() as conn:
            return conn.execute("DELETE FROM results WHERE at < ?", (ts(before),)).rowcount

    def kv_load(self, check: str) -> dict[str, Any]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT key, value FROM check_kv WHERE check_name = ?",
                                (check,)).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def kv_save(self, check: str, items: dict[str, Any]) -> None:
        """Replace ``check``'s private memory with ``items``."""
        with self.db.tx() as conn:
            conn.execute("DELETE FROM check_kv WHERE check_name = ?", (check,))
            conn.executemany("INSERT INTO check_kv (check_name, key, value) VALUES (?, ?, ?)",
                             [(check, k, json.dumps(v)) for k, v in items.items()])


def _state(row: Any) -> CheckState:
    pending = row["pending_status"]
    since = row["pending_since"]
    return CheckState(Status(row["hard_status"]), parse_ts(row["hard_since"]),
                      None if pending is None else Status(pending), row["pending_count"],
                      None if since is None else parse_ts(since), row["history"],
                      bool(row["flapping"]))
