"""The ``syslog`` check: its rule table against real-looking log lines, the file
fallback on real files, and the journal path against the real ``journalctl``.

This machine runs no journald, so the journal tests build real journal files with
systemd's own ``systemd-journal-remote`` (Debian package systemd-journal-remote)
from entries in journal export format, and point the check at them with its
``journal_directory`` option — what ``journalctl --directory`` reads. The lines
come from ``fixtures/syslog/cases.yaml``, each with the kernel or program source
that prints it.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

import checks
from agent.clock import FrozenClock, SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.syslog import Classifier, SyslogCheck, SyslogConfig, builtin_rules, entry_line
from tests.support import needs

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "syslog" / "cases.yaml")
                       .read_text(encoding="utf-8"))["cases"]
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
STAMP = "2026-11-22T09:00:00.000000+09:00 web01 "  # rsyslog's RFC 3339 format (Debian 12)
_LINE = re.compile(r"^(?P<ident>[^\[:\s]+)(\[(?P<pid>\d+)\])?: (?P<message>.*)$")


class Runs:
    """Runs of one configured check sharing state through JSON, as the agent keeps it."""

    def __init__(self, clock: Any = None, timeout: float = 60.0,
                 scrub: Redactor | None = None, **options: Any) -> None:
        self.config = SyslogCheck.Config.model_validate(options)
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.scrub = scrub or Redactor()
        self.saved = "{}"

    def run(self) -> dict[str, Result]:
        context = CheckContext(clock=self.clock, state=json.loads(self.saved),
                               scrub=self.scrub)
        check = SyslogCheck("syslog", self.config, timeout=self.timeout, context=context)
        results = check.execute()
        self.saved = json.dumps(context.state)
        return {r.target: r for r in results}


def expected(cases: list[dict[str, Any]]) -> dict[str, tuple[Status, int]]:
    """Per class: the worst status and the number of lines the cases say it gets."""
    out: dict[str, tuple[Status, int]] = {}
    for case in cases:
        for name, severity in case["classes"].items():
            status, count = out.get(name, (Status.OK, 0))
            out[name] = (max(status, Status[severity.upper()]), count + 1)
    return out


def verdicts(results: dict[str, Result]) -> dict[str, tuple[Status, int]]:
    return {t: (r.status, int(r.metrics["matches"])) for t, r in results.items()
            if r.status is not Status.OK}


def evidence(result: Result) -> list[str]:
    return [line.strip() for line in result.message.splitlines()[1:]
            if not line.strip().startswith(("note:", "what to do:", "…"))]


@pytest.fixture
def syslog(tmp_path: Path) -> Path:
    path = tmp_path / "syslog"
    path.write_text(f"{STAMP}systemd[1]: Started rsyslog.service - System Logging Service.\n")
    return path


def file_runs(syslog: Path, **options: Any) -> Runs:
    """A file-source check on ``syslog`` that has had its first run (at the end)."""
    runs = Runs(source="file", files=[str(syslog)], **options)
    assert all(r.status is Status.OK for r in runs.run().values())
    return runs


def write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{STAMP}{line}\n" for line in lines)


# -- journal files made by systemd-journal-remote ---------------------------------------------


def export_entry(line: str | bytes, micros: int) -> bytes:
    """One entry in journal export format for a syslog-style ``line``."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    match = _LINE.match(text)
    assert match, text
    fields = {"__REALTIME_TIMESTAMP": str(micros), "__MONOTONIC_TIMESTAMP": str(micros % 10**9),
              "_BOOT_ID": "0123456789abcdef0123456789abcdef", "_HOSTNAME": "web01",
              "SYSLOG_IDENTIFIER": match["ident"], "PRIORITY": "3",
              "_TRANSPORT": "kernel" if match["ident"] == "kernel" else "syslog"}
    if match["pid"]:
        fields["_PID"] = match["pid"]
    out = b"".join(f"{k}={v}\n".encode() for k, v in fields.items())
    message = (line.split(b": ", 1)[1] if isinstance(line, bytes)
               else match["message"].encode())
    # The binary form of a field: any bytes, even invalid UTF-8.
    out += b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n"
    return out + b"\n"


def add_to_journal(folder: Path, lines: list[Any]) -> None:
    """Append entries timestamped now to ``folder``/system.journal, as journald would."""
    needs.command(JOURNAL_REMOTE, "systemd-journal-remote")
    base = int(time.time() * 1e6)
    stream = b"".join(export_entry(line, base + n) for n, line in enumerate(lines))
    subprocess.run([JOURNAL_REMOTE, f"--output={folder / 'system.journal'}", "-"],
                   input=stream, check=True, capture_output=True, timeout=30)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    folder = tmp_path / "journal"
    folder.mkdir()
    add_to_journal(folder, ["systemd[1]: Started systemd-journald.service - Journal Service."])
    return folder


# -- config ----------------------------------------------------------------------------------


def test_defaults_follow_spec_section_1() -> None:
    config = SyslogConfig()

    assert (SyslogCheck.type_name, SyslogCheck.default_interval) == ("syslog", 3600.0)
    assert SyslogCheck.default_timeout == 120.0
    assert (config.source, config.journal_directory) == ("auto", None)
    assert config.files == ("/var/log/syslog", "/var/log/messages")
    assert (config.hold, config.lookback, config.max_evidence) == (3600.0, 3600.0, 5)
    assert [r.name for r in config.rules_in_force()] == [
        "disk-io", "filesystem", "raid", "mce", "edac", "thermal", "oom", "segfault",
        "kernel", "nic-link", "service-failed"]


@pytest.mark.parametrize(("options", "says"), [
    pytest.param({"disable": ["ome"]}, "unknown rule class 'ome' — did you mean 'oom'?",
                 id="unknown-disable"),
    pytest.param({"rules": [{"class": "a", "patterns": ["x"]}, {"class": "a", "patterns": ["y"]}]},
                 "expected each rule class once, got \"'a' twice\"", id="duplicate-class"),
    pytest.param({"rules": [{"class": "Disk IO", "patterns": ["x"]}]},
                 "should match pattern", id="bad-class-name"),
    pytest.param({"rules": [{"class": "app", "patterns": ["(oops"]}]},
                 "expected a regular expression", id="bad-regex"),
    pytest.param({"rules": [{"class": "app", "patterns": []}]}, "at least 1 item",
                 id="no-patterns"),
    pytest.param({"journal_directory": "journal"}, "expected an absolute path", id="relative"),
    pytest.param({"source": "kmsg"}, "'auto', 'journal' or 'file'", id="bad-source"),
    pytest.param({"max_bytes_per_run": 1000}, "expected max_bytes_per_run of at least",
                 id="budget-below-one-line"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], says: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        SyslogConfig.model_validate(options)

    assert says in str(caught.value)


def test_user_rules_add_classes_replace_built_ins_and_disable_them() -> None:
    config = SyslogConfig.model_validate({
        "disable": ["service-failed", "thermal"],
        "rules": [{"class": "oom", "severity": "warning", "patterns": ["Killed process"]},
                  {"class": "app-crash", "hint": "call the vendor", "patterns": ["FATAL"]}]})

    rules = {r.name: r for r in config.rules_in_force()}

    assert "service-failed" not in rules and "thermal" not in rules
    assert (rules["oom"].severity, len(rules["oom"].patterns)) == ("warning", 1)
    assert list(rules)[-1] == "app-crash"


def test_the_loader_builds_it_from_yaml(tmp_path: Path, syslog: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "syslog", "checks.syslog:SyslogCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"checks:\n  - name: syslog\n    type: syslog\n    source: file\n"
                    f"    files: [{syslog}]\n    disable: [thermal]\n")

    [spec] = load_config(path, environ={}).checks
    results = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert (spec.interval, spec.timeout) == (3600.0, 120.0)
    assert len(results) == 10 and all(r.status is Status.OK for r in results)


# -- the rule table --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["line"][:60] for c in CASES])
def test_each_fixture_line_is_classified_as_its_case_says(case: dict[str, Any]) -> None:
    classifier = Classifier(SyslogConfig().rules_in_force(), (), 5)

    classifier.see(case["line"], case["line"])

    found = {name: f.status.name.lower() for name, f in classifier.found.items()}
    assert found == case["classes"], case["source"]


def test_every_built_in_pattern_has_a_fixture_line_and_every_rule_a_hint() -> None:
    lines = [case["line"] for case in CASES]
    untested = [(rule.name, p.regex) for rule in builtin_rules() for p in rule.patterns
                if not any(re.search(p.regex, line) for line in lines)]

    assert untested == []
    assert all(rule.hint and rule.source for rule in builtin_rules())
    assert all(case["source"] for case in CASES)


# -- the file fallback -----------------------------------------------------------------------


def test_the_file_fallback_classifies_every_fixture_line(syslog: Path) -> None:
    runs = file_runs(syslog, max_evidence=20)
    write_lines(syslog, [case["line"] for case in CASES])

    results = runs.run()

    assert verdicts(results) == expected(CASES)
    raid = results["raid"]
    assert raid.message.splitlines()[0] == f"raid: 7 lines in {len(CASES)} new lines of {syslog}"
    assert evidence(raid)[0] == f"{STAMP}kernel: md/raid1:md0: Disk failure on sdb1, " \
                                "disabling device."
    assert "what to do: a software RAID member failed" in raid.message
    assert results["raid"].metrics == {"matches": 7.0, "new_lines": float(len(CASES))}


def test_every_class_is_reported_every_run(syslog: Path) -> None:
    results = file_runs(syslog).run()

    assert set(results) == {r.name for r in builtin_rules()}
    assert results["oom"].message == f"oom: nothing found in 0 new lines of {syslog}"


def test_the_file_fallback_starts_at_the_end_of_the_file(syslog: Path) -> None:
    write_lines(syslog, ["kernel: Out of memory: Killed process 1 (old) total-vm:1kB"])

    results = Runs(source="file", files=[str(syslog)]).run()

    assert verdicts(results) == {}
    assert "first look, started at its end" in results["oom"].message


def test_auto_falls_back_to_the_first_log_file_that_exists(tmp_path: Path, syslog: Path) -> None:
    empty = tmp_path / "no-journal"
    empty.mkdir()
    runs = Runs(journal_directory=str(empty), files=[str(tmp_path / "messages"), str(syslog)])
    runs.run()
    write_lines(syslog, ["kernel: e1000e 0000:00:1f.6 eno1: NIC Link is Down"])

    results = runs.run()

    assert verdicts(results) == {"nic-link": (Status.WARNING, 1)}
    assert f"note: journal not used: no journal files in {empty}" in results["nic-link"].message


def test_without_journalctl_the_file_is_read(syslog: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no journalctl on the PATH

    results = Runs(files=[str(syslog)]).run()

    assert "journal not used: journalctl is not installed" in results["oom"].message


def test_nothing_to_read_is_unknown_with_both_reasons(tmp_path: Path) -> None:
    results = Runs(journal_directory=str(tmp_path), files=[str(tmp_path / "syslog")]).run()

    assert list(results) == [""]
    assert results[""].status is Status.UNKNOWN
    assert results[""].message == (
        f"cannot scan the system log: no journal files in {tmp_path} (journald not running, "
        f"or Storage=none); none of {tmp_path / 'syslog'} exists")


def test_source_journal_does_not_fall_back(tmp_path: Path, syslog: Path) -> None:
    results = Runs(source="journal", journal_directory=str(tmp_path),
                   files=[str(syslog)]).run()

    assert results[""].status is Status.UNKNOWN
    assert "no journal files in" in results[""].message


def test_ignore_drops_lines_the_operator_knows_about(syslog: Path) -> None:
    runs = file_runs(syslog, ignore=["eno9: NIC Link is Down"])
    write_lines(syslog, ["kernel: e1000e 0000:00:1f.7 eno9: NIC Link is Down",
                         "kernel: e1000e 0000:00:1f.6 eno1: NIC Link is Down"])

    result = runs.run()["nic-link"]

    assert evidence(result) == [f"{STAMP}kernel: e1000e 0000:00:1f.6 eno1: NIC Link is Down"]


def test_a_user_rule_raises_its_own_class(syslog: Path) -> None:
    runs = file_runs(syslog, rules=[{"class": "app-crash", "severity": "critical",
                                     "hint": "restart billing", "patterns": ["billing.*FATAL"]}],
                     disable=["segfault"])
    write_lines(syslog, ["billing[77]: FATAL cannot reach the ledger"])

    results = runs.run()

    assert verdicts(results) == {"app-crash": (Status.CRITICAL, 1)}
    assert "what to do: restart billing" in results["app-crash"].message
    assert "segfault" not in results


def test_evidence_is_capped_per_class(syslog: Path) -> None:
    runs = file_runs(syslog, max_evidence=2)
    write_lines(syslog, [f"kernel: Out of memory: Killed process {n} (java)" for n in range(6)])

    result = runs.run()["oom"]

    assert len(evidence(result)) == 2 and "… and 4 more" in result.message
    assert result.metrics["matches"] == 6


def test_a_secret_in_a_log_line_is_masked_in_the_evidence_and_the_state(syslog: Path) -> None:
    secret = "syslog-Secret-Pass-42"
    clock = FrozenClock()
    runs = file_runs(syslog, clock=clock, scrub=Redactor([secret]))
    write_lines(syslog, [f"kernel: Out of memory: Killed process 7 (java -Dpw={secret})",
                         # straddling the evidence cut: no half of it may stay
                         "kernel: Out of memory: Killed process 8 (" + "x" * 200 + f" {secret})"])

    result = runs.run()["oom"]
    clock.advance(60)
    held = runs.run()["oom"]

    assert result.status is held.status is Status.CRITICAL
    assert evidence(result)[0] == (f"{STAMP}kernel: Out of memory: Killed process 7 "
                                   "(java -Dpw=********)")
    for text in (result.message, held.message, runs.saved):
        assert secret[:8] not in text


# -- holding a class until an hour passes without new lines -----------------------------------


def test_a_class_alerts_until_an_hour_passes_without_new_lines(syslog: Path) -> None:
    clock = FrozenClock()
    runs = file_runs(syslog, clock=clock)
    write_lines(syslog, ["kernel: EXT4-fs (sda1): Remounting filesystem read-only"])
    assert runs.run()["filesystem"].status is Status.CRITICAL

    clock.advance(60)  # the agent re-runs to confirm: the line is not read again
    confirming = runs.run()["filesystem"]
    clock.advance(59 * 60)
    recovered = runs.run()["filesystem"]

    assert confirming.status is Status.CRITICAL
    assert confirming.message.splitlines()[0] == (
        f"filesystem: nothing new in 0 new lines of {syslog}; still CRITICAL for 59 min "
        "(hold) from 1 line seen at 2026-11-02 01:00:00 UTC")
    assert evidence(confirming) == [f"{STAMP}kernel: EXT4-fs (sda1): Remounting filesystem "
                                    "read-only"]
    assert recovered.status is Status.OK


def test_a_warning_line_does_not_lower_a_class_held_critical(syslog: Path) -> None:
    clock = FrozenClock()
    runs = file_runs(syslog, clock=clock)
    write_lines(syslog, ["kernel: EXT4-fs error (device sda1): ext4_lookup:1855: bad inode"])
    runs.run()
    clock.advance(60)
    write_lines(syslog, ["kernel: EXT4-fs (sda1): error count since last fsck: 1"])

    result = runs.run()["filesystem"]

    assert result.status is Status.CRITICAL
    assert "still CRITICAL for 59 min (hold) from 1 line seen at 2026-11-02 01:00:00 UTC" \
        in result.message


def test_new_lines_restart_the_hold(syslog: Path) -> None:
    clock = FrozenClock()
    runs = file_runs(syslog, clock=clock)
    for _ in range(3):
        write_lines(syslog, ["kernel: nvme nvme0: I/O 512 QID 3 timeout, aborting"])
        assert runs.run()["disk-io"].status is Status.CRITICAL
        clock.advance(50 * 60)

    assert runs.run()["disk-io"].status is Status.CRITICAL  # 50 min after the last line
    clock.advance(10 * 60)
    assert runs.run()["disk-io"].status is Status.OK


# -- the journal, read by the real journalctl --------------------------------------------------


@pytest.mark.real
def test_the_journal_is_classified_like_the_file(journal: Path) -> None:
    add_to_journal(journal, [case["line"] for case in CASES])

    results = Runs(journal_directory=str(journal), max_evidence=20).run()

    assert verdicts(results) == expected(CASES)
    first = evidence(results["oom"])[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ kernel: Out of memory: Killed "
                        r"process 2211 \(java\) total-vm:.*", first), first
    assert results["oom"].message.splitlines()[0] == \
        f"oom: 4 lines in {len(CASES) + 1} new journal entries"


@pytest.mark.real
def test_the_journal_is_read_from_the_saved_cursor(journal: Path) -> None:
    runs = Runs(journal_directory=str(journal))
    assert runs.run()["oom"].metrics["new_lines"] == 1

    again = runs.run()
    add_to_journal(journal, ["kernel: Out of memory: Killed process 4321 (mysqld) total-vm:1kB",
                             "CRON[99]: (root) CMD (true)"])
    after = runs.run()

    assert again["oom"].metrics["new_lines"] == 0
    assert after["oom"].metrics == {"matches": 1.0, "new_lines": 2.0}
    assert json.loads(runs.saved)["sources"][f"journal:{journal}"]["cursor"].startswith("s=")


@pytest.mark.real
def test_a_long_journal_is_read_over_several_runs_without_loss(journal: Path) -> None:
    lines = [f"kernel: Out of memory: Killed process {n} (worker)" if n % 500 == 0
             else f"CRON[{n}]: (root) CMD (true)" for n in range(6000)]
    add_to_journal(journal, lines)
    runs = Runs(journal_directory=str(journal), max_bytes_per_run=(1 << 20) + 64 * 1024)

    first = runs.run()["oom"]
    seen, matches, rounds = first.metrics["new_lines"], first.metrics["matches"], 1
    while (result := runs.run()["oom"]).metrics["new_lines"]:
        seen, matches, rounds = (seen + result.metrics["new_lines"],
                                 matches + result.metrics["matches"], rounds + 1)

    assert "note: scan incomplete (max_bytes_per_run 1.1 MiB" in first.message
    assert (seen, matches) == (6001, 12) and rounds >= 2


@pytest.mark.real
def test_the_first_journal_run_looks_back_only_so_far(journal: Path) -> None:
    add_to_journal(journal, ["kernel: EXT4-fs error (device sda1): ext4_lookup:1855: bad inode"])
    clock = FrozenClock(start=SystemClock().now())
    clock.advance(7200)  # as if the lines were logged two hours before the first run

    results = Runs(clock=clock, journal_directory=str(journal)).run()

    assert verdicts(results) == {}
    assert results["filesystem"].metrics["new_lines"] == 0


@pytest.mark.real
def test_a_refused_cursor_falls_back_to_the_time_of_the_last_run(journal: Path) -> None:
    runs = Runs(journal_directory=str(journal))
    runs.run()
    state = json.loads(runs.saved)
    state["sources"][f"journal:{journal}"]["cursor"] = "not-a-cursor"
    runs.saved = json.dumps(state)
    add_to_journal(journal, ["kernel: tg3 0000:02:00.0 eth0: Link is down"])

    results = runs.run()

    assert verdicts(results) == {"nic-link": (Status.WARNING, 1)}
    assert "the saved journal position was refused (Failed to seek to cursor" \
        in results["nic-link"].message


@pytest.mark.real
def test_messages_that_are_not_utf8_reach_the_rules(journal: Path) -> None:
    add_to_journal(journal, [b"kernel: EXT4-fs error (device sd\xff\xfe1): ext4_lookup: bad"])

    result = Runs(journal_directory=str(journal)).run()["filesystem"]

    assert result.status is Status.CRITICAL
    assert "EXT4-fs error (device sd\ufffd\ufffd1)" in evidence(result)[0]


@pytest.mark.real
def test_a_hung_journalctl_is_killed_within_the_timeout(tmp_path: Path, journal: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake: the real journalctl cannot be made to hang here. It prints one entry,
    # then sleeps past the check's timeout.
    fake = tmp_path / "bin" / "journalctl"
    fake.parent.mkdir()
    entry = json.dumps({"__CURSOR": "s=1", "MESSAGE": "Out of memory: Killed process 7 (x)",
                        "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel"})
    fake.write_text(f"#!/bin/sh\necho '{entry}'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    started = time.monotonic()

    results = Runs(timeout=2.0, journal_directory=str(journal)).run()

    assert time.monotonic() - started < 10
    assert verdicts(results) == {"oom": (Status.CRITICAL, 1)}
    assert "journalctl did not finish within the check's timeout (2 s)" in results["oom"].message


# -- journal entries as journalctl -o json prints them -------------------------------------------


@pytest.mark.parametrize(("entry", "line"), [
    pytest.param({"MESSAGE": "NIC Link is Down", "_TRANSPORT": "kernel",
                  "SYSLOG_IDENTIFIER": "kernel"}, "kernel: NIC Link is Down", id="kernel"),
    pytest.param({"MESSAGE": "x.service: Failed with result 'exit-code'.", "_PID": "1",
                  "SYSLOG_IDENTIFIER": "systemd", "_TRANSPORT": "journal"},
                 "systemd[1]: x.service: Failed with result 'exit-code'.", id="daemon"),
    pytest.param({"MESSAGE": [104, 105, 255], "_COMM": "app", "_PID": "9",
                  "_TRANSPORT": "stdout"}, "app[9]: hi\ufffd", id="bytes-as-numbers"),
    pytest.param({"MESSAGE": ["one", "two"], "SYSLOG_IDENTIFIER": "app"}, "app: one two",
                 id="repeated-field"),
    pytest.param({"MESSAGE": None, "SYSLOG_IDENTIFIER": "app"}, None, id="too-large-is-null"),
    pytest.param({"SYSLOG_IDENTIFIER": "app"}, None, id="no-message"),
])
def test_journal_entries_read_as_syslog_lines(entry: dict[str, Any], line: str | None) -> None:
    got = entry_line(entry)

    assert (got[0] if got else None) == line
