"""The ``logfile`` check: regex patterns over what was appended to log files (SPEC §2
"log monitoring", as Mackerel's check-log and Zabbix's ``log[]`` items do).

One result per configured path (a glob counts as one: files matching it come and
go with dates in their names, the target must not). Each run reads only what was
appended since the last one (:mod:`checks.logread`: offset, inode and first bytes
kept in the check's state; rotation, copytruncate and truncation followed); the
first run starts at the end of existing files, like ``tail -F``, unless
``from_start``. Files appearing later are read from their beginning.

The status is the worst severity matched. A match keeps its status for ``hold``
(10 min) after the run that saw it, repeating its evidence: the agent confirms a
problem by re-running the check (``max_attempts`` × ``retry_interval``), and a
log line is seen only once — without the hold a match could never be confirmed
and the notice would carry no evidence. ``hold: null`` reports each run alone.
"""

from __future__ import annotations

import codecs
import glob
import importlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

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
from checks.logread import CHUNK, Limits, Line, Progress, follow, format_size, hold_warning
from checks.types import OptionalDuration, expected_error

logger = logging.getLogger(__name__)

#: Evidence lines are cut to this many characters in messages.
EVIDENCE_CHARS = 300
#: Share of the check's timeout spent reading; the rest is for judging and storing.
READ_SHARE = 0.8
_SEVERITY = {"warning": Status.WARNING, "critical": Status.CRITICAL}


def compiled(pattern: str) -> str:
    """A regex that compiles (Python ``re`` syntax), else a config error saying why."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            "kanshi", "expected a regular expression (Python re syntax), got {got}: {why}",
            {"got": f'"{pattern}"', "why": str(exc)}) from None
    return pattern


Regex = Annotated[str, AfterValidator(compiled)]


@dataclass(frozen=True)
class Searcher:
    """A compiled regex behind a substring test: ``in`` is some 20 times cheaper than
    ``re.search`` on a line that cannot match, which is nearly every line."""

    regex: re.Pattern[str]
    literal: str = ""
    folded: bool = False  # the regex ignores case: compare with the line lowercased

    @classmethod
    def of(cls, pattern: str) -> Searcher:
        literal, folded = required_literal(pattern)
        return cls(re.compile(pattern), literal, folded)

    def search(self, text: str) -> bool:
        if self.literal and self.literal not in (text.lower() if self.folded else text):
            return False
        return self.regex.search(text) is not None


def required_literal(pattern: str) -> tuple[str, bool]:
    """The longest run of plain characters every match must contain, and whether it is
    to be compared case-insensitively; ``("", False)`` when there is none to rely on."""
    try:  # the parser is private to re: if it ever changes, just search every line
        parsed = importlib.import_module("re._parser").parse(pattern)
        codes = importlib.import_module("re._constants")
        folded = bool(parsed.state.flags & re.IGNORECASE)
        best = max(_literal_runs(list(parsed), codes), key=len, default="")
    except Exception:
        return "", False
    if len(best) < 3:
        return "", False
    return (best.lower(), True) if folded else (best, False)


def _literal_runs(items: list[Any], codes: Any) -> Iterator[str]:
    """Runs of consecutive literals at the top level and in plain groups."""
    run = ""
    for op, arg in items:
        if op == codes.LITERAL:
            run += chr(arg)
            continue
        yield run
        run = ""
        if op == codes.SUBPATTERN and not arg[1] and not arg[2]:  # no scoped flags
            yield from _literal_runs(list(arg[3]), codes)
    yield run


def ascii_compatible(name: str) -> str:
    """An encoding in which a newline is the byte 0x0A (utf-8, cp932, euc_jp, latin-1…)."""
    try:
        codecs.lookup(name)
        ok = "a\n".encode(name) == b"a\n"
    except (LookupError, UnicodeError):
        ok = False
    if not ok:
        raise expected_error("an ASCII-compatible encoding such as utf-8, cp932 or euc_jp "
                             "(UTF-16/32 logs are not supported)", name)
    return name


def absolute_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise expected_error("an absolute path or glob such as /var/log/app/*.log", path)
    return path


class LogPattern(BaseModel):
    """One pattern: a regex, the status a match raises, a name for messages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: Regex
    severity: Literal["warning", "critical"] = "critical"
    name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {"regex": value} if isinstance(value, str) else value

    @property
    def label(self) -> str:
        return self.name or f'"{self.regex}"'

    @property
    def status(self) -> Status:
        return _SEVERITY[self.severity]


class LogfileConfig(CheckConfig):
    """Options of a ``type: logfile`` check (documented in config/example.yaml)."""

    paths: tuple[Annotated[str, AfterValidator(absolute_path)], ...] = Field(min_length=1)
    patterns: tuple[LogPattern, ...] = Field(min_length=1)
    exclude: tuple[Regex, ...] = ()
    from_start: bool = False
    required: bool = False
    max_matches: int = Field(10, ge=1, le=1000)
    max_line_bytes: int = Field(64 * 1024, ge=256, le=16 * 2**20)
    max_bytes_per_run: int = Field(16 * 2**20, ge=1)
    hold: OptionalDuration = 600.0
    encoding: Annotated[str, AfterValidator(ascii_compatible)] = "utf-8"

    @field_validator("paths", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _room_for_a_line(self) -> LogfileConfig:
        if self.max_bytes_per_run < self.max_line_bytes + CHUNK:
            raise PydanticCustomError(
                "kanshi", "expected max_bytes_per_run ({b}) of at least max_line_bytes + "
                "64 KiB ({n}), so every run gets past the longest line",
                {"b": self.max_bytes_per_run, "n": self.max_line_bytes + CHUNK})
        return self


@dataclass
class Matches:
    """What one run found in one path's new lines."""

    patterns: tuple[LogPattern, ...]
    exclude: tuple[re.Pattern[str], ...]
    limit: int
    show_file: bool
    #: Masks the config's secrets in evidence (an application may log a password).
    scrub: Scrubber
    counts: Counter[LogPattern] = field(default_factory=Counter)
    evidence: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A line counts once, under its worst pattern: criticals are tried first.
        order = sorted(self.patterns, key=lambda p: -p.status)
        self._compiled = [(p, Searcher.of(p.regex)) for p in order]

    def see(self, line: Line) -> None:
        if any(x.search(line.text) for x in self.exclude):
            return
        for pattern, searcher in self._compiled:
            if searcher.search(line.text):
                self.counts[pattern] += 1
                if len(self.evidence) < self.limit:
                    self.evidence.append(self._evidence(line))
                return

    def _evidence(self, line: Line) -> str:
        # Scrubbed before the cut, which could leave half a secret unmasked.
        text = self.scrub(line.text)
        text = text if len(text) <= EVIDENCE_CHARS else text[:EVIDENCE_CHARS] + "…"
        text += " [line cut at max_line_bytes]" if line.truncated else ""
        return f"{os.path.basename(line.path)}: {text}" if self.show_file else text

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> Status:
        return worst([p.status for p in self.counts])

    def summary(self) -> str:
        parts = []
        for status in (Status.CRITICAL, Status.WARNING):
            names = [f"{n} × {p.label}" for p, n in self.counts.items() if p.status is status]
            parts += [f"{status.name}: {', '.join(names)}"] if names else []
        return "; ".join(parts)


class LogfileCheck(Check):
    """Patterns over what was appended to log files since the last run."""

    type_name: ClassVar[str] = "logfile"
    Config: ClassVar[type[LogfileConfig]] = LogfileConfig
    #: Not in SPEC; Mackerel runs check plugins (check-log) every minute.
    default_interval: ClassVar[float] = 60.0

    @classmethod
    def schedule_warning(cls, config: CheckConfig, confirm_seconds: float) -> str | None:
        return hold_warning(getattr(config, "hold", None), confirm_seconds)

    def run(self) -> list[Result]:
        config: LogfileConfig = self.config  # type: ignore[assignment]
        clock = self.context.clock
        limits = Limits(config.max_bytes_per_run, config.max_line_bytes,
                        clock.monotonic() + READ_SHARE * self.timeout, clock.monotonic,
                        config.encoding)
        saved: dict[str, Any] = dict(self.context.state.get("paths") or {})
        results = [self._watch(path, saved, limits, clock.now()) for path in config.paths]
        # Paths no longer configured are forgotten: re-adding one starts afresh.
        self.context.state["paths"] = {p: saved[p] for p in config.paths if p in saved}
        return results

    def _watch(self, path: str, saved: dict[str, Any], limits: Limits,
               now: datetime) -> Result:
        config: LogfileConfig = self.config  # type: ignore[assignment]
        entry = dict(saved.get(path) or {})
        matches = Matches(config.patterns, tuple(re.compile(x) for x in config.exclude),
                          config.max_matches, glob.has_magic(path), self.context.scrub)
        entry["reading"], progress = follow(path, entry.get("reading"), matches.see, limits,
                                            from_start=config.from_start)
        held = self._hold(entry, matches, now)
        saved[path] = entry
        metrics = {"new_lines": float(progress.new_lines), "new_bytes": float(progress.new_bytes),
                   "matches": float(matches.total),
                   "unread_bytes": float(progress.unread_bytes)}
        if not progress.files:
            return Result(*self._missing(path), path, metrics)
        status, text = _judge(path, matches, progress, held, now)
        shown = status is Status.UNKNOWN  # the errors are the message already
        text += _footnotes(progress, config, errors=not shown)
        # Again on the whole: evidence held in a state saved by an older version.
        return Result(status, self.context.scrub(text), path, metrics)

    def _hold(self, entry: dict[str, Any], matches: Matches, now: datetime) -> Held | None:
        """Keep this run's matches for ``hold``; return an earlier, still held record that
        this run does not replace (none matched, or only less severe ones)."""
        before = Held.from_json(entry.get("held"))
        before = before if before is not None and now < before.until_time else None
        hold = self.config.hold  # type: ignore[attr-defined]
        if matches.total and hold:
            fresh = Held(int(matches.status), (now + timedelta(seconds=hold)).isoformat(),
                         now.isoformat(), matches.summary(), list(matches.evidence))
            before = outranked(before, fresh)
            entry["held"] = (before or fresh).to_json()
        elif before is None:
            entry.pop("held", None)
        return before

    def _missing(self, path: str) -> tuple[Status, str]:
        what = f"no file matches {path}" if glob.has_magic(path) else f"{path} does not exist"
        if self.config.required:  # type: ignore[attr-defined]
            return Status.CRITICAL, (f"{what} (required: true): the application may have "
                                     "stopped logging, or the path is wrong")
        return Status.UNKNOWN, (f"{what}: nothing to scan (set required: true to make "
                                "a missing log CRITICAL)")


def outranked(before: Held | None, fresh: Held) -> Held | None:
    """``before`` if it is worse than ``fresh`` (a WARNING line must not hide a CRITICAL
    one still held), else None."""
    if before is not None and worst([Status(before.status), Status(fresh.status)]) \
            is not Status(fresh.status):
        return before
    return None


@dataclass(frozen=True)
class Held:
    """Matches of an earlier run, still reported until ``until``."""

    status: int
    until: str
    at: str
    summary: str
    evidence: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "until": self.until, "at": self.at,
                "summary": self.summary, "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: Any) -> Held | None:
        try:
            held = cls(**data)
            held.until_time  # noqa: B018 — validates the timestamp
        except (TypeError, ValueError):
            return None
        return held

    @property
    def until_time(self) -> datetime:
        return datetime.fromisoformat(self.until)

    @property
    def at_text(self) -> str:
        try:
            return datetime.fromisoformat(self.at).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        except ValueError:
            return self.at


def _judge(path: str, matches: Matches, progress: Progress, held: Held | None,
           now: datetime) -> tuple[Status, str]:
    read = f"{progress.new_lines} new line{'s' * (progress.new_lines != 1)}"
    if matches.total:
        head = (f"{path}: {matches.total} match{'es' * (matches.total != 1)} in {read} "
                f"({matches.summary()})")
        text = head + _evidence(matches.evidence, matches.total)
        if held is None:
            return matches.status, text
        return Status(held.status), text + "\n  " + _still(held, now) + _evidence(
            held.evidence, len(held.evidence))
    if held is not None:
        head = f"{path}: no new matches in {read}; {_still(held, now)}"
        return Status(held.status), head + _evidence(held.evidence, len(held.evidence))
    if progress.errors and not progress.new_lines:
        return Status.UNKNOWN, (f"{path}: {'; '.join(progress.errors)} — give the user "
                                "kanshi runs as read access (e.g. the group adm)")
    return Status.OK, f"{path}: no new matches in {read}"


def _still(held: Held, now: datetime) -> str:
    return (f"still {Status(held.status).name} for {_minutes(held.until_time - now)} (hold) "
            f"from the run at {held.at_text}: {held.summary}")


def _evidence(lines: list[str], total: int) -> str:
    text = "".join(f"\n  {line}" for line in lines)
    more = total - len(lines)
    return text + (f"\n  … and {more} more" if more > 0 else "")


def _footnotes(progress: Progress, config: LogfileConfig, *, errors: bool) -> str:
    notes = [*(progress.errors if errors else ()), *progress.notes]
    if progress.unread_bytes:
        notes.append(f"{format_size(progress.unread_bytes)} not read yet (limit "
                     f"max_bytes_per_run {format_size(config.max_bytes_per_run)} or the "
                     "check's timeout): the next run continues there")
    return "".join(f"\n  note: {n}" for n in notes)


def _minutes(delta: timedelta) -> str:
    minutes = max(1, round(delta.total_seconds() / 60))
    return f"{minutes} min"
