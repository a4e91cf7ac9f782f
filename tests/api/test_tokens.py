"""``kanshi token`` and the token store: only hashes are kept, revocation, last use."""

from __future__ import annotations

import argparse
import sqlite3

import pytest
import requests

from agent.cli import _config_option
from agent.cli.token import add_parser, token
from tests.api.conftest import Api


def kanshi_token(api: Api, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kanshi")
    add_parser(parser.add_subparsers(dest="command"), _config_option)
    args = parser.parse_args(["token", *argv, "-c", str(api.tmp_path / "kanshi.yaml")])
    return token(args)


def test_a_token_is_printed_once_and_only_its_hash_is_stored(
        api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert kanshi_token(api, "add", "alice", "--role", "operator", "--by", "root") == 0
    value = capsys.readouterr().out.strip()
    assert value.startswith("kanshi_") and len(value) > 40
    me = requests.get(api.url + "/api/v1/whoami", timeout=10,
                      headers={"Authorization": f"Bearer {value}"}).json()
    assert me == {"name": "alice", "role": "operator"}
    raw = (api.tmp_path / "state" / "kanshi.db").read_bytes()
    wal = api.tmp_path / "state" / "kanshi.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    for secret in (value, *api.tokens.values()):
        assert secret.encode() not in raw, "a token in plain text in the store"
    with sqlite3.connect(api.tmp_path / "state" / "kanshi.db") as conn:
        (digest,) = conn.execute("SELECT token_sha256 FROM api_tokens WHERE name = 'alice'"
                                 ).fetchone()
    assert len(digest) == 64 and digest not in value


def test_a_revoked_token_stops_working_at_once(api: Api,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    kanshi_token(api, "add", "bob", "--role", "viewer")
    value = capsys.readouterr().out.strip()
    headers = {"Authorization": f"Bearer {value}"}
    assert requests.get(api.url + "/api/v1/status", headers=headers, timeout=10).ok
    assert kanshi_token(api, "revoke", "bob") == 0
    assert requests.get(api.url + "/api/v1/status", headers=headers,
                        timeout=10).status_code == 401
    with pytest.raises(SystemExit):
        kanshi_token(api, "revoke", "bob")
    kanshi_token(api, "list")
    listing = capsys.readouterr().out
    assert "bob" in listing and "revoked" in listing and value not in listing
    actions = [(e.action, e.subject) for e in api.agent.store.audit.recent()]
    assert actions == [("token.revoke", "token/bob"), ("token.add", "token/bob")]


def test_a_name_is_never_reused(api: Api) -> None:
    with pytest.raises(SystemExit) as exit_:
        kanshi_token(api, "add", "admin-bot", "--role", "viewer")
    assert exit_.value.code == 1


def test_last_use_is_recorded(api: Api) -> None:
    assert api.agent.store.tokens.get("viewer-bot").last_used_at is None  # type: ignore[union-attr]
    api.call("GET", "/api/v1/status", "viewer")
    used = api.agent.store.tokens.get("viewer-bot")
    assert used is not None and used.last_used_at is not None
