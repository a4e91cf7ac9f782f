"""Runbook runs, their steps, and the per-target locks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts

#: States in which a run still needs its executor.
ACTIVE = ("running", "waiting_lock", "waiting_approval", "waiting_ack")
FINAL = ("succeeded", "failed", "escalated", "cancelled", "interrupted", "planned", "refused")


@dataclass(frozen=True)
class Run:
    id: int
    runbook: str
    target: str
    params: dict[str, Any]
    trigger: str                 # auto | manual | scheduled
    incident_id: int | None
    requested_by: str
    dry_run: bool
    state: str
    level: int
    scheduled_for: datetime
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    owner: str | None
    heartbeat_at: datetime | None
    cancel: bool
    outcome: str
    parent_id: int | None


@dataclass(frozen=True)
class StepRecord:
    id: int
    run_id: int
    level: int
    step: str
    action: str
    attempt: int
    state: str
    started_at: datetime
    ended_at: datetime | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    changed: bool
    summary: str
    error: str | None
    budget_key: str | None
    resumable: bool
    approval_by: str | None
    approval: str | None


class RunbookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- runs ----------------------------------------------------------------------

    def create(self, *, runbook: str, target: str, params: dict[str, Any], trigger: str,
               incident_id: int | None, requested_by: str, dry_run: bool, state: str,
               scheduled_for: datetime, now: datetime, owner: str | None = None,
               parent_id: int | None = None) -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO runbook_runs (runbook, target, params, trigger, incident_id,"
                " requested_by, dry_run, state, scheduled_for, created_at, owner, heartbeat_at,"
                " parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (runbook, target, json.dumps(params, sort_keys=True, default=str), trigger,
                 incident_id, requested_by, int(dry_run), state, ts(scheduled_for), ts(now),
                 owner, ts(now) if owner else None, parent_id))
            return int(cur.fetchone()[0])

    def get(self, run_id: int) -> Run | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM runbook_runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def recent(self, limit: int = 50, *, active_only: bool = False) -> list[Run]:
        where = f" WHERE state IN ({','.join('?' * len(ACTIVE))}, 'scheduled')" \
            if active_only else ""
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT * FROM runbook_runs{where} ORDER BY id DESC LIMIT ?",
                                (*(ACTIVE if active_only else ()), limit)).fetchall()
        return [_run(r) for r in rows]

    def children(self, run_id: int) -> list[Run]:
        """Runs a level of ``run_id`` handed over to (``run:``), oldest first."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM runbook_runs WHERE parent_id = ? ORDER BY id",
                                (run_id,)).fetchall()
        return [_run(r) for r in rows]

    def for_incident(self, incident_id: int) -> list[Run]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM runbook_runs WHERE incident_id = ? ORDER BY id",
                                (incident_id,)).fetchall()
        return [_run(r) for r in rows]

    def created_between(self, first: datetime, last: datetime) -> list[Run]:
        """Runs requested in ``[first, last)``, dry runs included, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM runbook_runs WHERE created_at >= ? AND"
                                " created_at < ? ORDER BY id", (ts(first), ts(last))).fetchall()
        return [_run(r) for r in rows]

    def claim_due(self, now: datetime, owner: str, limit: int) -> list[Run]:
        """Take scheduled runs whose time has come (atomically)."""
        with self.db.tx() as conn:
            rows = conn.execute(
                "UPDATE runbook_runs SET owner = ?, heartbeat_at = ?, state = 'waiting_lock'"
                " WHERE id IN (SELECT id FROM runbook_runs WHERE state = 'scheduled'"
                " AND scheduled_for <= ? AND owner IS NULL ORDER BY scheduled_for, id LIMIT ?"
                f"{self.db.skip_locked}) RETURNING *", (owner, ts(now), ts(now), limit)).fetchall()
        return sorted((_run(r) for r in rows), key=lambda r: r.id)

    def abandoned(self, stale_before: datetime) -> list[Run]:
        """Runs whose owner stopped beating before ``stale_before``."""
        marks = ",".join("?" * len(ACTIVE))
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runbook_runs WHERE state IN ({marks}) AND"
                f" (heartbeat_at IS NULL OR heartbeat_at < ?) ORDER BY id",
                (*ACTIVE, ts(stale_before))).fetchall()
        return [_run(r) for r in rows]

    def adopt(self, run_id: int, owner: str, now: datetime, stale_before: datetime) -> bool:
        """Take over an abandoned run (only if it is still abandoned)."""
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE runbook_runs SET owner = ?, heartbeat_at = ? WHERE id = ? AND"
                " (heartbeat_at IS NULL OR heartbeat_at < ?)",
                (owner, ts(now), run_id, ts(stale_before))).rowcount == 1

    def beat(self, run_id: int, now: datetime) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE runbook_runs SET heartbeat_at = ? WHERE id = ?",
                         (ts(now), run_id))

    def set_state(self, run_id: int, state: str, now: datetime, *, level: int | None = None,
                  outcome: str | None = None) -> None:
        ended = ts(now) if state in FINAL else None
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE runbook_runs SET state = ?, heartbeat_at = ?,"
                " level = COALESCE(?, level), outcome = COALESCE(?, outcome),"
                " started_at = COALESCE(started_at, CASE WHEN ? = 'running' THEN ? END),"
                " ended_at = COALESCE(?, ended_at) WHERE id = ?",
                (state, ts(now), level, outcome, state, ts(now), ended, run_id))

    def request_cancel(self, run_id: int) -> bool:
        marks = ",".join("?" * len(ACTIVE))
        with self.db.tx() as conn:
            return conn.execute(
                f"UPDATE runbook_runs SET cancel = 1 WHERE id = ? AND"
                f" state IN ({marks}, 'scheduled')", (run_id, *ACTIVE)).rowcount == 1

    def cancel_requested(self, run_id: int) -> bool:
        with self.db.read() as conn:
            row = conn.execute("SELECT cancel FROM runbook_runs WHERE id = ?",
                               (run_id,)).fetchone()
        return bool(row and row[0])

    # -- locks ----------------------------------------------------------------------

    def lock(self, target: str, run_id: int, now: datetime) -> int | None:
        """Take the target for ``run_id``; return the holder's run id if someone has it.

        The primary key on ``target`` decides between agents; ``ON CONFLICT DO
        NOTHING`` (not a caught error) keeps a surrounding PostgreSQL transaction usable.
        """
        with self.db.tx() as conn:
            while True:  # the holder may let go between our insert and our look
                if conn.execute("INSERT INTO runbook_locks (target, run_id, acquired_at)"
                                " VALUES (?, ?, ?) ON CONFLICT (target) DO NOTHING"
                                " RETURNING run_id", (target, run_id, ts(now))).fetchone():
                    return None
                row = conn.execute("SELECT run_id FROM runbook_locks WHERE target = ?",
                                   (target,)).fetchone()
                if row is not None:
                    return None if int(row[0]) == run_id else int(row[0])

    def unlock(self, target: str, run_id: int) -> None:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM runbook_locks WHERE target = ? AND run_id = ?",
                         (target, run_id))

    def holder(self, target: str) -> int | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT run_id FROM runbook_locks WHERE target = ?",
                               (target,)).fetchone()
        return int(row[0]) if row else None

    # -- steps -----------------------------------------------------------------------

    def step_started(self, run_id: int, level: int, step: str, action: str, attempt: int,
                     inputs: dict[str, Any], now: datetime, *, budget_key: str | None,
                     resumable: bool, state: str = "running") -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO runbook_steps (run_id, level, step, action, attempt, state,"
                " started_at, inputs, budget_key, resumable) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " RETURNING id",
                (run_id, level, step, action, attempt, state, ts(now),
                 json.dumps(inputs, sort_keys=True, default=str), budget_key, int(resumable)))
            conn.execute("UPDATE runbook_runs SET heartbeat_at = ? WHERE id = ?",
                         (ts(now), run_id))
            return int(cur.fetchone()[0])

    def step_finished(self, step_id: int, state: str, now: datetime, *, changed: bool,
                      outputs: dict[str, Any], summary: str, error: str | None) -> None:
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE runbook_steps SET state = ?, ended_at = ?, changed = ?, outputs = ?,"
                " summary = ?, error = ? WHERE id = ?",
                (state, ts(now), int(changed), json.dumps(outputs, sort_keys=True, default=str),
                 summary, error, step_id))

    def decide(self, step_id: int, decision: str, by: str) -> bool:
        """Record an approval decision on a step that is waiting for one."""
        with self.db.tx() as conn:
            return conn.execute(
                "UPDATE runbook_steps SET approval = ?, approval_by = ? WHERE id = ? AND"
                " state = 'waiting_approval' AND approval IS NULL",
                (decision, by, step_id)).rowcount == 1

    def steps(self, run_id: int) -> list[StepRecord]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM runbook_steps WHERE run_id = ? ORDER BY id",
                                (run_id,)).fetchall()
        return [_step(r) for r in rows]

    def get_step(self, step_id: int) -> StepRecord | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM runbook_steps WHERE id = ?",
                               (step_id,)).fetchone()
        return _step(row) if row else None

    def budget_used(self, budget_key: str, since: datetime) -> int:
        """Budgeted actions that really ran (not dry runs) since ``since``."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM runbook_steps s JOIN runbook_runs r ON r.id = s.run_id"
                " WHERE s.budget_key = ? AND s.started_at >= ? AND r.dry_run = 0"
                " AND s.state IN ('running', 'succeeded', 'failed', 'timed_out')",
                (budget_key, ts(since))).fetchone()
        return int(row[0])


def _run(r: Any) -> Run:
    return Run(r["id"], r["runbook"], r["target"], json.loads(r["params"]), r["trigger"],
               r["incident_id"], r["requested_by"], bool(r["dry_run"]), r["state"], r["level"],
               parse_ts(r["scheduled_for"]), parse_ts(r["created_at"]), _maybe(r["started_at"]),
               _maybe(r["ended_at"]), r["owner"], _maybe(r["heartbeat_at"]), bool(r["cancel"]),
               r["outcome"], r["parent_id"])


def _step(r: Any) -> StepRecord:
    return StepRecord(r["id"], r["run_id"], r["level"], r["step"], r["action"], r["attempt"],
                      r["state"], parse_ts(r["started_at"]), _maybe(r["ended_at"]),
                      json.loads(r["inputs"]), json.loads(r["outputs"]), bool(r["changed"]),
                      r["summary"], r["error"], r["budget_key"], bool(r["resumable"]),
                      r["approval_by"], r["approval"])


def _maybe(text: str | None) -> datetime | None:
    return parse_ts(text) if text else None
