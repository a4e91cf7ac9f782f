"""Load a config file: includes, validation, defaults — and every error at once."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationError

import checks
import notifiers
from agent.config.errors import issue_at, issues_from, unknown_key
from agent.config.merge import merge
from agent.config.models import (
    CheckEntry,
    FlappingSettings,
    NotifierEntry,
    RootConfig,
    RunbookRef,
)
from agent.config.source import Issue, MarkedDict, MarkedList, load_file
from agent.plugins import load_plugin
from agent.runner import grace
from checks.base import Check, CheckConfig
from notifiers.base import Notifier, NotifierConfig


class ConfigError(Exception):
    """The config cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass(frozen=True)
class CheckSpec:
    """A check entry with every default resolved."""

    name: str
    type_name: str
    cls: type[Check]
    config: CheckConfig
    enabled: bool
    interval: float
    timeout: float
    retry_interval: float
    max_attempts: int
    severity: str
    notify: tuple[str, ...]
    flapping: FlappingSettings
    description: str
    runbook: RunbookRef | None = None


@dataclass(frozen=True)
class NotifierSpec:
    """A notification channel entry."""

    name: str
    type_name: str
    cls: type[Notifier]
    config: NotifierConfig
    enabled: bool
    locale: str
    fallback: str | None
    audience: str = "customer"


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    path: Path
    root: RootConfig
    checks: tuple[CheckSpec, ...]
    notifiers: tuple[NotifierSpec, ...]
    state_dir: Path
    #: Usable, but probably not what was meant (e.g. a route to a disabled channel).
    warnings: tuple[Issue, ...] = ()

    @property
    def enabled_checks(self) -> tuple[CheckSpec, ...]:
        return tuple(c for c in self.checks if c.enabled)

    @property
    def enabled_notifiers(self) -> tuple[NotifierSpec, ...]:
        return tuple(n for n in self.notifiers if n.enabled)

    def secrets(self) -> set[str]:
        """Every secret value in the config, for scrubbing logs and messages."""
        found: set[str] = set()
        models: list[Any] = [c.config for c in self.checks] + [n.config for n in self.notifiers]
        if self.root.cloudwatch_publish is not None:
            models.append(self.root.cloudwatch_publish)
        for model in models:
            found.update(_secret_values(model))
        if self.root.heartbeat_out is not None:
            found.update(self.root.heartbeat_out.secret_values())
        url = self.root.store.url
        if url is not None:  # the password inside the store URL
            found.update(p for p in [url.get_secret_value(),
                                     urlsplit(url.get_secret_value()).password] if p)
        return {s for s in found if s}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge includes, validate. Raises :class:`ConfigError` with all issues."""
    env = os.environ if environ is None else environ
    path = Path(path)
    issues: list[Issue] = []
    data = _load_with_includes(path, env, issues, ())
    if data is None:
        raise ConfigError(issues)
    if not isinstance(data, MarkedDict):
        raise ConfigError([*issues, Issue(str(path), 1, "", "expected a mapping at the top")])
    read_issues = len(issues)
    config = _validate(path, data, issues)
    _drop_consequences(issues, read_issues)
    if issues or config is None:
        raise ConfigError(sorted(issues, key=lambda i: (i.file, i.line or 0)))
    return config


def _drop_consequences(issues: list[Issue], read_issues: int) -> None:
    """A value already reported while reading (e.g. an unset ${VAR}) is not reported
    again by validation."""
    known = {(i.file, i.path) for i in issues[:read_issues]}
    issues[read_issues:] = [i for i in issues[read_issues:] if (i.file, i.path) not in known]


def _load_with_includes(path: Path, env: Mapping[str, str], issues: list[Issue],
                        chain: tuple[Path, ...]) -> Any:
    loaded = load_file(path, env)
    issues.extend(loaded.issues)
    data = loaded.data
    if not isinstance(data, MarkedDict) or "include" not in data:
        return data
    includes = data["include"]
    if not isinstance(includes, MarkedList):
        issues.append(issue_at(data, ("include",), "expected a list of file paths"))
        return data
    base: Any = None
    for i, name in enumerate(includes):
        target = (path.parent / str(name)).resolve()
        if target in chain or target == path.resolve():
            issues.append(issue_at(data, ("include", i), f"include cycle through {name}"))
            continue
        if not target.is_file():
            issues.append(issue_at(data, ("include", i), f"file not found: {target}"))
            continue
        part = _load_with_includes(target, env, issues, (*chain, path.resolve()))
        if isinstance(part, MarkedDict):
            part.pop("include", None)
            base = part if base is None else merge(base, part)
        elif part is not None:
            issues.append(Issue(str(target), 1, "", "expected a mapping at the top of an "
                                                    "included file"))
    own = MarkedDict(data)
    own.marks, own.env_keys = dict(data.marks), dict(data.env_keys)
    own.pop("include")
    return own if base is None else merge(base, own)


def _validate(path: Path, data: MarkedDict, issues: list[Issue]) -> Config | None:
    root = _root(data, issues)
    root_dir = path.parent.resolve()
    notifier_specs = list(_notifier_specs(root, data, issues, root_dir))
    channels = {str(n.get("name")) for n in root.notifiers if isinstance(n, dict)}
    check_specs = list(_check_specs(root, data, issues, channels, root_dir))
    _check_fallbacks(notifier_specs, data, issues)
    _check_contacts(root, data, issues, channels)
    state_dir = _absolute(root.agent.state_dir, root_dir)
    if root.runbooks.directories:
        root = root.model_copy(update={"runbooks": root.runbooks.model_copy(update={
            "directories": tuple(_absolute(d, root_dir) for d in root.runbooks.directories)})})
    warnings = [*_warnings(path, check_specs, notifier_specs, data),
                *_plan_warnings(path, root)]
    return Config(path, root, tuple(check_specs), tuple(notifier_specs), state_dir,
                  tuple(warnings))


def _plan_warnings(path: Path, root: RootConfig) -> Iterator[Issue]:
    """A contract that waits for someone the config never names."""
    plan = root.plan
    if (plan.automatic_recovery and plan.emergency_ack_outside_hours
            and not root.business_hours.always
            and not any(c.emergency for c in root.contacts)):
        yield Issue(str(path), None, "plan.emergency_ack_outside_hours",
                    "no contact has emergency: true — outside business hours automatic "
                    "recovery waits for the emergency contact's acknowledgement, and nobody "
                    "is asked for it")


def _warnings(path: Path, checks: list[CheckSpec], channels: list[NotifierSpec],
              data: MarkedDict) -> Iterator[Issue]:
    """Things that load but silently lose notices or watch nothing."""
    enabled = {n.name for n in channels if n.enabled}
    if not any(c.enabled for c in checks):
        yield Issue(str(path), None, "", "no check is enabled: the agent will watch nothing")
    if not enabled:
        yield Issue(str(path), None, "", "no notification channel is enabled: problems will "
                                         "only be logged")
    for i, check in enumerate(checks):
        for j, name in enumerate(check.notify):
            if name not in enabled and enabled:
                yield issue_at(data, ("checks", i, "notify", j),
                               f"notifier '{name}' is disabled: these notices are dropped")
        advice = check.cls.schedule_warning(check.config,
                                            (check.max_attempts - 1) * check.retry_interval)
        if advice:
            yield issue_at(data, ("checks", i), advice)
        if check.enabled and enabled and not enabled & set(check.notify):
            yield issue_at(data, ("checks", i), "none of this check's notifiers is enabled: "
                                                "its problems will only be logged")
    for i, channel in enumerate(channels):
        if channel.fallback and channel.fallback not in enabled:
            yield issue_at(data, ("notifiers", i, "fallback"),
                           f"notifier '{channel.fallback}' is disabled: undelivered notices "
                           "will not be copied")


def _root(data: MarkedDict, issues: list[Issue]) -> RootConfig:
    """The top-level settings; a broken section is reported and replaced by its
    defaults, so the checks and notifiers are still validated in the same pass."""
    try:
        return RootConfig.model_validate(data)
    except ValidationError as exc:
        issues.extend(issues_from(exc, data, (), RootConfig))
        broken = {err["loc"][0] for err in exc.errors() if err["loc"]}
    return RootConfig.model_validate({k: v for k, v in data.items() if k not in broken})


def _absolute(path: Path, base: Path) -> Path:
    """Relative paths in a config are relative to the main config file's folder."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _with_paths_from(model: Any, base: Path) -> Any:
    """``model`` with every relative ``Path`` field made absolute against ``base``."""
    updates = {name: _absolute(value, base) for name in type(model).model_fields
               if isinstance(value := getattr(model, name), Path) and not value.is_absolute()}
    return model.model_copy(update=updates) if updates else model


def _check_specs(root: RootConfig, data: MarkedDict, issues: list[Issue],
                 channels: set[str], root_dir: Path) -> Iterator[CheckSpec]:
    _check_names_and_routes(root.checks, data, issues, channels)
    for i, raw in enumerate(root.checks):
        spec = _one_check(raw, data, ("checks", i), root, issues, root_dir)
        if spec is not None:
            yield spec


def _check_names_and_routes(entries: Sequence[dict[str, Any]], data: MarkedDict,
                            issues: list[Issue], channels: set[str]) -> None:
    """Duplicate names and unknown notifiers, checked on the raw entries so they are
    reported even when an entry has other errors."""
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in seen:
                issues.append(issue_at(data, ("checks", i, "name"),
                                       f"duplicate check name '{name}'"))
            seen.add(name)
        routes = raw.get("notify") if isinstance(raw, dict) else None
        for j, channel in enumerate(routes if isinstance(routes, list) else []):
            if isinstance(channel, str) and channel not in channels:
                issues.append(issue_at(data, ("checks", i, "notify", j),
                                       unknown_name("notifier", channel, channels)))


def _one_check(raw: dict[str, Any], data: MarkedDict, where: tuple[str, int],
               root: RootConfig, issues: list[Issue], root_dir: Path) -> CheckSpec | None:
    cls = _plugin(checks.REGISTRY, raw, data, where, "check", issues)
    if cls is None:
        return None
    model = _entry_model(CheckEntry, cls.Config)
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        issues.extend(issues_from(exc, data, where, model))
        return None
    entry = CheckEntry.model_validate(_subset(raw, CheckEntry))
    config = _with_paths_from(cls.Config.model_validate(_subset(raw, cls.Config)), root_dir)
    return _resolve_check(entry, cls, config, root, data, where, issues)


def _resolve_check(entry: CheckEntry, cls: type[Check], config: CheckConfig,
                   root: RootConfig, data: MarkedDict, where: tuple[str, int],
                   issues: list[Issue]) -> CheckSpec:
    d = root.defaults
    interval = entry.interval or cls.default_interval
    needed = cls.minimum_timeout(config)
    # Unless told, allow the family's default or what one run needs, within the interval.
    timeout = entry.timeout or min(max(cls.default_timeout, needed + grace(needed)), interval)
    retry = entry.retry_interval or min(d.retry_interval, interval)
    if timeout > interval:
        issues.append(issue_at(data, (*where, "timeout"),
                               _at_most_interval(interval, timeout)))
    if timeout < needed:
        issues.append(issue_at(data, (*where, "timeout"),
                               f"expected at least {needed:g} s, the least one run of this "
                               f"check takes as configured, got {timeout:g} s"))
    if retry > interval:
        issues.append(issue_at(data, (*where, "retry_interval"),
                               _at_most_interval(interval, retry)))
    notify = tuple(entry.notify) if entry.notify is not None else tuple(
        str(n.get("name")) for n in root.notifiers if n.get("enabled", True))
    return CheckSpec(entry.name, entry.type, cls, config, entry.enabled, interval, timeout,
                     retry, entry.max_attempts or cls.default_max_attempts or d.max_attempts,
                     entry.severity or d.severity,
                     notify, entry.flapping or d.flapping, entry.description, entry.runbook)


def _at_most_interval(interval: float, value: float) -> str:
    return f"expected at most the interval ({interval:g} s), got {value:g} s"


def _notifier_specs(root: RootConfig, data: MarkedDict, issues: list[Issue],
                    root_dir: Path) -> Iterator[NotifierSpec]:
    seen: set[str] = set()
    for i, raw in enumerate(root.notifiers):
        where = ("notifiers", i)
        cls = _plugin(notifiers.REGISTRY, raw, data, where, "notifier", issues)
        if cls is None:
            continue
        model = _entry_model(NotifierEntry, cls.Config)
        try:
            model.model_validate(raw)
        except ValidationError as exc:
            issues.extend(issues_from(exc, data, where, model))
            continue
        entry = NotifierEntry.model_validate(_subset(raw, NotifierEntry))
        if entry.name in seen:
            issues.append(issue_at(data, (*where, "name"),
                                   f"duplicate notifier name '{entry.name}'"))
        seen.add(entry.name)
        config = _with_paths_from(cls.Config.model_validate(_subset(raw, cls.Config)),
                                  root_dir)
        yield NotifierSpec(entry.name, entry.type, cls, config, entry.enabled,
                           entry.locale or root.agent.locale, entry.fallback, entry.audience)


def _check_fallbacks(specs: list[NotifierSpec], data: MarkedDict, issues: list[Issue]) -> None:
    names = {s.name for s in specs}
    for i, spec in enumerate(specs):
        if spec.fallback is None:
            continue
        if spec.fallback == spec.name:
            issues.append(issue_at(data, ("notifiers", i, "fallback"),
                                   "a channel cannot be its own fallback"))
        elif spec.fallback not in names:
            issues.append(issue_at(data, ("notifiers", i, "fallback"),
                                   unknown_name("notifier", spec.fallback, names)))


def _check_contacts(root: RootConfig, data: MarkedDict, issues: list[Issue],
                    channels: set[str]) -> None:
    """Contacts name notifiers; escalation levels name contacts."""
    people = {c.name for c in root.contacts}
    for i, contact in enumerate(root.contacts):
        for j, channel in enumerate(contact.notify):
            if channel not in channels:
                issues.append(issue_at(data, ("contacts", i, "notify", j),
                                       unknown_name("notifier", channel, channels)))
    for i, chain in enumerate(root.escalation):
        for j, level in enumerate(chain.levels):
            for k, name in enumerate(level.contacts):
                if name not in people:
                    issues.append(issue_at(data, ("escalation", i, "levels", j, "contacts", k),
                                           unknown_name("contact", name, people)))


def _plugin(registry: dict[str, str], raw: Any, data: MarkedDict, where: tuple[str, int],
            family: str, issues: list[Issue]) -> Any:
    if not isinstance(raw, dict):
        issues.append(issue_at(data, where, "expected a mapping (key: value)"))
        return None
    kind = raw.get("type")
    if kind is None:
        issues.append(issue_at(data, where, f"required key missing: type (one of "
                                            f"{', '.join(sorted(registry))})"))
        return None
    if not isinstance(kind, str) or kind not in registry:
        issues.append(issue_at(data, (*where, "type"),
                               unknown_name(f"{family} type", str(kind), set(registry))))
        return None
    try:
        return load_plugin(registry, kind)
    except Exception as exc:  # a broken or uninstallable plugin is a config problem
        issues.append(issue_at(data, (*where, "type"), f"the {family} type '{kind}' cannot "
                                                       f"be loaded: {type(exc).__name__}: {exc}"))
        return None


def unknown_name(what: str, name: str, known: set[str]) -> str:
    """"unknown notifier 'mial' — did you mean 'mail'?"."""
    message = unknown_key(name, sorted(known)).replace("unknown key", f"unknown {what}", 1)
    return message.replace("allowed here", "known")


@functools.cache
def _entry_model(base: type[BaseModel], family: type[BaseModel]) -> type[BaseModel]:
    """One model with the common entry fields and a family's own, for one pass of
    validation that reports every error (unknown keys included) together."""
    clash = set(base.model_fields) & set(family.model_fields)
    if clash:
        raise TypeError(f"{family.__qualname__} redefines entry fields {sorted(clash)}")
    return type(f"{family.__qualname__}Entry", (base, family), {"__module__": __name__})


def _subset(raw: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    names = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return {k: v for k, v in raw.items() if k in names}


def _secret_values(model: BaseModel) -> Iterator[str]:
    for name in type(model).model_fields:
        yield from _secrets_in(getattr(model, name))


def _secrets_in(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        yield from _secret_values(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_in(item)
