"""Append notices to a JSON-lines file, one object per line, synced to disk."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from notifiers.base import Alert, Notifier, NotifierConfig, NotifierError


class FileNotifier(Notifier):
    """Each notice is one JSON line: the alert's fields plus ``written_at``.

    The file is opened per notice, so ``logrotate`` (move, then continue)
    works without a signal; ``fsync`` makes "delivered" mean "on disk".
    """

    type_name: ClassVar[str] = "file"

    class Config(NotifierConfig):
        path: Path

    config: Config

    def send(self, alert: Alert) -> None:
        line = json.dumps({**alert.to_dict(), "written_at": datetime.now(UTC).isoformat()},
                          ensure_ascii=False, sort_keys=True)
        path = self.config.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            # A full disk or a permission problem may clear up: retry later.
            raise NotifierError(f"cannot append to {path}: {exc.strerror or exc} "
                                "(check the path and free space)") from exc
