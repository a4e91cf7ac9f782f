"""The ``filecount`` check on real directory trees, compared with ``find DIR -type f``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

import checks
from agent.clock import FrozenClock, SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.filecount import FileCountCheck
from tests.support import needs

REPO = Path(__file__).resolve().parents[2]


def run(clock: Any = None, timeout: float = 30.0, **options: Any) -> Result:
    config = FileCountCheck.Config.model_validate(options)
    check = FileCountCheck("files", config, timeout=timeout,
                           context=CheckContext(clock=clock or SystemClock()))
    [result] = check.execute()
    return result


def find_count(*args: str, user: str | None = None) -> int:
    """``find ARGS | wc -l``, the way an operator would count (as ``user`` if given)."""
    prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] if user else []
    out = subprocess.run([*prefix, "find", *args], capture_output=True, text=True, check=False)
    return len(out.stdout.splitlines())


def make_tree(root: Path) -> None:
    """Files at several depths, hidden files, links, a fifo and empty directories."""
    for depth in range(4):
        level = root.joinpath(*[f"d{i}" for i in range(depth)])
        level.mkdir(parents=True, exist_ok=True)
        for n in range(5):
            (level / f"f{n}.log").write_text("x")
            (level / f"f{n}.tmp").touch()
        (level / ".hidden").touch()
        (level / "empty").mkdir()
    os.symlink(root / "f0.log", root / "link-to-file")
    os.symlink(root / "d0", root / "link-to-dir")  # find does not follow it, nor do we
    os.symlink(root / "nowhere", root / "dangling")
    os.mkfifo(root / "fifo")


class TickingClock(FrozenClock):
    """A clock that moves one second each time it is read.

    Stands in for a walk slower than the time limit, which a small real tree on a
    fast disk never is; the tree walked is real.
    """

    def monotonic(self) -> float:
        self.advance(1.0)
        return super().monotonic()


# -- config --------------------------------------------------------------------------------


def test_defaults_follow_spec_gold_when_a_capacity_is_given() -> None:
    config = FileCountCheck.Config.model_validate({"path": "/srv", "capacity": 1000})

    assert (config.percent.warning, config.percent.critical) == (80.0, 90.0)
    assert (config.recursive, config.pattern, config.time_limit) == (True, None, 20.0)
    assert FileCountCheck.default_interval == 600.0


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"path": "/srv"}, "expected threshold (file counts) or capacity",
                 id="nothing-to-judge"),
    pytest.param({"path": "/srv", "capacity": 0}, "greater than 0", id="zero-capacity"),
    pytest.param({"path": "/srv", "threshold": {"warning": 10, "critical": 5}},
                 "expected warning (10) not above critical (5)", id="upside-down"),
    pytest.param({"path": "/srv", "capacity": 10, "percent": {"critical": 120}},
                 "expected a number between 0 and 100, got 120", id="percent-over-100"),
    pytest.param({"path": "/srv", "capacity": 10, "time_limit": "soon"},
                 "expected a duration such as 30s", id="bad-time-limit"),
    pytest.param({"capacity": 10}, "Field required", id="no-path"),
])
def test_bad_config_is_refused_with_a_readable_message(options: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        FileCountCheck.Config.model_validate(options)

    assert message in str(caught.value)


# -- counts agree with find ----------------------------------------------------------------


@pytest.mark.parametrize(("options", "find_args"), [
    pytest.param({}, ["-type", "f"], id="recursive"),
    pytest.param({"recursive": False}, ["-maxdepth", "1", "-type", "f"], id="top-level-only"),
    pytest.param({"pattern": "*.log"}, ["-type", "f", "-name", "*.log"], id="glob"),
    pytest.param({"pattern": ".*"}, ["-type", "f", "-name", ".*"], id="hidden-only"),
])
def test_the_count_agrees_with_find(tmp_path: Path, options: dict[str, Any],
                                    find_args: list[str]) -> None:
    make_tree(tmp_path)

    result = run(path=str(tmp_path), threshold={"critical": 1000}, **options)

    assert result.status is Status.OK
    assert result.metrics["files"] == find_count(str(tmp_path), *find_args) > 0


def test_a_symlinked_directory_is_followed_as_find_dir_slash_does(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    make_tree(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "alias")

    result = run(path=str(tmp_path / "alias"), threshold={"critical": 1000})

    assert result.metrics["files"] == find_count(f"{tmp_path / 'alias'}/", "-type", "f")


def test_a_large_flat_directory_agrees_with_find(tmp_path: Path) -> None:
    for n in range(1200):  # several times the entries read between two looks at the clock
        (tmp_path / f"{n:05}").touch()

    result = run(path=str(tmp_path), threshold={"critical": 10000})

    assert result.metrics["files"] == find_count(str(tmp_path), "-type", "f") == 1200
    assert result.message == f"{tmp_path}: 1200 files"


# -- thresholds ----------------------------------------------------------------------------


@pytest.mark.parametrize(("files", "status"), [
    pytest.param(79, Status.OK, id="79-percent"),
    pytest.param(80, Status.WARNING, id="80-percent-boundary-included"),
    pytest.param(90, Status.CRITICAL, id="90-percent-spec-gold"),
])
def test_percent_of_capacity_is_judged_with_the_boundary_included(
        tmp_path: Path, files: int, status: Status) -> None:
    for n in range(files):
        (tmp_path / f"f{n}").touch()

    result = run(path=str(tmp_path), capacity=100)

    assert result.status is status
    assert result.metrics["used_percent"] == files


def test_a_critical_message_says_how_many_against_which_threshold(tmp_path: Path) -> None:
    for n in range(12):
        (tmp_path / f"f{n}").touch()

    result = run(path=str(tmp_path), threshold={"warning": 5, "critical": 10}, capacity=100,
                 percent={"warning": 50})

    assert result.status is Status.CRITICAL
    assert result.message == f"{tmp_path}: 12 files, 12.0% of capacity 100 ≥ critical 10 files"


def test_a_pattern_is_named_in_the_message(tmp_path: Path) -> None:
    make_tree(tmp_path)

    result = run(path=str(tmp_path), pattern="*.tmp", recursive=False,
                 threshold={"critical": 3})

    assert result.message == (f'{tmp_path}: 5 files named "*.tmp" (top level only)'
                              " ≥ critical 3 files")


# -- trouble -------------------------------------------------------------------------------


def test_a_missing_directory_is_unknown_and_says_what_to_check(tmp_path: Path) -> None:
    result = run(path=str(tmp_path / "gone"), threshold={"critical": 1})

    assert result.status is Status.UNKNOWN
    assert result.message == (f"{tmp_path / 'gone'} does not exist (check the path option, "
                              "or whether it is mounted)")


def test_a_file_instead_of_a_directory_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "file").touch()

    result = run(path=str(tmp_path / "file"), threshold={"critical": 1})

    assert (result.status, result.message) == (Status.UNKNOWN,
                                               f"{tmp_path / 'file'} is not a directory")


def test_a_walk_past_its_time_limit_is_unknown_with_what_it_counted(tmp_path: Path) -> None:
    make_tree(tmp_path)

    result = run(clock=TickingClock(), path=str(tmp_path), time_limit="3s",
                 threshold={"critical": 1000})

    assert result.status is Status.UNKNOWN
    assert result.message.startswith(f"{tmp_path}: at least ")
    assert "; walk did not finish in 3 s after " in result.message
    assert result.metrics["files"] < find_count(str(tmp_path), "-type", "f")


def test_a_stopped_walk_that_already_passed_critical_is_critical(tmp_path: Path) -> None:
    make_tree(tmp_path)

    result = run(clock=TickingClock(), path=str(tmp_path), time_limit="3s",
                 threshold={"critical": 2})

    assert result.status is Status.CRITICAL
    assert "at least" in result.message and "walk did not finish" in result.message


def test_the_check_timeout_bounds_the_walk_when_shorter(tmp_path: Path) -> None:
    make_tree(tmp_path)

    result = run(clock=TickingClock(), timeout=2.0, path=str(tmp_path),
                 threshold={"critical": 1000})

    assert "walk did not finish in 2 s" in result.message


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A tree another user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="kanshi-filecount-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


#: Runs a filecount check as the calling user and prints its result as JSON.
CHILD = """
import json, sys
from agent.clock import SystemClock
from checks.base import CheckContext
from checks.filecount import FileCountCheck
config = FileCountCheck.Config.model_validate(json.load(sys.stdin))
[r] = FileCountCheck("files", config, timeout=30.0,
                     context=CheckContext(clock=SystemClock())).execute()
print(json.dumps({"status": r.status.name, "message": r.message, "metrics": r.metrics,
                  "target": r.target}))
"""


def run_as_nobody(options: dict[str, Any]) -> dict[str, Any]:
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            sys.executable, "-c", CHILD]
    done = subprocess.run(argv, input=json.dumps(options), capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.real
@pytest.mark.parametrize(("critical", "status"), [
    pytest.param(1000, "UNKNOWN", id="lower-bound-below-threshold"),
    pytest.param(3, "CRITICAL", id="lower-bound-already-critical"),
])
def test_an_unreadable_subdirectory_makes_the_count_a_lower_bound(
        shared_tree: Path, critical: int, status: str) -> None:
    """Run as ``nobody``: root reads every directory whatever its mode."""
    needs.root()
    needs.command("setpriv", "util-linux")
    make_tree(shared_tree)
    for path in [shared_tree, *shared_tree.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    (shared_tree / "d0" / "d1").chmod(0o700)  # root's own: nobody cannot enter

    result = run_as_nobody({"path": str(shared_tree), "threshold": {"critical": critical}})

    assert result["status"] == status
    assert result["metrics"]["files"] == find_count(str(shared_tree), "-type", "f",
                                                    user="nobody")
    assert result["metrics"]["files"] < find_count(str(shared_tree), "-type", "f")
    assert (f"could not read 1 directories ({shared_tree / 'd0' / 'd1'}): fix their "
            "permissions") in result["message"]


@pytest.mark.real
def test_a_directory_behind_one_it_may_not_enter_is_unknown_on_its_path(
        shared_tree: Path) -> None:
    """Run as ``nobody``: the stat of the path itself is refused (EACCES)."""
    needs.root()
    needs.command("setpriv", "util-linux")
    (shared_tree / "private" / "spool").mkdir(parents=True)
    (shared_tree / "private").chmod(0o700)  # root's own: nobody cannot enter
    path = shared_tree / "private" / "spool"

    result = run_as_nobody({"path": str(path), "threshold": {"critical": 10}})

    assert (result["status"], result["target"]) == ("UNKNOWN", str(path))
    assert result["message"] == (f"cannot reach {path}: Permission denied (give the user "
                                 "kanshi runs as access to it and to every directory "
                                 "above it)")


def test_a_path_the_system_cannot_stat_is_unknown_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)  # longer than NAME_MAX: stat fails with ENAMETOOLONG

    result = run(path=str(path), threshold={"critical": 10})

    assert (result.status, result.target) == (Status.UNKNOWN, str(path))
    assert result.message == f"cannot reach {path}: File name too long"


def test_the_loader_resolves_a_relative_path_against_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "filecount", "checks.filecount:FileCountCheck")
    (tmp_path / "spool").mkdir()
    for n in range(9):
        (tmp_path / "spool" / f"m{n}").touch()
    config = tmp_path / "kanshi.yaml"
    config.write_text("checks:\n  - name: spool\n    type: filecount\n    path: spool\n"
                      "    capacity: 10\n")

    [spec] = load_config(config, environ={}).checks
    [result] = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert result.target == str(tmp_path / "spool")
    assert result.status is Status.CRITICAL
    assert result.metrics["used_percent"] == 90.0
