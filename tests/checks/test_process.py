"""The ``process`` check on real processes, compared with ``pgrep -c`` on the same selector.

Each test starts its own ``sleep`` processes carrying a unique marker (in argv[0],
or as a renamed copy of the binary for the process name), so processes of other
tests running at the same time never match.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

import checks
from agent.clock import SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.process import ProcessCheck
from tests.support import needs
from tests.support.wait import wait_for

SLEEP = shutil.which("sleep") or "/bin/sleep"


def run(**options: Any) -> Result:
    config = ProcessCheck.Config.model_validate(options)
    [result] = ProcessCheck("proc", config, timeout=30.0,
                            context=CheckContext(clock=SystemClock())).execute()
    return result


def pgrep(*args: str) -> int:
    """``pgrep -c ARGS`` (procps): the count an operator would see."""
    needs.command("pgrep", "procps")
    done = subprocess.run(["pgrep", "-c", *args], capture_output=True, text=True, check=False)
    return int(done.stdout.strip() or 0)


class Sleepers:
    """Real ``sleep`` processes started by a test, all killed afterwards.

    Renamed copies of sleep go to a directory every user may enter (pytest's
    tmp_path is private to root), so ``nobody`` can run them too.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kanshi-proc-"))
        self.dir.chmod(0o755)
        self.marker = f"kanshi-{uuid.uuid4().hex[:12]}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, *, argv0: str | None = None, executable: str = SLEEP,
              user: str | None = None) -> list[int]:
        prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] \
            if user else []
        for _ in range(count):
            argv = [*prefix, executable, "300"] if user else [argv0 or self.marker, "300"]
            self.procs.append(subprocess.Popen(argv, executable=None if user else executable))
        return [p.pid for p in self.procs[-count:]]

    def renamed(self, name: str) -> str:
        """A copy of sleep called ``name``: the kernel's comm is then ``name``."""
        path = self.dir / name
        shutil.copy(SLEEP, path)
        path.chmod(0o755)
        return str(path)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()  # reaped: no zombie left behind for other tests
        shutil.rmtree(self.dir)


@pytest.fixture
def sleepers() -> Iterator[Sleepers]:
    group = Sleepers()
    try:
        yield group
    finally:
        group.stop()


# -- config --------------------------------------------------------------------------------


def test_by_default_at_least_one_process_must_match() -> None:
    config = ProcessCheck.Config.model_validate({"process_name": "nginx"})

    assert (config.min.warning, config.min.critical) == (None, 1)
    assert (config.max.warning, config.max.critical) == (None, None)
    assert ProcessCheck.default_interval == 60.0


def test_bounds_take_a_bare_number_or_a_pair() -> None:
    config = ProcessCheck.Config.model_validate(
        {"process_name": "php-fpm", "min": {"warning": 4, "critical": 2}, "max": 20})

    assert (config.min.warning, config.min.critical) == (4, 2)
    assert (config.max.warning, config.max.critical) == (None, 20)


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({}, "expected at least one of process_name, cmdline, user", id="no-selector"),
    pytest.param({"cmdline": "nginx: (master"}, 'expected a regular expression, got '
                 '"nginx: (master": missing ), unterminated subpattern', id="bad-regex"),
    pytest.param({"process_name": "x", "min": {"warning": 1, "critical": 3}},
                 "expected warning (1) not below critical (3) for a minimum", id="min-upside-down"),
    pytest.param({"process_name": "x", "max": {"warning": 9, "critical": 3}},
                 "expected warning (9) not above critical (3) for a maximum", id="max-upside-down"),
    pytest.param({"process_name": "x", "min": -1},
                 "expected a whole number of processes, 0 or more", id="negative"),
    pytest.param({"process_name": "x", "min": "one"}, 'got "one"', id="not-a-number"),
    pytest.param({"process_name": "x", "users": "www"}, "Extra inputs are not permitted",
                 id="typo"),
])
def test_bad_config_is_refused_with_a_readable_message(options: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ProcessCheck.Config.model_validate(options)

    assert message in str(caught.value)


# -- agreement with pgrep ------------------------------------------------------------------


@pytest.mark.real
def test_a_command_line_regex_counts_what_pgrep_f_counts(sleepers: Sleepers) -> None:
    pids = sleepers.start(3)
    pattern = f"^{sleepers.marker} 300$"

    result = run(cmdline=pattern)

    assert result.metrics["count"] == pgrep("-f", pattern) == 3
    assert result.status is Status.OK
    assert result.message == (f"3 processes match cmdline=/{pattern}/ "
                              f"(pids {', '.join(map(str, sorted(pids)))})")


@pytest.mark.real
def test_a_process_name_counts_what_pgrep_x_counts(sleepers: Sleepers) -> None:
    name = f"k{uuid.uuid4().hex[:10]}"  # ≤ 15 characters: pgrep sees the whole comm
    sleepers.start(2, argv0=name, executable=sleepers.renamed(name))

    result = run(process_name=name)

    assert result.metrics["count"] == pgrep("-x", name) == 2


@pytest.mark.real
def test_a_user_and_a_regex_together_count_what_pgrep_u_f_counts(sleepers: Sleepers) -> None:
    needs.root()
    needs.command("setpriv", "util-linux")
    name = f"k{uuid.uuid4().hex[:10]}"
    binary = sleepers.renamed(name)
    sleepers.start(2, executable=binary, user="nobody")
    sleepers.start(1, argv0=name, executable=binary)  # same command line, run by root

    as_nobody = run(user="nobody", cmdline=name)
    as_uid = run(user="65534", cmdline=name)

    assert as_nobody.metrics["count"] == pgrep("-u", "nobody", "-f", name) == 2
    assert as_uid.metrics["count"] == 2
    assert run(cmdline=name).metrics["count"] == pgrep("-f", name) == 3


@pytest.mark.real
def test_no_match_is_critical_and_pgrep_agrees(sleepers: Sleepers) -> None:
    result = run(cmdline=sleepers.marker)

    assert pgrep("-f", sleepers.marker) == result.metrics["count"] == 0
    assert result.status is Status.CRITICAL
    assert result.message == (f"no process matches cmdline=/{sleepers.marker}/: expected at "
                              "least 1 (critical)")


@pytest.mark.real
@pytest.mark.parametrize(("running", "status", "tail"), [
    pytest.param(1, Status.WARNING, ": expected at least 2 (warning)", id="below-warning"),
    pytest.param(2, Status.OK, "", id="at-minimum"),
    pytest.param(4, Status.OK, "", id="at-maximum"),
    pytest.param(5, Status.CRITICAL, ": expected at most 4 (critical)", id="above-maximum"),
])
def test_counts_are_judged_against_min_and_max_inclusive(
        sleepers: Sleepers, running: int, status: Status, tail: str) -> None:
    sleepers.start(running)

    result = run(cmdline=sleepers.marker, min={"warning": 2, "critical": 1}, max=4)

    assert result.status is status
    assert result.message.endswith(tail or ")")


@pytest.mark.real
def test_a_message_lists_at_most_five_pids(sleepers: Sleepers) -> None:
    sleepers.start(7)

    result = run(cmdline=sleepers.marker, max=10)

    assert result.message.startswith(f"7 processes match cmdline=/{sleepers.marker}/ (pids ")
    assert result.message.endswith(", …)")
    assert result.message.count(",") == 5


@pytest.mark.real
def test_a_zombie_is_not_counted_although_pgrep_counts_it(sleepers: Sleepers) -> None:
    name = f"k{uuid.uuid4().hex[:10]}"
    [pid] = sleepers.start(1, argv0=name, executable=sleepers.renamed(name))
    sleepers.procs[-1].kill()  # not reaped until the fixture waits: a zombie meanwhile
    wait_for(lambda: process_state(pid) == "Z", timeout=10, what=f"pid {pid} to be a zombie")

    result = run(process_name=name)

    assert pgrep("-x", name) == 1
    assert result.metrics["count"] == 0


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, Z …)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]


def test_an_unknown_user_is_unknown_not_zero_processes() -> None:
    result = run(user="no-such-user-kanshi")

    assert result.status is Status.UNKNOWN
    assert result.message == ("no such user 'no-such-user-kanshi' on this host (check the user "
                              "option)")


def test_the_agent_never_counts_itself() -> None:
    result = run(cmdline="pytest|python", min=0)

    assert str(os.getpid()) not in result.message


@pytest.mark.real
def test_the_loader_builds_it_from_yaml(tmp_path: Path, sleepers: Sleepers,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "process", "checks.process:ProcessCheck")
    sleepers.start(1)
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"checks:\n  - name: sleeper\n    type: process\n"
                    f"    cmdline: '^{sleepers.marker} '\n    min: {{warning: 2, critical: 1}}\n")

    [spec] = load_config(path, environ={}).checks
    [result] = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert (result.status, result.metrics["count"]) == (Status.WARNING, 1.0)
