"""The ``plugin`` check against Debian's real monitoring-plugins and against
misbehaving plugins (tiny shell scripts written into each test's tmp dir).

Each real plugin is also run directly in the same test, and kanshi must say what
Nagios would: the same status, the same status text, the same perfdata.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

import checks
from agent.clock import SystemClock
from agent.config import load_config
from agent.runner import CheckRunner
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.perfdata import parse_output
from checks.plugin import LINGER, PluginCheck, PluginConfig
from tests.support.http_server import HttpServer, Reply, free_port
from tests.support.wait import wait_for

PLUGINS = Path("/usr/lib/nagios/plugins")


def nagios(name: str) -> str:
    """Path of a monitoring-plugins plugin, or skip naming the package."""
    path = PLUGINS / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"needs {path} (Debian package monitoring-plugins-basic); "
                    "./test installs it as root")
    return str(path)


def config(command: Any, **options: Any) -> PluginConfig:
    return PluginCheck.Config.model_validate({"command": command, **options})  # type: ignore[return-value]


def run(command: Any, *, timeout: float = 10.0, scrub: Redactor | None = None,
        name: str = "plug", **options: Any) -> Result:
    context = CheckContext(clock=SystemClock(), scrub=scrub or Redactor())
    results = PluginCheck(name, config(command, **options), timeout=timeout,
                          context=context).execute()
    assert len(results) == 1
    return results[0]


def direct(argv: list[str]) -> tuple[Status, str, dict[str, float]]:
    """What Nagios would see running ``argv`` itself."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    output = parse_output(done.stdout)
    return Status(done.returncode), output.text, output.metrics()


def script(folder: Path, body: str, name: str = "plugin") -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip(), encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for init to reap it counts as ended)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """A file test plugins append their pids to; whatever is left is killed afterwards."""
    path = tmp_path / "pids"
    yield path
    for line in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(psutil.Error):
            psutil.Process(int(line)).kill()


# -- config --------------------------------------------------------------------------------


def test_defaults_follow_mackerel_and_the_target_is_the_check_name() -> None:
    cfg = config(["/usr/lib/nagios/plugins/check_load"])
    assert PluginCheck.type_name == "plugin" and PluginCheck.default_interval == 60.0
    assert (cfg.env, cfg.secret_env, cfg.cwd, cfg.target, cfg.max_output) == ({}, {}, None,
                                                                              "", 4096)


def test_numbers_in_the_command_are_taken_as_written() -> None:
    assert config(["check_tcp", "-p", 80, "-w", 0.5]).command == (
        "check_tcp", "-p", "80", "-w", "0.5")


def test_a_lone_program_name_is_a_one_word_command() -> None:
    assert config("check_users").command == ("check_users",)


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"command": "check_disk -w 20%"}, "command",
                 "expected a list of arguments such as", id="shell-string"),
    pytest.param({"command": []}, "command", "expected a list of arguments, the program first",
                 id="empty-command"),
    pytest.param({"command": ["bin/check_x"]}, "command",
                 'an absolute path or a name found on PATH, got "bin/check_x"',
                 id="relative-path"),
    pytest.param({"command": ["check_x", True]}, "command",
                 "expected a string or a number, got true", id="boolean-argument"),
    pytest.param({"env": {"A=B": "x"}}, "env", "an environment variable name without =",
                 id="bad-env-name"),
    pytest.param({"max_output": 10}, "max_output", "greater than or equal to 256",
                 id="tiny-max-output"),
    pytest.param({"shell": True}, "shell", "Extra inputs are not permitted", id="unknown-key"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**{"command": ["check_x"], **options})
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


def test_secret_env_reaches_the_plugin_but_never_a_message_or_repr(tmp_path: Path) -> None:
    plugin = script(tmp_path, """
        echo "CRITICAL - login with $DB_PASSWORD refused"
        echo "also in stderr: $DB_PASSWORD" >&2
        exit 2
    """)
    options: dict[str, Any] = {"secret_env": {"DB_PASSWORD": "s3cr3t-value"}}
    result = run([plugin], scrub=Redactor(["s3cr3t-value"]), **options)
    assert result.status is Status.CRITICAL
    assert result.message == ("CRITICAL - login with ******** refused; "
                              "stderr: also in stderr: ********")
    assert "s3cr3t-value" not in repr(config([plugin], **options))


# -- the real monitoring-plugins --------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_check_dummy_exit_codes_become_the_same_status(code: int) -> None:
    argv = [nagios("check_dummy"), str(code), f"dummy says {code}"]
    status, text, _ = direct(argv)
    result = run(argv)
    assert (result.status, result.message) == (status, text)
    assert result.status is Status(code)
    assert result.target == "plug"


@pytest.mark.real
def test_check_disk_agrees_with_running_it_directly_and_with_statvfs() -> None:
    argv = [nagios("check_disk"), "-w", "1%", "-c", "1%", "-u", "kB", "-p", "/"]
    status, text, metrics = direct(argv)
    result = run(argv)
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert result.status is status  # OK unless / is more than 99 % full
    assert result.message.split(" / ")[0] == text.split(" / ")[0] == (
        f"DISK {status.name} - free space:")
    assert set(result.metrics) == set(metrics) == {"root_bytes"}
    # Other tests write to this disk meanwhile: a generous bound, not equality.
    assert result.metrics["root_bytes"] == pytest.approx(metrics["root_bytes"], abs=64 * 2**20)
    assert result.metrics["root_bytes"] == pytest.approx(used, abs=64 * 2**20)


@pytest.mark.real
def test_check_disk_below_its_free_space_threshold_is_critical_as_nagios_says() -> None:
    argv = [nagios("check_disk"), "-w", "100%", "-c", "100%", "-p", "/"]
    status, text, _ = direct(argv)
    result = run(argv)
    assert result.status is status is Status.CRITICAL
    assert result.message.startswith("DISK CRITICAL - free space: / ")
    assert result.message.split(" / ")[0] == text.split(" / ")[0]


@pytest.mark.real
def test_check_tcp_on_a_listening_loopback_port_is_ok_with_its_connect_time() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        argv = [nagios("check_tcp"), "-H", "127.0.0.1", "-p", str(port)]
        status, text, metrics = direct(argv)
        result = run(argv)
    assert result.status is status is Status.OK
    assert result.message.startswith("TCP OK - ") and text.startswith("TCP OK - ")
    assert f"port {port}" in result.message
    assert set(result.metrics) == set(metrics) == {"time_seconds"}
    assert 0 <= result.metrics["time_seconds"] < 5


@pytest.mark.real
def test_check_tcp_on_a_closed_port_is_critical_connection_refused() -> None:
    argv = [nagios("check_tcp"), "-H", "127.0.0.1", "-p", str(free_port())]
    status, text, _ = direct(argv)
    result = run(argv)
    assert (result.status, result.message) == (status, text)
    assert result.status is Status.CRITICAL and result.message.endswith("Connection refused")


@pytest.mark.real
def test_check_procs_counts_the_same_processes_as_pgrep(tmp_path: Path) -> None:
    marker = f"{os.getpid()}.{time.monotonic_ns() % 1000}"  # a unique sleep duration
    sleepers = [subprocess.Popen(["sleep", f"1{marker}"]) for _ in range(3)]
    try:
        argv = [nagios("check_procs"), "-a", f"1{marker}", "-w", "3:3", "-c", "1:"]
        status, text, metrics = direct(argv)
        result = run(argv)
        pgrep = subprocess.run(["pgrep", "-c", "-f", f"sleep 1{marker}"], capture_output=True,
                               text=True, check=False).stdout.strip()
        assert (result.status, result.message, result.metrics) == (status, text, metrics)
        assert result.status is Status.OK and result.metrics == {"procs": 3.0}
        assert pgrep == "3"
        gone_one = sleepers.pop()
        gone_one.kill()
        gone_one.wait()
        fewer = run(argv)
        assert fewer.status is Status.WARNING and fewer.metrics == {"procs": 2.0}
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()


@pytest.mark.real
def test_check_load_agrees_with_the_kernel_load_average() -> None:
    argv = [nagios("check_load"), "-w", "900,900,900", "-c", "999,999,999"]
    status, _, metrics = direct(argv)
    result = run(argv)
    assert result.status is status is Status.OK
    assert result.message.startswith("LOAD OK - total load average: ")
    assert set(result.metrics) == set(metrics) == {"load1", "load5", "load15"}
    for name, kernel in zip(("load1", "load5", "load15"), os.getloadavg(), strict=True):
        assert result.metrics[name] == pytest.approx(kernel, abs=1.0)


@pytest.mark.real
@pytest.mark.parametrize(("reply", "extra", "expected"), [
    pytest.param(Reply(200, "hello kanshi"), [], Status.OK, id="200"),
    pytest.param(Reply(500, "boom"), [], Status.CRITICAL, id="500"),
    pytest.param(Reply(200, "hello kanshi"), ["-s", "not-there"], Status.CRITICAL,
                 id="expected-string-missing"),
])
def test_check_http_against_a_local_server_matches_running_it_directly(
        reply: Reply, extra: list[str], expected: Status) -> None:
    with HttpServer() as server:
        server.respond(reply, reply)
        argv = [nagios("check_http"), "-H", "127.0.0.1", "-p", str(server.port), "-u", "/x",
                *extra]
        status, text, metrics = direct(argv)
        result = run(argv)
    assert result.status is status is expected
    # The response time differs between the two runs; the rest of the text does not.
    assert result.message.split(" in ")[0] == text.split(" in ")[0]
    assert set(result.metrics) == set(metrics) == {"time_seconds", "size_bytes"}
    assert result.metrics["size_bytes"] == metrics["size_bytes"]


# -- misbehaving plugins ----------------------------------------------------------------------


def test_an_exit_code_outside_0_to_3_is_unknown_with_the_output(tmp_path: Path) -> None:
    plugin = script(tmp_path, 'echo "OK - all good | a=1"\necho oops >&2\nexit 7\n')
    result = run([plugin])
    assert result.status is Status.UNKNOWN
    assert result.message == (f"{plugin} exited with code 7, which is not a plugin status "
                              "(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); output: OK - all good; "
                              "stderr: oops")


def test_a_plugin_killed_by_a_signal_is_unknown_naming_the_signal(tmp_path: Path) -> None:
    result = run([script(tmp_path, "kill -SEGV $$\n")])
    assert result.status is Status.UNKNOWN
    assert result.message.endswith("was killed by signal 11 (SIGSEGV)")


def test_a_plugin_that_never_ends_is_killed_and_unknown(tmp_path: Path) -> None:
    plugin = script(tmp_path, 'echo "partial line"\nexec sleep 1000\n')
    started = time.monotonic()
    result = run([plugin], timeout=1.5)
    assert time.monotonic() - started < 5  # killed near the timeout, not after the sleep
    assert result.status is Status.UNKNOWN
    assert result.message == (
        f"{plugin} did not finish within the check's timeout (1.5 s) and was killed with its "
        "child processes; raise the check's `timeout` or lower the plugin's own time limit; "
        "output: partial line")


def test_a_hung_plugin_and_all_its_children_are_really_killed(tmp_path: Path,
                                                              pid_file: Path) -> None:
    plugin = script(tmp_path, f"""
        echo $$ >> {pid_file}
        sleep 1000 &
        echo $! >> {pid_file}
        sh -c 'sleep 1000 & echo $! >> {pid_file}; wait' &
        echo $! >> {pid_file}
        sh -c 'trap "" TERM; exec sleep 1000' &
        echo $! >> {pid_file}
        setsid sleep 1000 &
        echo $! >> {pid_file}
        wait
    """)
    result = run([plugin], timeout=2)
    assert result.status is Status.UNKNOWN and "did not finish" in result.message
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 6  # the plugin, a child, a grandchild, a TERM-proof one, a setsid one
    wait_for(lambda: all(gone(p) for p in pids), timeout=5, what="every plugin process to end")


@pytest.mark.parametrize("redirect", [
    pytest.param("", id="child-holds-the-output-pipe"),
    pytest.param(">/dev/null 2>&1", id="child-detached-from-output"),
])
def test_what_a_plugin_leaves_running_is_killed_after_it_exits(tmp_path: Path, pid_file: Path,
                                                               redirect: str) -> None:
    plugin = script(tmp_path, f"""
        sleep 1000 {redirect} &
        echo $! >> {pid_file}
        echo "OK - done | a=1"
        exit 0
    """)
    started = time.monotonic()
    result = run([plugin], timeout=20)
    assert time.monotonic() - started < LINGER + 3  # not held until the timeout
    assert (result.status, result.message, result.metrics) == (Status.OK, "OK - done",
                                                               {"a": 1.0})
    child = int(pid_file.read_text())
    wait_for(lambda: gone(child), timeout=5, what="the leftover child to end")


def test_a_megabyte_of_output_is_capped(tmp_path: Path) -> None:
    plugin = script(tmp_path, "head -c 1048576 /dev/zero | tr '\\0' x\necho\nexit 1\n")
    result = run([plugin], max_output=4096)
    assert result.status is Status.WARNING
    assert len(result.message) == 4096
    assert result.message.endswith("xxx… (truncated)")


def test_long_output_is_kept_below_the_status_text(tmp_path: Path) -> None:
    plugin = script(tmp_path, """
        echo "RAID WARNING - 1 array degraded | arrays=2"
        echo "md0: clean"
        echo "md1: degraded | degraded=1"
        exit 1
    """)
    result = run([plugin])
    assert result.message == "RAID WARNING - 1 array degraded\nmd0: clean\nmd1: degraded"
    assert result.metrics == {"arrays": 2.0, "degraded": 1.0}


def test_a_plugin_writing_only_to_stderr_shows_it(tmp_path: Path) -> None:
    plugin = script(tmp_path, 'echo "cannot read /etc/app.conf: Permission denied" >&2\nexit 2\n')
    result = run([plugin])
    assert result.status is Status.CRITICAL
    assert result.message == (f"{plugin} printed nothing (exit 2, CRITICAL); "
                              "stderr: cannot read /etc/app.conf: Permission denied")


def test_stderr_is_not_shown_when_all_is_well(tmp_path: Path) -> None:
    result = run([script(tmp_path, 'echo "OK"\necho "debug noise" >&2\n')])
    assert (result.status, result.message) == (Status.OK, "OK")


@pytest.mark.parametrize(("make", "says"), [
    pytest.param(lambda d: str(d / "missing"), "not found: install it or fix `command`",
                 id="missing"),
    pytest.param(lambda d: "kanshi-no-such-plugin",
                 "plugin kanshi-no-such-plugin not found on PATH", id="missing-on-path"),
    pytest.param(lambda d: _not_executable(d), "permission denied (not executable?)",
                 id="not-executable"),
    pytest.param(lambda d: _file(d, "echo hi\n", 0o755), "exec format error", id="no-shebang"),
    pytest.param(lambda d: _file(d, "#!/nonexistent/interp\n", 0o755),
                 "its interpreter (the #! line) was not found", id="missing-interpreter"),
])
def test_a_plugin_that_cannot_start_is_unknown_with_the_reason(tmp_path: Path, make: Any,
                                                               says: str) -> None:
    program = make(tmp_path)
    result = run([program])
    assert result.status is Status.UNKNOWN
    assert says in result.message and program in result.message


def _file(folder: Path, text: str, mode: int) -> str:
    path = folder / "plugin"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _not_executable(folder: Path) -> str:
    path = _file(folder, "#!/bin/sh\necho OK\n", 0o644)
    if os.geteuid() == 0:
        # root may run any file that has an x bit; with none at all, exec is refused.
        assert not os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_a_missing_working_directory_is_named(tmp_path: Path) -> None:
    result = run(["/bin/true"], cwd=str(tmp_path / "gone"))
    assert result.status is Status.UNKNOWN
    assert result.message.endswith(f"working directory {tmp_path / 'gone'} does not exist "
                                   "(fix `cwd`)")


def test_env_and_cwd_reach_the_plugin(tmp_path: Path) -> None:
    plugin = script(tmp_path, 'echo "OK - $GREETING from $(pwd)"\n')
    result = run([plugin], env={"GREETING": "hello"}, cwd=str(tmp_path))
    assert result.message == f"OK - hello from {tmp_path}"


def test_a_configured_target_names_the_result(tmp_path: Path) -> None:
    result = run([script(tmp_path, "echo OK\n")], target="db1.example:5432")
    assert result.target == "db1.example:5432"


# -- through the config loader and the runner ---------------------------------------------------


@pytest.mark.real
def test_a_plugin_check_loads_from_yaml_and_runs_under_the_runner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "plugin", "checks.plugin:PluginCheck")
    dummy = nagios("check_dummy")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent(f"""
        agent: {{state_dir: {tmp_path / 'state'}}}
        checks:
          - name: dummy-warning
            type: plugin
            command: [{dummy}, 1, "from the loader"]
            timeout: 5s
    """))
    spec = load_config(path, environ={}).checks[0]
    assert (spec.interval, spec.timeout) == (60.0, 5.0)
    shared = LocalResources()
    check = build_check(spec, SystemClock(), shared, Redactor())
    [result] = CheckRunner(SystemClock()).run(check, spec.timeout)
    shared.close()
    assert (result.check, result.target, result.status, result.message) == (
        "dummy-warning", "dummy-warning", Status.WARNING, "WARNING: from the loader")


def test_a_plugin_does_not_see_the_agents_environment_only_what_it_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent's environment holds the values behind ${…} secrets in its config.
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-from-the-agent")
    result = run(["/bin/sh", "-c", 'echo "pw=$SMTP_PASSWORD given=$GIVEN path=${PATH:+yes}"'],
                 env={"GIVEN": "yes"})
    assert result.message.startswith("pw= given=yes path=yes")
