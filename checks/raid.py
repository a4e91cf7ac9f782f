"""The ``raid`` check: Linux software RAID (md) arrays from ``/proc/mdstat`` (SPEC §1).

One result per array (``target`` = ``md0``). The format is the kernel's
``md_seq_show()`` and ``status_resync()`` (drivers/md/md.c)::

    md1 : active raid1 sdc1[2] sda1[0] sdb1[1](F)
          1953382336 blocks super 1.2 [2/1] [U_]
          [=>.....]  recovery =  6.5% (127124480/1953382336) finish=174.8min speed=174064K/sec

``[2/1]`` is raid disks / disks in sync and ``[U_]`` which slots are up. Member
flags: ``(F)`` faulty, ``(S)`` spare, ``(W)`` write-mostly, ``(R)`` replacement,
``(J)`` journal. The progress line names ``recovery`` (rebuilding onto a new or
spare disk), ``resync``, ``reshape`` or ``check`` (a scrub, e.g. Debian's monthly
``checkarray``); ``resync=DELAYED`` / ``resync=PENDING`` mean queued.

Judgement:

- degraded (slots missing) with no rebuild running or queued: CRITICAL — SPEC §1
  "one disk of a mirror failed → vendor disk replacement, scheduled in business
  hours", which the message says;
- degraded beyond what the level survives (raid4/5: 1, raid6: 2): CRITICAL
  whatever runs — the array has lost data or is about to stop;
- rebuilding (recovery, resync, reshape) or a rebuild queued on a degraded array:
  WARNING with progress and ETA — redundancy is not back yet;
- a faulty member still listed in an array whose slots are all up (a spare took
  over): WARNING — the dead disk still needs replacing;
- inactive (assembled incompletely, e.g. a disk missing at boot): CRITICAL;
- gone: listed by an earlier run (the names seen are kept in the check's state)
  but not now, e.g. a degraded array not assembled after a reboot: CRITICAL, so
  its incident is not closed as vanished; ``arrays`` ends the watch on purpose;
- a scrub (``check``) in progress: OK, progress in the message;
- IMSM/DDF containers (``super external:imsm``) are always "inactive" by design:
  OK, the arrays inside them are judged on their own lines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from checks.base import Check, CheckConfig, Result, Status
from checks.types import expected_error

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path("/proc/mdstat")

_ARRAY = re.compile(r"^(?P<name>[A-Za-z][\w.-]*)\s*:\s*(?P<rest>(?:in)?active\b.*)$")
_MEMBER = re.compile(r"^(?P<dev>\S+?)\[(?P<slot>\d+)\](?P<flags>(?:\([A-Z]\))*)$")
_SLOTS = re.compile(r"\[(?P<total>\d+)/(?P<working>\d+)\]\s*\[(?P<map>[U_]+)\]")
_SUPER = re.compile(r"\bsuper\s+(?P<super>\S+)")
_ACTIONS = "resync|recovery|reshape|check|repair"
_PROGRESS = re.compile(rf"\b(?P<action>{_ACTIONS})\s*=\s*(?P<percent>\d+(?:\.\d+)?)%")
_QUEUED = re.compile(rf"\b(?P<action>{_ACTIONS})\s*=\s*(?P<why>DELAYED|PENDING)")
_FINISH = re.compile(r"\bfinish\s*=\s*(?P<minutes>\d+(?:\.\d+)?)min")
_SPEED = re.compile(r"\bspeed\s*=\s*(?P<kib>\d+)K/sec")
_BLOCKS = re.compile(r"\((?P<done>\d+)/(?P<total>\d+)\)")

#: Members a level can lose and keep every block (md(4): raid4/5 one, raid6 two).
_SURVIVES = {"raid4": 1, "raid5": 1, "raid6": 2}
#: Actions that restore redundancy; a ``check`` only reads.
_REBUILDS = {"recovery", "resync", "reshape", "repair"}


class RaidConfig(CheckConfig):
    """Options of a ``type: raid`` check (documented in config/example.yaml)."""

    path: Path = DEFAULT_PATH
    arrays: tuple[str, ...] = ()
    required: bool = False

    @field_validator("arrays", mode="before")
    @classmethod
    def _arrays(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise expected_error("a list of md array names such as md0", value)
        for name in value:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][\w.-]*", name):
                raise expected_error("an md array name such as md0 (not /dev/md0)", name)
        return value


@dataclass(frozen=True)
class Member:
    """One component device: ``sda1[0](F)``."""

    device: str
    slot: int
    flags: frozenset[str] = frozenset()

    @property
    def faulty(self) -> bool:
        return "F" in self.flags

    @property
    def spare(self) -> bool:
        return "S" in self.flags and "F" not in self.flags

    def __str__(self) -> str:
        return f"{self.device}[{self.slot}]" + "".join(f"({f})" for f in sorted(self.flags))


@dataclass(frozen=True)
class Sync:
    """A resync/recovery/reshape/check in progress or queued."""

    action: str
    percent: float | None = None
    done_blocks: int | None = None
    total_blocks: int | None = None
    finish_minutes: float | None = None
    speed_kib: int | None = None
    queued: str | None = None  # DELAYED or PENDING

    @property
    def rebuilds(self) -> bool:
        return self.action in _REBUILDS


@dataclass
class Array:
    """One md array as /proc/mdstat shows it."""

    name: str
    active: bool
    mode: str | None = None  # "read-only" / "auto-read-only"
    level: str | None = None
    members: list[Member] = field(default_factory=list)
    metadata: str | None = None  # from "super 1.2", "super external:imsm"
    slots_total: int | None = None
    slots_working: int | None = None
    slot_map: str | None = None
    sync: Sync | None = None

    @property
    def container(self) -> bool:
        return self.metadata is not None and self.metadata.startswith("external:") \
            and "/" not in self.metadata

    @property
    def missing(self) -> int:
        if self.slots_total is None or self.slots_working is None:
            return 0
        return max(self.slots_total - self.slots_working, 0)


def parse_mdstat(text: str) -> list[Array]:
    """The arrays in a /proc/mdstat text, in the order the kernel lists them."""
    arrays: list[Array] = []
    for line in text.splitlines():
        match = _ARRAY.match(line)
        if match:
            arrays.append(_header(match.group("name"), match.group("rest").split()))
        elif arrays and line[:1].isspace() and line.strip():
            _detail(arrays[-1], line.strip())
        elif not line.strip() or line.startswith(("Personalities", "unused devices")):
            continue
        else:
            logger.debug("mdstat: line not understood: %r", line)
    return arrays


def _header(name: str, words: list[str]) -> Array:
    array = Array(name, active=words[0] == "active")
    for word in words[1:]:
        member = _MEMBER.match(word)
        if member:
            flags = frozenset(re.findall(r"\(([A-Z])\)", member.group("flags")))
            array.members.append(Member(member.group("dev"), int(member.group("slot")), flags))
        elif word.startswith("(") and word.endswith(")"):
            array.mode = word[1:-1]
        elif array.level is None:
            array.level = word
    return array


def _detail(array: Array, line: str) -> None:
    if (slots := _SLOTS.search(line)) is not None:
        array.slots_total, array.slots_working = int(slots["total"]), int(slots["working"])
        array.slot_map = slots["map"]
    if array.metadata is None and (sup := _SUPER.search(line)) is not None:
        array.metadata = sup["super"]
    if (queued := _QUEUED.search(line)) is not None:
        array.sync = Sync(queued["action"], queued=queued["why"])
    elif (progress := _PROGRESS.search(line)) is not None:
        array.sync = _progress(progress["action"], float(progress["percent"]), line)


def _progress(action: str, percent: float, line: str) -> Sync:
    blocks, finish, speed = _BLOCKS.search(line), _FINISH.search(line), _SPEED.search(line)
    return Sync(action, percent,
                done_blocks=int(blocks["done"]) if blocks else None,
                total_blocks=int(blocks["total"]) if blocks else None,
                finish_minutes=float(finish["minutes"]) if finish else None,
                speed_kib=int(speed["kib"]) if speed else None)


class RaidCheck(Check):
    """Judges every md array in /proc/mdstat (or only the ``arrays`` named)."""

    type_name: ClassVar[str] = "raid"
    config: RaidConfig
    Config: ClassVar[type[RaidConfig]] = RaidConfig
    default_interval: ClassVar[float] = 600.0

    def run(self) -> list[Result]:
        config = self.config
        try:
            text = config.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            return [Result(Status.UNKNOWN, f"cannot read {config.path}: {exc.strerror or exc}")]
        arrays = parse_mdstat(text) if text is not None else []
        seen = self._seen(arrays)
        if config.arrays:
            return _expected(arrays, config.arrays, config.path)
        # An array that was here and is gone did not heal: after a reboot a degraded
        # array may simply not be assembled, and its incident must not close as vanished.
        gone = [_gone(name, config.path) for name in seen if name not in
                {a.name for a in arrays}]
        if arrays or gone:
            return [*(judge(a) for a in arrays), *gone]
        return [_none(config, text is None)]

    def _seen(self, arrays: list[Array]) -> list[str]:
        """Arrays seen in earlier runs; those of this run are added to the state."""
        before = self.context.state.get("seen")
        seen = sorted({str(n) for n in before} if isinstance(before, list) else set())
        self.context.state["seen"] = sorted({*seen, *(a.name for a in arrays)})
        return seen


def _expected(arrays: list[Array], names: tuple[str, ...], path: Path) -> list[Result]:
    found = {a.name: a for a in arrays}
    return [judge(found[n]) if n in found else
            Result(Status.CRITICAL, f"{n} is not assembled: it is not in {path} "
                   "(disks missing at boot? try `mdadm --assemble --scan`)", n)
            for n in names]


def _gone(name: str, path: Path) -> Result:
    return Result(Status.CRITICAL, f"{name} is not assembled (was seen before): it is no "
                  f"longer in {path} (disks missing at boot? see `mdadm --examine --scan` "
                  f"and try `mdadm --assemble --scan`; if {name} was removed on purpose, "
                  "name the arrays to watch in `arrays`)", name, {"active": 0.0})


def _none(config: RaidConfig, absent: bool) -> Result:
    where = f"{config.path} is absent: md driver not loaded" if absent \
        else f"none in {config.path}"
    if config.required:
        return Result(Status.UNKNOWN, f"no md arrays ({where}) although required: true "
                      "says this host has software RAID")
    return Result(Status.OK, f"no md arrays ({where})", metrics={"arrays": 0.0})


def judge(array: Array) -> Result:
    """The result for one array."""
    status, text = _verdict(array)
    label = f"{array.name} ({array.level})" if array.level else array.name
    return Result(status, f"{label}: {text}", array.name, _metrics(array))


def _verdict(array: Array) -> tuple[Status, str]:
    if array.container:
        return Status.OK, (f"container for external metadata ({array.metadata}); "
                           "the arrays inside it are checked on their own")
    if not array.active:
        return Status.CRITICAL, ("inactive — not running, so its data is unavailable "
                                 "(assembled incompletely? members missing at boot?); see "
                                 f"`mdadm --detail /dev/{array.name}`")
    if array.missing:
        return _degraded(array)
    return _redundant(array)


def _degraded(array: Array) -> tuple[Status, str]:
    level, missing = array.level or "", array.missing
    text = f"degraded, {missing} of {array.slots_total} members missing [{array.slot_map}]"
    text += _failed(array)
    survives = _SURVIVES.get(level)
    if survives is not None and missing > survives:
        return Status.CRITICAL, (f"{text}; more than {level} survives ({survives}): data "
                                 "lost or about to be — restore from backup may be needed")
    if array.sync is not None and array.sync.rebuilds:
        return Status.WARNING, f"{text}; {_sync_text(array.sync)}"
    advice = ("one disk of the mirror failed: schedule a vendor disk replacement in "
              "business hours" if level == "raid1" else
              "schedule a vendor disk replacement in business hours")
    return Status.CRITICAL, f"{text}; no rebuild running — {advice}"


def _redundant(array: Array) -> tuple[Status, str]:
    sync = array.sync
    replacing = [m.device for m in array.members if "R" in m.flags]
    if sync is not None and sync.rebuilds and sync.queued is None and replacing:
        return Status.WARNING, (f"copying onto replacement {', '.join(replacing)}: "
                                f"{_sync_text(sync)}; the member it replaces is still in use")
    if sync is not None and sync.rebuilds and sync.queued is None:
        return Status.WARNING, f"{_sync_text(sync)}; redundancy not guaranteed until it ends"
    faulty = [m for m in array.members if m.faulty]
    if faulty:
        names = ", ".join(m.device for m in faulty)
        return Status.WARNING, (f"all slots up{_slots(array)} but failed member {names} is "
                                f"still listed: replace the disk and `mdadm /dev/{array.name} "
                                f"--remove {faulty[0].device}`")
    text = f"healthy{_slots(array)}"
    if sync is not None:
        text += f"; {_sync_text(sync)}"
    if array.mode:
        text += f"; {array.mode} (switches to read-write at the first write)" \
            if array.mode == "auto-read-only" else f"; {array.mode}"
    return Status.OK, text


def _failed(array: Array) -> str:
    faulty = [m.device for m in array.members if m.faulty]
    return f"; failed: {', '.join(faulty)}" if faulty else ""


def _slots(array: Array) -> str:
    return f" [{array.slot_map}]" if array.slot_map else ""


def _sync_text(sync: Sync) -> str:
    if sync.queued is not None:
        return f"{sync.action} queued ({sync.queued})"
    text = f"{sync.action} {sync.percent:g}% done"
    if sync.finish_minutes is not None:
        text += f", ETA {_duration(sync.finish_minutes * 60)}"
    if sync.speed_kib is not None:
        text += f" at {sync.speed_kib / 1024:.1f} MiB/s"
    return text


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def _metrics(array: Array) -> dict[str, float]:
    metrics = {
        "members": float(len(array.members)),
        "members_failed": float(sum(m.faulty for m in array.members)),
        "members_spare": float(sum(m.spare for m in array.members)),
        "active": 1.0 if array.active else 0.0,
    }
    if array.slots_total is not None and array.slots_working is not None:
        metrics["slots"] = float(array.slots_total)
        metrics["slots_in_sync"] = float(array.slots_working)
        metrics["slots_missing"] = float(array.missing)
    sync = array.sync
    if sync is not None and sync.percent is not None:
        metrics["sync_percent"] = sync.percent
        if sync.finish_minutes is not None:
            metrics["sync_remaining_seconds"] = sync.finish_minutes * 60
        if sync.speed_kib is not None:
            metrics["sync_speed_bytes_per_second"] = sync.speed_kib * 1024.0
    return metrics
