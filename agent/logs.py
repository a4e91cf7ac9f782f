"""Logging for the agent and its tools: lines on stderr, secrets masked."""

from __future__ import annotations

import logging
import sys

from agent.secrets import RedactingFilter, Redactor


def setup_logging(level: str, redactor: Redactor, *, keep_existing: bool = False) -> None:
    """Log lines to stderr, secrets masked (``keep_existing``: only if nothing logs yet)."""
    root = logging.getLogger()
    if keep_existing and root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S%z"))
    handler.addFilter(RedactingFilter(redactor))
    root.handlers[:] = [handler]
    root.setLevel(level)
