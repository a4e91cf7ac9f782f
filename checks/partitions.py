"""Partition discovery: which mounted filesystems to check, and their statvfs figures.

The mount table comes from psutil (``/proc/self/mounts``). Pseudo and layered
filesystems are skipped by node_exporter's defaults plus a few more types that
are obviously not storage; an **exactly listed** mount point is always checked,
whatever its type, and reported as not mounted when it is missing.

``statvfs`` on a hung network filesystem blocks forever and cannot be
interrupted, so :class:`StatvfsGuard` runs it in a daemon thread with a time
limit and never starts a second call for a mount point while the first is still
stuck (node_exporter's ``stuckMounts``, collector/filesystem_linux.go).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

# node_exporter's defaults, collector/filesystem_linux.go
# (--collector.filesystem.fs-types-exclude / --collector.filesystem.mount-points-exclude).
NODE_EXPORTER_FSTYPES = re.compile(
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
    r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
    r"|squashfs|sysfs|tracefs)$")
NODE_EXPORTER_MOUNT_POINTS = re.compile(
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+"
    r"|var/lib/containers/storage/.+)($|/)")

# Not storage either, though node_exporter keeps them: ramfs has no size (statvfs
# is all zeros), erofs is a read-only image like squashfs, efivarfs/binder/nfsd
# are kernel interfaces, rootfs is the initramfs shadowed by the real /, and the
# FUSE types are views of other filesystems (lxcfs: /proc for containers; gvfs,
# xdg portal, snapfuse: squashfs snaps; fuse-overlayfs: rootless overlay).
EXTRA_PSEUDO_FSTYPES = frozenset({
    "ramfs", "efivarfs", "erofs", "binder", "nfsd", "rootfs", "fuse.lxcfs",
    "fuse.gvfsd-fuse", "fuse.portal", "fuse.snapfuse", "fuse.squashfuse_ll",
    "fuse.fuse-overlayfs",
})

_GLOB_CHARS = frozenset("*?[")

StatvfsFunc = Callable[[str], os.statvfs_result]


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which mounts to check. Patterns are exact paths or :mod:`fnmatch` globs.

    An exact (glob-free) ``include`` entry wins over everything: it is checked
    whatever its type or the excludes say. Otherwise a mount is checked when it
    matches ``include`` (or it is empty) and ``include_fstypes`` (or it is
    empty), matches no exclude, and is not a pseudo filesystem; a type listed in
    ``include_fstypes`` is no longer treated as pseudo. In fnmatch ``*`` also
    matches ``/``.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_fstypes: tuple[str, ...] = ()
    exclude_fstypes: tuple[str, ...] = ()

    @cached_property
    def explicit(self) -> frozenset[str]:
        """The exactly listed mount points: expected to be mounted."""
        return frozenset(p for p in self.include if not _GLOB_CHARS & set(p))

    def wants(self, mount: Mount) -> bool:
        """Whether ``mount`` is to be checked."""
        if mount.mountpoint in self.explicit:
            return True
        if _matches(mount.mountpoint, self.exclude) or _matches(mount.fstype,
                                                                self.exclude_fstypes):
            return False
        if self.include and not _matches(mount.mountpoint, self.include):
            return False
        if self.include_fstypes and not _matches(mount.fstype, self.include_fstypes):
            return False
        return not is_pseudo(mount, allowed_fstypes=self.include_fstypes)


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def is_pseudo(mount: Mount, allowed_fstypes: Sequence[str] = ()) -> bool:
    """Whether ``mount`` is a pseudo/layered filesystem or a system mount point."""
    if NODE_EXPORTER_MOUNT_POINTS.match(mount.mountpoint):
        return True
    if _matches(mount.fstype, allowed_fstypes):
        return False
    return bool(NODE_EXPORTER_FSTYPES.match(mount.fstype)) \
        or mount.fstype in EXTRA_PSEUDO_FSTYPES


# -- outcomes of looking at one mount point -------------------------------------------


@dataclass(frozen=True)
class Partition:
    """A mounted filesystem and its statvfs figures."""

    mount: Mount
    stats: os.statvfs_result
    device_id: int
    explicit: bool = False

    @property
    def mountpoint(self) -> str:
        return self.mount.mountpoint

    @property
    def read_only(self) -> bool:
        # f_flag carries the superblock's read-only bit too, so it also shows an
        # ext4 errors=remount-ro that /proc/mounts options might lag behind.
        return bool(self.stats.f_flag & os.ST_RDONLY)


@dataclass(frozen=True)
class NotMounted:
    """An exactly listed mount point that is not in the mount table."""

    mountpoint: str


@dataclass(frozen=True)
class NoAnswer:
    """statvfs did not return within the limit (``earlier``: a previous call is stuck)."""

    mount: Mount
    limit: float
    earlier: float | None = None

    @property
    def mountpoint(self) -> str:
        return self.mount.mountpoint

    def describe(self) -> str:
        """The message for a person: which mount, how long, what to suspect."""
        text = (f"{self.mountpoint}: statvfs did not answer within {self.limit:g} s"
                " — hung network filesystem?")
        if self.earlier is None:
            return text
        return (f"{text} (still waiting on the call made {self.earlier:.0f} s ago;"
                " not retried until it returns)")


@dataclass(frozen=True)
class ProbeFailed:
    """statvfs or stat raised (stale NFS handle, permission denied, unmounted meanwhile)."""

    mount: Mount
    error: str

    @property
    def mountpoint(self) -> str:
        return self.mount.mountpoint


Outcome = Partition | NotMounted | NoAnswer | ProbeFailed


# -- statvfs with a time limit ---------------------------------------------------------


class _Call:
    """One statvfs + stat of a mount point, running in a daemon thread."""

    def __init__(self, path: str, statvfs: StatvfsFunc) -> None:
        self.path = path
        self.started = time.monotonic()
        self.done = threading.Event()
        self.value: tuple[os.statvfs_result, int] | None = None
        self.error: str | None = None
        self._statvfs = statvfs

    def run(self, on_done: Callable[[_Call], None]) -> None:
        try:
            self.value = (self._statvfs(self.path), os.stat(self.path).st_dev)
        except Exception as exc:  # the thread must always report back
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            on_done(self)
            self.done.set()


class StatvfsGuard:
    """statvfs with a time limit; a mount point whose call is stuck is not called again.

    Share one guard between checks (``CheckContext.shared``) so the disk and
    inode checks don't each leave a thread behind on the same hung mount. Time is
    real (``time.monotonic``), not the injectable clock: it bounds real threads.
    """

    def __init__(self, statvfs: StatvfsFunc = os.statvfs) -> None:
        self._statvfs = statvfs
        self._lock = threading.Lock()
        self._running: dict[str, _Call] = {}

    def start(self, path: str) -> tuple[_Call, bool]:
        """The call for ``path``: the one still running, else a new one (``True``)."""
        with self._lock:
            call = self._running.get(path)
            if call is not None:
                return call, False
            call = self._running[path] = _Call(path, self._statvfs)
        threading.Thread(target=call.run, args=(self._finished,), daemon=True,
                         name=f"statvfs {path}").start()
        return call, True

    def pending(self) -> list[str]:
        """Mount points with a call still running (stuck, or just slow)."""
        with self._lock:
            return sorted(self._running)

    def _finished(self, call: _Call) -> None:
        with self._lock:
            if self._running.get(call.path) is call:
                del self._running[call.path]

    def settle(self, mount: Mount, call: _Call, fresh: bool, limit: float,
               explicit: bool) -> Outcome:
        """Wait until ``limit`` s after the call started; what it gave, or NoAnswer."""
        if not call.done.wait(max(0.0, call.started + limit - time.monotonic())):
            earlier = None if fresh else time.monotonic() - call.started
            logger.warning("statvfs(%s) did not answer within %g s", mount.mountpoint, limit)
            return NoAnswer(mount, limit, earlier)
        if call.value is None:
            return ProbeFailed(mount, call.error or "unknown error")
        stats, device_id = call.value
        return Partition(mount, stats, device_id, explicit)


# -- discovery -------------------------------------------------------------------------


def discover(selection: Selection, guard: StatvfsGuard, limit: float,
             table: Sequence[Any] | None = None) -> list[Outcome]:
    """One outcome per selected filesystem, sorted by mount point.

    ``table`` is psutil's ``disk_partitions(all=True)`` unless given.
    """
    mounts = visible_mounts(psutil.disk_partitions(all=True) if table is None else table)
    chosen = [m for m in mounts if selection.wants(m)]
    logger.debug("checking %d of %d mounts", len(chosen), len(mounts))
    calls = [(m, *guard.start(m.mountpoint)) for m in chosen]
    explicit = selection.explicit
    probed = [guard.settle(m, call, fresh, limit, m.mountpoint in explicit)
              for m, call, fresh in calls]
    mounted = {m.mountpoint for m in mounts}
    missing = [NotMounted(p) for p in explicit if p not in mounted]
    return sorted([*one_per_filesystem(probed), *missing], key=lambda o: o.mountpoint)


def visible_mounts(table: Iterable[Any]) -> list[Mount]:
    """The mount table, one entry per mount point: the last one, which hides the others."""
    by_point = {p.mountpoint: Mount(p.device, p.mountpoint, p.fstype,
                                    tuple(p.opts.split(","))) for p in table}
    return list(by_point.values())


def one_per_filesystem(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Drop bind mounts and repeated mounts of one filesystem (same ``st_dev``).

    Kept: every exactly listed mount point, else the read-write, then the
    shortest one — a read-only bind must not hide a filling read-write original.
    """
    parts = sorted((o for o in outcomes if isinstance(o, Partition)), key=_preference)
    best: dict[int, Partition] = {}
    for part in parts:
        best.setdefault(part.device_id, part)
    kept = {id(p) for p in best.values()} | {id(p) for p in parts if p.explicit}
    return [o for o in outcomes if not isinstance(o, Partition) or id(o) in kept]


def _preference(part: Partition) -> tuple[bool, bool, int, str]:
    return (not part.explicit, part.read_only, len(part.mountpoint), part.mountpoint)


# -- /etc/fstab ------------------------------------------------------------------------


def fstab_read_write(path: str | os.PathLike[str]) -> frozenset[str]:
    """Mount points that ``path`` (an fstab) mounts read-write; empty if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        logger.debug("no fstab to compare with: %s", exc)
        return frozenset()
    return frozenset(point for point, options in fstab_entries(text)
                     if not _read_only(options))


def fstab_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """``(mount point, options)`` of each filesystem line of an fstab (fstab(5))."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#") or not fields[1].startswith("/"):
            continue  # comments, blank lines, swap ("none"/"swap" mount point)
        options = fields[3] if len(fields) > 3 else "defaults"
        yield os.path.normpath(_unescape(fields[1])), options.split(",")


def _unescape(field: str) -> str:
    # fstab(5): spaces and tabs in a path are written as octal \040 and \011.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _read_only(options: Sequence[str]) -> bool:
    # mount(8) applies options left to right, so the last of ro/rw wins; rw is the default.
    flags = [o for o in options if o in ("ro", "rw")]
    return bool(flags) and flags[-1] == "ro"
