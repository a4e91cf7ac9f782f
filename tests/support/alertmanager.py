"""A real Prometheus Alertmanager on 127.0.0.1 (Debian package ``prometheus-alertmanager``).

::

    with AlertmanagerServer() as server:     # or the ``alertmanager_server`` fixture
        ...post to server.url...
        server.alerts()                      # GET /api/v2/alerts (active ones)

It runs from a temp dir with a route to a receiver that sends nothing, no
clustering (``--cluster.listen-address=``), and gets SIGTERM if pytest dies
(``setpriv --pdeathsig``). The fixture skips, naming the package, when the
binary is missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import needs
from tests.support.http_server import HOST, free_port
from tests.support.wait import wait_for

BINARY = "prometheus-alertmanager"
PACKAGE = "prometheus-alertmanager"
# One receiver without integrations: alerts are kept and shown, never sent anywhere.
CONFIG = """\
route:
  receiver: nowhere
  group_by: [dedup_key]
receivers:
  - name: nowhere
"""


class AlertmanagerServer:
    """One Alertmanager process: ``url`` (base URL), ``alerts()``, ``log_file``."""

    def __init__(self, binary: str = BINARY) -> None:
        self.binary = binary
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="kanshi-alertmanager-"))
        self.log_file = self.base / "alertmanager.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``, optionally filtered by label (``dedup_key="…"``)."""
        query = urllib.parse.urlencode(
            [("filter", f'{name}="{value}"') for name, value in filters.items()])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as answer:
            found: list[dict[str, Any]] = json.load(answer)
        return found

    def start(self) -> AlertmanagerServer:
        """Run on a free port; wait until ``/-/ready`` answers 200."""
        config = self.base / "alertmanager.yml"
        config.write_text(CONFIG)
        self.port = free_port()
        argv = ["setpriv", "--pdeathsig=TERM", "--", self.binary, f"--config.file={config}",
                f"--storage.path={self.base / 'data'}",
                f"--web.listen-address={HOST}:{self.port}", "--cluster.listen-address=",
                "--log.level=info"]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.base)
        wait_for(self._ready, timeout=30,
                 what=f"Alertmanager on port {self.port}; log: {self.log_file}")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"alertmanager exited ({self._process.returncode}):\n"
                                 f"{self.log_file.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> AlertmanagerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def running_alertmanager() -> AlertmanagerServer:
    """A started server, or skip naming the package that provides it."""
    binary = needs.command(BINARY, PACKAGE)
    needs.command("setpriv", "util-linux")
    server = AlertmanagerServer(binary)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


@pytest.fixture(scope="session")
def alertmanager_server() -> Iterator[AlertmanagerServer]:
    """One Alertmanager for the session (register ``tests.support.alertmanager`` in
    ``pytest_plugins`` to use it from any module)."""
    server = running_alertmanager()
    try:
        yield server
    finally:
        server.cleanup()
