"""The ``tcp`` check against real loopback sockets: open, closed, queue full, slow."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import checks
from agent.clock import SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.dialogue import connect_failure
from checks.tcp import TcpCheck, TcpConfig
from tests.support.http_server import HOST, RawTcpServer, free_port


def run(timeout: float = 5.0, **options: Any) -> Result:
    check = TcpCheck("tcp", TcpCheck.Config.model_validate(options), timeout=timeout,
                     context=CheckContext(clock=SystemClock()))
    [result] = check.execute()
    return result


@pytest.fixture
def full_queue() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs unanswered."""
    listener = socket.create_server((HOST, 0), backlog=0)
    queued = socket.create_connection(listener.getsockname(), timeout=1)  # fills it
    try:
        yield listener.getsockname()[1]
    finally:
        queued.close()
        listener.close()


# -- config ----------------------------------------------------------------------------


def test_defaults_follow_spec_and_check_tcp() -> None:
    config = TcpConfig.model_validate({"host": "db1", "port": 5432})
    assert (TcpCheck.type_name, TcpCheck.default_interval, TcpCheck.default_timeout) == \
        ("tcp", 600.0, 10.0)
    assert (config.connect_time.warning, config.connect_time.critical) == (1.0, None)


def test_an_ipv6_address_may_be_written_in_brackets() -> None:
    assert TcpCheck.Config.model_validate({"host": "[::1]", "port": 22}).host == "::1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"host": "db1"}, "port", "Field required", id="no-port"),
    pytest.param({"host": "db1", "port": 0}, "port", "greater than or equal to 1",
                 id="port-zero"),
    pytest.param({"host": "db1", "port": 70000}, "port", "less than or equal to 65535",
                 id="port-too-big"),
    pytest.param({"host": "db 1", "port": 22}, "host", "a host name or IP address",
                 id="host-with-space"),
    pytest.param({"host": "http://db1", "port": 22}, "host", "a host name or IP address",
                 id="host-is-a-url"),
    pytest.param({"host": "db1", "port": 22, "connect_time": {"warning": "fast"}},
                 "connect_time.warning", "expected a duration", id="bad-threshold"),
    pytest.param({"host": "db1", "port": 22, "ports": [1]}, "ports",
                 "Extra inputs are not permitted", id="unknown-key"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TcpCheck.Config.model_validate(options)
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


# -- real sockets ------------------------------------------------------------------------


def test_an_open_port_is_ok_with_its_connect_time() -> None:
    with RawTcpServer(None) as server:
        result = run(host=HOST, port=server.port)
    target = f"{HOST}:{server.port}"
    assert (result.status, result.target) == (Status.OK, target)
    assert result.message.startswith(f"{target} accepts TCP connections in ")
    assert 0 < result.metrics["connect_seconds"] < 1.0


def test_a_hung_server_still_accepts_so_only_a_protocol_check_can_tell() -> None:
    # The kernel completes the handshake for a program that never calls accept().
    with RawTcpServer(None) as hung:
        assert run(host=HOST, port=hung.port).status is Status.OK


def test_a_closed_port_is_critical_refused() -> None:
    port = free_port()
    result = run(host=HOST, port=port)
    assert result.status is Status.CRITICAL
    assert result.message == (f"{HOST}:{port} TCP: refused — nothing listens on port {port}; "
                              "is the service running?")
    assert result.metrics == {}


def test_a_port_that_drops_the_connection_attempt_times_out(full_queue: int) -> None:
    result = run(timeout=0.5, host=HOST, port=full_queue)
    assert result.status is Status.CRITICAL
    assert result.message.startswith(f"{HOST}:{full_queue} TCP: timed out after 0.5 s "
                                     "(connecting) — no answer to the connection attempt")


def test_a_connect_over_the_threshold_is_a_warning_that_names_it() -> None:
    with RawTcpServer(None) as server:
        result = run(host=HOST, port=server.port, connect_time={"warning": "0.001ms"})
    assert result.status is Status.WARNING
    assert "accepts TCP connections slowly: in " in result.message
    assert "(warning at 1 µs); a connect of a second or more means a lost SYN" \
        in result.message


def test_an_unresolvable_name_is_unknown_not_critical() -> None:
    # Built by hand: a real lookup of a missing name would leave loopback for DNS.
    failure = connect_failure(socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                              "db9.example", 5432, 10.0)
    assert failure.status is Status.UNKNOWN
    assert failure.text() == ("cannot resolve db9.example: Name or service not known — "
                              "check the host name and DNS")


def test_it_loads_and_runs_through_the_agent_config(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "tcp", "checks.tcp:TcpCheck")
    with RawTcpServer(None) as server:
        path = tmp_path / "kanshi.yaml"
        path.write_text(textwrap.dedent(f"""
            checks:
              - {{name: ssh-port, type: tcp, host: {HOST}, port: {server.port}}}
        """))
        [spec] = load_config(path, environ={}).checks
        assert (spec.interval, spec.timeout) == (600.0, 10.0)
        check = build_check(spec, SystemClock(), LocalResources(), Redactor(set()))
        [result] = check.execute()
    assert (result.status, result.check) == (Status.OK, "ssh-port")
