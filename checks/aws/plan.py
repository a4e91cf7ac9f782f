"""From discovered resources to watches (one per result), and from data to verdicts.

A :class:`Watch` is one (resource, item) — or one (resource, item, expanded
dimension value) such as a disk path — with the catalogue item as overrides
make it for that resource. The cloudwatch check measures watches, ``kanshi aws
setup`` turns them into alarms and ``kanshi aws cost`` counts their queries,
so all three agree on what is watched.

Targets read ``<region>/<component>/<resource>/<item>`` (``…/disk[/var]`` for an
expanded item, ``<region>/<component>/<item>`` for a region-wide one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from checks.aws.catalogue import SOURCE_HINT, Catalogue, Component, Item, Override, fmt, resolve
from checks.aws.collect import Dimensions, MetricQuery, Series, Window
from checks.aws.discovery import (
    Clients,
    Found,
    Resource,
    Selection,
    discover,
    list_metrics,
    listing_key,
)
from checks.base import Result, Status

_TREATMENT = {"ok": Status.OK, "unknown": Status.UNKNOWN, "warning": Status.WARNING,
              "critical": Status.CRITICAL}


@dataclass(frozen=True)
class Watch:
    """One result's worth of monitoring: an item of a resource (or of a region)."""

    target: str
    subject: str
    item: Item
    region: str
    dim_sets: tuple[Dimensions, ...] = ()
    resource: Resource | None = None
    expanded: str = ""
    verdict: Result | None = None  # decided without measuring (stopped, nothing listed)

    def numerators(self) -> list[MetricQuery]:
        return [self._query(self.item.metric, dims) for dims in self.dim_sets]

    def denominators(self) -> list[MetricQuery]:
        divide = self.item.divide_by
        return [self._query(divide, dims) for dims in self.dim_sets] if divide else []

    def queries(self) -> list[MetricQuery]:
        return [*self.numerators(), *self.denominators()]

    def _query(self, metric: str, dims: Dimensions) -> MetricQuery:
        item = self.item
        return MetricQuery(item.namespace, metric, dims, item.stat, int(item.period))


@dataclass(frozen=True)
class Scope:
    """What one check watches in one account: the selection and the overrides."""

    selection: Selection
    overrides: tuple[Override, ...]
    named_components: frozenset[str] = field(default_factory=frozenset)


# -- discovery with the listings the watches need --------------------------------------------


def survey(clients: Clients, region: str, scope: Scope, catalogue: Catalogue, *,
           first_region: bool) -> Found:
    """Discover ``region`` and list the metrics whose dimensions CloudWatch alone knows."""
    found = discover(clients, region, scope.selection, catalogue, first_region=first_region)
    wanted = {(i.namespace, i.metric) for i in _expanding_items(found, scope, catalogue)}
    wanted |= {(i.namespace, i.divide_by) for i in _expanding_items(found, scope, catalogue)
               if i.divide_by}
    if wanted:
        list_metrics(clients, region, wanted, found)
    return found


def _expanding_items(found: Found, scope: Scope, catalogue: Catalogue) -> Iterator[Item]:
    for _, item in _resource_items(found, scope, catalogue):
        if item.expand and item.source != "lightsail":
            yield item
    for _, item in _region_items(found, scope, catalogue):
        if item.expand:
            yield item


# -- planning -------------------------------------------------------------------------------


def plan(found: Found, scope: Scope, catalogue: Catalogue) -> list[Watch]:
    """Every watch of one region, unique by target."""
    watches: dict[str, Watch] = {}
    for resource, item in _resource_items(found, scope, catalogue):
        for watch in _resource_watches(resource, item, found):
            watches.setdefault(watch.target, watch)
    for component, item in _region_items(found, scope, catalogue):
        for watch in _region_watches(component, item, found):
            watches.setdefault(watch.target, watch)
    return list(watches.values())


def _resource_items(found: Found, scope: Scope,
                    catalogue: Catalogue) -> Iterator[tuple[Resource, Item]]:
    for resource in found.resources:
        component = catalogue.component(resource.component)
        for item in component.items.values():
            if item.scope != "resource" or item.source == "host":
                continue
            item = resolve(item, component.key, scope.overrides, resource.names(),
                           resource.tags)
            if item.enabled:
                yield resource, item


def _region_items(found: Found, scope: Scope,
                  catalogue: Catalogue) -> Iterator[tuple[Component, Item]]:
    present = {r.component for r in found.resources}
    for key in scope.selection.components:
        component = catalogue.component(key)
        if key not in scope.named_components and key not in present:
            continue
        for item in component.items.values():
            if item.scope == "region" and item.source != "host":
                item = resolve(item, key, scope.overrides, {found.region}, {})
                if item.enabled:
                    yield component, item


def _resource_watches(resource: Resource, item: Item, found: Found) -> Iterator[Watch]:
    base = f"{resource.region}/{resource.component}/{resource.label}/{item.key}"
    subject = _subject(resource)
    dims = _dimensions(item.dimensions, resource.template())
    for watch in _expand(base, subject, item, resource.region, dims, found, resource):
        if resource.state:  # out of service: not measured, but still alarmed by setup
            text = f"{subject} is {resource.state}: {item.title} not measured"
            watch = replace(watch, verdict=Result(Status.OK, text, watch.target))
        yield watch


def _region_watches(component: Component, item: Item, found: Found) -> Iterator[Watch]:
    base = f"{found.region}/{component.key}/{item.key}"
    subject = f"{component.key} in {found.region}"
    dims = _dimensions(item.dimensions, {"region": found.region})
    yield from _expand(base, subject, item, found.region, dims, found, None)


def _expand(base: str, subject: str, item: Item, region: str, dims: Dimensions,
            found: Found, resource: Resource | None) -> Iterator[Watch]:
    if not item.expand or item.source == "lightsail":
        yield Watch(base, subject, item, region, (dims,), resource)
        return
    sets = _listed(found, item, dims)
    if not sets:
        yield Watch(base, subject, item, region, resource=resource,
                    verdict=_nothing_listed(base, subject, item))
    elif item.aggregate != "each":
        yield Watch(base, subject, item, region, tuple(s for _, s in sets), resource)
    else:
        for label, one in sets:
            yield Watch(f"{base}[{label}]", f"{subject} {label}", item, region, (one,),
                        resource, expanded=label)


def _listed(found: Found, item: Item, dims: Dimensions) -> list[tuple[str, Dimensions]]:
    """Dimension sets ListMetrics found that contain ``dims`` and the expanded names,
    one per expanded value (the smallest set wins: extra dimensions are an agent's
    ``append_dimensions``)."""
    fixed = dict(dims)
    chosen: dict[str, Dimensions] = {}
    for listed in found.listings.get(listing_key(item.namespace, item.metric), []):
        if any(listed.get(k) != v for k, v in fixed.items()) \
                or any(k not in listed for k in item.expand):
            continue
        label = ",".join(_short(listed[k]) for k in item.expand)
        candidate = tuple(sorted(listed.items()))
        if label not in chosen or len(candidate) < len(chosen[label]):
            chosen[label] = candidate
    return sorted(chosen.items())


def _nothing_listed(target: str, subject: str, item: Item) -> Result:
    status = _TREATMENT[item.missing]
    hint = SOURCE_HINT[item.source]
    text = (f"{subject}: no {item.metric} metric in {item.namespace} at the last discovery "
            f"(ListMetrics), so {item.title} cannot be read (missing data treated as "
            f"{item.missing}){'; ' + hint if hint else ''}")
    return Result(status, text, target)


def _dimensions(template: Mapping[str, str], values: Mapping[str, str]) -> Dimensions:
    """Dimension name → value with ``{id}``-style fields filled; empty values dropped."""
    filled = ((k, _fill(v, values)) for k, v in template.items())
    return tuple(sorted((k, v) for k, v in filled if v))


def _fill(text: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), ""), text)


def _short(value: str) -> str:
    """An ARN as its last segment, anything else as is."""
    return re.split(r"[/:]", value)[-1] if value.startswith("arn:") else value


def _subject(resource: Resource) -> str:
    name = f" ({resource.name})" if resource.name and resource.name != resource.label else ""
    return f"{resource.component} {resource.label}{name}"


# -- verdicts -------------------------------------------------------------------------------


def judge(watch: Watch, data: Mapping[MetricQuery, Series], span: Window) -> Result:
    """The result of one measured watch."""
    item = watch.item
    errors = [data[q].error for q in watch.queries() if q in data and data[q].error]
    if errors:
        return Result(Status.UNKNOWN, f"{watch.subject}: {item.title}: {errors[0]}",
                      watch.target)
    values = [v for v in (_value(watch, n, d, data) for n, d in _pairs(watch)) if v]
    if not values:
        return missing(watch, span)
    at = max(t for t, _ in values)
    value = _aggregate(item.aggregate, [v for _, v in values]) * item.scale
    if item.per_second:
        value /= item.period
    status = item.judge(value)
    text = (f"{watch.subject}: {item.title} {fmt(value, item.unit)}{item.breach(status)} "
            f"({item.describe()}, period ending {_clock(at, item.period)})")
    return Result(status, text, watch.target, {item.metric_name: value})


def _pairs(watch: Watch) -> Iterable[tuple[MetricQuery, MetricQuery | None]]:
    denominators: list[MetricQuery | None] = list(watch.denominators()) or \
        [None] * len(watch.dim_sets)
    return zip(watch.numerators(), denominators, strict=True)


def _value(watch: Watch, numerator: MetricQuery, denominator: MetricQuery | None,
           data: Mapping[MetricQuery, Series]) -> tuple[datetime, float] | None:
    top = data.get(numerator, Series()).newest
    if denominator is None:
        return top
    bottom = data.get(denominator, Series()).newest
    if bottom is None or bottom[1] == 0:
        return None if bottom is None else (bottom[0], 0.0)  # nothing sent: no failures
    if top is None:
        # No datapoint of a Sum means nothing happened (CloudWatch publishes no zeros).
        return (bottom[0], 0.0) if watch.item.stat == "Sum" else None
    return top[0], top[1] / bottom[1]


def _aggregate(how: str, values: list[float]) -> float:
    if how == "sum":
        return sum(values)
    if how == "min":
        return min(values)
    return max(values)  # "max", and "each" (one value)


def missing(watch: Watch, span: Window) -> Result:
    """No datapoint in the window: the item's missing-data treatment decides."""
    item = watch.item
    hint = SOURCE_HINT[item.source]
    text = (f"{watch.subject}: no {item.metric} data between {_clock(span.start, 0)} and "
            f"{_clock(span.end, 0)} (missing data treated as {item.missing})"
            f"{'; ' + hint if hint and item.missing != 'ok' else ''}")
    return Result(_TREATMENT[item.missing], text, watch.target)


def _clock(moment: datetime, period: float) -> str:
    """``10:05 UTC`` — the end of the period starting at ``moment``."""
    from datetime import UTC, timedelta

    end = moment.astimezone(UTC) + timedelta(seconds=period)
    return end.strftime("%H:%M UTC")


def measured(watches: Iterable[Watch], source: Callable[[Item], bool]) -> list[Watch]:
    """Watches still to be measured whose item comes from ``source``."""
    return [w for w in watches if w.verdict is None and source(w.item)]
