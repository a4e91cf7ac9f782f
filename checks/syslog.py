"""The ``syslog`` check: hardware and software trouble in the system log (SPEC §1,
SkyArch Gold/Platinum "system log collection", every 60 min).

Reads what was logged since the last run — the journal (``journalctl -o json
--after-cursor``, the cursor kept in the check's state) or, when there is no
journal, ``/var/log/syslog`` or ``/var/log/messages`` through the incremental
reader of :mod:`checks.logread` — and classifies each line with the rule table
``checks/syslog_rules.yaml`` (disk I/O errors, filesystem errors, RAID, MCE,
EDAC, OOM killer, segfaults, kernel bugs, NIC link down, failed units…).

One result per rule class, every run (target = the class): its severity and up
to ``max_evidence`` lines while it matched within ``hold`` (1 h), OK otherwise.
A line is logged once; the hold keeps the class alerting while the agent
confirms it (re-runs every ``retry_interval``) and until an hour passes with no
new such line, so a one-off error opens an incident that recovers by itself
an hour later, and a recurring one stays open.

The first run scans the last ``lookback`` (1 h) of the journal, so errors logged
while the machine booted (fsck, MCEs from before a crash) are not missed; a log
file is read from its end, like ``tail -F`` (syslog lines have no year to
compare with).
"""

from __future__ import annotations

import difflib
import functools
import glob
import importlib.resources
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Scrubber, Status, worst
from checks.logfile import (
    EVIDENCE_CHARS,
    READ_SHARE,
    Held,
    Regex,
    Searcher,
    absolute_path,
    outranked,
)
from checks.logread import CHUNK, Limits, Line, follow, format_size, hold_warning
from checks.types import OptionalDuration, expected_error

logger = logging.getLogger(__name__)

RULES_FILE = "syslog_rules.yaml"
#: Only these journal fields are asked for: the output stays small.
JOURNAL_FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_PID,_COMM,_TRANSPORT"
#: A journal JSON line longer than this is skipped (journalctl already turns fields
#: over 4096 bytes into null without --all).
JOURNAL_LINE_CAP = 1 << 20
_SEVERITY = {"warning": Status.WARNING, "critical": Status.CRITICAL}
_CLASS_NAME = r"^[a-z0-9][a-z0-9._-]*$"


# -- the rule table ------------------------------------------------------------------------


class RulePattern(BaseModel):
    """A regex; ``severity`` overrides the class's for the lines it matches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: Regex
    severity: Literal["warning", "critical"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {"regex": value} if isinstance(value, str) else value


class SyslogRule(BaseModel):
    """One class of trouble: its name (the target), severity, hint and patterns."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(alias="class", pattern=_CLASS_NAME)
    severity: Literal["warning", "critical"] = "critical"
    hint: str = ""
    patterns: tuple[RulePattern, ...] = Field(min_length=1)
    source: str = ""

    def status_of(self, pattern: RulePattern) -> Status:
        return _SEVERITY[pattern.severity or self.severity]


@functools.cache
def builtin_rules() -> tuple[SyslogRule, ...]:
    """The shipped rule table (``checks/syslog_rules.yaml``)."""
    text = importlib.resources.files("checks").joinpath(RULES_FILE).read_text("utf-8")
    return tuple(SyslogRule.model_validate(rule) for rule in yaml.safe_load(text)["rules"])


def _known_class(name: str) -> str:
    known = [rule.name for rule in builtin_rules()]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else f" (built-in: {', '.join(known)})"
        raise PydanticCustomError("kanshi", "unknown rule class {got}{hint}",
                                  {"got": f"'{name}'", "hint": hint})
    return name


class SyslogConfig(CheckConfig):
    """Options of a ``type: syslog`` check (documented in config/example.yaml)."""

    source: Literal["auto", "journal", "file"] = "auto"
    journal_directory: Annotated[str, AfterValidator(absolute_path)] | None = None
    files: tuple[Annotated[str, AfterValidator(absolute_path)], ...] = (
        "/var/log/syslog", "/var/log/messages")
    rules: tuple[SyslogRule, ...] = ()
    disable: tuple[Annotated[str, AfterValidator(_known_class)], ...] = ()
    ignore: tuple[Regex, ...] = ()
    hold: OptionalDuration = 3600.0
    lookback: OptionalDuration = 3600.0
    max_evidence: int = Field(5, ge=1, le=100)
    max_bytes_per_run: int = Field(64 * 2**20, ge=1)
    max_line_bytes: int = Field(16 * 1024, ge=256, le=16 * 2**20)

    @field_validator("files", "disable", "ignore", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[SyslogRule, ...]) -> tuple[SyslogRule, ...]:
        names = [rule.name for rule in rules]
        for name in names:
            if names.count(name) > 1:
                raise expected_error("each rule class once", f"'{name}' twice")
        return rules

    @model_validator(mode="after")
    def _room_for_a_line(self) -> SyslogConfig:
        if self.max_bytes_per_run < max(self.max_line_bytes, JOURNAL_LINE_CAP) + CHUNK:
            raise PydanticCustomError(
                "kanshi", "expected max_bytes_per_run of at least {n} (the longest journal "
                "line or max_line_bytes, plus 64 KiB), got {b}",
                {"n": max(self.max_line_bytes, JOURNAL_LINE_CAP) + CHUNK,
                 "b": self.max_bytes_per_run})
        return self

    def rules_in_force(self) -> tuple[SyslogRule, ...]:
        """Built-ins not disabled (a user rule of the same class replaces one), then the
        user's new classes."""
        own = {rule.name: rule for rule in self.rules}
        kept = [own.pop(r.name, r) for r in builtin_rules() if r.name not in self.disable]
        return (*kept, *own.values())


# -- classifying lines ---------------------------------------------------------------------


@dataclass
class Found:
    """One class's lines in this run."""

    status: Status = Status.OK
    count: int = 0
    evidence: list[str] = field(default_factory=list)


class Classifier:
    """Sorts lines into rule classes; a line may belong to several classes."""

    def __init__(self, rules: tuple[SyslogRule, ...], ignore: tuple[str, ...],
                 limit: int, scrub: Scrubber | None = None) -> None:
        self._rules = [(r.name, [(Searcher.of(p.regex), r.status_of(p)) for p in r.patterns])
                       for r in rules]
        self._ignore = [Searcher.of(x) for x in ignore]
        self._limit = limit
        # Masks the config's secrets in evidence (a program may log a password).
        self._scrub: Scrubber = scrub or _as_is
        searchers = [s for _, patterns in self._rules for s, _ in patterns]
        # Nearly every line matches nothing: one sweep of substring tests says so.
        self._literals = tuple({s.literal for s in searchers if s.literal and not s.folded})
        self._folded = tuple({s.literal for s in searchers if s.literal and s.folded})
        self._always = any(not s.literal for s in searchers)
        self.lines = 0
        self.found: dict[str, Found] = {}

    def see(self, text: str, shown: str) -> None:
        """Classify ``text``; ``shown`` is how it appears as evidence."""
        self.lines += 1
        if not self._may_match(text):
            return
        hits = [(name, status) for name, patterns in self._rules
                if (status := next((s for x, s in patterns if x.search(text)), None))]
        if not hits or any(x.search(text) for x in self._ignore):
            return
        for name, status in hits:
            self._record(name, status, shown)

    def _may_match(self, text: str) -> bool:
        if self._always or any(literal in text for literal in self._literals):
            return True
        return bool(self._folded) and any(f in text.lower() for f in self._folded)

    def _record(self, name: str, status: Status, shown: str) -> None:
        found = self.found.setdefault(name, Found())
        found.status = worst([found.status, status])
        found.count += 1
        if len(found.evidence) < self._limit:
            shown = self._scrub(shown)  # before the cut, which could halve a secret
            found.evidence.append(shown if len(shown) <= EVIDENCE_CHARS
                                  else shown[:EVIDENCE_CHARS] + "…")


def _as_is(text: str) -> str:
    return text


def journal_files_exist(directory: str | None) -> bool:
    """Whether journalctl would find journal files (it stays silent in JSON mode)."""
    roots = [directory] if directory else ["/var/log/journal", "/run/log/journal"]
    patterns = ("*.journal", "*.journal~", "*/*.journal", "*/*.journal~")
    return any(glob.glob(os.path.join(glob.escape(root), pattern))
               for root in roots for pattern in patterns)


# -- reading the journal -------------------------------------------------------------------


class Unavailable(Exception):
    """This source cannot be read here (the reason is the message)."""


@dataclass
class Scan:
    """What one run read: a description for messages, and trouble worth a result."""

    what: str = ""
    notes: list[str] = field(default_factory=list)
    problem: str = ""


def entry_line(entry: dict[str, Any]) -> tuple[str, str] | None:
    """``(text, shown)`` of a journal entry: text as a syslog line reads after the host
    (``IDENT[PID]: MESSAGE``), shown = local time + text. None without a message."""
    message = _field(entry.get("MESSAGE"))
    if message is None:
        return None
    transport = _field(entry.get("_TRANSPORT"))
    ident = _field(entry.get("SYSLOG_IDENTIFIER")) or _field(entry.get("_COMM")) \
        or ("kernel" if transport == "kernel" else "")
    pid = _field(entry.get("_PID"))
    text = f"{ident}[{pid}]: {message}" if ident and pid and transport != "kernel" \
        else f"{ident}: {message}" if ident else message
    return text, f"{_local_time(entry.get('__REALTIME_TIMESTAMP'))} {text}".lstrip()


def _field(value: Any) -> str | None:
    """A journal JSON field: a string, bytes as a list of numbers (not UTF-8), or a list
    of values when the field repeats; None when absent or too large (null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
    if isinstance(value, list) and value:
        parts = [_field(v) for v in value]
        return " ".join(p for p in parts if p is not None) or None
    return None


def _local_time(micros: Any) -> str:
    try:
        moment = datetime.fromtimestamp(int(micros) / 1e6).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


@dataclass
class JournalRun:
    """How one ``journalctl`` invocation ended."""

    entries: int = 0
    returncode: int | None = None
    stderr: str = ""
    stopped: bool = False    # the run's byte or time budget ran out first
    killed: bool = False     # journalctl itself overran the time left


def run_journalctl(command: list[str], on_entry: Callable[[dict[str, Any]], None],
                   limits: Limits) -> JournalRun:
    """Stream ``command``'s JSON lines into ``on_entry`` within ``limits``."""
    result = JournalRun()
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=errors)
        except FileNotFoundError:
            raise Unavailable("journalctl is not installed") from None
        kill = threading.Timer(max(0.0, limits.deadline - limits.monotonic()) + 1.0,
                               _killer(proc, result))
        kill.start()
        try:
            assert proc.stdout is not None
            result.stopped = _stream(proc.stdout, on_entry, limits, result)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()  # type: ignore[union-attr]
            result.returncode = proc.wait()
            kill.cancel()
        errors.seek(0)
        result.stderr = errors.read(8192).decode("utf-8", "replace").strip()
    return result


def _killer(proc: subprocess.Popen[bytes], result: JournalRun) -> Callable[[], None]:
    def kill() -> None:
        result.killed = True
        proc.kill()
    return kill


def _stream(stdout: IO[bytes], on_entry: Callable[[dict[str, Any]], None], limits: Limits,
            result: JournalRun) -> bool:
    """Feed entries until EOF (False) or until the budget runs out (True)."""
    while limits.left() > 0:
        raw = stdout.readline(JOURNAL_LINE_CAP)
        if not raw:
            return False
        limits.used += len(raw)
        if not raw.endswith(b"\n") and len(raw) == JOURNAL_LINE_CAP:
            limits.used += _skip_line(stdout)
            logger.warning("skipped a journal entry longer than %d bytes", JOURNAL_LINE_CAP)
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # cut short by a kill: the cursor stays before it
        if isinstance(entry, dict):
            result.entries += 1
            on_entry(entry)
    return True


def _skip_line(stdout: IO[bytes]) -> int:
    skipped = 0
    while chunk := stdout.readline(CHUNK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


# -- the check -----------------------------------------------------------------------------


class SyslogCheck(Check):
    """System log lines classified into classes of hardware and software trouble."""

    type_name: ClassVar[str] = "syslog"
    Config: ClassVar[type[SyslogConfig]] = SyslogConfig
    default_interval: ClassVar[float] = 3600.0  # SPEC §1: system log collection every 60 min

    @classmethod
    def schedule_warning(cls, config: CheckConfig, confirm_seconds: float) -> str | None:
        return hold_warning(getattr(config, "hold", None), confirm_seconds)
    default_timeout: ClassVar[float] = 120.0

    @property
    def cfg(self) -> SyslogConfig:
        return self.config  # type: ignore[return-value]

    def run(self) -> list[Result]:
        rules = self.cfg.rules_in_force()
        classifier = Classifier(rules, self.cfg.ignore, self.cfg.max_evidence,
                                self.context.scrub)
        clock = self.context.clock
        limits = Limits(self.cfg.max_bytes_per_run, self.cfg.max_line_bytes,
                        clock.monotonic() + READ_SHARE * self.timeout, clock.monotonic)
        try:
            scan = self._scan(classifier, limits)
        except Unavailable as exc:
            return [Result(Status.UNKNOWN,
                           self.context.scrub(f"cannot scan the system log: {exc}"))]
        now = clock.now()
        held = self._remember(rules, classifier, now)
        results = [self._judge(r, classifier, held.get(r.name), scan, now) for r in rules]
        if scan.problem:
            results.append(Result(Status.UNKNOWN, scan.problem))
        # Again on the whole: notes quote journalctl, and evidence may be held in a
        # state saved by an older version.
        return [Result(r.status, self.context.scrub(r.message), r.target, r.metrics)
                for r in results]

    # -- sources

    def _scan(self, classifier: Classifier, limits: Limits) -> Scan:
        source = self.cfg.source
        if source == "file":
            return self._scan_file(classifier, limits)
        try:
            return self._scan_journal(classifier, limits)
        except Unavailable as exc:
            if source == "journal":
                raise
            try:
                scan = self._scan_file(classifier, limits)
            except Unavailable as file_exc:
                raise Unavailable(f"{exc}; {file_exc}") from None
            scan.notes.insert(0, f"journal not used: {exc}")
            return scan

    def _scan_journal(self, classifier: Classifier, limits: Limits) -> Scan:
        if shutil.which("journalctl") is None:
            raise Unavailable("journalctl is not installed")
        if not journal_files_exist(self.cfg.journal_directory):
            where = self.cfg.journal_directory or "/var/log/journal or /run/log/journal"
            raise Unavailable(f"no journal files in {where} (journald not running, or "
                              "Storage=none)")
        key = f"journal:{self.cfg.journal_directory or 'system'}"
        saved = self._sources().setdefault(key, {})
        started = self.context.clock.now().timestamp()
        scan, run = Scan(), self._journal_once(saved, classifier, limits)
        if run.returncode and "cursor" in run.stderr and saved.pop("cursor", None):
            scan.notes.append(f"the saved journal position was refused ({run.stderr}); "
                              "scanned from the time of the last run instead")
            run = self._journal_once(saved, classifier, limits)
        saved["since"] = started
        self._journal_verdict(run, scan)
        scan.what = f"{classifier.lines} new journal entr{'y' if classifier.lines == 1 else 'ies'}"
        return scan

    def _journal_once(self, saved: MutableMapping[str, Any], classifier: Classifier,
                      limits: Limits) -> JournalRun:
        def on_entry(entry: dict[str, Any]) -> None:
            line = entry_line(entry)
            if line is not None:
                classifier.see(*line)
            if isinstance(entry.get("__CURSOR"), str):
                saved["cursor"] = entry["__CURSOR"]
        return run_journalctl(self._journal_command(saved), on_entry, limits)

    def _journal_command(self, saved: MutableMapping[str, Any]) -> list[str]:
        command = ["journalctl", "--no-pager", "--output=json",
                   f"--output-fields={JOURNAL_FIELDS}"]
        if self.cfg.journal_directory:
            command.append(f"--directory={self.cfg.journal_directory}")
        cursor, since = saved.get("cursor"), saved.get("since")
        if isinstance(cursor, str) and cursor:
            return [*command, f"--after-cursor={cursor}"]
        if not isinstance(since, int | float):
            since = self.context.clock.now().timestamp() - (self.cfg.lookback or 0.0)
        return [*command, f"--since=@{int(since)}"]

    def _journal_verdict(self, run: JournalRun, scan: Scan) -> None:
        """Turn how journalctl ended into notes, a problem, or Unavailable."""
        advice = "run kanshi as root or add its user to the group systemd-journal (or adm)"
        if "insufficient permissions" in run.stderr and not run.entries:
            raise Unavailable(f"journalctl may not read the journal files ({run.stderr}): "
                              f"{advice}")
        if "not seeing messages from other users and the system" in run.stderr:
            scan.problem = ("journalctl shows only this user's own messages, not the kernel's "
                            f"or the system's: {advice}")
        if run.killed:
            scan.notes.append(f"journalctl did not finish within the check's timeout "
                              f"({self.timeout:g} s): the next run continues")
        elif run.stopped:
            scan.notes.append(f"scan incomplete (max_bytes_per_run "
                              f"{format_size(self.cfg.max_bytes_per_run)} or the timeout): "
                              "the next run continues where this one stopped")
        elif run.returncode and not run.entries:
            raise Unavailable(f"journalctl failed (exit {run.returncode}): "
                              f"{run.stderr or 'no error text'}")
        elif run.returncode:
            scan.notes.append(f"journalctl exited with {run.returncode} after "
                              f"{run.entries} entries: {run.stderr or 'no error text'}")

    def _scan_file(self, classifier: Classifier, limits: Limits) -> Scan:
        path = next((p for p in self.cfg.files if os.path.isfile(p)), None)
        if path is None:
            raise Unavailable(f"none of {', '.join(self.cfg.files)} exists")
        key = f"file:{path}"
        sources = self._sources()

        def on_line(line: Line) -> None:
            classifier.see(line.text, line.text)

        sources[key], progress = follow(path, sources.get(key), on_line, limits)
        scan = Scan(what=f"{progress.new_lines} new line{'s' * (progress.new_lines != 1)} "
                         f"of {path}", notes=list(progress.notes))
        if progress.errors:
            scan.problem = f"{'; '.join(progress.errors)}: run kanshi as root or in group adm"
        if progress.unread_bytes:
            scan.notes.append(f"{format_size(progress.unread_bytes)} not read yet: the next "
                              "run continues")
        return scan

    def _sources(self) -> dict[str, Any]:
        sources = self.context.state.get("sources")
        if not isinstance(sources, dict):
            sources = self.context.state["sources"] = {}
        return sources

    # -- judging

    def _remember(self, rules: tuple[SyslogRule, ...], classifier: Classifier,
                  now: datetime) -> dict[str, Held]:
        """Keep this run's finds for ``hold``; return per class an earlier record still
        held that this run does not replace (nothing new, or only less severe lines)."""
        before = self.context.state.get("classes")
        before = before if isinstance(before, dict) else {}
        kept: dict[str, Held] = {}
        shown: dict[str, Held] = {}
        for rule in rules:
            held = Held.from_json(before.get(rule.name))
            held = held if held is not None and now < held.until_time else None
            found = classifier.found.get(rule.name)
            if found is not None and self.cfg.hold:
                fresh = Held(int(found.status), (now + timedelta(seconds=self.cfg.hold))
                             .isoformat(), now.isoformat(), _lines(found.count),
                             list(found.evidence))
                held = outranked(held, fresh)
                kept[rule.name] = held or fresh
            elif held is not None:
                kept[rule.name] = held
            if held is not None:
                shown[rule.name] = held
        self.context.state["classes"] = {name: h.to_json() for name, h in kept.items()}
        return shown

    def _judge(self, rule: SyslogRule, classifier: Classifier, held: Held | None,
               scan: Scan, now: datetime) -> Result:
        found = classifier.found.get(rule.name)
        metrics = {"matches": float(found.count if found else 0),
                   "new_lines": float(classifier.lines)}
        hint = f"\n  what to do: {rule.hint}" if rule.hint else ""
        notes = "".join(f"\n  note: {n}" for n in scan.notes)
        if found is None and held is None:
            return Result(Status.OK, f"{rule.name}: nothing found in {scan.what}{notes}",
                          rule.name, metrics)
        text, status = f"{rule.name}: nothing new in {scan.what}", Status.OK
        if found is not None:
            text = f"{rule.name}: {_lines(found.count)} in {scan.what}"
            text += _evidence(found.evidence, found.count)
            status = found.status
        if held is not None:
            text += ("; " if found is None else "\n  ") + _still(held, now)
            text += _evidence(held.evidence, len(held.evidence))
            status = worst([status, Status(held.status)])
        return Result(status, text + hint + notes, rule.name, metrics)


def _still(held: Held, now: datetime) -> str:
    left = max(1, round((held.until_time - now).total_seconds() / 60))
    return (f"still {Status(held.status).name} for {left} min (hold) from {held.summary} "
            f"seen at {held.at_text}")


def _lines(count: int) -> str:
    return f"{count} line{'s' * (count != 1)}"


def _evidence(lines: list[str], total: int) -> str:
    text = "".join(f"\n  {line}" for line in lines)
    more = total - len(lines)
    return text + (f"\n  … and {more} more" if more > 0 else "")
