"""Partition discovery on this machine's real mount table and on real tmpfs mounts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from checks.partitions import (
    Mount,
    NoAnswer,
    NotMounted,
    Outcome,
    Partition,
    Selection,
    StatvfsGuard,
    discover,
    fstab_entries,
    fstab_read_write,
    is_pseudo,
)
from tests.support.mounts import Mounter


def check(selection: Selection, guard: StatvfsGuard | None = None,
          limit: float = 5.0) -> list[Outcome]:
    return discover(selection, guard or StatvfsGuard(), limit)


def points(outcomes: list[Outcome]) -> list[str]:
    return [o.mountpoint for o in outcomes]


# -- this machine's mount table ----------------------------------------------------------


def test_default_discovery_skips_the_pseudo_filesystems_this_machine_has() -> None:
    table = psutil.disk_partitions(all=True)
    pseudo_here = {p.mountpoint for p in table if p.fstype in ("proc", "sysfs", "devpts")}
    assert pseudo_here, "this machine should mount /proc, /sys and /dev/pts"

    found = check(Selection())

    assert "/" in points(found)
    assert not pseudo_here & set(points(found))
    assert all(isinstance(o, Partition) and not is_pseudo(o.mount) for o in found)


def test_each_filesystem_on_this_machine_is_reported_once() -> None:
    found = [o for o in check(Selection()) if isinstance(o, Partition)]

    device_ids = [o.device_id for o in found]
    assert len(device_ids) == len(set(device_ids))


def test_run_netns_a_bind_of_the_root_is_folded_into_root() -> None:
    # os.path.ismount can't see a bind of / (same st_dev as its parent): ask the table.
    if "/run/netns" not in {p.mountpoint for p in psutil.disk_partitions(all=True)}:
        pytest.skip("no /run/netns mount on this machine")
    if os.stat("/run/netns").st_dev != os.stat("/").st_dev:
        pytest.skip("/run/netns is its own filesystem here, not a bind of /")

    assert "/run/netns" not in points(check(Selection()))


def test_an_explicitly_listed_pseudo_filesystem_is_checked_anyway() -> None:
    found = check(Selection(include=("/proc",)))

    assert points(found) == ["/proc"]
    assert isinstance(found[0], Partition)


def test_an_explicitly_listed_mount_point_that_is_not_mounted_is_reported(
        tmp_path: Path) -> None:
    found = check(Selection(include=(str(tmp_path), "/")))

    assert NotMounted(str(tmp_path)) in found
    assert "/" in points(found)


# -- selection rules (pure: Mount values, not psutil) ------------------------------------

EXT4 = Mount("/dev/sda1", "/srv", "ext4")
SHM = Mount("tmpfs", "/dev/shm", "tmpfs")
PROC = Mount("proc", "/proc", "proc")
SNAP = Mount("/dev/loop3", "/snap/core/1", "squashfs")
DOCKER = Mount("overlay", "/var/lib/docker/overlay2/abc/merged", "overlay")
NFS = Mount("nas:/export", "/mnt/nas", "nfs4")
LXCFS = Mount("lxcfs", "/var/lib/lxcfs", "fuse.lxcfs")


@pytest.mark.parametrize(("selection", "mount", "wanted"), [
    pytest.param(Selection(), EXT4, True, id="a-real-filesystem-by-default"),
    pytest.param(Selection(), NFS, True, id="a-network-filesystem-by-default"),
    pytest.param(Selection(), PROC, False, id="not-proc"),
    pytest.param(Selection(), SHM, False, id="nothing-under-dev"),
    pytest.param(Selection(), SNAP, False, id="not-squashfs-snaps"),
    pytest.param(Selection(), DOCKER, False, id="not-container-layers"),
    pytest.param(Selection(), LXCFS, False, id="not-lxcfs"),
    pytest.param(Selection(include=("/dev/shm",)), SHM, True, id="an-exact-include-wins"),
    pytest.param(Selection(include=("/dev/*",)), SHM, False, id="a-glob-never-pulls-in-pseudo"),
    pytest.param(Selection(include=("/data",)), EXT4, False, id="include-restricts"),
    pytest.param(Selection(include=("/s*",)), EXT4, True, id="include-by-glob"),
    pytest.param(Selection(exclude=("/srv",)), EXT4, False, id="exclude-exact"),
    pytest.param(Selection(exclude=("/mnt/*",)), NFS, False, id="exclude-by-glob"),
    pytest.param(Selection(include=("/srv",), exclude=("/s*",)), EXT4, True,
                 id="an-exact-include-beats-an-exclude"),
    pytest.param(Selection(exclude_fstypes=("nfs*",)), NFS, False, id="exclude-fstype"),
    pytest.param(Selection(include_fstypes=("ext4",)), NFS, False, id="include-fstype-restricts"),
    pytest.param(Selection(include_fstypes=("ext4",)), EXT4, True, id="include-fstype"),
    pytest.param(Selection(include_fstypes=("squashfs",)), SNAP, True,
                 id="an-included-fstype-is-no-longer-pseudo"),
])
def test_selection_follows_the_documented_rules(selection: Selection, mount: Mount,
                                                wanted: bool) -> None:
    assert selection.wants(mount) is wanted


# -- /etc/fstab --------------------------------------------------------------------------

FSTAB = """\
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=1234  /              ext4  errors=remount-ro  0 1
/dev/sdb1  /srv           xfs   defaults           0 2
/dev/sdc1  /mnt/archive   ext4  ro,noatime         0 2
/dev/sdd1  /mnt/flip      ext4  ro,rw              0 2
/dev/sde1  /mnt/my\\040disk ext4 defaults          0 2
/dev/sdf1  none           swap  sw                 0 0
  # indented comment
"""


def test_fstab_lists_the_mount_points_it_mounts_read_write(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB)

    assert fstab_read_write(fstab) == {"/", "/srv", "/mnt/flip", "/mnt/my disk"}


def test_fstab_entries_skip_comments_and_swap() -> None:
    assert [p for p, _ in fstab_entries(FSTAB)] == [
        "/", "/srv", "/mnt/archive", "/mnt/flip", "/mnt/my disk"]


def test_a_missing_fstab_means_nothing_is_expected_read_write(tmp_path: Path) -> None:
    assert fstab_read_write(tmp_path / "absent") == frozenset()


# -- hung statvfs ------------------------------------------------------------------------


class BlockingStatvfs:
    """statvfs that hangs on one path until released, like a hard-mounted dead NFS server.

    Injected because no hung NFS server exists here; every other path, and this one
    once released, gets the real ``os.statvfs``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, path: str) -> os.statvfs_result:
        if path == self.path:
            self.calls += 1
            self.release.wait()
        return os.statvfs(path)


def wait_until_idle(guard: StatvfsGuard) -> None:
    deadline = time.monotonic() + 30
    while guard.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not guard.pending(), "the released statvfs thread never finished"


def test_a_hung_statvfs_is_reported_and_not_called_again_while_stuck() -> None:
    """A blocking statvfs function is injected: there is no real hung NFS mount here."""
    hung = BlockingStatvfs("/")
    guard = StatvfsGuard(statvfs=hung)
    try:
        first = check(Selection(include=("/",)), guard, limit=0.2)
        second = check(Selection(include=("/",)), guard, limit=0.2)
        assert hung.calls == 1
    finally:
        hung.release.set()
    wait_until_idle(guard)
    third = check(Selection(include=("/",)), guard, limit=5.0)

    assert isinstance(first[0], NoAnswer) and first[0].earlier is None
    assert "did not answer within 0.2 s — hung network filesystem?" in first[0].describe()
    assert isinstance(second[0], NoAnswer) and "not retried" in second[0].describe()
    assert isinstance(third[0], Partition)
    assert hung.calls == 2


def test_other_mounts_are_measured_while_one_hangs(tmp_path: Path) -> None:
    """A blocking statvfs function is injected: there is no real hung NFS mount here."""
    hung = BlockingStatvfs("/proc")
    guard = StatvfsGuard(statvfs=hung)
    try:
        found = check(Selection(include=("/", "/proc")), guard, limit=0.2)
    finally:
        hung.release.set()
    wait_until_idle(guard)

    assert {type(o).__name__: o.mountpoint for o in found} == {
        "Partition": "/", "NoAnswer": "/proc"}


# -- real tmpfs mounts (root) ------------------------------------------------------------


@pytest.mark.real
def test_a_bind_mount_is_reported_once_under_the_shorter_path(mounter: Mounter) -> None:
    original = mounter.tmpfs("fs")
    mounter.bind(original, "fs-bind")

    found = check(Selection(include=(f"{mounter.base}/*",)))

    assert points(found) == [str(original)]


@pytest.mark.real
def test_an_explicitly_listed_bind_mount_is_kept(mounter: Mounter) -> None:
    original = mounter.tmpfs("fs")
    bound = mounter.bind(original, "fs-bind")

    found = check(Selection(include=(str(original), str(bound))))

    assert points(found) == [str(original), str(bound)]


@pytest.mark.real
@pytest.mark.parametrize(("options", "expected"), [
    pytest.param({"include_fstypes": ("tmpfs",)}, ["a", "b"], id="include-fstype"),
    pytest.param({"exclude_fstypes": ("tmpfs",)}, [], id="exclude-fstype"),
    pytest.param({"exclude": ("*/b",)}, ["a"], id="exclude-by-glob"),
    pytest.param({"exclude": ("{base}/a",)}, ["b"], id="exclude-exact"),
])
def test_real_mounts_are_filtered_by_type_and_mount_point(
        mounter: Mounter, options: dict[str, tuple[str, ...]], expected: list[str]) -> None:
    mounter.tmpfs("a")
    mounter.tmpfs("b")
    base = str(mounter.base)
    options = {k: tuple(v.format(base=base) for v in vs) for k, vs in options.items()}

    found = check(Selection(include=(f"{base}/*",), **options))

    assert points(found) == [f"{base}/{name}" for name in expected]
