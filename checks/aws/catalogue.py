"""SPEC §2's component table as data: what to read from CloudWatch, and how to judge it.

The data is ``catalogue.yaml`` next to this module: per component (EC2, RDS,
ALB …) its discovery (tag type, ARN shape, describe helper), its metric
dimensions and its items — namespace, metric, statistic, period, comparison,
default warning/critical, and how missing data is treated (as CloudWatch alarms
do: ``ok`` = notBreaching, ``unknown`` = missing, ``warning``/``critical`` =
breaching at that level). ``source`` says where an item comes from: AWS itself
(``cloudwatch``), an in-guest agent (``cwagent``: the CloudWatch agent, or
kanshi's host agent publishing the same names — :mod:`checks.aws.publish`),
Container Insights, Lightsail's own metric API, or a kanshi host check on the
machine (``host``: listed for completeness, not collected here).

Config overrides change any item per component, per tag or per resource
(:class:`Override`); the more specific wins, then the later.
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from checks.base import Status
from checks.types import Duration, OptionalDuration, expected_error

Comparison = Literal[">=", ">", "<=", "<"]
Treatment = Literal["ok", "unknown", "warning", "critical"]
Source = Literal["cloudwatch", "cwagent", "container_insights", "lightsail", "host"]
Unit = Literal["percent", "bytes", "bytes_per_second", "count", "count_per_second",
               "seconds"]
Scope = Literal["resource", "region"]
Aggregate = Literal["each", "sum", "max", "min"]

# CloudWatch statistics: the five plain ones and the extended pNN / tmNN / wmNN … forms.
_STAT = re.compile(r"^(Average|Sum|Minimum|Maximum|SampleCount|"
                   r"(p|tm|wm|tc|ts)\d{1,2}(\.\d{1,2})?)$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
#: Where each kind of source comes from, for "no data" messages.
SOURCE_HINT = {
    "cloudwatch": "",
    "cwagent": "it is published from inside the machine: install the CloudWatch agent or "
               "turn on kanshi's host metric publishing (cloudwatch_publish)",
    "container_insights": "turn on CloudWatch Container Insights for the cluster",
    "lightsail": "",
    "host": "",
}


def _stat(value: str) -> str:
    if not _STAT.match(value):
        raise expected_error("a CloudWatch statistic: Average, Sum, Minimum, Maximum, "
                             "SampleCount or an extended one such as p99", value)
    return value


def _period(value: float) -> float:
    if value % 60:  # standard resolution: CloudWatch stores 1-minute data at best
        raise expected_error("a period in whole minutes (60s, 5m …)", value)
    return value


class Item(BaseModel):
    """One monitored item of a component, as the catalogue and overrides make it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    title: str
    source: Source = "cloudwatch"
    namespace: str = ""
    metric: str = ""
    dimensions: dict[str, str] = Field(default_factory=dict)
    expand: tuple[str, ...] = ()
    aggregate: Aggregate = "each"
    divide_by: str | None = None
    scale: float = 1.0
    per_second: bool = False
    stat: str = "Average"
    period: Duration = 300.0
    unit: Unit = "count"
    aws_unit: str | None = None
    comparison: Comparison = ">="
    warning: float | None = None
    critical: float | None = None
    missing: Treatment = "unknown"
    enabled: bool = True
    alarm: bool = False
    scope: Scope = "resource"
    check: str | None = None
    note: str = ""

    @field_validator("stat")
    @classmethod
    def _checked_stat(cls, value: str) -> str:
        return _stat(value)

    @field_validator("period")
    @classmethod
    def _checked_period(cls, value: float) -> float:
        return _period(value)

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        if self.source == "host":
            if not self.check:
                raise PydanticCustomError("kanshi", "a host item names its kanshi check")
            return self
        if not self.metric or (self.source != "lightsail" and not self.namespace):
            raise PydanticCustomError("kanshi", "a collected item needs namespace and metric")
        if self.warning is not None and self.critical is not None \
                and self.warning != self.critical \
                and _COMPARE[self.comparison](self.warning, self.critical):
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) to be reached before critical ({c}) "
                          "with comparison {op}",
                {"w": f"{self.warning:g}", "c": f"{self.critical:g}", "op": self.comparison})
        return self

    @property
    def metric_name(self) -> str:
        """The kanshi metric name, with its base unit (``cpu_percent``)."""
        return self.key if self.key.endswith(self.unit) else f"{self.key}_{self.unit}"

    def judge(self, value: float) -> Status:
        """CRITICAL / WARNING when ``value`` reaches that threshold, else OK."""
        compare = _COMPARE[self.comparison]
        if self.critical is not None and compare(value, self.critical):
            return Status.CRITICAL
        if self.warning is not None and compare(value, self.warning):
            return Status.WARNING
        return Status.OK

    def breach(self, status: Status) -> str:
        """`` ≥ critical 90%`` for a status this item gave, else ""."""
        level = {Status.CRITICAL: self.critical, Status.WARNING: self.warning}.get(status)
        if level is None:
            return ""
        sign = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}[self.comparison]
        return f" {sign} {status.name.lower()} {fmt(level, self.unit)}"

    def describe(self) -> str:
        """``CPUUtilization Average 5m``."""
        return f"{self.metric} {self.stat} {_minutes(self.period)}"


class Component(BaseModel):
    """A row of SPEC §2's table: how its resources are found and what is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = ""
    title: str
    billing: str = ""
    tag_type: str | None = None
    arn_match: str | None = None
    id: Literal["last", "arn", "resource", "after_type"] = "last"
    label: Literal["id", "last", "name"] = "last"
    describe: str | None = None
    metrics_region: str | None = None
    scope: Scope = "resource"
    items: dict[str, Item]


@dataclass(frozen=True)
class Catalogue:
    """Every component of SPEC §2, by key."""

    components: Mapping[str, Component]

    def component(self, key: str) -> Component:
        return self.components[key]


_ITEM_DEFAULTS = ("namespace", "dimensions", "source", "period", "scope")


@functools.cache
def load() -> Catalogue:
    """The shipped catalogue (``catalogue.yaml``), validated once."""
    text = resources.files("checks.aws").joinpath("catalogue.yaml").read_text("utf-8")
    return parse(yaml.safe_load(text))


def parse(data: Mapping[str, Any]) -> Catalogue:
    """A catalogue from its YAML form (component defaults filled into items)."""
    components = {}
    for key, raw in data["components"].items():
        defaults = {k: raw[k] for k in _ITEM_DEFAULTS if k in raw}
        body = {k: v for k, v in raw.items() if k not in _ITEM_DEFAULTS or k == "scope"}
        items = {name: {**defaults, **item, "key": name}
                 for name, item in raw["items"].items()}
        components[key] = Component.model_validate({**body, "key": key, "items": items})
    return Catalogue(components)


# -- overrides ----------------------------------------------------------------------------

#: What an override may change.
OVERRIDABLE = ("enabled", "stat", "period", "comparison", "warning", "critical", "missing",
               "alarm")


class Override(BaseModel):
    """Change catalogue items for a component, the resources with some tags, or one resource.

    ``item`` omitted = every item of the component; ``warning: null`` switches a
    level off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    component: str
    item: str | None = None
    resource: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool | None = None
    stat: str | None = None
    period: OptionalDuration = None
    comparison: Comparison | None = None
    warning: float | None = None
    critical: float | None = None
    missing: Treatment | None = None
    alarm: bool | None = None

    @field_validator("component")
    @classmethod
    def _known_component(cls, value: str) -> str:
        known = load().components
        if value not in known:
            raise PydanticCustomError("kanshi", "{text}",
                                      {"text": unknown("component", value, list(known))})
        return value

    @field_validator("stat")
    @classmethod
    def _checked_stat(cls, value: str | None) -> str | None:
        return None if value is None else _stat(value)

    @field_validator("period")
    @classmethod
    def _checked_period(cls, value: float | None) -> float | None:
        return None if value is None else _period(value)

    @field_validator("warning", "critical")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise expected_error("a finite number or null", value)
        return value

    @model_validator(mode="after")
    def _fits(self) -> Override:
        component = load().component(self.component)
        if self.item is not None and self.item not in component.items:
            raise PydanticCustomError("kanshi", "{text}", {"text": unknown(
                f"item of {self.component}", self.item, list(component.items))})
        for item in self.targets(component):
            try:
                Item.model_validate({**item.model_dump(), **self.changes()})
            except ValidationError as exc:
                raise PydanticCustomError("kanshi", "{text} (item {item})", {
                    "text": exc.errors()[0]["msg"], "item": item.key}) from None
        return self

    def targets(self, component: Component) -> list[Item]:
        """The catalogue items this override speaks of."""
        if self.item is not None:
            return [component.items[self.item]]
        return list(component.items.values())

    def changes(self) -> dict[str, Any]:
        """Only what the config set (``warning: null`` is a change, absence is not)."""
        return {k: getattr(self, k) for k in OVERRIDABLE if k in self.model_fields_set}

    @property
    def specificity(self) -> int:
        return 2 if self.resource is not None else 1 if self.tags else 0

    def applies(self, component: str, item: str, names: set[str],
                tags: Mapping[str, str]) -> bool:
        """Whether this override speaks of ``item`` of a resource known by ``names``."""
        if component != self.component or self.item not in (None, item):
            return False
        if self.resource is not None and self.resource not in names:
            return False
        return all(tags.get(k) == v for k, v in self.tags.items())


def resolve(item: Item, component: str, overrides: tuple[Override, ...], names: set[str],
            tags: Mapping[str, str]) -> Item:
    """``item`` with every override that applies, least specific first."""
    chosen = sorted((o for o in overrides if o.applies(component, item.key, names, tags)),
                    key=lambda o: o.specificity)  # stable: config order within a level
    if not chosen:
        return item
    changes: dict[str, Any] = {}
    for override in chosen:
        changes.update(override.changes())
    return Item.model_validate({**item.model_dump(), **changes})


def unknown(what: str, name: str, known: list[str]) -> str:
    """``unknown component 'ec3' — did you mean 'ec2'? (known: …)``."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    return f"unknown {what} '{name}'{hint} (known: {', '.join(sorted(known))})"


# -- formatting ---------------------------------------------------------------------------

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt(value: float, unit: str) -> str:
    """A value as a person reads it: ``93.2%``, ``1.5 GiB``, ``12 MiB/s``, ``0.25 s``."""
    if unit == "percent":
        return f"{value:.1f}%"
    if unit in ("bytes", "bytes_per_second"):
        suffix = "/s" if unit == "bytes_per_second" else ""
        return f"{_binary(value)}{suffix}"
    if unit == "seconds":
        return f"{value:.3g} s"
    if unit == "count_per_second":
        return f"{value:.3g}/s"
    return f"{value:.6g}"


def _binary(value: float) -> str:
    index = 0
    while abs(value) >= 1024 and index < len(_BINARY) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {_BINARY[index]}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 and not seconds % 3600 \
        else f"{seconds / 60:g}m"
