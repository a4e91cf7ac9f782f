"""Where kanshi finds its default config."""

from __future__ import annotations

import os
from pathlib import Path

#: The embedded default shipped in the repository's ``config/`` folder.
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "kanshi.yaml"
SYSTEM_CONFIG = Path("/etc/kanshi/kanshi.yaml")


def default_config() -> Path:
    """``$KANSHI_CONFIG``, else the embedded default, else ``/etc/kanshi/kanshi.yaml``."""
    env = os.environ.get("KANSHI_CONFIG")
    if env:
        return Path(env)
    return REPO_CONFIG if REPO_CONFIG.is_file() else SYSTEM_CONFIG
