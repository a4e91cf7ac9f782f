"""Which resources to watch: named by id, or found by tag, completed by describe calls.

Per account and region:

1. resources named in the config (an id, a name or an ARN; a bare id belongs to
   the account's first region, except where a describe call finds it — EC2, RDS,
   ELB target groups, API Gateway, Lightsail look in every region);
2. with tag filters, the Resource Groups Tagging API's GetResources over the
   components' resource types (one paginated call for all components);
3. per-service describe calls where the tagging API cannot say enough: EC2
   instance state, RDS engine (RDS or Aurora), a target group's load balancer
   and type (ALB or NLB), an API Gateway API's name, Lightsail (not in the
   tagging API);
4. for items whose dimensions are only known from CloudWatch (a disk's path, an
   ElastiCache node, a DynamoDB operation), one ListMetrics per namespace and
   metric.

The result is JSON-serialisable so the check can keep it in its state until the
next discovery cycle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from checks.aws.catalogue import Catalogue, Component
from checks.aws.session import AwsError, call, pages

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

#: ``clients(service, region)`` → a boto3 client.
Clients = Callable[[str, str], "BaseClient"]
#: Filter values per request in DescribeInstances (EC2 API limit).
_FILTER_VALUES = 200
#: Target group ARNs per DescribeTargetGroups request (ELBv2 API limit).
_TARGET_GROUPS = 20
#: Region of the global services' APIs and metrics (CloudFront).
GLOBAL_REGION = "us-east-1"
_ARN = re.compile(r"^arn:(aws[\w-]*):([\w-]+):([\w-]*):(\d*):(.+)$")


@dataclass(frozen=True)
class Resource:
    """One watched resource; ``state`` not empty = out of service, not measured."""

    component: str
    id: str
    region: str
    label: str
    arn: str = ""
    name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    state: str = ""

    def names(self) -> set[str]:
        """Every name an override's ``resource:`` may use for it."""
        return {n for n in (self.id, self.label, self.arn, self.name) if n}

    def template(self) -> dict[str, str]:
        """Values for the catalogue's dimension templates."""
        return {"id": self.id, "arn": self.arn, "name": self.name or self.label,
                "region": self.region, "label": self.label, **self.fields}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resource:
        return cls(**{**data, "tags": dict(data.get("tags", {})),
                      "fields": dict(data.get("fields", {}))})


@dataclass(frozen=True)
class Selection:
    """What a check asks for: components, ids per component, tag filters."""

    components: tuple[str, ...]
    resources: Mapping[str, tuple[str, ...]]
    tags: Mapping[str, tuple[str, ...]]

    def wanted(self, catalogue: Catalogue) -> list[Component]:
        return [catalogue.component(c) for c in self.components]


@dataclass
class Found:
    """One region's discovery: resources, explicit ids not found, ListMetrics listings."""

    region: str
    resources: list[Resource] = field(default_factory=list)
    not_found: list[tuple[str, str]] = field(default_factory=list)
    listings: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "resources": [r.to_json() for r in self.resources],
                "not_found": [list(n) for n in self.not_found], "listings": self.listings}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Found:
        return cls(data["region"], [Resource.from_json(r) for r in data["resources"]],
                   [(c, i) for c, i in data.get("not_found", [])],
                   {k: [dict(d) for d in v] for k, v in data.get("listings", {}).items()})


def listing_key(namespace: str, metric: str) -> str:
    return f"{namespace}\t{metric}"


# -- ARNs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arn:
    service: str
    region: str
    resource: str

    @classmethod
    def parse(cls, text: str) -> Arn | None:
        match = _ARN.match(text)
        return cls(match.group(2), match.group(3), match.group(5)) if match else None

    def is_a(self, component: Component) -> bool:
        """Whether this ARN is of ``component``'s resource type."""
        if not component.tag_type:
            return False
        service, _, kind = component.tag_type.partition(":")
        resource = self.resource.lstrip("/")
        if service != self.service or (kind and not re.match(rf"{re.escape(kind)}[/:]",
                                                              resource)):
            return False
        return component.arn_match is None or re.search(component.arn_match,
                                                        resource) is not None


def resource_from_arn(component: Component, arn: str, region: str,
                      tags: Mapping[str, str] | None = None) -> Resource:
    """A :class:`Resource` of ``component`` from its ARN."""
    parsed = Arn.parse(arn)
    part = parsed.resource.lstrip("/") if parsed else arn
    last = re.split(r"[/:]", part)[-1]
    ident = {"last": last, "arn": arn, "resource": part,
             "after_type": re.split(r"[/:]", part, maxsplit=1)[-1]}[component.id]
    name = _name_in(component, part)
    fields = _fields(component, part, region)
    return Resource(component.key, ident, region, _label(component, ident, name),
                    arn=arn, name=name, tags=dict(tags or {}), fields=fields)


def _name_in(component: Component, part: str) -> str:
    segments = part.split("/")
    if component.key in ("alb", "nlb") and len(segments) >= 3:  # targetgroup/NAME/hash
        return segments[1]
    if component.key == "waf" and len(segments) >= 4:  # regional/webacl/NAME/id
        return segments[-2]
    return ""


def _fields(component: Component, part: str, region: str) -> dict[str, str]:
    if component.key == "waf":  # CloudFront (global) ACLs have no Region dimension
        return {"waf_region": "" if part.startswith("global/") else region}
    return {}


def _label(component: Component, ident: str, name: str) -> str:
    last = re.split(r"[/:]", ident)[-1]
    return {"id": ident, "last": last, "name": name or last}[component.label]


def resource_from_id(component: Component, value: str, region: str) -> Resource:
    """A resource named in the config by id, name or ARN."""
    if value.startswith("arn:"):
        parsed = Arn.parse(value)
        return resource_from_arn(component, value, parsed.region if parsed and parsed.region
                                 else region)
    fields = {"waf_region": region} if component.key == "waf" else {}
    name = value if component.label == "name" else ""
    return Resource(component.key, value, region, value, name=name, fields=fields)


# -- discovery ------------------------------------------------------------------------------


def discover(clients: Clients, region: str, selection: Selection, catalogue: Catalogue,
             *, first_region: bool) -> Found:
    """Every resource of ``selection`` in ``region`` (listings are added later)."""
    found = Found(region)
    components = [c for c in selection.wanted(catalogue) if c.scope == "resource"
                  and _here(c, region)]
    named = list(_named(components, selection, region, first_region))
    tagged = list(_tagged(clients, region, components, selection)) if selection.tags else []
    candidates = _unique(named + tagged)
    for describe, group in _by_describe(candidates, components).items():
        kept, missing = DESCRIBE[describe](clients, region, group, selection, catalogue)
        found.resources += kept
        # Only what the config names is "not found"; a tagged resource just went away.
        found.not_found += [(c, i) for c, i in missing if i in selection.resources.get(c, ())]
    found.resources += [r for r in candidates if not catalogue.component(r.component).describe]
    found.resources = [r for r in found.resources if r.component in selection.components]
    return found


def _here(component: Component, region: str) -> bool:
    """Global services are looked at once, in their metrics region."""
    return component.metrics_region is None or component.metrics_region == region


def _named(components: list[Component], selection: Selection, region: str,
           first_region: bool) -> Iterator[Resource]:
    for component in components:
        for value in selection.resources.get(component.key, ()):
            resource = resource_from_id(component, value, region)
            mine = resource.region == region if value.startswith("arn:") else (
                first_region or component.describe is not None
                or component.metrics_region is not None)
            if mine:
                yield resource


def _tagged(clients: Clients, region: str, components: list[Component],
            selection: Selection) -> Iterator[Resource]:
    kinds = sorted({c.tag_type for c in components if c.tag_type})
    if not kinds:
        return
    filters = [{"Key": k, "Values": list(v)} if v else {"Key": k}
               for k, v in selection.tags.items()]
    client = clients("resourcegroupstaggingapi", region)
    for mapping in pages(client, "GetResources", "ResourceTagMappingList", where=region,
                         TagFilters=filters, ResourceTypeFilters=kinds):
        arn = mapping["ResourceARN"]
        parsed = Arn.parse(arn)
        component = next((c for c in components if parsed and parsed.is_a(c)), None)
        if component is not None:
            tags = {t["Key"]: t["Value"] for t in mapping.get("Tags", [])}
            yield resource_from_arn(component, arn, region, tags)


def _unique(resources: Iterable[Resource]) -> list[Resource]:
    """First of each (component, id): a resource named and also tagged is watched once."""
    seen: dict[tuple[str, str], Resource] = {}
    for resource in resources:
        key = (resource.component, resource.id)
        if key in seen and not seen[key].tags and resource.tags:
            seen[key] = resource  # keep the tags: tag overrides need them
        seen.setdefault(key, resource)
    return list(seen.values())


def _by_describe(resources: list[Resource],
                 components: list[Component]) -> dict[str, list[Resource]]:
    describe = {c.key: c.describe for c in components}
    groups: dict[str, list[Resource]] = {}
    for resource in resources:
        helper = describe.get(resource.component)
        if helper:
            groups.setdefault(helper, []).append(resource)
    for component in components:  # Lightsail is found by describe alone
        if component.describe == "lightsail":
            groups.setdefault("lightsail", [])
    return groups


Described = tuple[list[Resource], list[tuple[str, str]]]


def _describe_ec2(clients: Clients, region: str, group: list[Resource],
                  selection: Selection, catalogue: Catalogue) -> Described:
    ids = sorted({r.id for r in group})
    client = clients("ec2", region)
    seen: dict[str, tuple[str, dict[str, str]]] = {}
    for start in range(0, len(ids), _FILTER_VALUES):
        chunk = ids[start:start + _FILTER_VALUES]
        for reservation in pages(client, "DescribeInstances", "Reservations", where=region,
                                 Filters=[{"Name": "instance-id", "Values": chunk}]):
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                seen[instance["InstanceId"]] = (instance["State"]["Name"], tags)
    kept, missing = [], []
    for resource in group:
        if resource.id not in seen or seen[resource.id][0] == "terminated":
            missing.append((resource.component, resource.id))
            continue
        state, tags = seen[resource.id]
        kept.append(_replace(resource, name=tags.get("Name", ""), tags=tags,
                             state="" if state == "running" else state))
    return kept, missing


def _describe_rds(clients: Clients, region: str, group: list[Resource],
                  selection: Selection, catalogue: Catalogue) -> Described:
    client = clients("rds", region)
    engines = {db["DBInstanceIdentifier"]: (db["Engine"], db.get("DBInstanceStatus", ""))
               for db in pages(client, "DescribeDBInstances", "DBInstances", where=region)}
    kept, missing = [], []
    for resource in group:
        if resource.id not in engines:
            missing.append((resource.component, resource.id))
            continue
        engine, status = engines[resource.id]
        component = "aurora" if engine.startswith("aurora") else "rds"
        state = "" if status in ("available", "backing-up", "modifying", "") else status
        kept.append(_replace(resource, component=component, state=state))
    return kept, missing


def _describe_elbv2(clients: Clients, region: str, group: list[Resource],
                    selection: Selection, catalogue: Catalogue) -> Described:
    client = clients("elbv2", region)
    by_arn = [r for r in group if r.arn]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(by_arn), _TARGET_GROUPS):
        arns = [r.arn for r in by_arn[start:start + _TARGET_GROUPS]]
        for tg in call(client, "DescribeTargetGroups", where=region,
                       TargetGroupArns=arns)["TargetGroups"]:
            found[tg["TargetGroupArn"]] = tg
    by_name = {r.id: _target_group_named(client, r.id, region) for r in group if not r.arn}
    kept, missing = [], []
    for resource in group:
        tg = found.get(resource.arn) if resource.arn else by_name.get(resource.id)
        if tg is None:
            missing.append((resource.component, resource.id))
            continue
        kept.append(_target_group(catalogue, resource, tg, region))
    return kept, missing


def _target_group_named(client: Any, name: str, region: str) -> dict[str, Any] | None:
    try:
        groups = call(client, "DescribeTargetGroups", where=region, Names=[name])
    except AwsError as exc:
        if "TargetGroupNotFound" in exc.reason:
            return None
        raise
    return groups["TargetGroups"][0] if groups["TargetGroups"] else None


def _target_group(catalogue: Catalogue, resource: Resource, tg: Mapping[str, Any],
                  region: str) -> Resource:
    arns = tg.get("LoadBalancerArns") or []
    parsed = Arn.parse(arns[0]) if arns else None
    lb_part = parsed.resource if parsed else ""
    lb = lb_part.split("/", 1)[1] if "/" in lb_part else ""
    kind = "nlb" if lb.startswith("net/") or tg.get("Protocol") in ("TCP", "UDP", "TLS",
                                                                     "TCP_UDP") else "alb"
    base = resource_from_arn(catalogue.component(kind), tg["TargetGroupArn"], region,
                             resource.tags)
    state = "" if lb else "not attached to a load balancer"
    return _replace(base, fields={**base.fields, "lb": lb}, state=state)


def _describe_apigateway(clients: Clients, region: str, group: list[Resource],
                         selection: Selection, catalogue: Catalogue) -> Described:
    client = clients("apigateway", region)
    apis = {api["id"]: api["name"] for api in pages(client, "GetRestApis", "items",
                                                    where=region)}
    names = set(apis.values())
    kept, missing = [], []
    for resource in group:
        if resource.arn and resource.id in apis:
            name = apis[resource.id]
            kept.append(_replace(resource, name=name, label=name))
        elif not resource.arn and resource.id in names:
            kept.append(resource)
        else:
            missing.append((resource.component, resource.id))
    return kept, missing


def _describe_lightsail(clients: Clients, region: str, group: list[Resource],
                        selection: Selection, catalogue: Catalogue) -> Described:
    wanted = set(selection.resources.get("lightsail", ()))
    if not wanted and not selection.tags:
        return [], []
    client = clients("lightsail", region)
    kept, seen = [], set()
    for instance in pages(client, "GetInstances", "instances", where=region):
        tags = {t["key"]: t.get("value", "") for t in instance.get("tags", [])}
        name = instance["name"]
        if name in wanted or (selection.tags and _tags_match(tags, selection.tags)):
            state = instance.get("state", {}).get("name", "running")
            kept.append(Resource("lightsail", name, region, name, arn=instance.get("arn", ""),
                                 name=name, tags=tags,
                                 state="" if state == "running" else state))
            seen.add(name)
    return kept, [("lightsail", n) for n in sorted(wanted - seen)]


def _tags_match(tags: Mapping[str, str], wanted: Mapping[str, tuple[str, ...]]) -> bool:
    return all(k in tags and (not v or tags[k] in v) for k, v in wanted.items())


def _replace(resource: Resource, **changes: Any) -> Resource:
    return Resource(**{**asdict(resource), **changes})


DESCRIBE: dict[str, Callable[[Clients, str, list[Resource], Selection, Catalogue],
                             Described]] = {
    "ec2": _describe_ec2,
    "rds": _describe_rds,
    "elbv2": _describe_elbv2,
    "apigateway": _describe_apigateway,
    "lightsail": _describe_lightsail,
}


# -- ListMetrics ----------------------------------------------------------------------------


def list_metrics(clients: Clients, region: str, wanted: Iterable[tuple[str, str]],
                 found: Found) -> None:
    """Fill ``found.listings`` with every dimension set of each (namespace, metric)."""
    client = clients("cloudwatch", region)
    for namespace, metric in sorted(set(wanted)):
        found.listings[listing_key(namespace, metric)] = [
            {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}
            for m in pages(client, "ListMetrics", "Metrics", where=region,
                           Namespace=namespace, MetricName=metric)]
