"""The ``cloudwatch`` check: SPEC §2's CloudWatch items for one AWS account.

One run watches one account in all its regions: discovery (cached for
``discovery_interval``), then every metric query of a region through
GetMetricData in batches of up to 500 (:mod:`checks.aws.collect`), judged per
the catalogue and the config's overrides. One result per (resource, item):
``ap-northeast-1/ec2/i-0abc/cpu``; plus ``usage``, whose metrics count the API
calls and metrics requested and estimate the monthly cost.

Trouble in a region (throttling, expired credentials, access denied …) gives
one whole-check UNKNOWN result naming the region and the fix; the other
regions' results still count and the broken region's resources keep their last
status — they are not taken as gone. A resource that is gone from a successful
discovery is no longer reported, and the agent closes its incidents with a
note.

boto3 is imported only when a run starts (through :mod:`checks.aws.session`).
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from checks.aws import catalogue as cat
from checks.aws.catalogue import Override
from checks.aws.collect import fetch, lightsail_series, window
from checks.aws.cost import Usage, metering, monthly
from checks.aws.discovery import GLOBAL_REGION, Clients, Found, Selection
from checks.aws.plan import Scope, Watch, judge, measured, missing, plan, survey
from checks.aws.session import AwsAccount, AwsError, shared_client, unique_accounts
from checks.aws.setup import AlarmSetup
from checks.base import Check, CheckConfig, Result, Status
from checks.types import Duration, OptionalDuration, expected_error

logger = logging.getLogger(__name__)

DISCOVERY_KEY = "discovery"
LAST_RUN_KEY = "last_run"


def _tag_values(value: Any) -> Any:
    """``Env: prod`` or ``Env: [prod, stg]``; ``Env: []`` = the key with any value."""
    if isinstance(value, dict):
        return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
    return value


class CloudWatchConfig(CheckConfig):
    """Options of a ``type: cloudwatch`` check (documented in config/example.yaml)."""

    accounts: tuple[AwsAccount, ...] = Field(min_length=1, max_length=1)
    components: tuple[str, ...] = ()
    resources: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    tags: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    delay: OptionalDuration = None
    window_periods: int = Field(2, ge=1, le=10)
    discovery_interval: Duration = 3600.0
    setup: AlarmSetup = AlarmSetup()

    @field_validator("accounts", mode="before")
    @classmethod
    def _one_account(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) > 1:
            raise PydanticCustomError(
                "kanshi", "expected one account per cloudwatch check (got {n}): add a check "
                          "per account so one slow account cannot hold up another; share "
                          "account entries with YAML anchors", {"n": len(value)})
        return value

    @field_validator("accounts")
    @classmethod
    def _unique(cls, value: tuple[AwsAccount, ...]) -> tuple[AwsAccount, ...]:
        return unique_accounts(value)

    @field_validator("components", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        known = list(cat.load().components)
        for name in value if isinstance(value, list | tuple) else ():
            if name not in known:
                raise PydanticCustomError("kanshi", "{text}",
                                          {"text": cat.unknown("component", str(name), known)})
        return value

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise expected_error("a mapping of component to ids, e.g. {ec2: [i-0abc]}", value)
        known = list(cat.load().components)
        for name, ids in value.items():
            if name not in known:
                raise PydanticCustomError("kanshi", "{text}",
                                          {"text": cat.unknown("component", str(name), known)})
            if name == "stepfunctions" and any(not str(i).startswith("arn:") for i in ids):
                raise expected_error("state machine ARNs (their metrics are keyed by ARN)",
                                     ids)
        return {k: [v] if isinstance(v, str) else v for k, v in value.items()}

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        return _tag_values(value)

    @model_validator(mode="after")
    def _something(self) -> CloudWatchConfig:
        if not self.resources and not self.tags and not self._region_components():
            raise PydanticCustomError(
                "kanshi", "nothing to watch: name resources (resources: {{ec2: [i-…]}}), tag "
                          "filters (tags: {{Monitor: kanshi}}) or region-wide components "
                          "(components: [ses])")
        return self

    def _region_components(self) -> list[str]:
        catalogue = cat.load()
        return [c for c in self.components if catalogue.component(c).scope == "region"]

    def scope(self) -> Scope:
        """The selection and overrides, as discovery and planning take them."""
        catalogue = cat.load()
        if self.components:
            chosen = list(self.components)
        elif self.tags:
            chosen = [k for k, c in catalogue.components.items() if c.tag_type]
        else:
            chosen = []
        chosen += [k for k in self.resources if k not in chosen]
        selection = Selection(tuple(chosen), dict(self.resources), dict(self.tags))
        return Scope(selection, self.overrides, frozenset(self.components))


@dataclass
class RegionOutcome:
    """What one region gave: results, or why it could not."""

    region: str
    results: list[Result] = field(default_factory=list)
    found: Found | None = None
    error: str = ""
    note: str = ""


class CloudWatchCheck(Check):
    """CloudWatch metrics of one account, per SPEC §2's catalogue."""

    type_name: ClassVar[str] = "cloudwatch"
    Config: ClassVar[type[CheckConfig]] = CloudWatchConfig
    #: EC2 basic monitoring's period; one run costs one GetMetricData metric per query.
    default_interval: ClassVar[float] = 300.0
    default_timeout: ClassVar[float] = 60.0

    config: CloudWatchConfig

    def run(self) -> list[Result]:
        account = self.config.accounts[0]
        now = self.context.clock.now()
        with metering() as usage:
            outcomes = self._regions(account, now)
        results = [r for o in outcomes for r in o.results]
        results += self._not_found(outcomes, account)
        results.append(self._usage(usage, outcomes, now))
        trouble = [o for o in outcomes if o.error]
        if trouble:
            results.append(_incomplete(trouble, outcomes, account))
        return results

    # -- regions ------------------------------------------------------------------------

    def _regions(self, account: AwsAccount, now: datetime) -> list[RegionOutcome]:
        visits = region_visits(self.config)
        with ThreadPoolExecutor(len(visits)) as pool:
            futures = [pool.submit(contextvars.copy_context().run, self._region, account,
                                   region, scope, first, now)
                       for region, scope, first in visits]
            return [f.result() for f in futures]

    def _region(self, account: AwsAccount, region: str, scope: Scope, first: bool,
                now: datetime) -> RegionOutcome:
        outcome = RegionOutcome(region)
        clients = self._clients(account)
        try:
            outcome.found = self._discovered(clients, region, scope, first, now, outcome)
            watches = plan(outcome.found, scope, cat.load())
            outcome.results = self._measure(clients, region, watches, now)
        except AwsError as exc:
            outcome.error = exc.reason
        return outcome

    def _clients(self, account: AwsAccount) -> Clients:
        shared, timeout = self.context.shared, self.timeout
        return lambda service, region: shared_client(shared, account, service, region, timeout)

    def _discovered(self, clients: Clients, region: str, scope: Scope, first: bool,
                    now: datetime, outcome: RegionOutcome) -> Found:
        """The region's discovery: cached until ``discovery_interval`` has passed."""
        memory = self.context.state.setdefault(DISCOVERY_KEY, {})
        cached = memory.get(region)
        key = _fingerprint(scope, first)
        fresh = cached and cached.get("key") == key and \
            now.timestamp() - cached.get("at", 0) < self.config.discovery_interval
        if fresh:
            return Found.from_json(cached["found"])
        try:
            found = survey(clients, region, scope, cat.load(), first_region=first)
        except AwsError as exc:
            if not cached or cached.get("key") != key:
                raise
            outcome.note = f"discovery failed, using the last one: {exc.reason}"
            return Found.from_json(cached["found"])
        memory[region] = {"key": key, "at": now.timestamp(), "found": found.to_json()}
        return found

    # -- measuring ----------------------------------------------------------------------

    def _measure(self, clients: Clients, region: str, watches: list[Watch],
                 now: datetime) -> list[Result]:
        results = {w.target: w.verdict for w in watches if w.verdict is not None}
        cloudwatch = measured(watches, lambda i: i.source != "lightsail")
        for period in sorted({int(w.item.period) for w in cloudwatch}):
            group = [w for w in cloudwatch if int(w.item.period) == period]
            span = window(now, period, self.config.delay, self.config.window_periods)
            queries = [q for w in group for q in w.queries()]
            data = fetch(clients("cloudwatch", region), queries, span, where=region)
            results.update({w.target: judge(w, data, span) for w in group})
        for watch in measured(watches, lambda i: i.source == "lightsail"):
            results[watch.target] = self._lightsail(clients, watch, now)
        return [r for r in (results[w.target] for w in watches) if r is not None]

    def _lightsail(self, clients: Clients, watch: Watch, now: datetime) -> Result:
        item, resource = watch.item, watch.resource
        assert resource is not None and item.aws_unit is not None
        span = window(now, item.period, self.config.delay, self.config.window_periods)
        series = lightsail_series(clients("lightsail", watch.region), resource.id, item.metric,
                                  item.stat, item.aws_unit, int(item.period), span,
                                  where=watch.region)
        if series.newest is None:
            return missing(watch, span)
        query = watch.numerators()[0]
        return judge(watch, {query: series}, span)

    # -- whole-run results ----------------------------------------------------------------

    def _not_found(self, outcomes: list[RegionOutcome], account: AwsAccount) -> list[Result]:
        """Resources named in the config that no region has (only when all answered)."""
        if any(o.error for o in outcomes):
            return []
        regional = [o for o in outcomes if o.region in account.regions]
        sets = [set(o.found.not_found) for o in regional if o.found is not None]
        everywhere = set.intersection(*sets) if sets else set()
        found_somewhere = {(r.component, r.id) for o in outcomes if o.found
                           for r in o.found.resources}
        where = ", ".join(account.regions)
        return [Result(Status.CRITICAL, f"{component} {ident} is named in the config but not "
                       f"found in {where} (deleted or terminated?): remove it from "
                       "resources, or name it by ARN if it is in another region",
                       f"{account.regions[0]}/{component}/{ident}")
                for component, ident in sorted(everywhere - found_somewhere)]

    def _usage(self, usage: Usage, outcomes: list[RegionOutcome], now: datetime) -> Result:
        """API calls and metrics requested by this run, with the monthly estimate."""
        last = self.context.state.get(LAST_RUN_KEY)
        self.context.state[LAST_RUN_KEY] = now.timestamp()
        resources = sum(len(o.found.resources) for o in outcomes if o.found)
        metrics = {"api_calls": float(usage.total_calls),
                   "get_metric_data_calls": float(usage.calls["cloudwatch:GetMetricData"]),
                   "metrics_requested": float(usage.metrics_requested),
                   "cloudwatch_requests": float(usage.billed_requests()),
                   "resources": float(resources), "cost_usd": usage.cost()}
        text = (f"{usage.metrics_requested} metrics in "
                f"{usage.calls['cloudwatch:GetMetricData']} GetMetricData calls, "
                f"{usage.total_calls} API calls in all, {resources} resources")
        if isinstance(last, int | float) and now.timestamp() > last:
            month = monthly(usage.metrics_requested, usage.billed_requests(),
                            now.timestamp() - last)
            metrics["estimated_monthly_usd"] = month.usd
            text += f"; about ${month.usd:.2f} a month at this pace"
        notes = [f"{o.region}: {o.note}" for o in outcomes if o.note]
        return Result(Status.OK, text + "".join(f"; {n}" for n in notes), "usage", metrics)


def region_visits(config: CloudWatchConfig) -> list[tuple[str, Scope, bool]]:
    """(region, scope, first region?) of the account — plus us-east-1 for global services
    (CloudFront keeps its metrics there) when the account does not list it."""
    account, scope = config.accounts[0], config.scope()
    visits = [(r, scope, i == 0) for i, r in enumerate(account.regions)]
    catalogue = cat.load()
    global_ = tuple(c for c in scope.selection.components
                    if catalogue.component(c).metrics_region == GLOBAL_REGION)
    if global_ and GLOBAL_REGION not in account.regions:
        only = Selection(global_, scope.selection.resources, scope.selection.tags)
        visits.append((GLOBAL_REGION, Scope(only, scope.overrides, scope.named_components),
                       False))
    return visits


def _incomplete(trouble: list[RegionOutcome], outcomes: list[RegionOutcome],
                account: AwsAccount) -> Result:
    """The whole-check UNKNOWN: which regions failed and why."""
    regions: dict[str, list[str]] = {}
    for outcome in trouble:  # a role that cannot be assumed fails every region alike
        regions.setdefault(outcome.error, []).append(outcome.region)
    reasons = "; ".join(f"{', '.join(r)}: {error}" for error, r in regions.items())
    if len(trouble) == len(outcomes):
        text = f"cannot read CloudWatch for {account.describe()}: {reasons}"
    else:
        text = (f"{account.describe()}: {reasons} — other regions were measured; the "
                "resources of this region keep their last status")
    return Result(Status.UNKNOWN, text)


def _fingerprint(scope: Scope, first: bool) -> str:
    """Changes when what discovery looks for changes (then the cache is not used)."""
    selection = scope.selection
    needs = sorted((o.component, o.item or "", str(o.enabled)) for o in scope.overrides)
    return repr((selection.components, sorted((k, tuple(v)) for k, v in
                                              selection.resources.items()),
                 sorted((k, tuple(v)) for k, v in selection.tags.items()), first, needs,
                 sorted(scope.named_components)))

