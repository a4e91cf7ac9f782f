"""Live agents and the leases that share work between them (a shared store).

Each agent renews its ``agents`` row; a work item (a check, the policy watch) is
held by one agent through a row in ``leases`` until ``expires_at``. A lease is
taken over only when it has expired or its holder gave it back — one
``INSERT … ON CONFLICT DO UPDATE … WHERE`` that the database serializes per
row — so two agents never hold the same item. Times are the agents' clocks:
hosts sharing a store must keep them in step (NTP) well within a lease period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.store.db import Database, parse_ts, ts

_TAKE = """
INSERT INTO leases (name, agent, acquired_at, expires_at) VALUES (:name, :agent, :now, :until)
ON CONFLICT (name) DO UPDATE SET agent = excluded.agent, expires_at = excluded.expires_at,
    acquired_at = CASE WHEN leases.agent = excluded.agent THEN leases.acquired_at
                       ELSE excluded.acquired_at END
WHERE leases.agent = excluded.agent OR leases.expires_at <= :now
RETURNING name
"""


@dataclass(frozen=True)
class AgentRow:
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    expires_at: datetime
    stopped_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.stopped_at is None and self.expires_at > now


@dataclass(frozen=True)
class Lease:
    name: str
    agent: str
    acquired_at: datetime
    expires_at: datetime


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- agents ------------------------------------------------------------------------

    def join(self, agent: str, host: str, pid: int, version: str, now: datetime,
             until: datetime) -> None:
        """Register (or re-register, after a restart with the same id) a live agent."""
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO agents (id, host, pid, version, started_at, seen_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " host = excluded.host, pid = excluded.pid, version = excluded.version,"
                " started_at = excluded.started_at, seen_at = excluded.seen_at,"
                " expires_at = excluded.expires_at, stopped_at = NULL",
                (agent, host, pid, version, ts(now), ts(now), ts(until)))

    def beat(self, agent: str, now: datetime, until: datetime) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE agents SET seen_at = ?, expires_at = ?, stopped_at = NULL"
                         " WHERE id = ?", (ts(now), ts(until), agent))

    def leave(self, agent: str, now: datetime) -> None:
        """A clean stop: give every lease back so the others take the work at once."""
        with self.db.tx() as conn:
            conn.execute("DELETE FROM leases WHERE agent = ?", (agent,))
            conn.execute("UPDATE agents SET seen_at = ?, expires_at = ?, stopped_at = ?"
                         " WHERE id = ?", (ts(now), ts(now), ts(now), agent))

    def agents(self) -> list[AgentRow]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM agents ORDER BY id").fetchall()
        return [AgentRow(r["id"], r["host"], r["pid"], r["version"], parse_ts(r["started_at"]),
                         parse_ts(r["seen_at"]), parse_ts(r["expires_at"]),
                         parse_ts(r["stopped_at"]) if r["stopped_at"] else None) for r in rows]

    def live(self, now: datetime) -> list[str]:
        """Ids of the agents whose own lease has not lapsed."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT id FROM agents WHERE stopped_at IS NULL AND"
                                " expires_at > ? ORDER BY id", (ts(now),)).fetchall()
        return [r[0] for r in rows]

    def forget_agents(self, before: datetime) -> int:
        """Drop rows of agents gone since before ``before`` (restarts leave new ids)."""
        with self.db.tx() as conn:
            return conn.execute("DELETE FROM agents WHERE expires_at < ? AND id NOT IN"
                                " (SELECT agent FROM leases)", (ts(before),)).rowcount

    # -- leases ------------------------------------------------------------------------

    def take(self, names: Iterable[str], agent: str, now: datetime,
             until: datetime) -> set[str]:
        """Take or renew ``names`` for ``agent``; return those it now holds."""
        held: set[str] = set()
        with self.db.tx() as conn:
            for name in sorted(names):  # one order everywhere: no deadlocks between agents
                row = conn.execute(_TAKE, {"name": name, "agent": agent, "now": ts(now),
                                           "until": ts(until)}).fetchone()
                if row is not None:
                    held.add(name)
        return held

    def release(self, names: Iterable[str], agent: str) -> None:
        with self.db.tx() as conn:
            for name in sorted(names):
                conn.execute("DELETE FROM leases WHERE name = ? AND agent = ?", (name, agent))

    def holds(self, name: str, agent: str, now: datetime) -> bool:
        """Does ``agent`` hold ``name`` now? Inside a transaction on PostgreSQL the row is
        kept (``FOR SHARE``) until commit: nobody takes the item over half-way."""
        with self.db.read() as conn:
            row = conn.execute(f"SELECT 1 FROM leases WHERE name = ? AND agent = ? AND"
                               f" expires_at > ?{self.db.for_share}",
                               (name, agent, ts(now))).fetchone()
        return row is not None

    def all(self) -> list[Lease]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM leases ORDER BY agent, name").fetchall()
        return [Lease(r["name"], r["agent"], parse_ts(r["acquired_at"]),
                      parse_ts(r["expires_at"])) for r in rows]
