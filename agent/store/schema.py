"""Schema migrations, oldest first. Never edit a shipped step: append a new one.

Timestamps are fixed-width UTC text (see ``db.ts``), so they sort and compare as
text in SQL. Rows in ``incidents`` are a projection of ``incident_events`` kept
in the same transaction; the events are the record.
"""

from __future__ import annotations

V1 = (
    # Latest result and confirmation state per (check, target).
    """CREATE TABLE check_state (
        check_name     TEXT NOT NULL,
        target         TEXT NOT NULL,
        status         INTEGER NOT NULL,
        message        TEXT NOT NULL,
        metrics        TEXT NOT NULL DEFAULT '{}',
        last_run_at    TEXT NOT NULL,
        duration       REAL NOT NULL DEFAULT 0,
        hard_status    INTEGER NOT NULL,
        hard_since     TEXT NOT NULL,
        pending_status INTEGER,
        pending_count  INTEGER NOT NULL DEFAULT 0,
        pending_since  TEXT,
        history        TEXT NOT NULL DEFAULT '',
        flapping       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (check_name, target))""",
    # Bounded history of every result (pruned by store.history).
    """CREATE TABLE results (
        id         INTEGER PRIMARY KEY,
        check_name TEXT NOT NULL,
        target     TEXT NOT NULL,
        status     INTEGER NOT NULL,
        message    TEXT NOT NULL,
        metrics    TEXT NOT NULL DEFAULT '{}',
        at         TEXT NOT NULL,
        duration   REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX results_by_key ON results (check_name, target, at)",
    "CREATE INDEX results_by_time ON results (at)",
    # A check's own small persistent memory (e.g. mount points seen read-write).
    """CREATE TABLE check_kv (
        check_name TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        PRIMARY KEY (check_name, key))""",
    """CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY,
        dedup_key   TEXT NOT NULL,
        check_name  TEXT NOT NULL,
        target      TEXT NOT NULL,
        status      INTEGER NOT NULL,
        severity    TEXT NOT NULL,
        message     TEXT NOT NULL,
        opened_at   TEXT NOT NULL,
        resolved_at TEXT,
        flapping    INTEGER NOT NULL DEFAULT 0)""",
    # At most one open incident per (check, target): the database enforces it.
    "CREATE UNIQUE INDEX incidents_one_open ON incidents (dedup_key) WHERE resolved_at IS NULL",
    """CREATE TABLE incident_events (
        id          INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at          TEXT NOT NULL,
        kind        TEXT NOT NULL,
        status      INTEGER,
        message     TEXT NOT NULL DEFAULT '',
        actor       TEXT NOT NULL DEFAULT '',
        data        TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX incident_events_by_incident ON incident_events (incident_id, at)",
    # The durable outbox: a notice is written here, in the same transaction as the
    # incident event that caused it, before anything tries to send it.
    """CREATE TABLE notifications (
        id              INTEGER PRIMARY KEY,
        incident_id     INTEGER REFERENCES incidents (id),
        event_id        INTEGER REFERENCES incident_events (id),
        channel         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',
        created_at      TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL,
        fallback_at     TEXT NOT NULL,
        expires_at      TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        claimed_until   TEXT,
        delivered_at    TEXT,
        last_error      TEXT,
        origin_id       INTEGER REFERENCES notifications (id),
        fallback_queued INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX notifications_due ON notifications (state, next_attempt_at)",
    """CREATE TABLE notification_attempts (
        id              INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notifications (id),
        at              TEXT NOT NULL,
        duration        REAL NOT NULL,
        ok              INTEGER NOT NULL,
        error           TEXT)""",
    """CREATE TABLE audit_log (
        id      INTEGER PRIMARY KEY,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        detail  TEXT NOT NULL DEFAULT '{}')""",
    # One row per agent process: start, heartbeat, clean stop — the agent's own
    # downtime is what SPEC §2's 24-hour refund rule and the SLO exclusions need.
    """CREATE TABLE agent_runs (
        id           INTEGER PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        version      TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        stopped_at   TEXT)""",
)

V2 = (
    # Maintenance windows added from the CLI/API (config windows are not stored).
    """CREATE TABLE maintenance_windows (
        id         INTEGER PRIMARY KEY,
        targets    TEXT NOT NULL,
        starts_at  TEXT NOT NULL,
        ends_at    TEXT NOT NULL,
        reason     TEXT NOT NULL DEFAULT '',
        created_by TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        ended_at   TEXT)""",
    "CREATE INDEX maintenance_windows_by_time ON maintenance_windows (ends_at, starts_at)",
)

V3 = (
    # Runbook runs: automatic (an incident), manual (an operator, now or at a time).
    # A run is executed by its owner (an agent or a `kanshi runbook run`), which beats
    # `heartbeat_at`; a run whose owner died is resumed or marked interrupted.
    """CREATE TABLE runbook_runs (
        id            INTEGER PRIMARY KEY,
        runbook       TEXT NOT NULL,
        target        TEXT NOT NULL,
        params        TEXT NOT NULL DEFAULT '{}',
        trigger       TEXT NOT NULL,
        incident_id   INTEGER REFERENCES incidents (id),
        requested_by  TEXT NOT NULL DEFAULT '',
        dry_run       INTEGER NOT NULL DEFAULT 0,
        state         TEXT NOT NULL,
        level         INTEGER NOT NULL DEFAULT 0,
        scheduled_for TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        ended_at      TEXT,
        owner         TEXT,
        heartbeat_at  TEXT,
        cancel        INTEGER NOT NULL DEFAULT 0,
        outcome       TEXT NOT NULL DEFAULT '',
        parent_id     INTEGER REFERENCES runbook_runs (id))""",
    "CREATE INDEX runbook_runs_due ON runbook_runs (state, scheduled_for)",
    """CREATE TABLE runbook_steps (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runbook_runs (id),
        level       INTEGER NOT NULL,
        step        TEXT NOT NULL,
        action      TEXT NOT NULL,
        attempt     INTEGER NOT NULL DEFAULT 1,
        state       TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        inputs      TEXT NOT NULL DEFAULT '{}',
        outputs     TEXT NOT NULL DEFAULT '{}',
        changed     INTEGER NOT NULL DEFAULT 0,
        summary     TEXT NOT NULL DEFAULT '',
        error       TEXT,
        budget_key  TEXT,
        resumable   INTEGER NOT NULL DEFAULT 0,
        approval_by TEXT,
        approval    TEXT)""",
    "CREATE INDEX runbook_steps_by_run ON runbook_steps (run_id, id)",
    "CREATE INDEX runbook_steps_budget ON runbook_steps (budget_key, started_at)",
    # One runbook per target at a time, across agents, CLIs and restarts.
    """CREATE TABLE runbook_locks (
        target      TEXT PRIMARY KEY,
        run_id      INTEGER NOT NULL REFERENCES runbook_runs (id),
        acquired_at TEXT NOT NULL)""",
)

V4 = (
    # API tokens: only a SHA-256 of each token is kept, never the token itself
    # (tokens are 256-bit random, so a plain hash is enough; no salt/KDF needed).
    """CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        role         TEXT NOT NULL,
        token_sha256 TEXT NOT NULL UNIQUE,
        created_at   TEXT NOT NULL,
        created_by   TEXT NOT NULL DEFAULT '',
        last_used_at TEXT,
        revoked_at   TEXT)""",
)

V5 = (
    # Scale-out (several agents on one PostgreSQL store). Each live agent renews its
    # row; work items (a check, the policy watch) are leased to one agent at a time.
    # A lease is only taken over once it has expired, so an item never runs on two
    # agents, and a dead agent's items move within one lease period.
    """CREATE TABLE agents (
        id         TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        version    TEXT NOT NULL,
        started_at TEXT NOT NULL,
        seen_at    TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        stopped_at TEXT)""",
    """CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        agent       TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at  TEXT NOT NULL)""",
    "CREATE INDEX leases_by_agent ON leases (agent)",
    # Which agent claimed a notice, so a dead agent's claims are given back at once
    # instead of after the whole claim lease.
    "ALTER TABLE notifications ADD COLUMN claimed_by TEXT",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (V1, V2, V3, V4, V5)
