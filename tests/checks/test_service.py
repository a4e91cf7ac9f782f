"""The ``service`` check.

systemd cannot run on this machine (no systemd as PID 1 in this container), so:

- the no-systemd path and real ``systemctl`` refusing to work are tested for real;
- the judging of ``systemctl show`` output uses a stand-in ``systemctl`` script put
  first on PATH, which prints what systemd 252 prints for each state and records
  the arguments it was given;
- ``status_command`` is tested against dpkg's real ``start-stop-daemon --status``,
  which returns the LSB status codes, on a real daemon the test starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pydantic
import pytest

import checks
from agent.clock import SystemClock
from agent.config import load_config
from agent.runner import grace
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.service import SYSTEMD_RUN_DIR, ServiceCheck
from tests.support import needs
from tests.support.wait import wait_for


def check(systemd_dir: Path = SYSTEMD_RUN_DIR, timeout: float = 10.0,
          **options: Any) -> ServiceCheck:
    config = ServiceCheck.Config.model_validate(options)
    return ServiceCheck("svc", config, timeout=timeout,
                        context=CheckContext(clock=SystemClock()), systemd_dir=systemd_dir)


def only(service: ServiceCheck) -> Result:
    [result] = service.execute()
    return result


# -- config --------------------------------------------------------------------------------


def test_a_single_unit_string_is_one_unit() -> None:
    config = ServiceCheck.Config.model_validate({"units": "nginx"})

    assert config.units == ("nginx",)
    assert (config.inactive_ok, config.systemctl, config.status_command) == \
        (False, "systemctl", None)
    assert ServiceCheck.default_interval == 60.0


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({}, "expected either units (systemd) or status_command, not both or neither",
                 id="neither"),
    pytest.param({"units": ["nginx"], "status_command": ["true"]}, "not both or neither",
                 id="both"),
    pytest.param({"units": ["--all"]}, 'expected a systemd unit name such as nginx or '
                 'nginx.service, got "--all"', id="option-smuggled-as-unit"),
    pytest.param({"units": ["nginx; reboot"]}, "expected a systemd unit name", id="shell-text"),
    pytest.param({"status_command": "service nginx status"},
                 'expected a command as a list, e.g. ["service", "nginx", "status"]',
                 id="command-as-a-string"),
    pytest.param({"status_command": []}, "expected a command as a list", id="empty-command"),
])
def test_bad_config_is_refused_with_a_readable_message(options: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ServiceCheck.Config.model_validate(options)

    assert message in str(caught.value)


# -- no systemd (real, on this host) -------------------------------------------------------


def test_without_systemd_each_unit_is_unknown_with_a_clear_reason() -> None:
    if SYSTEMD_RUN_DIR.is_dir():
        pytest.skip("this host runs systemd; the no-systemd path cannot be seen here")

    results = check(units=["nginx", "cron.service"]).execute()

    assert [(r.target, r.status) for r in results] == [("nginx", Status.UNKNOWN),
                                                       ("cron.service", Status.UNKNOWN)]
    assert results[0].message == ("nginx: systemd is not running on this host "
                                  "(/run/systemd/system is absent); use status_command for "
                                  "another init system")


@pytest.mark.real
def test_a_systemctl_that_cannot_reach_systemd_is_unknown_with_its_own_words(
        tmp_path: Path) -> None:
    """Real systemctl, told systemd runs (a marker dir that exists) when it does not."""
    needs.command("systemctl", "systemd")
    if SYSTEMD_RUN_DIR.is_dir():
        pytest.skip("this host runs systemd: systemctl would answer")

    result = only(check(systemd_dir=tmp_path, units=["cron"]))

    assert result.status is Status.UNKNOWN
    assert result.message.startswith("cron: systemctl show failed (exit 1): System has not "
                                     "been booted with systemd")


# -- systemctl show output (stand-in script: no systemd can run here) ----------------------

# The units directory is written into the script: commands do not get the agent's
# (here pytest's) environment.
STAND_IN = """\
#!/bin/sh
# Stand-in for systemctl: prints UNITS/<unit> and records its arguments.
UNITS='{units}'
echo "$@" >> "$UNITS/argv"
for unit; do :; done
if [ "$(cat "$UNITS/$unit")" = HANG ]; then exec sleep 30; fi
cat "$UNITS/$unit"
"""


class FakeSystemd:
    """A stand-in ``systemctl`` first on PATH and a marker dir saying systemd runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.units = root / "units"
        self.units.mkdir()
        self.run_dir = root / "run-systemd-system"
        self.run_dir.mkdir()

    def unit(self, name: str, **props: str) -> None:
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.units / name).write_text(text or "HANG")

    def argv(self) -> list[str]:
        return (self.units / "argv").read_text().splitlines()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    fake = FakeSystemd(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(STAND_IN.format(units=fake.units))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return fake


@pytest.mark.parametrize(("props", "inactive_ok", "status", "message"), [
    pytest.param({"LoadState": "loaded", "ActiveState": "active", "SubState": "running",
                  "Result": "success"}, False, Status.OK, "nginx is active (running)",
                 id="active"),
    pytest.param({"LoadState": "loaded", "ActiveState": "activating", "SubState": "start",
                  "Result": "success"}, False, Status.WARNING, "nginx is activating (start)",
                 id="activating"),
    pytest.param({"LoadState": "loaded", "ActiveState": "reloading", "SubState": "reload",
                  "Result": "success"}, False, Status.WARNING, "nginx is reloading (reload)",
                 id="reloading"),
    pytest.param({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
                  "Result": "exit-code"}, False, Status.CRITICAL,
                 "nginx has failed: failed (failed), result exit-code (see `journalctl -u "
                 "nginx`)", id="failed"),
    pytest.param({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead",
                  "Result": "success"}, False, Status.CRITICAL,
                 "nginx is not running: inactive (dead)", id="inactive"),
    pytest.param({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead",
                  "Result": "success"}, True, Status.OK,
                 "nginx is not running: inactive (dead)", id="inactive-allowed-for-oneshot"),
    pytest.param({"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead",
                  "Result": "success"}, False, Status.CRITICAL,
                 "nginx is not installed: systemd has no such unit (LoadState=not-found; "
                 "check the unit name)", id="no-such-unit"),
    pytest.param({"LoadState": "loaded", "ActiveState": "exploded"}, False, Status.UNKNOWN,
                 "nginx: unexpected state ActiveState=exploded from systemctl show",
                 id="unheard-of-state"),
])
def test_systemctl_show_states_are_judged(systemd: FakeSystemd, props: dict[str, str],
                                          inactive_ok: bool, status: Status,
                                          message: str) -> None:
    systemd.unit("nginx", **props)

    result = only(check(systemd.run_dir, units=["nginx"], inactive_ok=inactive_ok))

    assert (result.target, result.status, result.message) == ("nginx", status, message)
    assert result.metrics == {"active": 1.0 if props["ActiveState"] == "active" else 0.0}


def test_systemctl_is_asked_with_an_argument_list_per_unit(systemd: FakeSystemd) -> None:
    systemd.unit("nginx.service", ActiveState="active", SubState="running")
    systemd.unit("postgresql@15-main", ActiveState="failed", SubState="failed",
                 Result="oom-kill")

    results = check(systemd.run_dir, units=["nginx.service", "postgresql@15-main"]).execute()

    assert systemd.argv() == [
        "show --property=LoadState,ActiveState,SubState,Result -- nginx.service",
        "show --property=LoadState,ActiveState,SubState,Result -- postgresql@15-main"]
    assert [r.status for r in results] == [Status.OK, Status.CRITICAL]
    assert "result oom-kill" in results[1].message


def test_a_hung_systemctl_is_unknown_and_later_units_are_not_asked(
        systemd: FakeSystemd) -> None:
    systemd.unit("stuck")
    systemd.unit("nginx", ActiveState="active", SubState="running")

    results = check(systemd.run_dir, timeout=1.0, units=["stuck", "nginx"]).execute()

    assert [r.status for r in results] == [Status.UNKNOWN, Status.UNKNOWN]
    assert results[0].message == ("stuck: systemctl did not answer within the check's timeout "
                                  "(1 s); raise timeout if systemd is only slow")
    assert results[1].message == ("nginx: not asked, the check's timeout (1 s) ran out on "
                                  "earlier units")


def test_a_missing_systemctl_is_unknown(tmp_path: Path) -> None:
    result = only(check(tmp_path, units=["nginx"], systemctl=str(tmp_path / "no-systemctl")))

    assert result.status is Status.UNKNOWN
    assert result.message == (f"nginx: could not start {tmp_path / 'no-systemctl'}: "
                              "No such file or directory")


# -- status_command with dpkg's start-stop-daemon (real LSB status codes) -------------------


class Daemon:
    """A real background ``sleep`` managed by start-stop-daemon with a pid file."""

    def __init__(self, root: Path) -> None:
        needs.command("start-stop-daemon", "dpkg")
        self.pidfile = root / "sleeper.pid"
        self.status = ["start-stop-daemon", "--status", "--pidfile", str(self.pidfile)]

    def start(self) -> None:
        subprocess.run(["start-stop-daemon", "--start", "--background", "--make-pidfile",
                        "--pidfile", str(self.pidfile), "--exec", shutil.which("sleep") or
                        "/bin/sleep", "--", "300"], check=True)

    def kill(self) -> None:
        pid = int(self.pidfile.read_text())
        os.kill(pid, 9)
        # start-stop-daemon counts a zombie as running: wait until init has reaped it
        # (this machine's PID 1 takes a second or two).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="sleep reaped")

    def stop(self) -> None:
        subprocess.run(["start-stop-daemon", "--stop", "--quiet", "--pidfile",
                        str(self.pidfile), "--retry", "5"], check=False)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    managed = Daemon(tmp_path)
    try:
        yield managed
    finally:
        managed.stop()


@pytest.mark.real
def test_a_running_daemon_is_ok_by_its_status_command(daemon: Daemon) -> None:
    daemon.start()

    result = only(check(status_command=daemon.status))

    assert (result.target, result.status) == ("", Status.OK)
    assert result.message == f"`{' '.join(daemon.status)}` says running"
    assert result.metrics == {"exit_code": 0.0}


@pytest.mark.real
def test_a_dead_daemon_with_its_pid_file_left_is_critical(daemon: Daemon) -> None:
    daemon.start()
    daemon.kill()

    result = only(check(status_command=daemon.status))

    assert result.status is Status.CRITICAL
    assert result.message == (f"`{' '.join(daemon.status)}` exited 1, program is dead and "
                              "/var/run pid file exists")


@pytest.mark.real
def test_a_never_started_daemon_is_critical(daemon: Daemon) -> None:
    result = only(check(status_command=daemon.status))

    assert result.status is Status.CRITICAL
    assert "exited 3, program is not running" in result.message


@pytest.mark.parametrize(("script", "status", "says"), [
    pytest.param("echo 'status of x cannot be read'; exit 4", Status.UNKNOWN,
                 "exited 4, program or service status is unknown: status of x cannot be read",
                 id="lsb-unknown"),
    pytest.param("echo 'Segmentation fault' >&2; exit 139", Status.CRITICAL,
                 "exited 139, not running (exit code outside LSB's 0–4): Segmentation fault",
                 id="outside-lsb"),
])
def test_other_exit_codes_follow_lsb(script: str, status: Status, says: str) -> None:
    result = only(check(status_command=["sh", "-c", script]))

    assert result.status is status
    assert says in result.message


def test_a_status_command_that_does_not_exist_is_unknown() -> None:
    result = only(check(status_command=["/nonexistent/status-kanshi"]))

    assert result.status is Status.UNKNOWN
    assert result.message == ("`/nonexistent/status-kanshi`: could not start "
                              "/nonexistent/status-kanshi: No such file or directory")


@pytest.mark.real
def test_a_hung_status_command_is_killed_with_its_children() -> None:
    needs.command("pgrep", "procps")
    marker = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 10**6}"  # sleep sums its args
    script = f"sleep 30 {marker} & sleep 30 {marker}"

    result = only(check(timeout=1.0, status_command=["sh", "-c", script]))

    assert result.status is Status.UNKNOWN
    assert result.message == (f"`sh -c {script}` did not finish within the check's timeout "
                              "(1 s) and was killed")
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"sleep 30 {marker}"],
                                    capture_output=True).returncode == 1,
             timeout=10, what="the status command's children to be gone")


@pytest.mark.real
def test_a_hung_status_command_is_killed_with_a_child_that_left_its_group(
        tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"setsid sleep 30 & echo $! > {pidfile}; sleep 30"

    result = only(check(timeout=1.0, status_command=["sh", "-c", script]))

    child = int(pidfile.read_text())
    assert result.status is Status.UNKNOWN
    assert "did not finish within the check's timeout (1 s) and was killed" in result.message
    assert result.duration < 1.0 + grace(1.0)  # within what the agent waits for a run
    wait_for(lambda: gone(child), timeout=10, what="the setsid child to be killed")


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("option", ["status_command", "systemctl"])
def test_commands_do_not_see_the_agents_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str) -> None:
    # The agent's environment holds the values behind the config's ${…} secrets.
    monkeypatch.setenv("KANSHI_DB_PASSWORD", "env-Secret-Value-42")
    dump = tmp_path / "env"
    script = tmp_path / "dump-env"
    script.write_text(f"#!/bin/sh\nenv > {dump}\necho ActiveState=active\n")
    script.chmod(0o755)
    marker = tmp_path / "run-systemd-system"
    marker.mkdir()
    options = {"status_command": [str(script)]} if option == "status_command" \
        else {"units": ["nginx"], "systemctl": str(script)}

    result = only(check(marker, **options))

    assert result.status is Status.OK
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "KANSHI_DB_PASSWORD" not in seen
    assert "env-Secret-Value-42" not in dump.read_text()
    assert (seen["PATH"], seen["LC_ALL"]) == (os.environ["PATH"], "C")


def test_the_loader_builds_it_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "service", "checks.service:ServiceCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""\
        checks:
          - name: app
            type: service
            status_command: [sh, -c, "echo app is not running; exit 3"]
        """))

    [spec] = load_config(path, environ={}).checks
    [result] = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert result.status is Status.CRITICAL
    assert result.message == ("`sh -c echo app is not running; exit 3` exited 3, program is "
                              "not running: app is not running")
