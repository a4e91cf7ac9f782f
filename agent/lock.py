"""One agent per state directory: an exclusive ``flock`` held while it runs.

Two agents on one store would each count confirmations (alerting twice as
fast), close each other's incidents and race for the same notices.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AlreadyRunning(RuntimeError):
    """Another live process holds the state directory."""


class StateLock:
    """``state_dir/kanshi.lock``, locked for the life of the agent (released by the
    kernel if the process dies, so a crash never leaves it stale)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "kanshi.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another kanshi agent (pid {holder}) is using "
                                 f"{self.path.parent}; stop it first or give this one "
                                 "its own agent.state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
