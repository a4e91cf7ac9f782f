"""The ``service`` check: is a system service running (NTT EC2 row "service").

With systemd, each unit's state comes from ``systemctl show
--property=LoadState,ActiveState,SubState,Result UNIT`` (one call per unit,
argument lists, no shell): ``active`` is OK; ``activating``, ``deactivating``,
``reloading`` and ``maintenance`` are WARNING (it is changing state — if it stays
there, confirmation will tell); ``failed`` and ``inactive`` are CRITICAL with
systemd's ``Result`` (``exit-code``, ``timeout``, ``oom-kill`` …), and so is a unit
systemd does not know (``LoadState=not-found``). ``inactive_ok`` accepts
``inactive`` for oneshot jobs that are normally stopped (``failed`` stays CRITICAL).

Whether systemd runs is decided as ``sd_booted(3)`` does: ``/run/systemd/system``
exists. Without it every unit is UNKNOWN "systemd is not running on this host".

For other init systems ``status_command`` runs one command and judges its exit
code as the LSB ``status`` action defines it (LSB 5.0 Core, "Init Script
Actions"): 0 running; 1, 2, 3 not running; 4 unknown. Commands (``systemctl``
too) run through :func:`checks.plugin.run_command`: no shell, the minimal
environment plugins get (never the agent's, which holds the values behind the
config's secrets) with ``LC_ALL=C`` (messages quoted in English), in a process
group of their own that is killed whole — with any descendant that left it —
within the timeout.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, CheckContext, Result, Status
from checks.plugin import INHERITED, Completed, NotStarted, run_command
from checks.types import expected_error

logger = logging.getLogger(__name__)

#: sd_booted(3): "checks whether the directory /run/systemd/system/ exists".
SYSTEMD_RUN_DIR = Path("/run/systemd/system")
#: Unit names as systemd.unit(5) allows them (escapes included); never an option.
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result")
#: How much of a command's output a message quotes.
_QUOTE = 200

_CHANGING = {"activating", "deactivating", "reloading", "maintenance", "refreshing"}
#: LSB 5.0 "Init Script Actions", status action exit codes.
_LSB_STATUS = {
    1: "program is dead and /var/run pid file exists",
    2: "program is dead and /var/lock lock file exists",
    3: "program is not running",
    4: "program or service status is unknown",
}


class ServiceConfig(CheckConfig):
    """Options of a ``type: service`` check (documented in config/example.yaml)."""

    units: tuple[str, ...] = ()
    inactive_ok: bool = False
    systemctl: str = Field("systemctl", min_length=1)
    status_command: tuple[str, ...] | None = None

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: Any) -> Any:
        if isinstance(value, str):  # a lone "nginx" in YAML is one unit, not letters
            value = [value]
        if not isinstance(value, list | tuple):
            raise expected_error("a list of systemd unit names", value)
        for unit in value:
            if not isinstance(unit, str) or not _UNIT_NAME.match(unit) \
                    or unit.startswith("-"):
                raise expected_error("a systemd unit name such as nginx or nginx.service",
                                     unit)
        return value

    @field_validator("status_command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not value \
                or not all(isinstance(a, str) and a for a in value):
            raise expected_error('a command as a list, e.g. ["service", "nginx", "status"]',
                                 value)
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ServiceConfig:
        if bool(self.units) == (self.status_command is not None):
            raise PydanticCustomError(
                "kanshi", "expected {expected}",
                {"expected": "either units (systemd) or status_command, not both or neither"})
        return self


def environment() -> dict[str, str]:
    """What commands run with: the minimal environment plugins get, in the C locale.

    Not the agent's whole environment: that holds the values behind the config's
    ``${…}`` secrets, and a status script must only see what it needs.
    """
    inherited = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
    return {**inherited, "LC_ALL": "C", "SYSTEMD_PAGER": ""}


def _run(argv: Sequence[str], timeout: float) -> Completed:
    """``argv`` run by :func:`checks.plugin.run_command` (whole group killed at the
    timeout, within it); raise :class:`CommandFailed` if it cannot start."""
    try:
        return run_command(argv, timeout=timeout, env=environment())
    except NotStarted as exc:
        cause = exc.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
        raise CommandFailed(f"could not start {argv[0]}: {why}") from None


class CommandFailed(Exception):
    """The command could not be started."""


class CommandTimedOut(Exception):
    """The command did not end within its time and was killed."""


class ServiceCheck(Check):
    """State of systemd units, or of one service through ``status_command``."""

    type_name: ClassVar[str] = "service"
    config: ServiceConfig
    Config: ClassVar[type[ServiceConfig]] = ServiceConfig
    default_interval: ClassVar[float] = 60.0

    def __init__(self, name: str, config: CheckConfig, *, timeout: float,
                 context: CheckContext, systemd_dir: Path = SYSTEMD_RUN_DIR) -> None:
        super().__init__(name, config, timeout=timeout, context=context)
        self.systemd_dir = systemd_dir

    def run(self) -> list[Result]:
        config = self.config
        if config.status_command is not None:
            return [self._status_command(config.status_command)]
        if not self.systemd_dir.is_dir():
            text = (f"systemd is not running on this host ({self.systemd_dir} is absent); "
                    "use status_command for another init system")
            return [Result(Status.UNKNOWN, f"{unit}: {text}", unit) for unit in config.units]
        return self._units(config)

    def _units(self, config: ServiceConfig) -> list[Result]:
        """Each unit's state, asked one after the other within the check's timeout."""
        clock = self.context.clock
        deadline = clock.monotonic() + self.timeout
        results: list[Result] = []
        hung = False  # a systemd that did not answer for one unit will not for the next
        for unit in config.units:
            left = deadline - clock.monotonic()
            if hung or left <= 0:
                results.append(Result(Status.UNKNOWN, f"{unit}: not asked, the check's "
                                      f"timeout ({self.timeout:g} s) ran out on earlier "
                                      "units", unit))
                continue
            try:
                results.append(self._unit(config, unit, left))
            except CommandTimedOut:
                hung = True
                results.append(Result(Status.UNKNOWN, f"{unit}: systemctl did not answer "
                                      f"within the check's timeout ({self.timeout:g} s); "
                                      "raise timeout if systemd is only slow", unit))
        return results

    def _unit(self, config: ServiceConfig, unit: str, left: float) -> Result:
        """The unit's state; raise :class:`CommandTimedOut` if systemctl hung."""
        argv = [config.systemctl, "show", f"--property={','.join(_PROPERTIES)}", "--", unit]
        try:
            done = _run(argv, left)
        except CommandFailed as exc:
            return Result(Status.UNKNOWN, f"{unit}: {exc}", unit)
        if done.timed_out:
            raise CommandTimedOut
        if done.exit_code != 0:
            return Result(Status.UNKNOWN, f"{unit}: systemctl show failed (exit "
                          f"{done.exit_code}): {_said(done)}", unit)
        return judge_unit(unit, parse_show(done.stdout), config.inactive_ok)

    def _status_command(self, argv: tuple[str, ...]) -> Result:
        shown = " ".join(argv)
        try:
            done = _run(argv, self.timeout)
        except CommandFailed as exc:
            return Result(Status.UNKNOWN, f"`{shown}`: {exc}")
        if done.timed_out:
            return Result(Status.UNKNOWN, f"`{shown}` did not finish within the check's "
                          f"timeout ({self.timeout:g} s) and was killed")
        return judge_status_command(shown, done)


def parse_show(output: str) -> dict[str, str]:
    """``Key=Value`` lines of ``systemctl show`` as a mapping."""
    pairs = (line.partition("=") for line in output.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


def judge_unit(unit: str, props: dict[str, str], inactive_ok: bool = False) -> Result:
    """The result for one unit's ``systemctl show`` properties."""
    load, active = props.get("LoadState", ""), props.get("ActiveState", "")
    sub, result = props.get("SubState", ""), props.get("Result", "")
    state = f"{active} ({sub})" if sub else active
    metrics = {"active": 1.0 if active == "active" else 0.0}
    if load == "not-found":
        return Result(Status.CRITICAL, f"{unit} is not installed: systemd has no such unit "
                      "(LoadState=not-found; check the unit name)", unit, metrics)
    if active == "active":
        return Result(Status.OK, f"{unit} is {state}", unit, metrics)
    if active in _CHANGING:
        return Result(Status.WARNING, f"{unit} is {state}", unit, metrics)
    if active == "failed":
        return Result(Status.CRITICAL, f"{unit} has failed: {state}, result {result or '?'} "
                      f"(see `journalctl -u {unit}`)", unit, metrics)
    if active == "inactive":
        status = Status.OK if inactive_ok else Status.CRITICAL
        return Result(status, f"{unit} is not running: {state}", unit, metrics)
    return Result(Status.UNKNOWN, f"{unit}: unexpected state ActiveState={active or '(none)'} "
                  f"from systemctl show", unit, metrics)


def judge_status_command(shown: str, done: Completed) -> Result:
    """The result for a status command's exit code (LSB status action)."""
    assert done.exit_code is not None
    code, said = done.exit_code, _said(done)
    tail = f": {said}" if said else ""
    metrics = {"exit_code": float(code)}
    if code == 0:
        return Result(Status.OK, f"`{shown}` says running{tail}", metrics=metrics)
    meaning = _LSB_STATUS.get(code, "not running (exit code outside LSB's 0–4)")
    status = Status.UNKNOWN if code == 4 else Status.CRITICAL
    return Result(status, f"`{shown}` exited {code}, {meaning}{tail}", metrics=metrics)


def _said(done: Completed) -> str:
    """The first line the command printed: stdout's, else stderr's."""
    return _first_line(done.stdout) or _first_line(done.stderr)


def _first_line(output: str) -> str:
    for line in output.splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= _QUOTE else text[:_QUOTE] + "…"
    return ""
