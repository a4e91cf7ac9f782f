"""The ``disk`` and ``inode`` checks: usage of each partition (SPEC §1).

One result per filesystem, ``target`` = its mount point. Used % is computed as
GNU ``df`` does (coreutils src/df.c, ``get_dev``):

- blocks: ``used = f_blocks - f_bfree``, ``pct = used / (used + f_bavail)`` —
  blocks reserved for root are in neither term, so a disk is 100 % used when
  ordinary users can no longer write (DESIGN "Pitfalls": monit, node_exporter's
  usual query and df give three answers on one ext4; we follow df and Zabbix);
- inodes: ``used = f_files - f_ffree``, ``pct = used / f_files``.

Thresholds are judged on the exact value (``≥``, SPEC §1 "≥ 90 %"). df rounds
its Use% **up** to a whole percent (89.01 → 90 %), so df may show a threshold
reached a little before kanshi does. The message shows one decimal rounded
**down**, so it never shows a threshold reached that the status does not
(89.96 % reads "89.9%", not "90.0%").

A filesystem mounted read-only although ``/etc/fstab`` says rw, or seen
read-write by this check earlier, is CRITICAL whatever its usage: ext4's
``errors=remount-ro`` does that on I/O errors, and every write then fails.
One read-only from the start (an image, a ``ro`` fstab line) is OK and its
usage is not judged: it cannot fill up through this mount.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, CheckContext, Result, Status
from checks.partitions import (
    NoAnswer,
    NotMounted,
    Outcome,
    Partition,
    ProbeFailed,
    Selection,
    StatvfsGuard,
    discover,
    fstab_read_write,
)
from checks.types import Duration, PercentThresholds

logger = logging.getLogger(__name__)

#: Key of the guard in ``CheckContext.shared``: disk and inode checks share it.
GUARD_KEY = "checks.partitions.StatvfsGuard"
#: Key in ``CheckContext.state``: sorted list of mount points seen read-write.
SEEN_RW_KEY = "seen_read_write"

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _mount_pattern(pattern: str) -> str:
    if not pattern.startswith(("/", "*", "?", "[")):
        raise PydanticCustomError(
            "kanshi", "expected {expected}, got {got}",
            {"expected": "an absolute mount point or glob such as /data or /srv/*",
             "got": f'"{pattern}"'})
    # The kernel lists /data, never /data/: compare like with like.
    return os.path.normpath(pattern) if pattern.startswith("/") else pattern


#: A mount point, exact or an fnmatch glob.
MountPattern = Annotated[str, AfterValidator(_mount_pattern)]


class PartitionCheckConfig(CheckConfig):
    """Options the disk and inode checks share: which partitions, how long to wait."""

    include: tuple[MountPattern, ...] = ()
    exclude: tuple[MountPattern, ...] = ()
    include_fstypes: tuple[str, ...] = ()
    exclude_fstypes: tuple[str, ...] = ()
    #: node_exporter's --collector.filesystem.mount-timeout default.
    statvfs_timeout: Duration = 5.0
    fstab: str = "/etc/fstab"
    threshold: PercentThresholds = PercentThresholds()

    def selection(self) -> Selection:
        return Selection(self.include, self.exclude, self.include_fstypes,
                         self.exclude_fstypes)


class DiskConfig(PartitionCheckConfig):
    """``disk`` options; SPEC §1: ≥ 90 % → contact the customer and act."""

    threshold: PercentThresholds = PercentThresholds(warning=80.0, critical=90.0)


class InodeConfig(PartitionCheckConfig):
    """``inode`` options; SPEC §1 Platinum: ≥ 50 % of max inodes → contact the customer."""

    threshold: PercentThresholds = PercentThresholds(warning=50.0, critical=90.0)


@dataclass(frozen=True)
class Usage:
    """One partition's figures: ``percent`` is ``None`` when not applicable."""

    percent: float | None
    text: str
    metrics: dict[str, float] = field(default_factory=dict)


class PartitionCheck(Check):
    """Shared run/judge logic; subclasses say how to measure one partition."""

    config: PartitionCheckConfig
    default_interval: ClassVar[float] = 600.0

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, guard: StatvfsGuard | None = None) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.guard = guard or context.shared.get(GUARD_KEY, StatvfsGuard)

    @abstractmethod
    def measure(self, part: Partition) -> Usage:
        """Usage figures of one partition."""

    def run(self) -> list[Result]:
        limit = min(self.config.statvfs_timeout, self.timeout)
        outcomes = discover(self.config.selection(), self.guard, limit)
        if not outcomes:
            return [Result(Status.UNKNOWN, "no filesystem to check: include/exclude "
                           "options matched none of the mounted filesystems")]
        remounted = self._remounted_read_only(outcomes)
        return [self._judge(o, o.mountpoint in remounted) for o in outcomes]

    def _remounted_read_only(self, outcomes: list[Outcome]) -> set[str]:
        """Mount points now read-only that fstab or an earlier run saw read-write."""
        parts = [o for o in outcomes if isinstance(o, Partition)]
        seen = set(self.context.state.get(SEEN_RW_KEY, ()))
        expected_rw = seen | fstab_read_write(self.config.fstab)
        # Forget what is no longer mounted: a later fresh ro mount is deliberate.
        mounted = {o.mountpoint for o in outcomes if not isinstance(o, NotMounted)}
        now_rw = {p.mountpoint for p in parts if not p.read_only}
        self.context.state[SEEN_RW_KEY] = sorted((seen & mounted) | now_rw)
        return {p.mountpoint for p in parts if p.read_only and p.mountpoint in expected_rw}

    def _judge(self, outcome: Outcome, remounted: bool) -> Result:
        point = outcome.mountpoint
        if isinstance(outcome, NotMounted):
            return Result(Status.CRITICAL, f"{point} is not mounted", point)
        if isinstance(outcome, NoAnswer):
            return Result(Status.UNKNOWN, outcome.describe(), point)
        if isinstance(outcome, ProbeFailed):
            return Result(Status.UNKNOWN, f"{point}: statvfs failed: {outcome.error}", point)
        return self._judge_partition(outcome, remounted)

    def _judge_partition(self, part: Partition, remounted: bool) -> Result:
        point, usage = part.mountpoint, self.measure(part)
        if remounted:
            text = f"{point} was remounted read-only (errors=remount-ro?); {usage.text}"
            return Result(Status.CRITICAL, text, point, usage.metrics)
        if part.read_only:
            text = f"{point} {usage.text}; mounted read-only, usage not judged"
            return Result(Status.OK, text, point, usage.metrics)
        if usage.percent is None:
            return Result(Status.OK, f"{point} {usage.text}", point, usage.metrics)
        status = self.config.threshold.judge(usage.percent)
        text = f"{point} {usage.text}{_breach(status, self.config.threshold)}"
        return Result(status, text, point, usage.metrics)


class DiskCheck(PartitionCheck):
    """Block usage of each partition, as ``df`` computes it."""

    type_name: ClassVar[str] = "disk"
    Config: ClassVar[type[DiskConfig]] = DiskConfig

    def measure(self, part: Partition) -> Usage:
        return disk_usage(part.stats)


class InodeCheck(PartitionCheck):
    """Inode usage of each partition, as ``df -i`` computes it."""

    type_name: ClassVar[str] = "inode"
    Config: ClassVar[type[InodeConfig]] = InodeConfig

    def measure(self, part: Partition) -> Usage:
        return inode_usage(part.stats, part.mount.fstype)


def disk_usage(st: os.statvfs_result) -> Usage:
    """Block figures in bytes; percent excludes root-reserved blocks (df.c)."""
    unit = st.f_frsize or st.f_bsize  # df counts in fragments (f_frsize)
    used, available = st.f_blocks - st.f_bfree, st.f_bavail
    usable = used + available
    if usable <= 0:
        return Usage(None, "has no block counts (statvfs size 0): not applicable")
    text = (f"{_tenths(used, usable)}% used ({_bytes(used * unit)} of "
            f"{_bytes(usable * unit)}, {_bytes(available * unit)} free)")
    return Usage(100 * used / usable, text, {
        "used_percent": 100 * used / usable,
        "used_bytes": float(used * unit),
        "available_bytes": float(available * unit),
        "size_bytes": float(st.f_blocks * unit),
    })


def inode_usage(st: os.statvfs_result, fstype: str) -> Usage:
    """Inode figures; not applicable where the filesystem has no fixed count."""
    if st.f_files == 0:
        # btrfs and some network filesystems allocate inodes on demand and
        # report 0: neither 0 % nor 100 % would be true.
        return Usage(None, f"inodes not applicable: {fstype} has no fixed inode count "
                           "(statvfs f_files = 0)")
    used = st.f_files - st.f_ffree
    text = f"inodes {_tenths(used, st.f_files)}% used ({used} of {st.f_files})"
    return Usage(100 * used / st.f_files, text, {
        "used_percent": 100 * used / st.f_files,
        "used_inodes": float(used),
        "free_inodes": float(st.f_ffree),
        "total_inodes": float(st.f_files),
    })


def _tenths(part: int, whole: int) -> str:
    """``100 * part / whole`` rounded down to one decimal, in integers (no float drift)."""
    tenths = 1000 * part // whole
    return f"{tenths // 10}.{tenths % 10}"


def _bytes(count: int) -> str:
    """``45.6 GiB`` — binary units, as ``df -h`` uses."""
    value, index = float(count), 0
    while value >= 1024 and index < len(_UNITS) - 1:
        value, index = value / 1024, index + 1
    return f"{count} B" if index == 0 else f"{value:.1f} {_UNITS[index]}"


def _breach(status: Status, threshold: PercentThresholds) -> str:
    limit = {Status.CRITICAL: threshold.critical, Status.WARNING: threshold.warning}
    value = limit.get(status)
    return "" if value is None else f" ≥ {status.name.lower()} {value:g}%"
