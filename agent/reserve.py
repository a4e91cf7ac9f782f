"""An emergency reserve of disk space in the state directory.

The most common incident is a full disk — and the state directory usually sits
on it. Without room SQLite cannot record the incident or queue its notice. The
agent keeps a few megabytes allocated here and frees them the moment the store
reports it is full, so that alert can still be written and sent.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

RESERVE_BYTES = 8 * 2**20


class SpaceReserve:
    def __init__(self, state_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = state_dir / "kanshi.reserve"
        self.size = size

    def ensure(self) -> bool:
        """(Re)create the reserve when there is comfortably room; True if it exists."""
        if self.path.exists():
            return True
        try:
            if shutil.disk_usage(self.path.parent).free < 4 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("cannot keep a disk-space reserve in %s: %s", self.path.parent, exc)
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Free the reserve; True if there was one to free."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
