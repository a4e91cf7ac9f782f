"""Actions on the host the agent runs on: commands, services, reboot, fsck, disk use."""

from __future__ import annotations

import heapq
import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from runbooks.actions.base import (
    Action,
    ActionContext,
    ActionError,
    ActionResult,
    Args,
    run_command,
)

#: ``service_manager`` default: systemd. SysV style: ["service", "{service}", "{action}"].
SYSTEMCTL = ("systemctl", "{action}", "{service}")


class RunCommandArgs(Args):
    argv: tuple[str, ...] = Field(min_length=1)
    expect_exit: tuple[int, ...] = (0,)
    changes: bool = True                # False: a read-only command (runs in dry runs too)
    env: dict[str, str] = Field(default_factory=dict)


class RunCommand(Action):
    """Run a program from an argument list (never a shell)."""

    name: ClassVar[str] = "command.run"
    Args = RunCommandArgs

    def run(self, args: RunCommandArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run and args.changes:
            return ActionResult(False, f"would run {list(args.argv)}")
        env = {**os.environ, **args.env} if args.env else None
        done = run_command(args.argv, ctx, env=env)
        outputs = {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        if done.returncode not in args.expect_exit:
            raise ActionError(f"{args.argv[0]} exited {done.returncode}: "
                              f"{(done.stderr or done.stdout).strip()[:500]}", outputs)
        return ActionResult(args.changes, f"ran {args.argv[0]} (exit {done.returncode})",
                            outputs)


class ServiceArgs(Args):
    service: str = Field(min_length=1)
    manager: tuple[str, ...] | None = None   # e.g. ["service", "{service}", "{action}"]


def _service_argv(args: ServiceArgs, ctx: ActionContext, action: str) -> list[str]:
    template = args.manager or tuple(ctx.resources.get("service_manager") or SYSTEMCTL)
    # Each word is substituted on its own: a name with shell metacharacters stays one
    # literal argument.
    return [word.replace("{action}", action).replace("{service}", args.service)
            for word in template]


class _Service(Action):
    verb: ClassVar[str]
    done: ClassVar[str]

    def run(self, args: ServiceArgs, ctx: ActionContext) -> ActionResult:
        argv = _service_argv(args, ctx, self.verb)
        if ctx.dry_run:
            return ActionResult(False, f"would {self.verb} {args.service}: {argv}")
        done = run_command(argv, ctx)
        outputs = {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        if done.returncode != 0:
            raise ActionError(f"{self.verb} {args.service} failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[:500]}", outputs)
        return ActionResult(True, f"{self.done} {args.service}", outputs)


class ServiceStart(_Service):
    name: ClassVar[str] = "service.start"
    Args = ServiceArgs
    verb, done = "start", "started"
    resumable = True   # starting a started service changes nothing


class ServiceStop(_Service):
    name: ClassVar[str] = "service.stop"
    Args = ServiceArgs
    verb, done = "stop", "stopped"
    resumable = True


class ServiceRestart(_Service):
    name: ClassVar[str] = "service.restart"
    Args = ServiceArgs
    verb, done = "restart", "restarted"


class ServiceStatus(Action):
    """Is the service running? (exit 0 of ``status``; never changes anything)."""

    name: ClassVar[str] = "service.status"
    Args = ServiceArgs
    mutating = False
    resumable = True

    def run(self, args: ServiceArgs, ctx: ActionContext) -> ActionResult:
        done = run_command(_service_argv(args, ctx, "status"), ctx)
        running = done.returncode == 0
        return ActionResult(False, f"{args.service} is {'running' if running else 'not running'}",
                            {"running": running, "exit_code": done.returncode,
                             "stdout": done.stdout})


class RebootArgs(Args):
    command: tuple[str, ...] = ("systemctl", "reboot")


class Reboot(Action):
    """Reboot the host the agent runs on (level 1 of the server-failure response)."""

    name: ClassVar[str] = "host.reboot"
    Args = RebootArgs

    def run(self, args: RebootArgs, ctx: ActionContext) -> ActionResult:
        if ctx.dry_run:
            return ActionResult(False, f"would reboot {ctx.target}: {list(args.command)}")
        done = run_command(args.command, ctx)
        if done.returncode != 0:
            raise ActionError(f"reboot refused (exit {done.returncode}): "
                              f"{done.stderr.strip()[:300]}")
        return ActionResult(True, f"reboot of {ctx.target} requested")


class FsckArgs(Args):
    method: str = Field("forcefsck", pattern=r"^(forcefsck|tune2fs)$")
    device: str | None = None           # tune2fs: the ext2/3/4 device to check at boot
    root: str = "/"                     # forcefsck: where the marker file goes


class ScheduleFsck(Action):
    """Have the next boot check the file systems (level 2).

    ``forcefsck`` creates ``/forcefsck`` (honoured by sysvinit and systemd-fsck);
    ``tune2fs`` sets the device's mount count past its maximum so e2fsck runs at
    the next mount (``tune2fs -C 65535``), for systemd versions that ignore the file.
    """

    name: ClassVar[str] = "host.schedule_fsck"
    Args = FsckArgs
    resumable = True

    def run(self, args: FsckArgs, ctx: ActionContext) -> ActionResult:
        if args.method == "tune2fs":
            if not args.device:
                raise ActionError("tune2fs needs the device (e.g. /dev/sda1)")
            argv = ["tune2fs", "-C", "65535", args.device]
            if ctx.dry_run:
                return ActionResult(False, f"would run {argv}")
            done = run_command(argv, ctx)
            if done.returncode != 0:
                raise ActionError(f"tune2fs failed: {done.stderr.strip()[:300]}")
            return ActionResult(True, f"{args.device} will be checked at the next boot")
        marker = Path(args.root) / "forcefsck"
        if ctx.dry_run:
            return ActionResult(False, f"would create {marker}")
        changed = not marker.exists()
        marker.touch()
        return ActionResult(changed, f"created {marker}: file systems are checked at boot")


class LargestArgs(Args):
    path: str = "/"
    count: int = Field(10, ge=1, le=100)
    one_file_system: bool = True


class LargestDirectories(Action):
    """The largest directories under ``path`` (like ``du -x | sort -n | tail``), bounded
    by the step's deadline: the answer a person wants first when a disk fills up."""

    name: ClassVar[str] = "host.largest_directories"
    Args = LargestArgs
    mutating = False
    resumable = True

    def run(self, args: LargestArgs, ctx: ActionContext) -> ActionResult:
        sizes, complete = _directory_sizes(Path(args.path), args.one_file_system, ctx)
        top = heapq.nlargest(args.count, sizes.items(), key=lambda kv: kv[1])
        lines = [f"{_size(size)}  {path}" for path, size in top]
        note = "" if complete else " (walk stopped at the deadline: partial)"
        return ActionResult(False, f"largest under {args.path}{note}: " + "; ".join(lines[:3]),
                            {"largest": [{"path": p, "bytes": s} for p, s in top],
                             "complete": complete})


def _directory_sizes(root: Path, one_fs: bool, ctx: ActionContext) -> tuple[dict[str, int],
                                                                            bool]:
    """Bytes under each directory (children included), stopping at the deadline."""
    device = root.stat().st_dev
    own: dict[str, int] = {}
    stack = [root]
    complete = True
    while stack:
        if ctx.left() <= 0.5 or ctx.cancelled.is_set():
            complete = False
            break
        folder = stack.pop()
        own[str(folder)] = _scan(folder, device if one_fs else None, stack)
    return _roll_up(own), complete


def _scan(folder: Path, device: int | None, stack: list[Path]) -> int:
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if device is None or st.st_dev == device:
                        stack.append(Path(entry.path))
                else:
                    total += st.st_blocks * 512
    except OSError:
        pass
    return total


def _roll_up(own: dict[str, int]) -> dict[str, int]:
    totals = dict(own)
    for path in sorted(own, key=lambda p: p.count("/"), reverse=True):
        parent = str(Path(path).parent)
        if parent in totals and parent != path:
            totals[parent] += totals[path]
    return totals


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover
