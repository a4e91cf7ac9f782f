"""Shared by the notifier tests: a sample alert, and peers for failure-mode tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from notifiers.base import Alert
from tests.support.http_server import HttpServer, LoopbackTLS, RawTcpServer, Reply, free_port


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "kind": "problem", "notification_id": 42, "incident_id": 7,
        "dedup_key": "disk:web01:/", "host": "kanshi01", "check": "disk", "target": "web01:/",
        "status": "CRITICAL", "previous_status": "OK", "severity": "critical",
        "message": "95% used", "detected_at": "2024-05-01T01:02:03+00:00",
        "at": "2024-05-01T01:04:03+00:00", "outage_seconds": None, "locale": "ja",
        "subject": "【障害】web01: CRITICAL", "body": "ディスク使用率 95%",
    }
    return Alert(**{**fields, **changes})


class Peers:
    """Starts whichever kind of peer a failure-mode case needs; stops them all."""

    def __init__(self) -> None:
        self._stack = ExitStack()

    def http(self, *replies: Reply, tls: LoopbackTLS | None = None) -> str:
        server = self._stack.enter_context(HttpServer(tls=tls))
        server.respond(*replies)
        return server.url

    def raw(self, reply: bytes) -> str:
        return self._stack.enter_context(RawTcpServer(reply)).url

    def nobody(self) -> str:
        return f"http://127.0.0.1:{free_port()}"

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def peers() -> Iterator[Peers]:
    peers = Peers()
    yield peers
    peers.close()
