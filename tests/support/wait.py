"""Polling for things that happen in other threads or processes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "",
             every: float = 0.05) -> bool:
    """True once ``condition()`` is truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    if condition():
        return True
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
