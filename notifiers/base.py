"""The contract every notification channel follows.

A notifier gets a fully rendered :class:`Alert` and either delivers it or
raises :class:`NotifierError`. Retries, backoff and fallback belong to the
agent's outbox, never to a notifier (DESIGN: "the outbox owns retries").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class NotifierError(Exception):
    """Delivery failed. ``permanent`` means retrying the same message cannot help;
    ``retry_after`` (seconds) is how long the peer asked us to wait, if it did."""

    def __init__(self, message: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Alert:
    """One notice about one incident, already rendered in the channel's language."""

    kind: str               # problem | change | recovery | flapping_start | flapping_stop
                            # | vanished | unrecorded
    notification_id: int
    incident_id: int
    dedup_key: str          # stable per (check, target): PagerDuty-style de-duplication
    host: str               # the agent that saw it
    check: str
    target: str
    status: str             # OK / WARNING / CRITICAL / UNKNOWN
    previous_status: str
    severity: str
    message: str
    detected_at: str        # ISO 8601, UTC
    at: str                 # when this transition was confirmed
    outage_seconds: float | None
    locale: str
    subject: str
    body: str
    flap_percent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class NotifierConfig(BaseModel):
    """Base for a channel's own options (frozen, unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Notifier(ABC):
    """One configured channel. Subclasses set ``type_name`` and ``Config``."""

    type_name: ClassVar[str]
    Config: ClassVar[type[NotifierConfig]] = NotifierConfig
    #: The channel tracks an alert's state (PagerDuty): tell it when a person
    #: acknowledges the incident, so it stops paging too.
    forwards_acknowledgement: ClassVar[bool] = False

    def __init__(self, name: str, config: NotifierConfig) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise :class:`NotifierError`."""

    def close(self) -> None:  # noqa: B027 — an optional hook, not an abstract method
        """Release connections; the default holds none."""
