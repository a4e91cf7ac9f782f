"""The ``raid`` check on /proc/mdstat texts captured on real hosts.

This machine's kernel has no md driver, so no array can be built here: the
fixtures under ``fixtures/mdstat/`` are real outputs from public bug reports
(sources in ``fixtures/mdstat/SOURCES.md``). The check reads them through its
``path`` option exactly as it reads /proc/mdstat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

import checks
from agent.clock import SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, LocalResources, Result, Status
from checks.raid import RaidCheck, parse_mdstat

FIXTURES = Path(__file__).parent / "fixtures" / "mdstat"


def run(path: Path, **options: Any) -> list[Result]:
    config = RaidCheck.Config.model_validate({"path": str(path), **options})
    return RaidCheck("raid", config, timeout=5.0,
                     context=CheckContext(clock=SystemClock())).execute()


def by_array(name: str, **options: Any) -> dict[str, Result]:
    return {r.target: r for r in run(FIXTURES / name, **options)}


# -- verdicts per captured text ------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "expected"), [
    pytest.param("raid5-faulty-degraded.txt", {"md5": Status.CRITICAL, "md1": Status.OK},
                 id="raid5-degraded-with-faulty-member"),
    pytest.param("imsm-container-degraded.txt",
                 {"md125": Status.CRITICAL, "md126": Status.CRITICAL, "md127": Status.OK},
                 id="raid1-degraded-in-imsm-container"),
    pytest.param("raid10-degraded.txt", {"md127": Status.CRITICAL}, id="raid10-degraded"),
    pytest.param("raid1-recovery-2.4-kernel.txt", {"md0": Status.WARNING},
                 id="raid1-recovering-old-kernel"),
    pytest.param("raid6-recovery.txt", {"md0": Status.WARNING}, id="raid6-recovering"),
    pytest.param("raid6-reshape.txt", {"md0": Status.WARNING}, id="raid6-reshaping"),
    pytest.param("raid5-replace.txt", {"md0": Status.WARNING}, id="raid5-replacing-a-member"),
    pytest.param("raid1-resync.txt", {"md127": Status.WARNING}, id="raid1-resyncing"),
    pytest.param("raid1-inactive.txt", {"md127": Status.CRITICAL}, id="inactive"),
    pytest.param("raid1-failed-spare.txt", {"md1": Status.WARNING, "md0": Status.OK},
                 id="failed-member-still-listed"),
    pytest.param("raid1-check.txt", {"md2": Status.OK}, id="scrub-in-progress"),
    pytest.param("raid0-over-raid1.txt",
                 {"md2": Status.OK, "md0": Status.OK, "md1": Status.OK}, id="raid0-nested"),
    pytest.param("auto-read-only.txt", {"md0": Status.OK, "md1": Status.OK},
                 id="auto-read-only"),
])
def test_each_array_gets_one_result_with_the_right_status(
        fixture: str, expected: dict[str, Status]) -> None:
    results = run(FIXTURES / fixture)

    assert {r.target: r.status for r in results} == expected
    assert [r.target for r in results] == list(expected)  # in the kernel's order


def test_a_degraded_mirror_says_what_spec_section_1_asks_for() -> None:
    result = by_array("imsm-container-degraded.txt")["md125"]

    assert result.message == (
        "md125 (raid1): degraded, 1 of 2 members missing [_U]; no rebuild running — one "
        "disk of the mirror failed: schedule a vendor disk replacement in business hours")
    assert result.metrics["slots_missing"] == 1.0


def test_a_degraded_raid5_names_the_failed_member() -> None:
    result = by_array("raid5-faulty-degraded.txt")["md5"]

    assert "degraded, 1 of 4 members missing [UUU_]; failed: sdb1; no rebuild" \
        in result.message
    assert result.metrics["members_failed"] == 1.0
    assert result.metrics["slots_in_sync"] == 3.0


def test_a_rebuild_reports_progress_eta_and_speed() -> None:
    result = by_array("raid6-recovery.txt")["md0"]

    assert result.message == ("md0 (raid6): degraded, 2 of 6 members missing [UUUU__]; "
                              "recovery 19.6% done, ETA 23 h 40 min at 13.5 MiB/s")
    assert result.metrics["sync_percent"] == 19.6
    assert result.metrics["sync_remaining_seconds"] == pytest.approx(1420.1 * 60)
    assert result.metrics["sync_speed_bytes_per_second"] == 13810 * 1024


def test_a_replacement_copy_is_told_apart_from_a_rebuild() -> None:
    result = by_array("raid5-replace.txt")["md0"]

    assert result.message.startswith("md0 (raid5): copying onto replacement sdk1: "
                                     "recovery 1.4% done, ETA 26 h 41 min")
    assert result.metrics["members_spare"] == 1.0


def test_an_inactive_array_is_critical_and_says_where_to_look() -> None:
    result = by_array("raid1-inactive.txt")["md127"]

    assert "inactive — not running" in result.message
    assert "`mdadm --detail /dev/md127`" in result.message
    assert result.metrics["active"] == 0.0


def test_a_failed_member_left_after_a_spare_took_over_needs_removing() -> None:
    result = by_array("raid1-failed-spare.txt")["md1"]

    assert result.message == ("md1 (raid1): all slots up [UUUUU] but failed member sdh1 is "
                              "still listed: replace the disk and `mdadm /dev/md1 --remove "
                              "sdh1`")


def test_a_scrub_is_ok_and_shows_its_progress() -> None:
    result = by_array("raid1-check.txt")["md2"]

    assert result.message == "md2 (raid1): healthy [UU]; check 22.9% done, ETA 43 h 48 min " \
                             "at 18.6 MiB/s"


def test_an_imsm_container_is_not_mistaken_for_an_inactive_array() -> None:
    result = by_array("imsm-container-degraded.txt")["md127"]

    assert result.status is Status.OK
    assert "container for external metadata (external:imsm)" in result.message


def test_members_and_flags_are_parsed_as_the_kernel_prints_them() -> None:
    [array] = parse_mdstat((FIXTURES / "raid5-replace.txt").read_text())

    assert (array.name, array.level, array.metadata) == ("md0", "raid5", "1.2")
    assert [str(m) for m in array.members] == [
        "sdk1[6](R)", "sdf1[5](S)", "sdg1[4]", "sdc1[2]", "sde1[1]", "sdb1[0]"]
    assert (array.slots_total, array.slots_working, array.slot_map) == (4, 4, "UUUU")
    assert array.sync is not None
    assert (array.sync.action, array.sync.done_blocks, array.sync.total_blocks) == \
        ("recovery", 72694748, 4883572736)


# -- queued and beyond-redundancy states (texts built here, said so) -----------------------


def test_a_rebuild_queued_on_a_degraded_array_is_a_warning(tmp_path: Path) -> None:
    """Built from md.c's ``resync=DELAYED`` line: no capture of one was found."""
    mdstat = tmp_path / "mdstat"
    mdstat.write_text("md1 : active raid1 sdb2[2] sda2[0]\n"
                      "      1953382336 blocks super 1.2 [2/1] [U_]\n"
                      "        resync=DELAYED\n")

    [result] = run(mdstat)

    assert result.status is Status.WARNING
    assert result.message.endswith("resync queued (DELAYED)")


def test_a_raid5_missing_two_members_is_critical_even_while_recovering(tmp_path: Path) -> None:
    """The raid6 recovery capture relabelled raid5 (edited here, said so): 2 of 6 gone."""
    text = (FIXTURES / "raid6-recovery.txt").read_text().replace("raid6", "raid5")
    mdstat = tmp_path / "mdstat"
    mdstat.write_text(text)

    [result] = run(mdstat)

    assert result.status is Status.CRITICAL
    assert "more than raid5 survives (1)" in result.message


# -- no arrays, expected arrays, unreadable ------------------------------------------------


def test_a_host_without_md_arrays_is_ok() -> None:
    [result] = run(FIXTURES / "empty.txt")

    assert result.status is Status.OK
    assert result.message.startswith("no md arrays (none in ")


def test_a_missing_mdstat_means_no_md_driver_and_is_ok_unless_required(tmp_path: Path) -> None:
    absent = tmp_path / "mdstat"

    [ok] = run(absent)
    [required] = run(absent, required=True)

    assert ok.status is Status.OK
    assert ok.message == f"no md arrays ({absent} is absent: md driver not loaded)"
    assert required.status is Status.UNKNOWN
    assert "although required: true" in required.message


def test_this_machine_has_no_md_driver_and_the_default_path_is_ok() -> None:
    [result] = RaidCheck("raid", RaidCheck.Config(), timeout=5.0,
                         context=CheckContext(clock=SystemClock())).execute()

    assert result.status is Status.OK
    assert result.message.startswith("no md arrays")


def test_expected_arrays_are_reported_even_when_not_assembled() -> None:
    results = by_array("raid5-faulty-degraded.txt", arrays=["md1", "md9"])

    assert set(results) == {"md1", "md9"}
    assert results["md1"].status is Status.OK
    assert results["md9"].status is Status.CRITICAL
    assert results["md9"].message.startswith("md9 is not assembled: it is not in ")


@pytest.mark.parametrize("after_reboot", [
    pytest.param("empty.txt", id="mdstat-without-it"),
    pytest.param(None, id="md-driver-not-loaded"),
])
def test_an_array_seen_before_and_missing_now_is_critical_not_vanished(
        tmp_path: Path, after_reboot: str | None) -> None:
    mdstat = tmp_path / "mdstat"
    mdstat.write_text((FIXTURES / "raid1-failed-spare.txt").read_text())
    check = RaidCheck("raid", RaidCheck.Config(path=mdstat), timeout=5.0,
                      context=CheckContext(clock=SystemClock()))
    before = {r.target: r.status for r in check.execute()}
    if after_reboot is None:
        mdstat.unlink()
    else:
        mdstat.write_text((FIXTURES / after_reboot).read_text())

    after = {r.target: r for r in check.execute()}

    assert before == {"md1": Status.WARNING, "md0": Status.OK}
    assert set(after) == {"md0", "md1"}
    assert after["md1"].status is after["md0"].status is Status.CRITICAL
    assert after["md1"].message.startswith(f"md1 is not assembled (was seen before): it is "
                                           f"no longer in {mdstat}")
    assert check.context.state["seen"] == ["md0", "md1"]


def test_an_array_seen_before_is_judged_again_when_it_comes_back(tmp_path: Path) -> None:
    mdstat = tmp_path / "mdstat"
    check = RaidCheck("raid", RaidCheck.Config(path=mdstat), timeout=5.0,
                      context=CheckContext(clock=SystemClock(), state={"seen": ["md0"]}))
    mdstat.write_text((FIXTURES / "raid1-failed-spare.txt").read_text())

    results = {r.target: r.status for r in check.execute()}

    assert results == {"md1": Status.WARNING, "md0": Status.OK}


def test_an_unreadable_mdstat_is_unknown(tmp_path: Path) -> None:
    [result] = run(tmp_path)  # a directory: read fails with EISDIR

    assert result.status is Status.UNKNOWN
    assert result.message.startswith(f"cannot read {tmp_path}: ")


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"arrays": ["/dev/md0"]}, "expected an md array name such as md0",
                 id="device-path-not-name"),
    pytest.param({"required": "maybe"}, "Input should be a valid boolean", id="not-a-boolean"),
    pytest.param({"paths": "/proc/mdstat"}, "Extra inputs are not permitted", id="typo"),
])
def test_bad_config_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        RaidCheck.Config.model_validate(options)

    assert message in str(caught.value)


def test_the_loader_builds_it_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "raid", "checks.raid:RaidCheck")
    path = tmp_path / "kanshi.yaml"
    path.write_text(f"checks:\n  - name: md\n    type: raid\n"
                    f"    path: {FIXTURES / 'raid10-degraded.txt'}\n")

    [spec] = load_config(path, environ={}).checks
    [result] = build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()

    assert (spec.interval, result.target, result.status) == (600.0, "md127", Status.CRITICAL)
