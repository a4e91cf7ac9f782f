"""Incidents and their timelines.

The timeline (``incident_events``) is the record; the ``incidents`` row is kept
in step in the same transaction so lists and "is one open?" stay cheap.
Acknowledgement is read from the timeline, never stored twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts
from checks.base import Status

_SELECT = (
    "SELECT i.*, (SELECT actor FROM incident_events e WHERE e.incident_id = i.id"
    " AND e.kind = 'acknowledged' ORDER BY e.at DESC, e.id DESC LIMIT 1) AS acked_by"
    " FROM incidents i")


@dataclass(frozen=True)
class Incident:
    id: int
    dedup_key: str
    check: str
    target: str
    status: Status
    severity: str
    message: str
    opened_at: datetime
    resolved_at: datetime | None
    flapping: bool
    acknowledged_by: str | None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: int
    at: datetime
    kind: str
    status: Status | None
    message: str
    actor: str
    data: dict[str, Any]


def dedup_key(check: str, target: str) -> str:
    """The stable identity of what an incident is about (PagerDuty ``dedup_key`` style)."""
    return f"{check}/{target}" if target else check


class IncidentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def open_for(self, key: str) -> Incident | None:
        with self.db.read() as conn:
            row = conn.execute(f"{_SELECT} WHERE i.dedup_key = ? AND i.resolved_at IS NULL",
                               (key,)).fetchone()
        return _incident(row) if row else None

    def create(self, check: str, target: str, status: Status, severity: str, message: str,
               opened_at: datetime, flapping: bool = False) -> int:
        """Open an incident. A second open one for the same (check, target) — two agents
        racing — violates ``incidents_one_open`` and rolls back the whole transaction,
        notices included, so exactly one incident and one problem notice survive."""
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO incidents (dedup_key, check_name, target, status, severity, message,"
                " opened_at, flapping) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (dedup_key(check, target), check, target, int(status), severity, message,
                 ts(opened_at), int(flapping)))
            return int(cur.fetchone()[0])

    def add_event(self, incident_id: int, at: datetime, kind: str, *,
                  status: Status | None = None, message: str = "", actor: str = "",
                  data: dict[str, Any] | None = None) -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO incident_events (incident_id, at, kind, status, message, actor, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (incident_id, ts(at), kind, None if status is None else int(status), message,
                 actor, json.dumps(data or {}, sort_keys=True, default=str)))
            return int(cur.fetchone()[0])

    def update(self, incident_id: int, *, status: Status | None = None,
               message: str | None = None, flapping: bool | None = None,
               severity: str | None = None) -> None:
        sets: list[str] = []
        values: list[Any] = []
        for column, value in (("status", None if status is None else int(status)),
                              ("message", message),
                              ("flapping", None if flapping is None else int(flapping)),
                              ("severity", severity)):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if sets:
            with self.db.tx() as conn:
                conn.execute(f"UPDATE incidents SET {', '.join(sets)} WHERE id = ?",
                             (*values, incident_id))

    def resolve(self, incident_id: int, at: datetime) -> bool:
        """Resolve an open incident; False if it was already resolved (by another agent)."""
        with self.db.tx() as conn:
            return conn.execute("UPDATE incidents SET resolved_at = ? WHERE id = ?"
                                " AND resolved_at IS NULL", (ts(at), incident_id)).rowcount == 1

    def get(self, incident_id: int) -> Incident | None:
        with self.db.read() as conn:
            row = conn.execute(f"{_SELECT} WHERE i.id = ?", (incident_id,)).fetchone()
        return _incident(row) if row else None

    def find(self, *, open_only: bool = True, limit: int = 100) -> list[Incident]:
        where = " WHERE i.resolved_at IS NULL" if open_only else ""
        with self.db.read() as conn:
            rows = conn.execute(f"{_SELECT}{where} ORDER BY i.opened_at DESC, i.id DESC LIMIT ?",
                                (limit,)).fetchall()
        return [_incident(r) for r in rows]

    def overlapping(self, first: datetime, last: datetime) -> list[Incident]:
        """Incidents open at some point in ``[first, last)``, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(f"{_SELECT} WHERE i.opened_at < ? AND (i.resolved_at IS NULL"
                                " OR i.resolved_at >= ?) ORDER BY i.opened_at, i.id",
                                (ts(last), ts(first))).fetchall()
        return [_incident(r) for r in rows]

    def events(self, incident_id: int) -> list[Event]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM incident_events WHERE incident_id = ?"
                                " ORDER BY at, id", (incident_id,)).fetchall()
        return [Event(r["id"], r["incident_id"], parse_ts(r["at"]), r["kind"],
                      None if r["status"] is None else Status(r["status"]), r["message"],
                      r["actor"], json.loads(r["data"])) for r in rows]


def _incident(row: Any) -> Incident:
    resolved = row["resolved_at"]
    return Incident(row["id"], row["dedup_key"], row["check_name"], row["target"],
                    Status(row["status"]), row["severity"], row["message"],
                    parse_ts(row["opened_at"]), None if resolved is None else parse_ts(resolved),
                    bool(row["flapping"]), row["acked_by"])
