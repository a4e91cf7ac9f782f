"""uvicorn in a daemon thread of the agent process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.api.settings import ApiSettings

if TYPE_CHECKING:
    from agent.api.app import Hook
    from agent.service import Agent

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """The API could not start (names the setting to change)."""


class ApiServer:
    """Serves :func:`agent.api.app.create_app` on ``settings.listen:settings.port``."""

    def __init__(self, agent: Agent, settings: ApiSettings, extra: Sequence[Hook] = (),
                 start_timeout: float = 10.0) -> None:
        self.agent = agent
        self.settings = settings
        self.extra = tuple(extra)
        self.start_timeout = start_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn  # only when the API is enabled

        from agent.api.app import create_app

        app = create_app(self.agent, self.settings, self.extra)
        config = uvicorn.Config(app, host=self.settings.listen, port=self.settings.port,
                                log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the agent owns signals
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        self._wait_started()
        logger.info("API listening on %s", self.url)

    def _wait_started(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if self._thread is None or not self._thread.is_alive():
                raise ApiError(f"the API could not listen on {self.settings.listen}:"
                               f"{self.settings.port} (in use? change api.listen / api.port)")
            if time.monotonic() > deadline:
                raise ApiError(f"the API did not start within {self.start_timeout:.0f}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the setting when that is 0)."""
        if self._server is not None and self._server.started:
            for server in self._server.servers:
                for sock in server.sockets:
                    return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def public_url(self) -> str:
        """Where people reach the API (``api.public_url``, else :attr:`url`)."""
        return (self.settings.public_url or self.url).rstrip("/")

    @property
    def url(self) -> str:
        """Where the server listens, e.g. ``http://127.0.0.1:9731``."""
        host = self.settings.listen
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"
