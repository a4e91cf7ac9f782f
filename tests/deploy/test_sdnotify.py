"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import SystemdNotifier


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket where a notify unit's messages would arrive."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    with contextlib.closing(sock):
        yield sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_watchdog_and_stopping_arrive_as_systemd_expects(
        systemd: socket.socket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": systemd.getsockname()})
    assert notifier.enabled
    assert notifier.ready("3 checks")
    assert received(systemd) == ["READY=1", "STATUS=3 checks"]
    assert notifier.watchdog()
    assert received(systemd) == ["WATCHDOG=1"]
    assert notifier.status("line one\nline two")
    assert received(systemd) == ["STATUS=line one line two"]
    assert notifier.stopping()
    assert received(systemd) == ["STOPPING=1", "STATUS=stopping"]


def test_an_abstract_socket_address_works() -> None:
    name = f"kanshi-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_outside_systemd_every_call_is_a_quiet_no_op(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert not notifier.ready() and not notifier.watchdog()
    assert not caplog.records


def test_a_vanished_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    assert len(caplog.records) == 1 and "NOTIFY_SOCKET" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("env", "interval"), [
    pytest.param({"WATCHDOG_USEC": "180000000"}, 90.0, id="half-of-WatchdogSec"),
    pytest.param({"WATCHDOG_USEC": "180000000", "WATCHDOG_PID": str(os.getpid())}, 90.0,
                 id="meant-for-us"),
    pytest.param({"WATCHDOG_USEC": "180000000", "WATCHDOG_PID": "1"}, None,
                 id="meant-for-another-process"),
    pytest.param({"WATCHDOG_USEC": "0"}, None, id="off"),
    pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage"),
])
def test_the_watchdog_interval_follows_systemds_variables(
        tmp_path: Path, env: dict[str, str], interval: float | None) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), **env})
    assert notifier.watchdog_interval == interval


def test_kanshi_run_tells_systemd_ready_alive_and_stopping(
        tmp_path: Path, systemd: socket.socket) -> None:
    """What Type=notify and WatchdogSec= in config/systemd/kanshi.service rely on."""
    import signal
    import subprocess
    import sys

    config = tmp_path / "kanshi.yaml"
    config.write_text(f"agent: {{name: testhost, state_dir: {tmp_path / 'state'}}}\n"
                      "api: {enabled: false}\n")
    env = {**os.environ, "NOTIFY_SOCKET": systemd.getsockname(), "WATCHDOG_USEC": "2000000"}
    kanshi = Path(sys.executable).with_name("kanshi")
    agent = subprocess.Popen([str(kanshi), "run", "-c", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    messages: list[str] = []
    try:
        systemd.settimeout(30)
        with contextlib.suppress(TimeoutError):
            while "WATCHDOG=1" not in messages:
                messages += received(systemd)
        assert "READY=1" in messages, \
            "kanshi run sends no READY=1: wire agent/sdnotify.py into the agent (see its doc)"
        assert "WATCHDOG=1" in messages
        agent.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            while "STOPPING=1" not in messages:
                messages += received(systemd)
        assert "STOPPING=1" in messages
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate()
