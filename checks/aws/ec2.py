"""EC2 instances and their status for the ``ec2_status`` and ``ec2_events`` checks.

DescribeInstances (ids and ``tag:`` filters, with the Name tag and state) then
DescribeInstanceStatus for those instances (100 ids per request) — both free,
both paginated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from checks.aws.session import pages

#: Instance ids per DescribeInstanceStatus request (EC2 API limit with InstanceIds).
_STATUS_IDS = 100
#: Filter values per request (EC2 API limit).
_FILTER_VALUES = 200


@dataclass(frozen=True)
class Instance:
    """An instance as DescribeInstances and DescribeInstanceStatus tell it."""

    id: str
    name: str
    state: str
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


def instances(client: Any, region: str, ids: tuple[str, ...],
              tags: Mapping[str, tuple[str, ...]], *, include_all: bool) -> list[Instance]:
    """The selected instances (all when neither ``ids`` nor ``tags``), with their status."""
    found = {i.id: i for i in _described(client, region, ids, tags)}
    live = [i for i in found if found[i].state != "terminated"]
    statuses: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(live), _STATUS_IDS):
        for status in pages(client, "DescribeInstanceStatus", "InstanceStatuses", where=region,
                            InstanceIds=live[start:start + _STATUS_IDS],
                            IncludeAllInstances=include_all):
            statuses[status["InstanceId"]] = status
    return [Instance(i.id, i.name, i.state, statuses.get(i.id, {})) for i in found.values()]


def _described(client: Any, region: str, ids: tuple[str, ...],
               tags: Mapping[str, tuple[str, ...]]) -> Iterator[Instance]:
    filters = [{"Name": f"tag:{k}", "Values": list(v)} if v else
               {"Name": "tag-key", "Values": [k]} for k, v in tags.items()]
    chunks: list[list[str]] = [list(ids[i:i + _FILTER_VALUES])
                               for i in range(0, len(ids), _FILTER_VALUES)] or [[]]
    for chunk in chunks:
        extra = [{"Name": "instance-id", "Values": chunk}] if chunk else []
        for reservation in pages(client, "DescribeInstances", "Reservations", where=region,
                                 Filters=filters + extra):
            for raw in reservation["Instances"]:
                tags_of = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
                yield Instance(raw["InstanceId"], tags_of.get("Name", ""), raw["State"]["Name"])
