"""systemd's notification protocol (sd_notify), with the standard library only.

With ``Type=notify`` systemd considers kanshi started only once it says
``READY=1`` — after the state lock is held and the store is open — so
``systemctl start kanshi`` fails visibly when the agent cannot start, and units
ordered after it wait for a working agent. With ``WatchdogSec=`` systemd
restarts an agent that stops sending ``WATCHDOG=1``: a wedged scheduler, or a
dead notification worker (the one fault a restart repairs).

The protocol (sd_notify(3)): one datagram of newline-separated ``KEY=VALUE``
lines to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a path, or ``@name``
for the abstract namespace). Outside systemd the variable is unset and every
call is a no-op. Sending never raises: a monitor must not die of its own
supervisor's absence.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Tells systemd about the agent's state; a no-op outside a notify unit."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog = _watchdog_seconds(env)
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1`` (half of ``WatchdogSec=``), or None."""
        return None if self._watchdog is None or not self.enabled else self._watchdog / 2

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one message; True if systemd got it (False outside systemd)."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as exc:
            if not self._failing:
                logger.warning("cannot notify systemd at $NOTIFY_SOCKET: %s "
                               "(logged once until it works again)", exc.strerror or exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("notifying systemd works again")
        self._failing = False
        return True


def _address(value: str) -> str | None:
    """The socket address: a path, or ``@name`` → the abstract name ``\\0name``."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:  # vsock: (systemd 253+, for VMs) is not spoken here
        logger.warning("NOTIFY_SOCKET=%s is not a path or an abstract socket; systemd "
                       "will not be told when kanshi is ready", value)
    return None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """``WatchdogSec=`` in seconds, if it is meant for this process (sd_watchdog_enabled)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
