"""The ``process`` check: how many processes match a selector (NTT EC2 row "process").

Selectors combine (all given must match), as ``pgrep`` options do:

- ``process_name``: the process name, exactly (``pgrep -x NAME``). psutil gives the full
  name where the kernel's ``comm`` is cut at 15 characters, so
  ``systemd-journald`` matches here although ``pgrep -x`` finds nothing;
- ``cmdline``: a regular expression searched in the command line, arguments
  joined by spaces (``pgrep -f``); a process without one (a kernel thread) is
  matched on its name, as pgrep does;
- ``user``: a user name or numeric uid, compared with the *effective* uid
  (``pgrep -u``).

Like pgrep, the agent's own process is never counted. Unlike pgrep, zombies are
not counted: a zombie has exited and only waits for its parent to reap it.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Status, worst
from checks.types import expected_error

logger = logging.getLogger(__name__)

#: How many matching pids a message lists.
_PIDS_SHOWN = 5


class _Bound(BaseModel):
    """A warning/critical pair of process counts; a bare number is critical only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: int | None = Field(None, ge=0)
    critical: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise expected_error("a whole number of processes, 0 or more", value)
        return {"critical": value}


class Minimum(_Bound):
    """Fewest processes allowed: fewer than ``critical`` is CRITICAL."""

    @model_validator(mode="after")
    def _ordered(self) -> Minimum:
        w, c = self.warning, self.critical
        if w is not None and c is not None and w < c:
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) not below critical ({c}) for a minimum",
                {"w": w, "c": c})
        return self

    def judge(self, count: int) -> Status:
        if self.critical is not None and count < self.critical:
            return Status.CRITICAL
        if self.warning is not None and count < self.warning:
            return Status.WARNING
        return Status.OK


class Maximum(_Bound):
    """Most processes allowed: more than ``critical`` is CRITICAL."""

    @model_validator(mode="after")
    def _ordered(self) -> Maximum:
        w, c = self.warning, self.critical
        if w is not None and c is not None and w > c:
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) not above critical ({c}) for a maximum",
                {"w": w, "c": c})
        return self

    def judge(self, count: int) -> Status:
        if self.critical is not None and count > self.critical:
            return Status.CRITICAL
        if self.warning is not None and count > self.warning:
            return Status.WARNING
        return Status.OK


class ProcessConfig(CheckConfig):
    """Options of a ``type: process`` check (documented in config/example.yaml)."""

    #: ``name`` is every check's own name, hence ``process_name``.
    process_name: str | None = Field(None, min_length=1)
    cmdline: str | None = Field(None, min_length=1)
    user: str | None = Field(None, min_length=1)
    min: Minimum = Minimum(critical=1)
    max: Maximum = Maximum()

    @field_validator("cmdline")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise PydanticCustomError(
                    "kanshi", "expected a regular expression, got {got}: {why}",
                    {"got": f'"{value}"', "why": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _selected(self) -> ProcessConfig:
        if self.process_name is None and self.cmdline is None and self.user is None:
            raise PydanticCustomError(
                "kanshi", "expected {expected}",
                {"expected": "at least one of process_name, cmdline, user (which processes "
                             "to count)"})
        return self

    def describe(self) -> str:
        """The selector as a person reads it: ``process_name=nginx user=www-data``."""
        parts = []
        if self.process_name is not None:
            parts.append(f"process_name={self.process_name}")
        if self.cmdline is not None:
            parts.append(f"cmdline=/{self.cmdline}/")
        if self.user is not None:
            parts.append(f"user={self.user}")
        return " ".join(parts)


@dataclass(frozen=True)
class Selector:
    """A compiled :class:`ProcessConfig` selector."""

    name: str | None
    cmdline: re.Pattern[str] | None
    uid: int | None

    def matches(self, info: dict[str, Any]) -> bool:
        if self.name is not None and info.get("name") != self.name:
            return False
        if self.uid is not None:
            uids = info.get("uids")
            if uids is None or uids.effective != self.uid:
                return False
        if self.cmdline is not None:
            return self.cmdline.search(_command_line(info)) is not None
        return True


class ProcessCheck(Check):
    """Counts matching processes and judges the count against min/max."""

    type_name: ClassVar[str] = "process"
    config: ProcessConfig
    Config: ClassVar[type[ProcessConfig]] = ProcessConfig
    default_interval: ClassVar[float] = 60.0

    def run(self) -> Result:
        config = self.config
        uid = None
        if config.user is not None:
            uid = resolve_user(config.user)
            if uid is None:
                return Result(Status.UNKNOWN, f"no such user '{config.user}' on this host "
                              "(check the user option)")
        pattern = re.compile(config.cmdline) if config.cmdline else None
        selector = Selector(config.process_name, pattern, uid)
        return judge(matching_pids(selector), config)


def resolve_user(user: str) -> int | None:
    """The uid of a user name or numeric uid; ``None`` when no such user exists."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def matching_pids(selector: Selector) -> list[int]:
    """Pids of live processes (not zombies, not this one) that ``selector`` matches."""
    import psutil  # heavy-ish; only process checks need it

    own = os.getpid()
    pids = []
    for proc in psutil.process_iter(["name", "cmdline", "uids", "status"]):
        info = proc.info
        if proc.pid == own or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if selector.matches(info):
            pids.append(proc.pid)
    return sorted(pids)


def _command_line(info: dict[str, Any]) -> str:
    # pgrep -f matches the name when there is no command line (kernel threads).
    args = info.get("cmdline")
    return " ".join(args) if args else (info.get("name") or "")


def judge(pids: list[int], config: ProcessConfig) -> Result:
    """The result for the pids that matched."""
    count = len(pids)
    low, high = config.min.judge(count), config.max.judge(count)
    text = _matched(pids, config.describe())
    if low is not Status.OK:
        limit = config.min.critical if low is Status.CRITICAL else config.min.warning
        text += f": expected at least {limit} ({low.name.lower()})"
    elif high is not Status.OK:
        limit = config.max.critical if high is Status.CRITICAL else config.max.warning
        text += f": expected at most {limit} ({high.name.lower()})"
    return Result(worst([low, high]), text, metrics={"count": float(count)})


def _matched(pids: list[int], selector: str) -> str:
    if not pids:
        return f"no process matches {selector}"
    shown = ", ".join(str(p) for p in pids[:_PIDS_SHOWN])
    more = ", …" if len(pids) > _PIDS_SHOWN else ""
    noun = "process matches" if len(pids) == 1 else "processes match"
    return f"{len(pids)} {noun} {selector} (pid{'s' if len(pids) > 1 else ''} {shown}{more})"
