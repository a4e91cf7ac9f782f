"""Roles, principals and token checks — no web framework here (the CLI uses it too)."""

from __future__ import annotations

import enum
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.store.tokens import token_hash

if TYPE_CHECKING:
    from agent.store import Store

#: ``last_used_at`` is written at most this often per token (not on every request).
USED_GRANULARITY = timedelta(seconds=60)
TOKEN_PREFIX = "kanshi_"


class Role(enum.IntEnum):
    """What a token may do; each role may do everything of the ones below it."""

    viewer = 1      # read only
    operator = 2    # acknowledge, note, severity, maintenance, runbooks
    admin = 3       # also tokens


@dataclass(frozen=True)
class Principal:
    """Who makes a request: the token's name (the audit log's actor) and its role."""

    name: str
    role: Role


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe, with a prefix secret scanners know."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def authenticate(store: Store, token: str, now: datetime) -> Principal | None:
    """The principal of ``token``, or None if it is unknown or revoked."""
    if not token or len(token) > 512:
        return None
    digest = token_hash(token)
    record = store.tokens.by_hash(digest)
    if record is None or not hmac.compare_digest(record.token_sha256, digest):
        return None
    if record.revoked_at is not None or record.role not in Role.__members__:
        return None
    if record.last_used_at is None or now - record.last_used_at >= USED_GRANULARITY:
        store.tokens.used(record.id, now)
    return Principal(record.name, Role[record.role])
