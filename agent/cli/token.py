"""``kanshi token add NAME --role R | list | revoke NAME``: the HTTP API's tokens.

A token is printed once, when it is made; the store keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from agent.api.tokens import Role, new_token
from agent.cli.common import echo, existing_store, fail, load_or_exit, local_time, login_name
from agent.cli.table import table
from agent.store.tokens import TokenExists


def add_parser(sub: Any, config_option: Any) -> None:
    tok = sub.add_parser("token", help="tokens of the HTTP API and the web page")
    config_option(tok)
    acts = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="make a token (printed once, only its hash is kept)")
    config_option(add, on_action=True)
    add.add_argument("name", help="who or what uses it (the audit log shows this name)")
    add.add_argument("--role", required=True, choices=[r.name for r in Role],
                     help="viewer: read; operator: also act; admin: also manage tokens")
    add.add_argument("--by", help="who makes it (default: your login name)")
    lst = acts.add_parser("list", help="tokens, their roles and when they were last used")
    config_option(lst, on_action=True)
    revoke = acts.add_parser("revoke", help="revoke a token (it stops working at once)")
    config_option(revoke, on_action=True)
    revoke.add_argument("name")
    revoke.add_argument("--by", help="who revokes it (default: your login name)")


def token(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    store = existing_store(config, write=args.token_command in ("add", "revoke"))
    try:
        now = datetime.now(UTC)
        if args.token_command == "add":
            return _add(store, args, now)
        if args.token_command == "revoke":
            return _revoke(store, args, now)
        rows = [(t.name, t.role, local_time(config, t.created_at), t.created_by or "-",
                 local_time(config, t.last_used_at),
                 "revoked " + local_time(config, t.revoked_at) if t.revoked_at else "active")
                for t in store.tokens.all()]
        echo(table(("NAME", "ROLE", "CREATED", "BY", "LAST USED", "STATE"), rows)
             if rows else "no tokens yet (make one with `kanshi token add NAME --role ROLE`)")
        return 0
    finally:
        store.close()


def _add(store: Any, args: argparse.Namespace, now: datetime) -> int:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", args.name):
        fail(f"token name {args.name!r}: letters, digits and . _ @ - (at most 64)", 2)
    who = args.by or login_name()
    value = new_token()
    try:
        with store.db.tx():
            store.tokens.add(args.name, args.role, value, who, now)
            store.audit.write(now, who, "token.add", f"token/{args.name}",
                              {"role": args.role, "via": "cli"})
    except TokenExists as exc:
        fail(f"{exc} (revoked names stay taken; choose another name)", 1)
    echo(value)
    echo(f"token {args.name!r} ({args.role}) made — it is shown only now: keep it safe",
         err=True)
    return 0


def _revoke(store: Any, args: argparse.Namespace, now: datetime) -> int:
    who = args.by or login_name()
    with store.db.tx():
        if not store.tokens.revoke(args.name, now):
            fail(f"no active token named {args.name!r}", 1)
        store.audit.write(now, who, "token.revoke", f"token/{args.name}", {"via": "cli"})
    echo(f"token {args.name!r} revoked")
    return 0
