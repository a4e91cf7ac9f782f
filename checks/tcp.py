"""A plain TCP connect to one endpoint (SPEC §1 service ports, every 10 min).

One check watches one ``host:port`` (the result's ``target``). It tells
"nothing listens" (refused) and "no answer" (timed out) from "accepts"; whether
the program behind the port still works takes a protocol check (``http``,
``smtp``, ``ftp``, ``pop3``, ``imap``): a hung server still completes the TCP
handshake, because the kernel does it.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from checks.base import Check, CheckConfig, Result, Status
from checks.dialogue import Dialogue, Failure, Host, Port, failed, label, seconds
from checks.types import DurationThresholds

logger = logging.getLogger(__name__)


class TcpConfig(CheckConfig):
    """Options of a ``type: tcp`` check (documented in config/example.yaml)."""

    host: Host
    port: Port
    # Linux resends a SYN that got no answer after 1 s (RFC 6298 §2.1 initial RTO), so
    # a connect of 1 s or more means a lost packet or an overflowing accept queue.
    connect_time: DurationThresholds = DurationThresholds(warning=1.0)


class TcpCheck(Check):
    """Connect, measure how long it took, hang up."""

    type_name: ClassVar[str] = "tcp"
    Config: ClassVar[type[CheckConfig]] = TcpConfig
    default_interval: ClassVar[float] = 600.0  # SPEC §1: service ports every 10 min
    default_timeout: ClassVar[float] = 10.0    # monitoring-plugins check_tcp

    def run(self) -> Result:
        config: TcpConfig = self.config  # type: ignore[assignment]
        target = label(config.host, config.port)
        talk = Dialogue(config.host, config.port, timeout=self.timeout)
        try:
            talk.connect()
        except Failure as failure:
            return failed(target, "TCP", failure, None)
        finally:
            talk.close()
        took = talk.connect_seconds or 0.0
        status = config.connect_time.judge(took)
        text = f"{target} accepts TCP connections in {seconds(took)}"
        if status.is_problem:
            level = config.connect_time.critical if status is Status.CRITICAL \
                else config.connect_time.warning
            text = (f"{target} accepts TCP connections slowly: in {seconds(took)} "
                    f"({status.name.lower()} at {seconds(level or 0.0)}); a connect of a "
                    "second or more means a lost SYN was resent: packet loss on the way, "
                    "or the server's accept queue overflowing")
        return Result(status, text, target, {"connect_seconds": took})
