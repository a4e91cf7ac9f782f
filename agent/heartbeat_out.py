"""Heartbeat out: a dead man's switch, so a dead agent is noticed from outside.

A monitor that dies says nothing — and nothing is exactly what its customers
hear. So the agent pings a URL every ``interval`` while it is healthy; an
outside watcher (healthchecks.io, Cronitor, Dead Man's Snitch, an uptime
service) alerts when the pings stop. SPEC §2 (第36条) also asks the agent to know
its own downtime: the pings are the outside half of that record.

Healthy means more than "the process runs": a dead notification worker (notices
queue up and nobody hears them), checks running far behind their interval, or
a full disk under the store (nothing can be recorded) all stop the pings — or,
when ``fail_url`` / ``fail_suffix`` is set, flip them to the watcher's "failed"
endpoint with the reasons (healthchecks.io ``/fail``, Cronitor ``?state=fail``).

The URL is a bearer secret (a healthchecks.io UUID is the whole credential):
it is a ``SecretStr`` and never appears in a log line, not even in the text of
a requests exception (which quotes the URL), so failures are described by kind.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agent import __version__
from checks.types import Duration
from notifiers.http import install_log_redaction

if TYPE_CHECKING:
    from agent.service import Agent

logger = logging.getLogger(__name__)


def _http_url(url: SecretStr | None) -> SecretStr | None:
    if url is None:
        return None
    # The message must not quote the URL: it is the secret.
    try:
        parts = urlsplit(url.get_secret_value())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises on a non-numeric port
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("expected an http:// or https:// URL with a host")
    return url


class UnhealthyWhen(BaseModel):
    """``heartbeat_out.unhealthy_when`` — what stops the pings (or flips them to fail)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a notification worker thread has died, or the senders are stopped
    worker_dead: bool = True
    #: a check has not run for this many of its intervals (None: never)
    check_lag: float | None = Field(3.0, gt=0)
    #: the disk under the state directory is full (the store's reserve is spent)
    store_disk_full: bool = True


class HeartbeatOutSettings(BaseModel):
    """``heartbeat_out:`` — where and how often the agent says it is alive."""

    # Errors must not quote the input: the URL is the secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = True
    url: SecretStr
    interval: Duration = 60.0
    timeout: Duration = 10.0
    method: Literal["GET", "POST"] = "GET"
    #: pinged instead of ``url`` while unhealthy, with the reasons in a POST body
    fail_url: SecretStr | None = None
    #: or: appended to ``url``'s path while unhealthy (healthchecks.io: ``/fail``)
    fail_suffix: str | None = Field(None, min_length=1, max_length=100)
    unhealthy_when: UnhealthyWhen = UnhealthyWhen()

    @field_validator("url", "fail_url")
    @classmethod
    def _url_ok(cls, url: SecretStr | None) -> SecretStr | None:
        return _http_url(url)

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected a duration above 0")
        return value

    @model_validator(mode="after")
    def _one_fail_target(self) -> HeartbeatOutSettings:
        if self.fail_url is not None and self.fail_suffix is not None:
            raise ValueError("expected fail_url or fail_suffix, not both")
        if self.timeout >= self.interval:
            raise ValueError("expected timeout below interval (a hung watcher must not "
                             "delay the next ping)")
        return self

    def fail_target(self) -> str | None:
        """Where to ping while unhealthy; None: stay silent (the watcher alerts on silence)."""
        if self.fail_url is not None:
            return self.fail_url.get_secret_value()
        if self.fail_suffix is None:
            return None
        parts = urlsplit(self.url.get_secret_value())
        path = parts.path.rstrip("/") + "/" + self.fail_suffix.lstrip("/")
        return urlunsplit(parts._replace(path=path))

    def secret_values(self) -> set[str]:
        """What the redactor must mask: the URLs and their path/query (the token)."""
        found: set[str] = set()
        for url in (self.url, self.fail_url):
            if url is None:
                continue
            value = url.get_secret_value()
            parts = urlsplit(value)
            found.update({value, parts.password or ""})
            found.update(p for p in (parts.path, parts.query) if len(p.strip("/")) >= 8)
        return {s for s in found if s}


@dataclass(frozen=True)
class Health:
    """The agent's own verdict on itself: healthy when there is no reason not to be."""

    reasons: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def __str__(self) -> str:
        return "healthy" if self.healthy else "; ".join(self.reasons)


class HeartbeatSender:
    """Pings the watcher once per :meth:`beat` — the agent's scheduler drives the interval."""

    def __init__(self, settings: HeartbeatOutSettings, health: Callable[[], Health],
                 session: requests.Session | None = None) -> None:
        self.settings = settings
        self._health = health
        install_log_redaction()  # urllib3's DEBUG lines would show the path (the token)
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = f"kanshi/{__version__} heartbeat"
        self._was_healthy: bool | None = None
        self._delivering: bool | None = None
        #: counters and the last failure, for status pages and metrics
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None

    def beat(self) -> None:
        """Judge health, ping (or not); never raises, logs once per change of state."""
        try:
            health = self._judge()
            target = self._target(health)
            if target is not None:
                self._deliver(target, health)
        except Exception:  # a bug here must not take the scheduler task down
            logger.exception("heartbeat_out: the beat failed unexpectedly")

    def close(self) -> None:
        self._session.close()

    # -- health ------------------------------------------------------------------

    def _judge(self) -> Health:
        try:
            health = self._health()
        except Exception as exc:
            health = Health((f"the agent's health could not be read ({type(exc).__name__})",))
        if health.healthy != self._was_healthy:
            self._log_health(health)
            self._was_healthy = health.healthy
        return health

    def _log_health(self, health: Health) -> None:
        if health.healthy:
            if self._was_healthy is not None:
                logger.info("heartbeat_out: the agent is healthy again; pinging the watcher")
            return
        action = ("pinging the watcher's fail endpoint" if self.settings.fail_target()
                  else "not pinging the watcher until it recovers")
        logger.warning("heartbeat_out: the agent is unhealthy (%s); %s", health, action)

    def _target(self, health: Health) -> str | None:
        if health.healthy:
            return self.settings.url.get_secret_value()
        return self.settings.fail_target()

    # -- delivery ------------------------------------------------------------------

    def _deliver(self, url: str, health: Health) -> None:
        error = self._request(url, health)
        if error is None:
            self.sent += 1
        else:
            self.failed += 1
        self.last_error = error
        ok = error is None
        if ok == self._delivering:
            return
        if ok and self._delivering is not None:
            logger.info("heartbeat_out: pings reach the watcher again")
        elif not ok:
            logger.warning("heartbeat_out: the ping failed: %s; the watcher may soon report "
                           "this agent down (logged once until pings get through again)",
                           error)
        self._delivering = ok

    def _request(self, url: str, health: Health) -> str | None:
        """One ping; the failure described without the URL (it carries the token)."""
        method = "POST" if not health.healthy else self.settings.method
        body = None if health.healthy else f"kanshi unhealthy: {health}\n".encode()
        timeout = self.settings.timeout
        try:
            response = self._session.request(
                method, url, data=body, timeout=(timeout, timeout),
                headers={"Content-Type": "text/plain; charset=utf-8"} if body else None)
            response.close()
        except requests.Timeout:
            return f"no answer within {timeout:g} s (heartbeat_out.timeout)"
        except requests.exceptions.SSLError:
            return "TLS handshake or certificate verification failed"
        except requests.ConnectionError:
            return "could not connect (refused, unreachable or name not resolved)"
        except requests.RequestException as exc:
            return f"request failed ({type(exc).__name__})"
        if response.status_code >= 400:
            return f"the watcher answered HTTP {response.status_code}"
        return None


# -- the agent's health ------------------------------------------------------------


def agent_health(agent: Agent, when: UnhealthyWhen | None = None) -> Health:
    """What is wrong with a running agent, read from its parts; changes nothing."""
    when = when or UnhealthyWhen()
    reasons: list[str] = []
    if when.worker_dead and _workers_dead(agent):
        reasons.append("a notification worker is not running: notices are not being sent")
    if when.check_lag is not None:
        reasons.extend(_lagging(agent, when.check_lag))
    if when.store_disk_full and _store_disk_full(agent):
        reasons.append(f"the disk holding {agent.config.state_dir} is full")
    return Health(tuple(reasons))


def _workers_dead(agent: Agent) -> bool:
    # Dispatcher.alive is also True once stopped on purpose (shutdown); a live agent
    # whose senders have ended — crashed or stopped — sends nothing either way.
    threads = agent.dispatcher._threads
    return bool(threads) and not all(t.is_alive() for t in threads)


def _lagging(agent: Agent, intervals: float) -> list[str]:
    """Checks whose last run is more than ``intervals`` of their interval ago."""
    run = agent.store.runs.latest()
    if run is None:
        return []
    started = run.started_at.timestamp()
    last: dict[str, float] = {}
    for row in agent.store.checks.latest():
        last[row.check] = max(last.get(row.check, 0.0), row.at.timestamp())
    now = agent.clock.now().timestamp()
    spread = agent.config.root.scheduler.spread
    late = []
    for name, spec in agent.specs.items():
        ran = last.get(name, 0.0)
        # Before its first run in this process a check is due within min(interval, spread).
        since = ran if ran >= started else started + min(spec.interval, spread)
        if now - since > intervals * spec.interval + spec.timeout:
            late.append(f"check {name} has not run for {now - since:.0f} s "
                        f"(interval {spec.interval:g} s)")
    return late


def _store_disk_full(agent: Agent) -> bool:
    """The reserve is spent (released, or no room to recreate it) and space is short.
    Only the embedded SQLite store keeps a reserve; a shared store is on its server."""
    if agent.shared_store:
        return False
    reserve = agent.reserve
    if reserve.path.exists():
        return False
    try:
        return shutil.disk_usage(agent.config.state_dir).free < 4 * reserve.size
    except OSError:
        return True
