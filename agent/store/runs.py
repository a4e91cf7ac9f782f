"""Agent runs: when each agent process started, was last alive, and stopped.

Gaps between runs are the agent's own downtime — excluded from SLO clocks and
reported monthly (SPEC §2, 24-hour rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts


@dataclass(frozen=True)
class AgentRun:
    id: int
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None


class AgentRuns:
    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, host: str, pid: int, version: str, at: datetime) -> int:
        with self.db.tx() as conn:
            cur = conn.execute("INSERT INTO agent_runs (host, pid, version, started_at,"
                               " last_seen_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                               (host, pid, version, ts(at), ts(at)))
            return int(cur.fetchone()[0])

    def beat(self, run_id: int, at: datetime) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE agent_runs SET last_seen_at = ? WHERE id = ?", (ts(at), run_id))

    def stop(self, run_id: int, at: datetime) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE agent_runs SET last_seen_at = ?, stopped_at = ? WHERE id = ?",
                         (ts(at), ts(at), run_id))

    def latest(self) -> AgentRun | None:
        runs = self.recent(1)
        return runs[0] if runs else None

    def between(self, first: datetime, last: datetime) -> list[AgentRun]:
        """Runs alive at some point in ``[first, last]``, and the one just before."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM agent_runs WHERE started_at <= ? AND"
                " COALESCE(stopped_at, last_seen_at) >= ? ORDER BY started_at",
                (ts(last), ts(first))).fetchall()
            before = conn.execute(
                "SELECT * FROM agent_runs WHERE COALESCE(stopped_at, last_seen_at) < ?"
                " ORDER BY started_at DESC LIMIT 1", (ts(first),)).fetchall()
        return [_run(r) for r in [*before, *rows]]

    def recent(self, limit: int = 10) -> list[AgentRun]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM agent_runs ORDER BY id DESC LIMIT ?",
                                (limit,)).fetchall()
        return [_run(r) for r in rows]


def _run(r: Any) -> AgentRun:
    return AgentRun(r["id"], r["host"], r["pid"], r["version"], parse_ts(r["started_at"]),
                    parse_ts(r["last_seen_at"]),
                    None if r["stopped_at"] is None else parse_ts(r["stopped_at"]))
