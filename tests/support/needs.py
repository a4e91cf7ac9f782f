"""Skip helpers that say exactly what is missing."""

from __future__ import annotations

import os
import shutil

import pytest


def root() -> None:
    """Skip unless running as root (mounts, raw sockets, network namespaces)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, raw ICMP socket or ip netns); run ./test as root")


def command(name: str, package: str) -> str:
    """Path of ``name``, or skip naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs `{name}` (Debian package {package}); ./test installs it as root")
    return path
