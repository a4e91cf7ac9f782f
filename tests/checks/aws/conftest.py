"""AWS test fixtures: moto (``mock_aws``) for the services it has, fake credentials,
a frozen clock, and helpers to put metric data and build checks.

No test talks to real AWS: the environment holds fake keys, instance metadata
is switched off, and every client is intercepted by moto or a botocore Stubber.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.clock import FrozenClock
from checks.base import Check, CheckContext, LocalResources

REGION = "ap-northeast-1"
#: A moment 30 s into a minute, so windows end on clean boundaries.
START = datetime(2026, 11, 2, 1, 7, 30, tzinfo=UTC)
ACCOUNT = {"name": "prod", "regions": [REGION]}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
          "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: Any) -> None:
    """Fake keys, no profile files, no instance metadata: nothing can reach real AWS."""
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws() -> Iterator[None]:
    """Every AWS call in the test answered by moto."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def client(service: str, region: str = REGION) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def put(namespace: str, metric: str, dims: dict[str, str], value: float, at: datetime,
        region: str = REGION) -> None:
    """One datapoint into (moto's) CloudWatch.

    Dimensions go in name order: moto 5.2's ``Dimension.__lt__`` compares a value
    with a name, so its match depends on the order they were put in (real
    CloudWatch's does not); kanshi queries them in name order.
    """
    client("cloudwatch", region).put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": metric, "Value": value, "Timestamp": at,
        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())]}])


def minutes_ago(clock: FrozenClock, minutes: float) -> datetime:
    return clock.now() - timedelta(minutes=minutes)


def make(cls: type[Check], clock: FrozenClock, *, state: dict[str, Any] | None = None,
         shared: LocalResources | None = None, timeout: float = 30.0,
         **options: Any) -> Check:
    """A check of ``cls`` with a validated config, a frozen clock and fresh state."""
    context = CheckContext(clock=clock, state={} if state is None else state,
                           shared=shared or LocalResources())
    return cls(cls.type_name, cls.Config.model_validate(options), timeout=timeout,
               context=context)


def run_instances(count: int = 1, tags: dict[str, str] | None = None,
                  region: str = REGION) -> list[str]:
    """Start ``count`` EC2 instances in moto; their ids."""
    spec = [{"ResourceType": "instance",
             "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}] \
        if tags else []
    answer = client("ec2", region).run_instances(ImageId="ami-12c6146b", MinCount=count,
                                                 MaxCount=count, TagSpecifications=spec)
    return [i["InstanceId"] for i in answer["Instances"]]


def by_target(results: list[Any]) -> dict[str, Any]:
    return {r.target: r for r in results}
