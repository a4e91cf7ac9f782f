"""The ``filecount`` check: how many files a directory holds (SPEC §1 Gold: ≥ 90 %).

Counts what ``find DIR -type f`` counts: regular files only, symbolic links and
directories not counted, symbolic links to directories not followed, hidden
files included. ``recursive: false`` is ``find DIR -maxdepth 1 -type f`` and
``pattern`` is ``-name PATTERN`` (a shell glob on the file name, case-sensitive).
The configured directory itself may be a symbolic link; it is followed, as
``find DIR/`` does.

The walk (``os.scandir``, no recursion on the Python stack) stops at
``time_limit`` or the check's timeout, whichever comes first. A count that is
only a lower bound — the walk stopped early, or some subdirectory could not be
read — still proves a threshold reached; when it reaches none the result is
UNKNOWN, since the true count may be higher.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Status, worst
from checks.types import Duration, PercentThresholds, Thresholds

logger = logging.getLogger(__name__)

#: How many entries to read between two looks at the clock: cheap, yet a stop
#: comes within milliseconds of the deadline.
_CLOCK_EVERY = 256
#: How many unreadable directories a message names.
_NAMED = 3


class FileCountConfig(CheckConfig):
    """Options of a ``type: filecount`` check (documented in config/example.yaml)."""

    path: Path
    recursive: bool = True
    pattern: str | None = Field(None, min_length=1)
    time_limit: Duration = 20.0
    #: Thresholds on the number of files.
    threshold: Thresholds = Thresholds()
    #: The most files the directory should hold; enables ``percent``.
    capacity: int | None = Field(None, gt=0)
    #: Thresholds in percent of ``capacity`` (SPEC §1 Gold: ≥ 90 % → contact customer).
    percent: PercentThresholds = PercentThresholds(warning=80.0, critical=90.0)

    @model_validator(mode="after")
    def _something_to_judge(self) -> FileCountConfig:
        if self.capacity is None and self.threshold == Thresholds():
            raise PydanticCustomError(
                "kanshi", "expected {expected}",
                {"expected": "threshold (file counts) or capacity (for percent thresholds)"})
        return self


@dataclass
class Walk:
    """What a walk found: ``exact`` is False when the count is only a lower bound."""

    files: int = 0
    directories: int = 0
    unreadable: list[str] = field(default_factory=list)
    finished: bool = True
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return self.finished and not self.unreadable


class FileCountCheck(Check):
    """Counts the files under one directory and judges the count."""

    type_name: ClassVar[str] = "filecount"
    config: FileCountConfig
    Config: ClassVar[type[FileCountConfig]] = FileCountConfig
    default_interval: ClassVar[float] = 600.0

    def run(self) -> Result:
        config = self.config
        target = str(config.path)
        try:
            if not config.path.is_dir():
                return Result(Status.UNKNOWN, _not_a_directory(config.path), target)
        except OSError as exc:  # e.g. a parent directory kanshi's user may not enter
            return Result(Status.UNKNOWN, _unreachable(config.path, exc), target)
        limit = min(config.time_limit, self.timeout)
        try:
            walk = count_files(config.path, recursive=config.recursive,
                               pattern=config.pattern, limit=limit,
                               clock=self.context.clock.monotonic)
        except OSError as exc:
            return Result(Status.UNKNOWN, f"cannot read {target}: {exc.strerror or exc}",
                          target)
        return judge(walk, config, limit)


def count_files(root: Path, *, recursive: bool, pattern: str | None, limit: float,
                clock: Callable[[], float] = time.monotonic) -> Walk:
    """Count regular files under ``root`` for at most ``limit`` seconds.

    Raises ``OSError`` only when ``root`` itself cannot be read.
    """
    started = clock()
    deadline, walk, pending = started + limit, Walk(), [str(root)]
    while pending and walk.finished:
        directory = pending.pop()
        try:
            _scan(directory, walk, pending if recursive else None, pattern, deadline, clock)
        except FileNotFoundError:
            if directory == str(root):
                raise
            # Removed while we walked: not an error, just gone (find says the same).
        except OSError:
            if directory == str(root):
                raise
            walk.unreadable.append(directory)
    walk.seconds = clock() - started
    return walk


def _scan(directory: str, walk: Walk, pending: list[str] | None, pattern: str | None,
          deadline: float, clock: Callable[[], float]) -> None:
    walk.directories += 1
    with os.scandir(directory) as entries:
        for n, entry in enumerate(entries):
            if n % _CLOCK_EVERY == 0 and clock() >= deadline:
                walk.finished = False
                return
            _count(entry, walk, pending, pattern)


def _count(entry: os.DirEntry[str], walk: Walk, pending: list[str] | None,
           pattern: str | None) -> None:
    try:
        if entry.is_dir(follow_symlinks=False):
            if pending is not None:
                pending.append(entry.path)
        elif entry.is_file(follow_symlinks=False) and (
                pattern is None or fnmatch.fnmatchcase(entry.name, pattern)):
            walk.files += 1
    except OSError:
        # The entry vanished between readdir and stat (d_type unknown): skip it.
        logger.debug("could not stat %s", entry.path)


def judge(walk: Walk, config: FileCountConfig, limit: float) -> Result:
    """The result for one finished (or stopped) walk."""
    target = str(config.path)
    statuses = [config.threshold.judge(walk.files)]
    breaches = [_breach(statuses[0], config.threshold, "files", "{:g}")]
    metrics = {"files": float(walk.files), "walk_seconds": walk.seconds}
    if config.capacity is not None:
        used = 100.0 * walk.files / config.capacity
        statuses.append(config.percent.judge(used))
        breaches.append(_breach(statuses[1], config.percent, "of capacity", "{:g}%"))
        metrics["used_percent"] = used
    status = worst(statuses)
    text = f"{target}: {_counted(walk, config)}{''.join(breaches)}"
    if walk.exact:
        return Result(status, text, target, metrics)
    text += f"; {_why_inexact(walk, limit)}"
    if status is Status.OK:
        # A lower bound below every threshold proves nothing about the real count.
        return Result(Status.UNKNOWN, text, target, metrics)
    return Result(status, text, target, metrics)


def _counted(walk: Walk, config: FileCountConfig) -> str:
    what = "files" if config.pattern is None else f'files named "{config.pattern}"'
    where = "" if config.recursive else " (top level only)"
    amount = f"{walk.files}" if walk.exact else f"at least {walk.files}"
    text = f"{amount} {what}{where}"
    if config.capacity is not None:
        text += f", {100.0 * walk.files / config.capacity:.1f}% of capacity {config.capacity}"
    return text


def _why_inexact(walk: Walk, limit: float) -> str:
    parts = []
    if not walk.finished:
        parts.append(f"walk did not finish in {limit:g} s after {walk.files} files in "
                     f"{walk.directories} directories (raise time_limit and the timeout, "
                     "or count a smaller tree)")
    if walk.unreadable:
        named = ", ".join(walk.unreadable[:_NAMED])
        more = f" and {len(walk.unreadable) - _NAMED} more" if len(walk.unreadable) > _NAMED \
            else ""
        parts.append(f"could not read {len(walk.unreadable)} directories ({named}{more}): "
                     "fix their permissions")
    return "; ".join(parts)


def _breach(status: Status, thresholds: Thresholds, what: str, form: str) -> str:
    limit = {Status.CRITICAL: thresholds.critical, Status.WARNING: thresholds.warning}
    value = limit.get(status)
    return "" if value is None else f" ≥ {status.name.lower()} {form.format(value)} {what}"


def _unreachable(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if isinstance(exc, PermissionError):
        return (f"cannot reach {path}: {reason} (give the user kanshi runs as access to "
                "it and to every directory above it)")
    return f"cannot reach {path}: {reason}"


def _not_a_directory(path: Path) -> str:
    if not path.exists():
        return f"{path} does not exist (check the path option, or whether it is mounted)"
    return f"{path} is not a directory"
