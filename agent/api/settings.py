"""Settings of the HTTP API, the web page and ``/metrics`` (the ``api:`` config section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """The ``api:`` section.

    Every field is documented here once; ``config/example.yaml`` repeats it for users.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Serve the HTTP API, the web page and /metrics from the agent process."""

    listen: str = "127.0.0.1"
    """Address to bind. Loopback by default: put a TLS reverse proxy in front to
    reach it from elsewhere (the API speaks plain HTTP)."""

    port: int = Field(default=9731, ge=0, le=65535)
    """TCP port (0 = any free port, for tests)."""

    public_url: str | None = None
    """The URL people use to reach the API/web page (through a proxy), used in links
    (notices, the web page); default ``http://LISTEN:PORT``."""

    allow_anonymous_viewer: bool = False
    """Let requests without a token read as a viewer (a trusted network only);
    writes always need a token."""

    metrics_auth: bool = False
    """Require a token (any role) for ``/metrics``; Prometheus then sends it with
    ``authorization: {credentials: TOKEN}`` in its scrape config."""

    cookie_secure: bool = False
    """Mark the web page's login cookie ``Secure`` (set it when served over HTTPS)."""

    history_limit: int = Field(default=1000, ge=1, le=100_000)
    """The most result-history rows one API request returns (pages beyond with ``before``)."""
