"""The ``logfile`` check on real files in a temporary folder: appends, logrotate's
rename + create and copytruncate, truncation, binary garbage, 1 MB lines, caps.

Every run goes through :class:`Runs`, which passes the check's state through
``json.dumps``/``json.loads`` between runs as the agent's store does, and builds a
fresh check each time as after an agent restart.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
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
from checks.logfile import EVIDENCE_CHARS, LogfileCheck, required_literal
from checks.logread import Limits, follow

MiB = 2**20


class Runs:
    """Runs of one configured check sharing state through JSON, as the agent keeps it."""

    def __init__(self, clock: Any = None, timeout: float = 30.0,
                 scrub: Redactor | None = None, **options: Any) -> None:
        self.config = LogfileCheck.Config.model_validate(options)
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.scrub = scrub or Redactor()
        self.saved = "{}"

    def results(self) -> list[Result]:
        context = CheckContext(clock=self.clock, state=json.loads(self.saved),
                               scrub=self.scrub)
        check = LogfileCheck("app-log", self.config, timeout=self.timeout, context=context)
        results = check.execute()
        self.saved = json.dumps(context.state)
        return results

    def run(self) -> Result:
        [result] = self.results()
        return result


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("2026-11-22 09:00:00 INFO started\n")
    return path


def watching(log: Path, **options: Any) -> Runs:
    """A check on ``log`` that has had its first run (so it stands at the end)."""
    runs = Runs(paths=[str(log)], patterns=["ERROR", {"regex": "WARN", "severity": "warning"}],
                **options)
    first = runs.run()
    assert first.status is Status.OK, first.message
    return runs


def evidence(result: Result) -> list[str]:
    return [line.strip() for line in result.message.splitlines()[1:]
            if not line.strip().startswith(("note:", "…"))]


# -- config ----------------------------------------------------------------------------------


def test_defaults_read_like_tail_f_with_bounds() -> None:
    config = LogfileCheck.Config.model_validate({"paths": "/var/log/app.log",
                                                 "patterns": ["ERROR"]})

    assert LogfileCheck.type_name == "logfile" and LogfileCheck.default_interval == 60.0
    assert config.paths == ("/var/log/app.log",)
    assert (config.from_start, config.required, config.max_matches) == (False, False, 10)
    assert (config.max_line_bytes, config.max_bytes_per_run) == (64 * 1024, 16 * MiB)
    assert (config.hold, config.encoding) == (600.0, "utf-8")
    [pattern] = config.patterns
    assert (pattern.regex, pattern.severity, pattern.label) == ("ERROR", "critical", '"ERROR"')


@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"patterns": ["(unclosed"]}, "expected a regular expression (Python re syntax), "
                 'got "(unclosed": missing ), unterminated subpattern', id="bad-regex"),
    pytest.param({"paths": ["app.log"]}, "expected an absolute path or glob", id="relative"),
    pytest.param({"patterns": []}, "at least 1 item", id="no-patterns"),
    pytest.param({"patterns": [{"regex": "x", "severity": "high"}]}, "'warning' or 'critical'",
                 id="bad-severity"),
    pytest.param({"encoding": "utf-16"}, "expected an ASCII-compatible encoding", id="utf-16"),
    pytest.param({"encoding": "klingon"}, "expected an ASCII-compatible encoding", id="unknown"),
    pytest.param({"max_bytes_per_run": 1000}, "expected max_bytes_per_run (1000) of at least "
                 "max_line_bytes + 64 KiB (131072)", id="budget-below-one-line"),
    pytest.param({"hold": "soon"}, "expected a duration such as 30s", id="bad-hold"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], says: str) -> None:
    raw = {"paths": ["/var/log/app.log"], "patterns": ["ERROR"], **options}

    with pytest.raises(pydantic.ValidationError) as caught:
        LogfileCheck.Config.model_validate(raw)

    assert says in str(caught.value)


def test_the_loader_builds_it_from_yaml(tmp_path: Path, log: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "logfile", "checks.logfile:LogfileCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"checks:\n  - name: app\n    type: logfile\n    paths: {log}\n"
                    f"    from_start: true\n    patterns:\n      - regex: started\n"
                    f"        severity: warning\n        name: boot\n")

    [spec] = load_config(path, environ={}).checks
    [result] = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert (spec.interval, result.target, result.status) == (60.0, str(log), Status.WARNING)
    assert "1 match in 1 new line (WARNING: 1 × boot)" in result.message


# -- reading what was appended ---------------------------------------------------------------


def test_the_first_run_starts_at_the_end_like_tail_f(log: Path) -> None:
    append(log, "2026-11-22 09:00:01 ERROR old news\n")

    result = Runs(paths=[str(log)], patterns=["ERROR"]).run()

    assert result.status is Status.OK
    assert result.message.startswith(f"{log}: no new matches in 0 new lines")
    assert "first look, started at its end" in result.message
    assert result.metrics == {"new_lines": 0.0, "new_bytes": 0.0, "matches": 0.0,
                              "unread_bytes": 0.0}


def test_from_start_reads_what_is_already_there(log: Path) -> None:
    append(log, "2026-11-22 09:00:01 ERROR old news\n")

    result = Runs(paths=[str(log)], patterns=["ERROR"], from_start=True).run()

    assert result.status is Status.CRITICAL
    assert evidence(result) == ["2026-11-22 09:00:01 ERROR old news"]


def test_only_appended_lines_are_read_and_judged_by_the_worst_pattern(log: Path) -> None:
    runs = watching(log)
    append(log, "09:01 WARN disk slow\n09:02 ERROR db gone\n09:03 INFO fine\n")

    result = runs.run()

    assert result.status is Status.CRITICAL
    assert result.message.splitlines()[0] == (
        f'{log}: 2 matches in 3 new lines (CRITICAL: 1 × "ERROR"; WARNING: 1 × "WARN")')
    assert evidence(result) == ["09:01 WARN disk slow", "09:02 ERROR db gone"]
    assert result.metrics == {"new_lines": 3.0, "new_bytes": 57.0, "matches": 2.0,
                              "unread_bytes": 0.0}
    assert runs.run().metrics["new_lines"] == 0  # nothing appended: nothing read again


def test_a_line_counts_once_under_its_worst_pattern(log: Path) -> None:
    runs = watching(log)
    append(log, "WARN then ERROR on one line\n")

    result = runs.run()

    assert result.metrics["matches"] == 1
    assert '(CRITICAL: 1 × "ERROR")' in result.message


def test_a_half_written_line_waits_for_its_newline(log: Path) -> None:
    runs = watching(log)
    append(log, "09:01 ERR")

    assert runs.run().metrics["new_lines"] == 0
    append(log, "OR finally complete\n")
    result = runs.run()

    assert evidence(result) == ["09:01 ERROR finally complete"]


def test_exclude_drops_known_noise(log: Path) -> None:
    runs = watching(log, exclude="ERROR.*expected")
    append(log, "ERROR expected at shutdown\nERROR real\n")

    assert evidence(runs.run()) == ["ERROR real"]


def test_matches_reported_are_capped_but_all_are_counted(log: Path) -> None:
    runs = watching(log, max_matches=3)
    append(log, "".join(f"ERROR number {n}\n" for n in range(50)))

    result = runs.run()

    assert evidence(result) == ["ERROR number 0", "ERROR number 1", "ERROR number 2"]
    assert "… and 47 more" in result.message
    assert result.metrics["matches"] == 50


def test_state_round_trips_through_json(log: Path) -> None:
    runs = watching(log)
    append(log, "ERROR one\n")
    runs.run()

    state = json.loads(runs.saved)

    [position] = state["paths"][str(log)]["reading"]["files"]
    assert position["offset"] == log.stat().st_size
    assert (position["dev"], position["ino"]) == (log.stat().st_dev, log.stat().st_ino)
    assert json.loads(json.dumps(state)) == state


def test_a_saved_state_from_elsewhere_is_not_trusted(log: Path) -> None:
    runs = watching(log)
    runs.saved = json.dumps({"paths": {str(log): {"reading": {
        "started": True, "files": [{"path": str(log), "dev": "x"}, "junk"]}}}})
    append(log, "ERROR after a broken state\n")

    result = runs.run()  # started: the file is taken as new and read whole

    assert result.status is Status.CRITICAL and result.metrics["new_lines"] == 2


# -- rotation and truncation -----------------------------------------------------------------


@pytest.mark.parametrize("rotated", ["app.log.1", "app.log-20261122", "app-20261122.log"])
def test_rename_and_create_finishes_the_old_file_then_reads_the_new(log: Path,
                                                                    rotated: str) -> None:
    runs = watching(log)
    append(log, "09:01 ERROR before rotation\n")
    os.rename(log, log.with_name(rotated))
    append(log.with_name(rotated), "09:02 ERROR written late to the old file\n")
    log.write_text("09:03 WARN in the new file\n")

    result = runs.run()

    assert evidence(result) == ["09:01 ERROR before rotation",
                                "09:02 ERROR written late to the old file",
                                "09:03 WARN in the new file"]
    assert f"note: {log} was rotated: read the end of the old file" in result.message
    append(log, "09:04 ERROR next\n")
    assert evidence(runs.run()) == ["09:04 ERROR next"]


def test_a_glob_that_also_matches_rotated_files_reads_no_line_twice(log: Path) -> None:
    runs = Runs(paths=[f"{log}*"], patterns=["ERROR"])
    runs.run()
    append(log, "09:01 ERROR before rotation\n")
    os.rename(log, f"{log}.1")
    log.write_text("09:02 ERROR in the new file\n")

    first, second = runs.run(), runs.run()

    assert evidence(first) == ["app.log.1: 09:01 ERROR before rotation",
                               "app.log: 09:02 ERROR in the new file"]
    assert second.metrics["new_lines"] == 0


def test_a_rotated_file_already_compressed_is_reported_as_lost(log: Path) -> None:
    runs = watching(log)
    append(log, "09:01 ERROR lost in the gzip\n")
    os.rename(log, f"{log}.1")  # logrotate without delaycompress: rename, create, compress
    log.write_text("09:03 ERROR in the new file\n")
    with open(f"{log}.1", "rb") as src, gzip.open(f"{log}.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(f"{log}.1")

    result = runs.run()

    assert evidence(result) == ["09:03 ERROR in the new file"]
    assert "was rotated and the old file was not found beside it" in result.message


def test_copytruncate_reads_the_rest_from_the_copy_then_the_file_from_0(log: Path) -> None:
    runs = watching(log)
    append(log, "09:01 ERROR written before the copy\n")
    shutil.copyfile(log, f"{log}.1")  # what logrotate's copytruncate does
    os.truncate(log, 0)
    append(log, "09:02 WARN after the truncate\n")

    result = runs.run()

    assert evidence(result) == ["09:01 ERROR written before the copy",
                                "09:02 WARN after the truncate"]
    assert f"was truncated after being copied to {log}.1 (copytruncate)" in result.message


def test_truncation_is_noticed_and_the_file_read_from_the_start(log: Path) -> None:
    runs = watching(log)
    append(log, "".join(f"09:01 INFO filler {n}\n" for n in range(100)))
    runs.run()
    os.truncate(log, 0)
    append(log, "09:05 ERROR after truncation\n")

    result = runs.run()

    assert evidence(result) == ["09:05 ERROR after truncation"]
    assert "was truncated or replaced (29 B now, 2.1 KiB read before): reading it from " \
        "the start" in result.message


def test_truncated_and_regrown_past_the_offset_is_noticed_by_its_first_bytes(log: Path) -> None:
    runs = watching(log)
    with open(log, "r+b") as f:  # same inode, other content, longer than before
        f.truncate(0)
        f.write(b"2026-11-23 00:00:00 new day\n2026-11-23 00:00:01 ERROR early\n")

    result = runs.run()

    assert evidence(result) == ["2026-11-23 00:00:01 ERROR early"]
    assert "was truncated or replaced (same inode, different first bytes)" in result.message


# -- hostile content ---------------------------------------------------------------------------


def test_binary_garbage_is_decoded_with_replacement(log: Path) -> None:
    runs = watching(log)
    garbage = random.Random(7).randbytes(256 * 1024).replace(b"ERROR", b"error")
    append(log, garbage + b"\n\xff\xfe\x00 ERROR after garbage\n")

    result = runs.run()

    assert result.status is Status.CRITICAL
    assert result.metrics["matches"] == 1
    assert evidence(result) == ["\ufffd\ufffd\x00 ERROR after garbage"]


def test_a_1_mb_line_is_matched_on_its_first_bytes_and_cut_in_the_message(log: Path) -> None:
    runs = watching(log)
    append(log, "ERROR " + "x" * MiB + " ERROR-at-the-end\nERROR the next line\n")

    result = runs.run()

    assert result.metrics["matches"] == 2 and result.metrics["new_lines"] == 2
    first, second = evidence(result)
    assert first.startswith("ERROR xxx") and first.endswith("… [line cut at max_line_bytes]")
    assert len(first) < 400
    assert second == "ERROR the next line"


def test_a_secret_in_a_log_line_is_masked_in_the_evidence_and_the_state(log: Path) -> None:
    secret = "log-Secret-Pass-42"
    clock = FrozenClock()
    runs = watching(log, clock=clock, scrub=Redactor([secret]))
    append(log, f"ERROR login failed for db password={secret}\n")
    # A secret straddling the evidence cut must not leave its first half behind.
    append(log, "ERROR " + "x" * (EVIDENCE_CHARS - 20) + f" {secret} end\n")

    result = runs.run()
    clock.advance(60)
    held = runs.run()

    assert result.status is held.status is Status.CRITICAL
    assert evidence(result)[0] == "ERROR login failed for db password=********"
    for text in (result.message, held.message, runs.saved):
        assert secret[:8] not in text


def test_a_1_mb_line_still_being_written_is_skipped_to_its_end_across_runs(log: Path) -> None:
    runs = watching(log)
    append(log, "y" * MiB)  # no newline yet

    first = runs.run()
    append(log, "yyy ERROR in the tail of the long line\nERROR after it\n")
    second = runs.run()

    assert (first.metrics["new_lines"], first.metrics["matches"]) == (1, 0)
    assert evidence(second) == ["ERROR after it"]
    assert json.loads(runs.saved)["paths"][str(log)]["reading"]["files"][0]["skipping"] is False


def test_reading_is_bounded_per_run_and_continues_next_run(log: Path) -> None:
    runs = watching(log, max_line_bytes=256, max_bytes_per_run=256 + 64 * 1024)
    lines = [f"09:00 {'ERROR' if n % 1000 == 0 else 'INFO'} line {n:06d}\n" for n in range(20000)]
    append(log, "".join(lines))  # about 450 KiB

    first = runs.run()
    total, new_lines, rounds = first.metrics["matches"], first.metrics["new_lines"], 1
    while (result := runs.run()).metrics["new_lines"]:
        total += result.metrics["matches"]
        new_lines += result.metrics["new_lines"]
        rounds += 1

    assert first.metrics["unread_bytes"] > 0
    assert "not read yet (limit max_bytes_per_run 64.2 KiB" in first.message
    assert (total, new_lines) == (20, 20000)
    assert rounds >= 7 and result.metrics["unread_bytes"] == 0


def test_reading_stops_at_the_deadline(log: Path) -> None:
    class LeapingClock(SystemClock):
        """Monotonic time jumps 10 s per look: the deadline passes after a few chunks."""

        def __init__(self) -> None:
            self.t = 0.0

        def monotonic(self) -> float:
            self.t += 10.0
            return self.t

    runs = watching(log)
    runs.clock = LeapingClock()
    append(log, "INFO filler line\n" * 100_000)

    result = runs.run()

    assert 0 < result.metrics["new_bytes"] < log.stat().st_size
    assert "not read yet" in result.message


def test_logs_in_shift_jis_are_read_with_their_encoding(log: Path) -> None:
    runs = Runs(paths=[str(log)], patterns=[{"regex": "エラー", "name": "app-error"}],
                encoding="cp932")
    runs.run()
    append(log, "2026-11-22 09:00 業務エラー: 受注処理に失敗\n".encode("cp932"))

    result = runs.run()

    assert evidence(result) == ["2026-11-22 09:00 業務エラー: 受注処理に失敗"]


# -- missing files and globs -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "required", "status", "says"), [
    pytest.param("gone.log", False, Status.UNKNOWN, "gone.log does not exist: nothing to scan",
                 id="missing"),
    pytest.param("gone.log", True, Status.CRITICAL,
                 "gone.log does not exist (required: true): the application may have stopped",
                 id="missing-required"),
    pytest.param("*.nothing", False, Status.UNKNOWN, "no file matches", id="glob-matches-none"),
])
def test_a_missing_log_says_which_path(tmp_path: Path, name: str, required: bool,
                                       status: Status, says: str) -> None:
    path = str(tmp_path / name)

    result = Runs(paths=[path], patterns=["ERROR"], required=required).run()

    assert (result.status, result.target) == (status, path)
    assert says in result.message


def test_a_log_created_after_the_first_run_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "late.log"
    runs = Runs(paths=[str(path)], patterns=["ERROR"])
    assert runs.run().status is Status.UNKNOWN

    path.write_text("ERROR first line of a new log\n")

    assert evidence(runs.run()) == ["ERROR first line of a new log"]


def test_a_glob_is_one_target_and_new_files_are_read_from_their_start(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("ERROR history a\n")
    (tmp_path / "b.log").write_text("ERROR history b\n")
    pattern = str(tmp_path / "*.log")
    runs = Runs(paths=[pattern], patterns=["ERROR"])
    assert runs.run().status is Status.OK

    append(tmp_path / "a.log", "ERROR new in a\n")
    (tmp_path / "c.log").write_text("ERROR new file c\n")
    result = runs.run()

    assert result.target == pattern
    assert evidence(result) == ["a.log: ERROR new in a", "c.log: ERROR new file c"]


def test_each_configured_path_is_its_own_result(tmp_path: Path) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text("")
    two.write_text("")
    runs = Runs(paths=[str(one), str(two)], patterns=["ERROR"])
    runs.results()
    append(two, "ERROR only in two\n")

    results = {r.target: r.status for r in runs.results()}

    assert results == {str(one): Status.OK, str(two): Status.CRITICAL}


# -- holding a match while the agent confirms it ------------------------------------------------


def test_a_match_is_held_with_its_evidence_then_recovers(log: Path) -> None:
    clock = FrozenClock()
    runs = watching(log, clock=clock)
    append(log, "09:01 ERROR once\n")
    assert runs.run().status is Status.CRITICAL

    clock.advance(60)  # the agent's confirmation re-run
    held = runs.run()
    clock.advance(540)
    later = runs.run()

    assert held.status is Status.CRITICAL
    assert held.message.splitlines()[0] == (
        f"{log}: no new matches in 0 new lines; still CRITICAL for 9 min (hold) from the "
        'run at 2026-11-02 01:00:00 UTC: CRITICAL: 1 × "ERROR"')
    assert evidence(held) == ["09:01 ERROR once"]
    assert held.metrics["matches"] == 0
    assert later.status is Status.OK


def test_a_later_warning_does_not_hide_a_critical_still_held(log: Path) -> None:
    clock = FrozenClock()
    runs = watching(log, clock=clock)
    append(log, "09:01 ERROR first\n")
    runs.run()
    clock.advance(60)
    append(log, "09:02 WARN second\n")

    result = runs.run()

    assert result.status is Status.CRITICAL
    assert evidence(result) == [
        "09:02 WARN second",
        'still CRITICAL for 9 min (hold) from the run at 2026-11-02 01:00:00 UTC: CRITICAL: '
        '1 × "ERROR"',
        "09:01 ERROR first"]


def test_without_hold_each_run_stands_alone(log: Path) -> None:
    runs = watching(log, hold=None)
    append(log, "ERROR once\n")

    assert [runs.run().status, runs.run().status] == [Status.CRITICAL, Status.OK]


# -- the reader on its own -------------------------------------------------------------------


def test_the_reader_keeps_memory_bounded_on_one_endless_line(tmp_path: Path) -> None:
    path = tmp_path / "endless.log"
    path.write_bytes(b"z" * (8 * MiB))
    lines: list[str] = []
    limits = Limits(16 * MiB, 4096, float("inf"), lambda: 0.0)

    saved, progress = follow(str(path), None, lambda line: lines.append(line.text), limits,
                             from_start=True)

    assert [len(text) for text in lines] == [4096]
    assert saved["files"][0]["offset"] == 8 * MiB and saved["files"][0]["skipping"]
    assert progress.new_bytes == 8 * MiB


@pytest.mark.parametrize(("regex", "literal"), [
    pytest.param(r"ERROR", ("ERROR", False), id="plain"),
    pytest.param(r"\bEDAC\b.*\bCE\b", ("EDAC", False), id="longest-run"),
    pytest.param(r"(?i)out of memory: Kill(ed)?", ("out of memory: kill", True), id="ignorecase"),
    pytest.param(r"(foo|bar)baz", ("baz", False), id="after-a-branch"),
    pytest.param(r"a|bcd", ("", False), id="top-level-branch"),
    pytest.param(r"x?", ("", False), id="nothing-required"),
])
def test_the_prefilter_only_relies_on_text_every_match_contains(
        regex: str, literal: tuple[str, bool]) -> None:
    assert required_literal(regex) == literal
