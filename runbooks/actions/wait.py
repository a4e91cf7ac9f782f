"""Waiting for the target to answer again: the verify steps of recovery levels."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import ClassVar

from pydantic import Field

from checks.types import Duration
from runbooks.actions.base import (
    Action,
    ActionContext,
    ActionError,
    ActionResult,
    Args,
    run_command,
)


class WaitPortArgs(Args):
    host: str
    port: int = Field(ge=1, le=65535)
    within: Duration = 60.0
    every: Duration = 1.0


class WaitPort(Action):
    """Until a TCP connect to host:port succeeds (SkyArch: "login port open")."""

    name: ClassVar[str] = "wait.port"
    Args = WaitPortArgs
    mutating = False
    resumable = True

    def run(self, args: WaitPortArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would wait up to {args.within:g} s for "
                                       f"{args.host}:{args.port} to accept connections")

        def attempt() -> str | None:
            try:
                with socket.create_connection((args.host, args.port),
                                              timeout=min(5.0, max(ctx.left(), 0.1))):
                    return None
            except OSError as exc:
                return exc.strerror or str(exc)

        waited = _poll(attempt, args.within, args.every, ctx, f"{args.host}:{args.port}")
        return ActionResult(False, f"{args.host}:{args.port} accepts connections "
                                   f"(after {waited:.1f} s)", {"waited_seconds": waited})


class WaitPingArgs(Args):
    host: str
    within: Duration = 300.0
    every: Duration = 5.0


class WaitPing(Action):
    """Until the host answers ICMP echo (the system ``ping``; SkyArch: "reachable")."""

    name: ClassVar[str] = "wait.ping"
    Args = WaitPingArgs
    mutating = False
    resumable = True

    def run(self, args: WaitPingArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would wait up to {args.within:g} s for {args.host} "
                                       "to answer ping")

        def attempt() -> str | None:
            done = run_command(["ping", "-n", "-c", "1", "-W", "1", args.host], ctx)
            return None if done.returncode == 0 else (done.stdout.strip().splitlines() or
                                                       ["no reply"])[-1]

        waited = _poll(attempt, args.within, args.every, ctx, args.host)
        return ActionResult(False, f"{args.host} answers ping (after {waited:.1f} s)",
                            {"waited_seconds": waited})


class WaitHttpArgs(Args):
    url: str = Field(pattern=r"^https?://")
    status: tuple[int, ...] = (200,)
    within: Duration = 120.0
    every: Duration = 2.0
    verify_tls: bool = True


class WaitHttp(Action):
    """Until the URL answers with one of the expected status codes."""

    name: ClassVar[str] = "wait.http"
    Args = WaitHttpArgs
    mutating = False
    resumable = True

    def run(self, args: WaitHttpArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would wait up to {args.within:g} s for {args.url} "
                                       f"to answer {list(args.status)}")
        import requests

        def attempt() -> str | None:
            try:
                response = requests.get(args.url, timeout=min(10.0, max(ctx.left(), 0.1)),
                                        verify=args.verify_tls, allow_redirects=False)
            except requests.RequestException as exc:
                return type(exc).__name__
            return None if response.status_code in args.status else \
                f"HTTP {response.status_code}"

        waited = _poll(attempt, args.within, args.every, ctx, args.url)
        return ActionResult(False, f"{args.url} answers (after {waited:.1f} s)",
                            {"waited_seconds": waited})


def _poll(attempt: Callable[[], str | None], within: float, every: float,
          ctx: ActionContext, what: str) -> float:
    """Call ``attempt`` until it returns None (success) or ``within`` / the deadline."""
    started = time.monotonic()
    last = "no attempt made"
    while True:
        ctx.check()
        problem = attempt()
        waited = time.monotonic() - started
        if problem is None:
            return waited
        last = problem
        ctx.log(f"{what}: {last} (waited {waited:.0f} s)")
        if waited + every > within or ctx.left() < every:
            raise ActionError(f"{what} did not answer within {within:g} s (last: {last})",
                              {"waited_seconds": waited})
        if ctx.cancelled.wait(every):
            raise ActionError("cancelled")
