"""Run one check with a hard time limit, never two runs of it at once.

Python cannot kill a thread, so each run gets its own thread and the caller
waits at most ``timeout`` (plus a short grace so the check can report its own,
better-worded timeout first). A run that overstays becomes an UNKNOWN result
naming the setting to change; while its thread is still stuck, later runs of
the same check report that instead of piling up more stuck threads.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from checks.base import Check, Clock, Result, Status

logger = logging.getLogger(__name__)


def grace(timeout: float) -> float:
    """Extra wait past ``timeout`` before the runner declares a run hung."""
    return min(5.0, max(0.5, timeout * 0.1))


class CheckRunner:
    """Runs checks in their own threads and remembers the ones that hung."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._stuck: dict[str, tuple[threading.Thread, datetime]] = {}
        self._lock = threading.Lock()

    def run(self, check: Check, timeout: float) -> list[Result]:
        """Results of one run of ``check``; UNKNOWN if it hangs past ``timeout``."""
        started = self.clock.now()
        stuck = self._still_stuck(check.name)
        if stuck is not None:
            return [self._unknown(check, started, f"a previous run has hung since "
                                  f"{stuck:%Y-%m-%d %H:%M:%S} UTC and has not returned; "
                                  "not starting another")]
        box: list[Result] = []
        thread = threading.Thread(target=lambda: box.extend(check.execute()),
                                  name=f"check:{check.name}", daemon=True)
        thread.start()
        thread.join(timeout + grace(timeout))
        if thread.is_alive():
            with self._lock:
                self._stuck[check.name] = (thread, started)
            logger.warning("check %s did not finish within %g s", check.name, timeout)
            return [self._unknown(check, started, f"no answer within {timeout:g} s "
                                  f"(timeout of check '{check.name}'; raise it if this "
                                  "is expected)")]
        return box

    def _still_stuck(self, name: str) -> datetime | None:
        with self._lock:
            entry = self._stuck.get(name)
            if entry is None:
                return None
            if entry[0].is_alive():
                return entry[1]
            del self._stuck[name]
            return None

    def _unknown(self, check: Check, started: datetime, message: str) -> Result:
        duration = (self.clock.now() - started).total_seconds()
        return Result(Status.UNKNOWN, message).stamped(check.name, started, duration)
