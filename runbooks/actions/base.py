"""The contract of a runbook step's action (Ansible's get state → plan → apply).

An action declares its arguments (a pydantic model), reads the current state,
decides what to change, and changes it only when not a dry run. It returns
whether something changed, its outputs (for later steps) and a one-line
summary — in a dry run, of what it *would* do. It raises :class:`ActionError`
when it could not do its job. Blocking work must respect ``ctx.deadline`` and
``ctx.cancelled``; commands run from argument lists only (:func:`run_command`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ActionError(Exception):
    """The action failed; ``outputs`` keeps what it learnt on the way."""

    def __init__(self, message: str, outputs: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or {}


@dataclass(frozen=True)
class ActionResult:
    changed: bool
    summary: str
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionContext:
    """What an action may use; the engine makes one per step attempt."""

    target: str
    dry_run: bool
    deadline: float                                   # time.monotonic() limit
    cancelled: threading.Event = field(default_factory=threading.Event)
    log: Callable[[str], None] = lambda line: None    # progress for the run's live log
    resources: Mapping[str, Any] = field(default_factory=dict)  # aws sessions, notify, …

    def left(self) -> float:
        """Seconds until the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the run was cancelled or the step's time is up."""
        if self.cancelled.is_set():
            raise ActionError("cancelled")
        if self.left() <= 0:
            raise ActionError("the step's timeout was reached")


class Args(BaseModel):
    """Base for an action's arguments (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(ABC):
    name: ClassVar[str]
    Args: ClassVar[type[Args]] = Args
    #: changes the target (dry runs skip the change; outside hours it waits for the
    #: emergency contact)
    mutating: ClassVar[bool] = True
    #: safe to run again if a crash interrupted it
    resumable: ClassVar[bool] = False
    #: a person must say yes (the step needs an approval)
    asks: ClassVar[bool] = False

    @abstractmethod
    def run(self, args: Any, ctx: ActionContext) -> ActionResult:
        """Do (or, in a dry run, describe) the action."""


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run_command(argv: Sequence[str], ctx: ActionContext, *, limit: int = 64 * 1024,
                env: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` (never a shell) until done, the deadline or a cancel; kill it then."""
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, env=dict(env) if env else None)
    except OSError as exc:
        raise ActionError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    while True:
        try:
            out, err = process.communicate(timeout=min(0.2, max(ctx.left(), 0.01)))
            break
        except subprocess.TimeoutExpired:
            if ctx.cancelled.is_set() or ctx.left() <= 0:
                _kill(process)
                why = "cancelled" if ctx.cancelled.is_set() else "timed out"
                raise ActionError(f"{argv[0]} {why} and was killed") from None
    return Completed(tuple(argv), process.returncode, _text(out, limit), _text(err, limit))


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the whole session: children too
    process.communicate()


def _text(data: bytes, limit: int) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("… (truncated)" if len(data) > limit else "")
