"""The agent's configuration models (pydantic), with the shipped defaults.

A check or notifier entry is validated in two parts: the fields every entry has
(:class:`CheckEntry`, :class:`NotifierEntry`) and the family's own ``Config``
model, looked up in the family registry by ``type`` — so only configured
families are imported.
"""

from __future__ import annotations

import socket
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agent.api.settings import ApiSettings
from agent.config.base import NAME_PATTERN, Locale, Model, Severity
from agent.config.policy_models import (
    BusinessHoursSettings,
    ClocksSettings,
    ContactSettings,
    EscalationChain,
    MaintenanceSettings,
    PlanSettings,
    SeverityTarget,
    default_severities,
)
from agent.heartbeat_out import HeartbeatOutSettings
from checks.aws.publish import PublishSettings
from checks.types import Duration


class AgentSettings(Model):
    name: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Path("var")
    locale: Locale = "en"
    timezone: str = "Asia/Tokyo"
    heartbeat: Duration = 30.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "kanshi", "expected an IANA time zone such as Asia/Tokyo, got \"{v}\"",
                {"v": value}) from None
        return value


class SchedulerSettings(Model):
    workers: int = Field(16, ge=1, le=1024)
    #: first runs are spread over min(spread, interval) so equal intervals don't fire together
    spread: Duration = 60.0


class StoreSettings(Model):
    history: Duration = 14 * 86400.0
    #: ``postgresql://user:password@host/db``: several agents share this store and the
    #: work (leases); unset = the embedded SQLite in ``agent.state_dir``, one agent.
    url: SecretStr | None = None
    #: A dead agent's checks move to the others within this period (shared store only).
    lease: Duration = Field(30.0, ge=1.0, le=3600.0)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise PydanticCustomError("kanshi", "expected a postgresql:// URL")
        return url


class FlappingSettings(Model):
    """Nagios-style flap detection over the last ``window`` results."""

    enabled: bool = True
    window: int = Field(21, ge=5, le=200)
    high: float = Field(50.0, gt=0, le=100)
    low: float = Field(25.0, ge=0, lt=100)

    @model_validator(mode="after")
    def _hysteresis(self) -> FlappingSettings:
        # low ≥ high would start and stop flapping on alternate results: a notice storm.
        if self.low >= self.high:
            raise PydanticCustomError("kanshi", "expected low ({low}) below high ({high})",
                                      {"low": f"{self.low:g}", "high": f"{self.high:g}"})
        return self


class CheckDefaults(Model):
    retry_interval: Duration = 60.0  # SPEC-free default; Nagios retry_interval style
    max_attempts: int = Field(3, ge=1, le=100)
    severity: Severity = "B"
    flapping: FlappingSettings = FlappingSettings()


class OutboxSettings(Model):
    retry_initial: Duration = 10.0
    retry_max: Duration = 600.0
    #: a notice still undelivered after this also goes to the channel's fallback,
    #: well inside the 30 min first-notice SLO (SPEC §4)
    fallback_after: Duration = 900.0
    give_up_after: Duration = 86400.0

    @model_validator(mode="after")
    def _ordered(self) -> OutboxSettings:
        if self.retry_initial > self.retry_max:
            raise PydanticCustomError("kanshi", "expected retry_initial not above retry_max")
        if self.fallback_after > self.give_up_after:
            raise PydanticCustomError("kanshi", "expected fallback_after not above "
                                                "give_up_after")
        return self


#: An IAM action name, e.g. ``ec2:CreateImage``.
IamAction = Annotated[str, Field(pattern=r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$")]


class RunbookSettings(Model):
    """Where runbooks come from and how they run."""

    directories: tuple[Path, ...] = ()   # customer procedures (NTT customization option)
    concurrency: int = Field(4, ge=1, le=64)
    #: outside business hours an automatic run waits this long for the emergency contact
    emergency_ack_timeout: Duration = 1800.0
    #: how service.* actions run: "{action}" and "{service}" are filled in per word
    service_manager: tuple[str, ...] = ("systemctl", "{action}", "{service}")
    #: operations on request start from this business day after the request (NTT 別紙5)
    earliest_business_days: int = Field(3, ge=0, le=30)
    #: ``service:Operation`` names the aws.call action may make; None = the shipped list
    aws_call_allow: tuple[IamAction, ...] | None = None


class RootConfig(Model):
    include: tuple[str, ...] = ()
    agent: AgentSettings = AgentSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    store: StoreSettings = StoreSettings()
    defaults: CheckDefaults = CheckDefaults()
    outbox: OutboxSettings = OutboxSettings()
    checks: tuple[dict[str, Any], ...] = ()
    notifiers: tuple[dict[str, Any], ...] = ()
    # The contract (agent/config/policy_models.py).
    plan: PlanSettings = PlanSettings()
    business_hours: BusinessHoursSettings = BusinessHoursSettings()
    clocks: ClocksSettings = ClocksSettings()
    severities: dict[Severity, SeverityTarget] = Field(default_factory=default_severities)
    contacts: tuple[ContactSettings, ...] = ()
    escalation: tuple[EscalationChain, ...] = ()
    maintenance: tuple[MaintenanceSettings, ...] = ()
    runbooks: RunbookSettings = RunbookSettings()
    #: Publish memory/swap/disk results to CloudWatch under the CloudWatch agent's names.
    cloudwatch_publish: PublishSettings | None = None
    #: The HTTP API, the web page and /metrics (agent/api, agent/web).
    api: ApiSettings = ApiSettings()
    #: A dead man's switch: ping a URL while healthy (agent/heartbeat_out.py).
    heartbeat_out: HeartbeatOutSettings | None = None


class RunbookRef(Model):
    """The runbook an incident of a check starts (``target``/``params`` are templates:
    ``{{ check }}``, ``{{ target }}`` — the incident's — and ``{{ host }}``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    target: str = "{{ host }}"
    params: dict[str, Any] = Field(default_factory=dict)


class CheckEntry(Model):
    """Fields every check has, whatever its type."""

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    enabled: bool = True
    description: str = ""
    interval: Duration | None = None
    timeout: Duration | None = None
    retry_interval: Duration | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)
    severity: Severity | None = None
    notify: list[str] | None = None
    flapping: FlappingSettings | None = None
    runbook: RunbookRef | None = None     # runs when an incident of this check opens


class NotifierEntry(Model):
    """Fields every notification channel has, whatever its type."""

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    enabled: bool = True
    locale: Locale | None = None
    fallback: str | None = None
    #: a notice delivered to a "customer" channel stops the first-notice clock (SPEC §4)
    audience: Literal["customer", "operators"] = "customer"

