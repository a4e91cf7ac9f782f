"""Host metrics to CloudWatch, under the CloudWatch agent's names (optional).

SPEC §2's EC2 row asks for memory, disk and swap — figures only the machine
itself knows. Where the CloudWatch agent is not installed, kanshi's host agent
publishes its own ``memory`` and ``disk`` check results as custom metrics with
the names and dimensions the CloudWatch agent uses by default (``CWAgent``
namespace; ``mem_used_percent``, ``swap_used_percent`` with ``InstanceId``;
``disk_used_percent`` with ``InstanceId`` and ``path``), so the catalogue's
``cwagent`` items and CloudWatch alarms read them either way.

PutMetricData takes up to 1,000 metrics per request (CloudWatch API reference);
results are sent in such batches. Each published metric is a custom metric
(about $0.30 a month each, see checks/aws/cost.py). Publishing never raises
into the agent: a failure is logged with its reason and kept in
:attr:`CloudWatchPublisher.last_error`.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from checks.aws.session import AccountSession, AwsAccount, AwsError, call
from checks.base import Result
from checks.types import Duration

logger = logging.getLogger(__name__)

#: PutMetricData's limit of metrics per request (CloudWatch API reference, 2023-).
MAX_PER_CALL = 1000
#: The instance metadata service (IMDSv2), for the instance id and region.
IMDS = "http://169.254.169.254"


class PublishSettings(BaseModel):
    """``cloudwatch_publish:`` — where and as what host metrics are published."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    region: str | None = None
    instance_id: str | None = Field(None, pattern=r"^i-[0-9a-f]{8,17}$")
    namespace: str = Field("CWAgent", min_length=1, max_length=255)
    dimensions: dict[str, str] = Field(default_factory=dict)
    role_arn: str | None = None
    external_id: SecretStr | None = None
    session_name: str = "kanshi-publish"
    storage_resolution: int = Field(60, ge=1, le=60)
    timeout: Duration = 10.0
    imds_endpoint: str = IMDS


def metric_data(results: Iterable[Result], instance_id: str,
                extra: dict[str, str]) -> Iterator[dict[str, Any]]:
    """CWAgent-named metrics from kanshi's memory and disk check results."""
    base = [{"Name": "InstanceId", "Value": instance_id}] + [
        {"Name": k, "Value": v} for k, v in sorted(extra.items())]
    for result in results:
        name, dims = _cwagent_name(result)
        if name is None:
            continue
        at = result.at or datetime.now(UTC)
        yield {"MetricName": name, "Dimensions": base + dims, "Timestamp": at,
               "Value": float(result.metrics["used_percent"]), "Unit": "Percent"}


def _cwagent_name(result: Result) -> tuple[str | None, list[dict[str, str]]]:
    """The CloudWatch agent's name for a result (memory, swap, disk), else None."""
    metrics = result.metrics
    if "used_percent" not in metrics:
        return None, []
    if result.target == "memory":
        return "mem_used_percent", []
    if result.target == "swap":
        return "swap_used_percent", []
    if result.target.startswith("/") and "size_bytes" in metrics:  # disk, not inode
        return "disk_used_percent", [{"Name": "path", "Value": result.target}]
    return None, []


class CloudWatchPublisher:
    """Publishes host results as CloudWatch custom metrics (batched PutMetricData)."""

    def __init__(self, settings: PublishSettings, *, session: AccountSession | None = None
                 ) -> None:
        self.settings = settings
        self._session = session
        self._client: Any = None
        self._instance_id = settings.instance_id
        self.last_error = ""
        self.published = 0

    def publish(self, results: list[Result]) -> None:
        """Send what ``results`` hold of memory, swap and disk usage; never raise."""
        if not self.settings.enabled:
            return
        self.last_error = ""
        try:
            self._publish(results)
        except AwsError as exc:
            self.last_error = exc.reason
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
            self.last_error = (f"the instance metadata service at "
                               f"{self.settings.imds_endpoint} did not answer ({exc}): set "
                               "instance_id and region when kanshi is not on EC2")
        if self.last_error:
            logger.warning("publishing host metrics to CloudWatch failed: %s",
                           self.last_error)

    def _publish(self, results: list[Result]) -> None:
        data = list(metric_data(results, self._instance(), self.settings.dimensions))
        for start in range(0, len(data), MAX_PER_CALL):
            batch = [{**d, "StorageResolution": self.settings.storage_resolution}
                     for d in data[start:start + MAX_PER_CALL]]
            call(self._cloudwatch(), "PutMetricData", Namespace=self.settings.namespace,
                 MetricData=batch)
            self.published += len(batch)

    def _instance(self) -> str:
        if self._instance_id is None:
            self._instance_id = imds(self.settings.imds_endpoint, "instance-id",
                                     min(2.0, self.settings.timeout))
        return self._instance_id

    def _cloudwatch(self) -> Any:
        if self._client is None:
            region = self.settings.region or imds(self.settings.imds_endpoint,
                                                  "placement/region",
                                                  min(2.0, self.settings.timeout))
            # Two attempts: a host agent must not hold a check worker for long.
            session = self._session or AccountSession(AwsAccount(
                name="publish", role_arn=self.settings.role_arn,
                external_id=self.settings.external_id,
                session_name=self.settings.session_name, regions=(region,), api_attempts=2))
            self._client = session.client("cloudwatch", region, self.settings.timeout)
        return self._client


def imds(endpoint: str, path: str, timeout: float) -> str:
    """A value from the instance metadata service, IMDSv2 (a session token first)."""
    token_request = urllib.request.Request(
        f"{endpoint}/latest/api/token", method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    with urllib.request.urlopen(token_request, timeout=timeout) as answer:
        token = answer.read().decode()
    request = urllib.request.Request(f"{endpoint}/latest/meta-data/{path}",
                                     headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return str(answer.read().decode().strip())
