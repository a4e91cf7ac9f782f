"""Persistent state: SQLite (WAL) or a shared PostgreSQL, with versioned migrations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.store.audit import AuditLog
from agent.store.checks import CheckStore
from agent.store.db import Database, StoreError, connect
from agent.store.incidents import IncidentStore
from agent.store.leases import LeaseStore
from agent.store.maintenance import MaintenanceStore
from agent.store.notifications import NotificationStore
from agent.store.runbooks import RunbookStore
from agent.store.runs import AgentRuns
from agent.store.tokens import TokenStore

DB_NAME = "kanshi.db"


@dataclass
class Store:
    """All repositories over one database."""

    db: Database
    checks: CheckStore
    incidents: IncidentStore
    notifications: NotificationStore
    audit: AuditLog
    runs: AgentRuns
    maintenance: MaintenanceStore
    runbooks: RunbookStore
    tokens: TokenStore
    leases: LeaseStore

    def close(self) -> None:
        self.db.close()


def open_store(state_dir: Path, *, migrate: bool = True, readonly: bool = False,
               url: str | None = None) -> Store:
    """Open the store — PostgreSQL at ``url``, else SQLite in ``state_dir`` — migrated
    (the agent), or checked to be of this kanshi's schema (tools), optionally read-only."""
    db = connect(state_dir / DB_NAME, url, readonly=readonly)
    try:
        if migrate and not readonly:
            db.migrate()
        else:
            db.check_version()
    except StoreError:
        db.close()
        raise
    return Store(db, CheckStore(db), IncidentStore(db), NotificationStore(db), AuditLog(db),
                 AgentRuns(db), MaintenanceStore(db), RunbookStore(db), TokenStore(db),
                 LeaseStore(db))


__all__ = ["Store", "StoreError", "open_store"]
