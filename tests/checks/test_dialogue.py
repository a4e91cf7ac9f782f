"""Connecting under one deadline (:func:`checks.dialogue.open_connection`), with real
listeners on loopback.

A host name with several addresses is given as a resolver answering with them
(this machine's ``localhost`` is 127.0.0.1 only, and /etc/hosts is not the
tests' to edit); the connections themselves are real.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from agent.clock import SystemClock
from agent.runner import grace
from checks.base import CheckContext, Status
from checks.dialogue import Addresses, Resolver, open_connection
from checks.smtp import SmtpCheck
from tests.support.http_server import HOST, SilentListener, free_port
from tests.support.smtp_server import SmtpServer


def resolving_to(*addresses: tuple[str, int]) -> Resolver:
    """A resolver answering every name with ``addresses``, in that order."""
    def resolve(host: str, port: int) -> Addresses:
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, at)) for ip, at in addresses]
    return resolve


@pytest.fixture
def dual_stack_down() -> Iterator[int]:
    """A port on 127.0.0.1 and on ::1 where connects time out (packets dropped)."""
    with SilentListener("::1") as v6, SilentListener(HOST, v6.port):
        yield v6.port


def test_a_dual_stack_name_that_is_down_takes_one_timeout_not_two(
        dual_stack_down: int) -> None:
    port = dual_stack_down
    check = SmtpCheck("mail", SmtpCheck.Config.model_validate({"host": "mail.example",
                                                               "port": port}),
                      timeout=1.0, context=CheckContext(clock=SystemClock()),
                      resolve=resolving_to(("::1", port), (HOST, port)))

    [result] = check.execute()

    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"mail.example:{port} SMTP: timed out after 1 s "
                                     "(connecting)")
    assert result.duration < 1.0 + grace(1.0)  # within what the agent waits for a run


def test_each_address_gets_only_what_is_left_of_the_deadline(dual_stack_down: int) -> None:
    port = dual_stack_down
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        open_connection("db.example", port, started + 0.5,
                        resolve=resolving_to(("::1", port), (HOST, port)))

    assert time.monotonic() - started < 0.9  # one deadline, not 0.5 s per address


def test_a_refused_address_falls_through_to_the_next_that_answers() -> None:
    with SmtpServer() as server:
        refused = free_port()
        sock = open_connection("mail.example", server.port, time.monotonic() + 5,
                               resolve=resolving_to((HOST, refused), (HOST, server.port)))
        with sock:
            assert sock.getpeername() == (HOST, server.port)


def test_when_every_address_refuses_the_last_error_is_raised() -> None:
    with pytest.raises(ConnectionRefusedError):
        open_connection("mail.example", 0, time.monotonic() + 5,
                        resolve=resolving_to((HOST, free_port()), ("::1", free_port())))
