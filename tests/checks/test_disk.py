"""The disk and inode checks on real small filesystems, compared with ``df``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from agent.clock import SystemClock
from checks.base import CheckContext, Result, Status
from checks.disk import DiskCheck, InodeCheck, PartitionCheck, disk_usage
from checks.partitions import StatvfsGuard
from tests.checks.test_partitions import BlockingStatvfs, wait_until_idle
from tests.support import needs
from tests.support.mounts import Mounter

BLOCK = 4096  # tmpfs block size (PAGE_SIZE) on x86-64 and arm64 with 4K pages


def make(cls: type[PartitionCheck], state: dict[str, Any] | None = None,
         guard: StatvfsGuard | None = None, **options: Any) -> PartitionCheck:
    context = CheckContext(clock=SystemClock(), state={} if state is None else state)
    return cls(cls.type_name, cls.Config.model_validate(options), timeout=30.0,
               context=context, guard=guard)


def only(check: PartitionCheck) -> Result:
    results = check.execute()
    assert len(results) == 1, results
    return results[0]


def df(*args: str) -> list[str]:
    """The figures line of ``df -P …`` for one mount point."""
    out = subprocess.run(["df", "-P", *args], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[1].split()


def fill(point: Path, blocks: int) -> None:
    (point / "fill").write_bytes(bytes(blocks * BLOCK))  # zeros written are allocated


def make_files(point: Path, count: int) -> None:
    for n in range(count):
        (point / f"f{n}").touch()


# -- config --------------------------------------------------------------------------------


def test_defaults_follow_spec_section_1() -> None:
    disk, inode = DiskCheck.Config(), InodeCheck.Config()

    assert (disk.threshold.warning, disk.threshold.critical) == (80.0, 90.0)
    assert (inode.threshold.warning, inode.threshold.critical) == (50.0, 90.0)
    assert DiskCheck.default_interval == InodeCheck.default_interval == 600.0
    assert disk.statvfs_timeout == 5.0
    assert disk.include == disk.exclude == ()


def test_a_bare_threshold_is_critical_only() -> None:
    config = DiskCheck.Config.model_validate({"threshold": "95%", "statvfs_timeout": "2s"})

    assert (config.threshold.warning, config.threshold.critical) == (None, 95.0)
    assert config.statvfs_timeout == 2.0


def test_mount_points_are_normalised() -> None:
    config = DiskCheck.Config.model_validate({"include": ["/data/", "/srv/*"]})

    assert config.include == ("/data", "/srv/*")


@pytest.mark.parametrize(("options", "location", "message"), [
    pytest.param({"threshold": "9O"}, ("threshold",),
                 'expected a number between 0 and 100, got "9O"', id="typo-in-threshold"),
    pytest.param({"threshold": {"warning": 95, "critical": 90}}, ("threshold",),
                 "expected warning (95) not above critical (90)", id="warning-above-critical"),
    pytest.param({"threshold": {"critical": 120}}, ("threshold", "critical"),
                 "expected a number between 0 and 100, got 120", id="over-100"),
    pytest.param({"include": ["/", "data"]}, ("include", 1),
                 'expected an absolute mount point or glob such as /data or /srv/*, got "data"',
                 id="relative-mount-point"),
    pytest.param({"statvfs_timeout": "soon"}, ("statvfs_timeout",),
                 'expected a duration such as 30s, 10m or 1h, got "soon"', id="bad-duration"),
    pytest.param({"treshold": 90}, ("treshold",), "Extra inputs are not permitted",
                 id="unknown-key"),
])
def test_bad_config_is_refused_with_a_readable_message(
        options: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        DiskCheck.Config.model_validate(options)

    [error] = caught.value.errors()
    assert (error["loc"], error["msg"]) == (location, message)


# -- arithmetic (statvfs figures as data) --------------------------------------------------


def figures(blocks: int, bfree: int, bavail: int) -> os.statvfs_result:
    return os.statvfs_result((1024, 1024, blocks, bfree, bavail, 100, 50, 50, 0, 255))


@pytest.mark.parametrize(("stats", "percent", "shown"), [
    pytest.param(figures(1000, 200, 150), 800 / 950 * 100, "84.2", id="reserved-blocks-excluded"),
    pytest.param(figures(1000, 100, 100), 90.0, "90.0", id="exactly-90"),
    pytest.param(figures(10000, 1004, 1004), 89.96, "89.9", id="shown-rounded-down"),
    pytest.param(figures(1000, 1000, 1000), 0.0, "0.0", id="empty"),
])
def test_used_percent_is_dfs_used_over_used_plus_available(
        stats: os.statvfs_result, percent: float, shown: str) -> None:
    usage = disk_usage(stats)

    assert usage.percent == pytest.approx(percent)
    assert usage.text.startswith(f"{shown}% used")


def test_the_threshold_is_judged_on_the_exact_value_boundary_included() -> None:
    threshold = DiskCheck.Config().threshold

    assert threshold.judge(disk_usage(figures(1000, 100, 100)).percent or 0) is Status.CRITICAL
    assert threshold.judge(disk_usage(figures(10000, 1004, 1004)).percent or 0) is Status.WARNING


# -- no root needed ------------------------------------------------------------------------


def test_an_expected_mount_point_that_is_not_mounted_is_critical(tmp_path: Path) -> None:
    result = only(make(DiskCheck, include=[str(tmp_path)]))

    assert (result.status, result.message) == (Status.CRITICAL, f"{tmp_path} is not mounted")
    assert result.target == str(tmp_path)


def test_inodes_are_not_applicable_where_statvfs_reports_none() -> None:
    result = only(make(InodeCheck, include=["/proc"]))

    assert result.status is Status.OK
    assert "not applicable" in result.message
    assert "used_percent" not in result.metrics


def test_a_hung_mount_is_unknown_and_says_why() -> None:
    """A blocking statvfs function is injected: there is no real hung NFS mount here."""
    hung = BlockingStatvfs("/")
    guard = StatvfsGuard(statvfs=hung)
    try:
        result = only(make(DiskCheck, guard=guard, include=["/"], statvfs_timeout="200ms"))
    finally:
        hung.release.set()
    wait_until_idle(guard)

    assert result.status is Status.UNKNOWN
    assert result.message == ("/: statvfs did not answer within 0.2 s"
                              " — hung network filesystem?")


def test_disk_and_inode_checks_share_one_guard_by_default() -> None:
    context = CheckContext(clock=SystemClock())
    disk = DiskCheck("d", DiskCheck.Config(), timeout=30.0, context=context)
    inode = InodeCheck("i", InodeCheck.Config(), timeout=30.0, context=context)

    assert disk.guard is inode.guard


def test_this_machine_reports_one_result_per_real_filesystem() -> None:
    results = make(DiskCheck).execute()

    assert "/" in [r.target for r in results]
    assert all(r.target and r.check == "disk" for r in results)
    assert not {"/proc", "/sys", "/dev", "/dev/shm"} & {r.target for r in results}


# -- real tmpfs mounts (root) --------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(("blocks", "status"), [
    pytest.param(0, Status.OK, id="empty"),
    pytest.param(128, Status.OK, id="half"),
    pytest.param(210, Status.WARNING, id="82-percent"),
    pytest.param(236, Status.CRITICAL, id="92-percent"),
    pytest.param(256, Status.CRITICAL, id="full"),
])
def test_disk_figures_match_df_on_a_real_tmpfs(mounter: Mounter, blocks: int,
                                               status: Status) -> None:
    point = mounter.tmpfs("fs")
    fill(point, blocks)

    result = only(make(DiskCheck, include=[str(point)]))
    _, size, used, available, capacity, _ = df("-B1", str(point))

    assert result.status is status
    assert result.metrics["used_bytes"] == int(used) == blocks * BLOCK
    assert result.metrics["available_bytes"] == int(available)
    assert result.metrics["size_bytes"] == int(size)
    assert math.ceil(result.metrics["used_percent"]) == int(capacity.rstrip("%"))


@pytest.mark.real
def test_a_full_disk_message_says_how_full_and_what_is_left(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    fill(point, 236)

    result = only(make(DiskCheck, include=[str(point)]))

    assert result.message == (f"{point} 92.1% used (944.0 KiB of 1.0 MiB, 80.0 KiB free)"
                              " ≥ critical 90%")
    assert result.target == str(point)


@pytest.mark.real
def test_a_disk_is_ok_again_after_cleanup(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    check = make(DiskCheck, include=[str(point)])
    fill(point, 236)
    assert only(check).status is Status.CRITICAL

    (point / "fill").unlink()

    assert only(check).status is Status.OK


@pytest.mark.real
@pytest.mark.parametrize(("files", "status"), [
    pytest.param(0, Status.OK, id="only-the-root-directory"),
    pytest.param(54, Status.WARNING, id="55-percent"),
    pytest.param(95, Status.CRITICAL, id="96-percent"),
])
def test_inode_figures_match_df_on_a_real_tmpfs(mounter: Mounter, files: int,
                                                status: Status) -> None:
    point = mounter.tmpfs("fs")
    make_files(point, files)

    result = only(make(InodeCheck, include=[str(point)]))
    _, total, used, free, percent, _ = df("-i", str(point))

    assert result.status is status
    assert result.metrics["used_inodes"] == int(used) == files + 1  # + the root directory
    assert result.metrics["free_inodes"] == int(free)
    assert result.metrics["total_inodes"] == int(total) == 100
    assert math.ceil(result.metrics["used_percent"]) == int(percent.rstrip("%"))


@pytest.mark.real
def test_an_inode_message_reads_like_the_example_and_clears_after_cleanup(
        mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    check = make(InodeCheck, include=[str(point)])
    make_files(point, 54)

    assert only(check).message == f"{point} inodes 55.0% used (55 of 100) ≥ warning 50%"

    for path in point.iterdir():
        path.unlink()
    assert only(check).status is Status.OK


@pytest.mark.real
def test_a_tmpfs_without_an_inode_limit_is_not_applicable(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs", "size=1M,nr_inodes=0")  # tmpfs(5): 0 = unlimited

    result = only(make(InodeCheck, include=[str(point)]))

    assert result.status is Status.OK
    assert result.message == (f"{point} inodes not applicable: tmpfs has no fixed inode"
                              " count (statvfs f_files = 0)")
    assert result.metrics == {}


@pytest.mark.real
def test_reserved_blocks_are_excluded_as_df_does_on_a_real_ext4(mounter: Mounter) -> None:
    needs.command("mkfs.ext4", "e2fsprogs")
    image = mounter.base / "ext4.img"
    with image.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "20", "-N", "64", str(image)], check=True)
    point = mounter.mount("ext4", "-o", "loop", str(image))
    (point / "fill").write_bytes(bytes(5 * 1024 * 1024))
    os.sync()

    result = only(make(DiskCheck, include=[str(point)]))
    _, size, used, available, capacity, _ = df("-B1", str(point))

    assert result.metrics["used_bytes"] == int(used)
    assert result.metrics["available_bytes"] == int(available)
    assert math.ceil(result.metrics["used_percent"]) == int(capacity.rstrip("%"))
    # The reserve makes used/(used+avail) differ from used/size — the DESIGN pitfall.
    assert int(used) / int(size) * 100 < result.metrics["used_percent"] - 10


# -- read-only -----------------------------------------------------------------------------


@pytest.mark.real
def test_a_remount_read_only_after_a_read_write_run_is_critical(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    state: dict[str, Any] = {}
    check = make(DiskCheck, state=state, include=[str(point)])
    assert only(check).status is Status.OK

    mounter.remount(point, "ro")
    result = only(check)

    assert result.status is Status.CRITICAL
    assert result.message.startswith(
        f"{point} was remounted read-only (errors=remount-ro?); 0.0% used")
    assert json.loads(json.dumps(state)) == state  # the agent persists it as JSON


@pytest.mark.real
def test_a_remount_read_only_is_remembered_across_check_instances(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    state: dict[str, Any] = {}
    only(make(InodeCheck, state=state, include=[str(point)]))
    mounter.remount(point, "ro")

    result = only(make(InodeCheck, state=state, include=[str(point)]))

    assert result.status is Status.CRITICAL
    assert "was remounted read-only" in result.message


@pytest.mark.real
def test_a_filesystem_remounted_read_write_again_is_ok(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    check = make(DiskCheck, include=[str(point)])
    only(check)
    mounter.remount(point, "ro")
    assert only(check).status is Status.CRITICAL

    mounter.remount(point, "rw")

    assert only(check).status is Status.OK


@pytest.mark.real
def test_a_filesystem_read_only_from_the_start_is_ok(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs", "ro,size=1M,nr_inodes=100")

    result = only(make(DiskCheck, include=[str(point)]))

    assert result.status is Status.OK
    assert "mounted read-only" in result.message


@pytest.mark.real
def test_a_read_only_mount_that_fstab_says_is_read_write_is_critical(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs", "ro,size=1M,nr_inodes=100")
    fstab = mounter.base / "fstab"
    fstab.write_text(f"tmpfs {point} tmpfs defaults,size=1M 0 0\n")

    result = only(make(DiskCheck, include=[str(point)], fstab=str(fstab)))

    assert result.status is Status.CRITICAL
    assert "was remounted read-only (errors=remount-ro?)" in result.message


@pytest.mark.real
def test_a_mount_point_unmounted_between_runs_is_forgotten(mounter: Mounter) -> None:
    point = mounter.tmpfs("fs")
    state: dict[str, Any] = {}
    check = make(DiskCheck, state=state, include=[str(point)])
    only(check)
    mounter.unmount_all()
    assert only(check).status is Status.CRITICAL  # expected, not mounted
    mounter.tmpfs("fs", "ro,size=1M")

    assert only(check).status is Status.OK
    assert state == {"seen_read_write": []}


# -- concurrency ---------------------------------------------------------------------------


def test_disk_and_inode_checks_can_run_at_once_on_one_guard() -> None:
    context = CheckContext(clock=SystemClock())
    checks = [cls(cls.type_name, cls.Config(), timeout=30.0, context=context)
              for cls in (DiskCheck, InodeCheck) for _ in range(4)]
    results: list[list[Result]] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.execute()))
               for c in checks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert all(r.status is not Status.UNKNOWN for rs in results for r in rs)
