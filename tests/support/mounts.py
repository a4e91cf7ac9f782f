"""Real filesystems mounted for a test (tmpfs, binds), always unmounted afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import needs


class Mounter:
    """Mounts real filesystems under ``base``; :meth:`unmount_all` undoes them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._points: list[Path] = []

    def tmpfs(self, name: str, options: str = "size=1M,nr_inodes=100") -> Path:
        return self.mount(name, "-t", "tmpfs", "-o", options, "tmpfs")

    def bind(self, source: Path, name: str) -> Path:
        return self.mount(name, "--bind", str(source))

    def mount(self, name: str, *args: str) -> Path:
        point = self.base / name
        point.mkdir(exist_ok=True)
        done = subprocess.run(["mount", *args, str(point)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")
        self._points.append(point)
        return point

    def remount(self, point: Path, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True,
                       capture_output=True)

    def unmount_all(self) -> None:
        for point in reversed(self._points):
            done = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if done.returncode != 0:  # still busy: detach now, the kernel frees it later
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        self._points.clear()


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    needs.root()
    mounts = Mounter(tmp_path)
    try:
        yield mounts
    finally:
        mounts.unmount_all()
