"""The ``plugin`` check: run a Nagios- or Mackerel-compatible check plugin.

NTT East's EC2 row asks for "official check plugins" (SPEC §2): Mackerel's
check plugins follow the Nagios convention — mackerel-agent maps exit 0/1/2/3
to OK/WARNING/CRITICAL/UNKNOWN and anything else to UNKNOWN
(mackerel-agent ``checks/checker.go``, ``exitCodeToStatus``) — so one check
runs both them and the Debian ``monitoring-plugins``.

The plugin is run from an argument list, never through a shell, in its own
session and process group with stdin closed. On timeout the whole group (and
any descendant that left it) gets SIGTERM, then SIGKILL; whatever the plugin
leaves running in its group after it exits is killed too, so nothing outlives a
run. A failed start, a timeout, a signal or an exit code outside 0–3 is
UNKNOWN with the reason and the plugin's stderr. The first output line is the
status text, perfdata anywhere in the output becomes metrics in base units
(:mod:`checks.perfdata`), and the message is capped at ``max_output``
characters.

:func:`run_command` is shared with the ``metric_plugin`` check.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from checks.base import Check, CheckConfig, Result, Status
from checks.perfdata import PluginOutput, parse_output
from checks.types import expected_error

logger = logging.getLogger(__name__)

#: Seconds a plugin's children may hold its output pipes open after it exited.
LINGER = 1.0
#: Seconds to wait for the kernel to reap a SIGKILLed plugin (it may sit in an
#: uninterruptible wait, e.g. check_disk on a hung NFS mount).
KILL_WAIT = 0.5
#: Bytes of stdout kept for parsing a check plugin; the rest is read and dropped
#: so the plugin never blocks on a full pipe.
CHECK_STDOUT_LIMIT = 64 * 1024
STDERR_LIMIT = 8 * 1024
#: How much of stderr a message quotes.
STDERR_SHOWN = 512
TRUNCATED = "… (truncated)"


class CommandConfig(CheckConfig):
    """Options shared by the plugin checks: what to run and where."""

    command: tuple[str, ...]
    env: dict[str, str] = Field(default_factory=dict)
    #: Like ``env``, but masked wherever it could show (messages, logs, repr).
    secret_env: dict[str, SecretStr] = Field(default_factory=dict)
    cwd: Path | None = None
    #: What the result speaks of; default: the check's name.
    target: str = ""

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value.split()) != 1:
                raise expected_error("a list of arguments such as [/usr/lib/nagios/plugins/"
                                     "check_load, -w, 5,4,3] (never run through a shell)", value)
            value = [value.strip()]
        if not isinstance(value, list | tuple) or not value:
            raise expected_error("a list of arguments, the program first", value)
        args = [_argument(item) for item in value]
        if "/" in args[0] and not args[0].startswith("/"):
            raise expected_error("the program as an absolute path or a name found on PATH",
                                 args[0])
        return args

    @field_validator("env", "secret_env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise expected_error("a mapping of environment variable names to values", value)
        for name in value:
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                raise expected_error("an environment variable name without = or NUL", name)
        return {name: item if isinstance(item, SecretStr) else _argument(item)
                for name, item in value.items()}

    def environment(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """A minimal environment (PATH, locale, HOME, TZ…) with ``env``, ``secret_env``
        and ``overrides`` laid over it (an override of ``None`` removes the variable).

        Not the agent's whole environment: that holds the values behind the config's
        ``${…}`` secrets, and a plugin must only see what it is given.
        """
        merged = {k: v for k, v in os.environ.items()
                  if k in INHERITED or k.startswith("LC_")}
        merged.update(self.env)
        merged.update({k: v.get_secret_value() for k, v in self.secret_env.items()})
        for name, value in (overrides or {}).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged


#: Variables a plugin inherits from the agent; everything else must be configured.
INHERITED = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME",
                       "SHELL"})


def _argument(item: Any) -> str:
    # YAML reads `-p, 80` as a number: take it as written, but refuse true/false,
    # which YAML also makes of yes/no/on/off.
    if isinstance(item, bool) or not isinstance(item, str | int | float):
        raise expected_error("a string or a number", item)
    return item if isinstance(item, str) else str(item)


class PluginConfig(CommandConfig):
    """Options of a ``type: plugin`` check (documented in config/example.yaml)."""

    #: Characters of plugin text kept in the message.
    max_output: int = Field(4096, ge=256, le=CHECK_STDOUT_LIMIT)


# -- running a command ------------------------------------------------------------------


class NotStarted(Exception):
    """The command could not be started; the text says why and what to change."""


@dataclass(frozen=True)
class Completed:
    """What a run produced. ``exit_code`` is None when it was killed on timeout;
    negative when a signal ended it (the ``subprocess`` convention)."""

    exit_code: int | None
    stdout: str
    stderr: str
    stdout_dropped: int = 0

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def run_command(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, stdout_limit: int = CHECK_STDOUT_LIMIT) -> Completed:
    """Run ``argv`` for at most ``timeout`` seconds; raise :class:`NotStarted` if it
    cannot start. The process group is always gone when this returns."""
    started = time.monotonic()
    grace = min(1.0, timeout * 0.1)  # SIGTERM → SIGKILL, within the timeout
    proc = _start(argv, env, cwd)
    pipes = _Pipes(proc, stdout_limit)
    finished = False
    try:
        finished = pipes.drain(started + timeout - grace)
    finally:
        code = _end(proc, None if finished else grace)
    return Completed(code if finished else None, pipes.text(0), pipes.text(1),
                     pipes.dropped[0])


def _start(argv: Sequence[str], env: Mapping[str, str] | None,
           cwd: Path | None) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, bufsize=0,
                                start_new_session=True)
    except OSError as exc:
        raise NotStarted(start_failure(argv[0], exc, cwd)) from exc


def start_failure(program: str, exc: OSError, cwd: Path | None = None) -> str:
    """Why ``program`` did not start, worded so the reader knows what to change."""
    if cwd is not None and str(exc.filename) == str(cwd):
        return f"cannot start {program}: working directory {cwd} does not exist (fix `cwd`)"
    if isinstance(exc, FileNotFoundError):
        if os.path.exists(program):  # the #! interpreter is what is missing
            return (f"cannot start {program}: its interpreter (the #! line) was not found; "
                    "install it or fix the #! line")
        where = "" if "/" in program else " on PATH"
        return f"plugin {program} not found{where}: install it or fix `command`"
    if isinstance(exc, PermissionError):
        return (f"cannot start {program}: permission denied (not executable?); "
                f"chmod +x it or run it through its interpreter")
    if exc.errno == errno.ENOEXEC:
        return (f"cannot start {program}: not a program the system can run (exec format "
                "error: a script without a #! line?)")
    return f"cannot start {program}: {exc.strerror or exc}"


class _Pipes:
    """Reads stdout and stderr together, keeping the first bytes of each."""

    def __init__(self, proc: subprocess.Popen[bytes], stdout_limit: int) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.fds = [proc.stdout.fileno(), proc.stderr.fileno()]
        self.limits = [stdout_limit, STDERR_LIMIT]
        self.kept = [bytearray(), bytearray()]
        self.dropped = [0, 0]
        self.open = 2

    def drain(self, deadline: float) -> bool:
        """Read until the process exited and its pipes closed; False at ``deadline``."""
        with selectors.DefaultSelector() as selector:
            for index, fd in enumerate(self.fds):
                selector.register(fd, selectors.EVENT_READ, index)
            exited_at: float | None = None
            while True:
                now = time.monotonic()
                if exited_at is None and has_exited(self.proc.pid):
                    exited_at = now
                if exited_at is not None and (not self.open or now >= exited_at + LINGER):
                    return True  # a child still holding the pipes is killed with the group
                if now >= deadline:
                    return False
                # No event says "the process exited" while its pipes stay open: poll.
                wait = min(deadline - now, 0.05 if self.open == 0 or exited_at else 0.25)
                for key, _ in selector.select(wait):
                    self._read(key.data, selector)

    def _read(self, index: int, selector: selectors.BaseSelector) -> None:
        data = os.read(self.fds[index], 65536)
        if not data:
            selector.unregister(self.fds[index])
            self.open -= 1
            return
        room = self.limits[index] - len(self.kept[index])
        self.kept[index] += data[:max(room, 0)]
        self.dropped[index] += max(len(data) - max(room, 0), 0)

    def text(self, index: int) -> str:
        return self.kept[index].decode("utf-8", errors="replace")


def has_exited(pid: int) -> bool:
    """Has child ``pid`` exited? It is left unreaped, so its process group id stays
    reserved and a later ``killpg`` cannot hit a stranger that reused the number."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _end(proc: subprocess.Popen[bytes], grace: float | None) -> int:
    """Kill what is left of the process group and reap the plugin; ``grace`` set =
    it timed out: SIGTERM first, SIGKILL after ``grace`` seconds."""
    if grace is not None:
        _terminate(proc.pid, grace)
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        code = proc.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:
        logger.warning("plugin process %d survived SIGKILL (uninterruptible wait, e.g. a hung "
                       "NFS mount); it is reaped when it wakes", proc.pid)
        code = -signal.SIGKILL
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return code


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM the group and every descendant (some leave the group), then SIGKILL."""
    import psutil  # only on timeouts

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    _signal_group(pid, signal.SIGTERM)
    for child in descendants:
        _signal_process(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not has_exited(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    for child in descendants:
        _signal_process(child, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already empty
    except PermissionError:
        logger.warning("cannot signal process group %d (permission denied)", pgid)


def _signal_process(process: Any, sig: signal.Signals) -> None:
    import psutil

    # psutil checks that the pid still names the same process before signalling.
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)


# -- the check ----------------------------------------------------------------------------


class PluginCheck(Check):
    """One Nagios/Mackerel check plugin; its exit code is the status."""

    type_name: ClassVar[str] = "plugin"
    Config: ClassVar[type[CheckConfig]] = PluginConfig
    #: mackerel-agent runs check plugins every minute (checks/checker.go, Interval()).
    default_interval: ClassVar[float] = 60.0

    def run(self) -> Result:
        config: PluginConfig = self.config  # type: ignore[assignment]
        target = config.target or self.name
        try:
            done = run_command(config.command, timeout=self.timeout,
                               env=config.environment(), cwd=config.cwd)
        except NotStarted as exc:
            return Result(Status.UNKNOWN, self.context.scrub(str(exc)), target)
        status, message, metrics = self._judge(done, config)
        # Scrub before capping: a cut must not leave half a secret unmasked.
        message = cap(self.context.scrub(message), config.max_output)
        return Result(status, message, target, metrics)

    def _judge(self, done: Completed,
               config: PluginConfig) -> tuple[Status, str, dict[str, float]]:
        program = config.command[0]
        output = parse_output(done.stdout)
        if output.unreadable:
            logger.warning("check %s: %s printed perfdata not in the Nagios format, "
                           "ignored: %s", self.name, program, list(output.unreadable))
        if done.timed_out:
            text = (f"{program} did not finish within the check's timeout ({self.timeout:g} s) "
                    "and was killed with its child processes; raise the check's `timeout` "
                    "or lower the plugin's own time limit")
            return Status.UNKNOWN, _with_output(text, output, done), {}
        code = done.exit_code
        assert code is not None
        if code < 0:
            text = f"{program} was killed by {describe_signal(-code)}"
            return Status.UNKNOWN, _with_output(text, output, done), {}
        if code > 3:
            text = (f"{program} exited with code {code}, which is not a plugin status "
                    "(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
            return Status.UNKNOWN, _with_output(text, output, done), output.metrics()
        status = Status(code)
        return status, _plugin_text(status, program, output, done), output.metrics()


def _plugin_text(status: Status, program: str, output: PluginOutput, done: Completed) -> str:
    text = _full_text(output) or f"{program} printed nothing (exit {status.value}, {status.name})"
    if done.stdout_dropped:
        text += TRUNCATED
    if status is not Status.OK:
        text += stderr_excerpt(done.stderr)
    return text


def _with_output(reason: str, output: PluginOutput, done: Completed) -> str:
    full = _full_text(output)
    return reason + (f"; output: {full}" if full else "") + stderr_excerpt(done.stderr)


def _full_text(output: PluginOutput) -> str:
    return "\n".join([output.text, *output.long_text]).strip()


def stderr_excerpt(stderr: str) -> str:
    """``"; stderr: …"`` on one line and capped, or "" when stderr is empty."""
    text = " ".join(stderr.split())
    if not text:
        return ""
    return f"; stderr: {cap(text, STDERR_SHOWN)}"


def describe_signal(number: int) -> str:
    """``signal 11 (SIGSEGV)``."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[:max(limit - len(TRUNCATED), 0)] + TRUNCATED
