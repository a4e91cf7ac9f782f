"""Read what was appended to log files since the last run, as ``tail -F`` would.

Used by the ``logfile`` and ``syslog`` checks. The position in each file is kept
in the check's persistent state as JSON: device + inode (which file), offset
(how far), and a digest of its first bytes (to notice a file replaced under a
reused inode, or truncated and regrown past the old offset between two runs).

- **rename + create** (logrotate's default): the old inode is looked for among
  the files beside the path whose name starts like it (``app.log.1``,
  ``app-20240101.log``) and finished first; the new file is then read from 0.
- **copytruncate**: the file shrinks under the same inode. The copy is found by
  its first bytes and finished from the old offset, then the file from 0.
- **truncation** (``> app.log``): read from 0 again, and say so.
- A line without its newline yet is left for the next run (unless the file was
  rotated away: then it is all there will ever be). Lines longer than the cap
  keep their first ``max_line_bytes`` and the rest is skipped, even across runs.
- Never more than ``max_bytes`` per run nor past a deadline: the rest waits for
  the next run. Memory stays below one chunk plus one capped line.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
#: Enough to tell two log files apart: their first lines carry timestamps.
HEAD_BYTES = 256
#: logrotate's compressed generations: never the file we were reading.
_COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z", ".zip")
#: Bound on the directory entries looked at when searching for a rotated file.
_MAX_SIBLINGS = 2000
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass
class Position:
    """Where reading of one file stopped (JSON-serialisable via :meth:`to_json`)."""

    path: str
    dev: int
    ino: int
    offset: int = 0
    head: str = ""        # digest of the first head_len bytes
    head_len: int = 0
    skipping: bool = False  # inside an over-long line: drop bytes up to its newline

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Position | None:
        """A position from saved state; None when the state is from elsewhere or broken."""
        try:
            pos = cls(**data)
        except TypeError:
            return None
        ints = (pos.dev, pos.ino, pos.offset, pos.head_len)
        if not all(isinstance(n, int) and n >= 0 for n in ints):
            return None
        return pos

    def same_file(self, st: os.stat_result) -> bool:
        return (self.dev, self.ino) == (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Line:
    """One line read: decoded with replacement, ``truncated`` if it was over the cap."""

    path: str
    text: str
    truncated: bool = False


@dataclass
class Limits:
    """Bounds shared by every file read in one run."""

    max_bytes: int
    max_line_bytes: int
    deadline: float
    monotonic: Callable[[], float]
    encoding: str = "utf-8"
    used: int = 0

    def left(self) -> int:
        return 0 if self.monotonic() >= self.deadline else self.max_bytes - self.used


@dataclass
class Progress:
    """What one run read: figures and notes a person should see (rotation, truncation)."""

    files: list[str] = field(default_factory=list)
    new_lines: int = 0
    new_bytes: int = 0
    unread_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def format_size(count: int) -> str:
    """``1.5 MiB`` — binary units, as ``ls -h`` and ``df -h`` use."""
    value, index = float(count), 0
    while value >= 1024 and index < len(_UNITS) - 1:
        value, index = value / 1024, index + 1
    return f"{count} B" if index == 0 else f"{value:.1f} {_UNITS[index]}"


def follow(pattern: str, saved: Mapping[str, Any] | None, on_line: Callable[[Line], None],
           limits: Limits, *, from_start: bool = False) -> tuple[dict[str, Any], Progress]:
    """Read what was appended to the files matching ``pattern`` (a path or glob).

    ``saved`` is what the previous call returned (None the first time). On the
    first call existing files are read from their end unless ``from_start``;
    files appearing later are read from their beginning.
    """
    follower = _Follower(on_line, limits)
    return follower.run(pattern, saved or {}, from_start), follower.progress


class _Follower:
    def __init__(self, on_line: Callable[[Line], None], limits: Limits) -> None:
        self.on_line = on_line
        self.limits = limits
        self.progress = Progress()

    def run(self, pattern: str, saved: Mapping[str, Any], from_start: bool) -> dict[str, Any]:
        started = bool(saved.get("started"))
        known = [p for p in map(Position.from_json, saved.get("files") or ()) if p]
        current = matching_files(pattern)
        self.progress.files = sorted(current)
        by_id = {(st.st_dev, st.st_ino): path for path, st in current.items()}
        kept: list[Position] = []
        for pos in known:
            path = by_id.pop((pos.dev, pos.ino), None)
            moved = self._continue(pos, path) if path else self._finish_rotated(pos)
            kept.extend([moved] if moved else [])
        for path in sorted(by_id.values()):  # files not seen before
            fresh = self._start(path, at_end=not (started or from_start))
            kept.extend([fresh] if fresh else [])
        return {"started": True, "files": [p.to_json() for p in kept]}

    # -- the three ways a known file can be found -------------------------------------

    def _continue(self, pos: Position, path: str) -> Position | None:
        """The same file is still matched (maybe renamed within the glob)."""
        pos.path = path
        with _opened(path, self.progress.errors) as opened:
            if opened is None or not pos.same_file(opened[1]):
                return pos  # replaced between glob and open: look again next run
            f, st = opened
            head = _head(f)
            if st.st_size < pos.offset or _digest(head[:pos.head_len]) != pos.head:
                self._restarted(pos, st.st_size, shrunk=st.st_size < pos.offset)
                pos = Position(path, st.st_dev, st.st_ino)
            return self._read(f, pos, head, final=False)

    def _restarted(self, pos: Position, size: int, shrunk: bool) -> None:
        """Truncated, copytruncated or replaced: finish a copy if there is one."""
        copy = _find_sibling(pos, lambda p, st: st.st_size >= pos.offset
                             and _head_of(p, pos.head_len) == pos.head)
        if copy is not None:
            self._finish_copy(pos, copy)
            self.progress.notes.append(
                f"{pos.path} was truncated after being copied to {copy} (copytruncate): "
                f"read the rest of the copy, then {pos.path} from the start")
        elif shrunk:
            self.progress.notes.append(
                f"{pos.path} was truncated or replaced ({format_size(size)} now, "
                f"{format_size(pos.offset)} read before): reading it from the start")
        else:
            self.progress.notes.append(
                f"{pos.path} was truncated or replaced (same inode, different first "
                "bytes): reading it from the start")

    def _finish_copy(self, pos: Position, copy: str) -> None:
        with _opened(copy) as opened:
            if opened is not None:
                f, st = opened
                moved = Position(pos.path, st.st_dev, st.st_ino, pos.offset, pos.head,
                                 pos.head_len, pos.skipping)
                self._read(f, moved, _head(f), final=True)

    def _finish_rotated(self, pos: Position) -> Position | None:
        """The file left the path (renamed away): finish it if it can be found."""
        found = _find_sibling(pos, lambda p, st: pos.same_file(st))
        if found is None:
            self.progress.notes.append(
                f"{pos.path} was rotated and the old file was not found beside it "
                "(compressed or moved away?): its last lines, if any, were not read")
            return None
        with _opened(found) as opened:
            if opened is None or not pos.same_file(opened[1]):
                return pos
            f = opened[0]
            left = self._read(f, pos, _head(f), final=True, shown=found)
            if left.offset < os.fstat(f.fileno()).st_size:
                return left  # out of budget or time: finish it next run
        self.progress.notes.append(f"{pos.path} was rotated: read the end of the old "
                                   f"file (now {found}), then the new one")
        return None

    def _start(self, path: str, at_end: bool) -> Position | None:
        with _opened(path, self.progress.errors) as opened:
            if opened is None:
                return None
            f, st = opened
            pos = Position(path, st.st_dev, st.st_ino)
            head = _head(f)
            if not at_end:
                return self._read(f, pos, head, final=False)
            pos.offset = _line_start_near_end(f, st.st_size, self.limits.max_line_bytes)
            pos.head, pos.head_len = _digest(head), len(head)
            self.progress.notes.append(
                f"{path}: first look, started at its end ({format_size(pos.offset)}); "
                "only lines written from now on are scanned")
            return pos

    # -- reading ------------------------------------------------------------------------

    def _read(self, f: BinaryIO, pos: Position, head: bytes, *, final: bool,
              shown: str | None = None) -> Position:
        """Read ``f`` from ``pos.offset`` within the limits; the position reached."""
        scan = _Scan(self, shown or pos.path, pos.skipping)
        offset = scan.run(f, pos.offset, final)
        size = os.fstat(f.fileno()).st_size
        self.progress.new_bytes += offset - pos.offset
        self.progress.unread_bytes += max(0, size - offset)
        head = head if len(head) >= HEAD_BYTES else _head(f)
        return Position(pos.path, pos.dev, pos.ino, offset, _digest(head), len(head),
                        scan.skipping)

    def emit(self, path: str, raw: bytes) -> None:
        cap = self.limits.max_line_bytes
        text = raw[:cap].rstrip(b"\r").decode(self.limits.encoding, "replace")
        self.progress.new_lines += 1
        self.on_line(Line(path, text, len(raw) > cap))


class _Scan:
    """Split a file into lines from an offset, bounded by the run's limits."""

    def __init__(self, owner: _Follower, path: str, skipping: bool) -> None:
        self.owner = owner
        self.path = path
        self.skipping = skipping
        self.pending = b""   # the start of a line whose newline is not read yet

    def run(self, f: BinaryIO, offset: int, final: bool) -> int:
        limits, at, consumed = self.owner.limits, offset, offset
        f.seek(offset)
        while (want := min(CHUNK, limits.left())) > 0:
            chunk = f.read(want)
            if not chunk:
                break
            limits.used += len(chunk)
            at += len(chunk)
            consumed = at - self._feed(chunk)
        else:
            return consumed  # out of budget or time: an unfinished line waits
        if final and self.pending and not self.skipping:
            self.owner.emit(self.path, self.pending)
            consumed, self.pending = at, b""
        return consumed

    def _feed(self, chunk: bytes) -> int:
        """Emit the complete lines; return how many bytes at the end are left pending."""
        parts = (self.pending + chunk).split(b"\n")
        self.pending = parts.pop()
        for part in parts:
            if self.skipping:  # the tail of an over-long line: already reported
                self.skipping = False
                continue
            self.owner.emit(self.path, part)
        if self.skipping:
            self.pending = b""
        elif len(self.pending) > self.owner.limits.max_line_bytes:
            self.owner.emit(self.path, self.pending)
            self.pending, self.skipping = b"", True
        return len(self.pending)


# -- files ------------------------------------------------------------------------------


def matching_files(pattern: str) -> dict[str, os.stat_result]:
    """Regular files matching ``pattern`` (a path or glob), with their stat."""
    paths = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
    found: dict[str, os.stat_result] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found[path] = st
    return found


@contextlib.contextmanager
def _opened(path: str, errors: list[str] | None = None
            ) -> Iterator[tuple[BinaryIO, os.stat_result] | None]:
    """The open file and its fstat, or None (the reason added to ``errors``)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 — closed by the with below
    except OSError as exc:
        if errors is not None and not isinstance(exc, FileNotFoundError):
            errors.append(f"cannot read {path}: {exc.strerror or exc}")
        yield None
        return
    with f:
        yield f, os.fstat(f.fileno())


def _head(f: BinaryIO) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)


def _head_of(path: str, length: int) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(length)
    except OSError:
        return None
    return _digest(data) if len(data) == length else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _line_start_near_end(f: BinaryIO, size: int, window: int) -> int:
    """The end of the last complete line, so a half-written one is read whole later."""
    start = max(0, size - window)
    f.seek(start)
    tail = f.read(size - start)
    cut = tail.rfind(b"\n")
    return size if cut < 0 else start + cut + 1


def _siblings(path: str) -> Iterator[str]:
    """Files beside ``path`` named like its rotated generations (uncompressed)."""
    folder, name = os.path.split(path)
    stem = name.split(".")[0] or name
    try:
        entries = os.scandir(folder or ".")
    except OSError:
        return
    with entries:
        for count, entry in enumerate(entries):
            if count >= _MAX_SIBLINGS:
                return
            if entry.name.startswith(stem) and entry.name != name \
                    and not entry.name.endswith(_COMPRESSED):
                yield entry.path


def _find_sibling(pos: Position, fits: Callable[[str, os.stat_result], bool]) -> str | None:
    """The most recently modified sibling of ``pos.path`` that ``fits``."""
    best: tuple[float, str] | None = None
    for candidate in _siblings(pos.path):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and fits(candidate, st) \
                and (best is None or st.st_mtime > best[0]):
            best = (st.st_mtime, candidate)
    return None if best is None else best[1]


def hold_warning(hold: float | None, confirm_seconds: float) -> str | None:
    """Why a ``hold`` shorter than the agent's confirmation would hide every match."""
    if hold is not None and hold < confirm_seconds:
        return (f"hold ({hold:g} s) is shorter than confirming a problem takes "
                f"({confirm_seconds:g} s = (max_attempts - 1) × retry_interval): a match "
                "would be gone before it could open an incident")
    return None
