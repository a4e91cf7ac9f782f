"""The audit log: who did what, when (operators' writes, config changes, runbooks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, at: datetime, actor: str, action: str, subject: str = "",
              detail: dict[str, Any] | None = None) -> None:
        with self.db.tx() as conn:
            conn.execute("INSERT INTO audit_log (at, actor, action, subject, detail)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (ts(at), actor, action, subject,
                          json.dumps(detail or {}, sort_keys=True, default=str)))

    def recent(self, limit: int = 50) -> list[AuditEntry]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?",
                                (limit,)).fetchall()
        return [AuditEntry(parse_ts(r["at"]), r["actor"], r["action"], r["subject"],
                           json.loads(r["detail"])) for r in rows]
