"""API tokens: a name, a role and the SHA-256 of the token — never the token itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.store.db import Database, parse_ts, ts


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    role: str
    token_sha256: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TokenExists(Exception):
    """A token of that name exists already (revoked ones too: names stay unique)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, name: str, role: str, token: str, created_by: str, now: datetime) -> int:
        """Store the hash of ``token``; raise :class:`TokenExists` for a taken name."""
        # ON CONFLICT, not catching an integrity error: on PostgreSQL that would
        # abort the transaction; this works the same on both stores.
        with self.db.tx() as conn:
            row = conn.execute(
                "INSERT INTO api_tokens (name, role, token_sha256, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (name, role, token_hash(token), ts(now), created_by)).fetchone()
        if row is None:
            raise TokenExists(f"a token named {name!r} exists already")
        return int(row[0])

    def by_hash(self, digest: str) -> TokenRecord | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM api_tokens WHERE token_sha256 = ?",
                               (digest,)).fetchone()
        return _record(row) if row else None

    def get(self, name: str) -> TokenRecord | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM api_tokens WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[TokenRecord]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM api_tokens ORDER BY name").fetchall()
        return [_record(r) for r in rows]

    def used(self, token_id: int, now: datetime) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                         (ts(now), token_id))

    def revoke(self, name: str, now: datetime) -> bool:
        """Revoke the token ``name``; False if there is no such active token."""
        with self.db.tx() as conn:
            return conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND"
                                " revoked_at IS NULL", (ts(now), name)).rowcount == 1


def _record(r: Any) -> TokenRecord:
    used, revoked = r["last_used_at"], r["revoked_at"]
    return TokenRecord(r["id"], r["name"], r["role"], r["token_sha256"],
                       parse_ts(r["created_at"]), r["created_by"],
                       parse_ts(used) if used else None, parse_ts(revoked) if revoked else None)
