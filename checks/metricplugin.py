"""The ``metric_plugin`` check: run a Mackerel metric plugin, keep its figures.

NTT East's EC2 row asks for "official metric plugins" (SPEC §2), i.e. Mackerel's
(mackerel-agent-plugins, go-mackerel-plugin). Their contract
(https://mackerel.io/docs/entry/advanced/custom-metrics):

- each stdout line is ``{metric name}\\t{metric value}\\t{epoch seconds}``;
  names use only ``[-a-zA-Z0-9_.]``; metrics stamped more than 24 h from now are
  not posted. mackerel-agent splits on any whitespace (``strings.Fields`` in
  ``metrics/plugin.go``), and so do we. Blank lines are skipped; any other line
  that does not fit is counted and named in the message, never fatal.
- run with ``MACKEREL_AGENT_PLUGIN_META=1`` a plugin may print its graph
  definitions instead: a first line matching ``^#\\s*mackerel-agent-plugin\\b``
  (optionally ``version=1``, the only version there is), then a JSON object
  ``{"graphs": {NAME: {"label", "unit", "metrics": [{"name", "label",
  "stacked"}]}}}`` (mackerel-agent ``metrics/plugin.go``, ``loadPluginMeta``).
  Like mackerel-agent we ask once (and again daily or when the command changes),
  keep the definitions in the check's state (:func:`graph_definitions`) for
  graphs, and run for values with the variable unset.

Metrics are exported under the plugin's own names. The status is OK unless a
configured threshold (by glob on the metric name) is crossed, a threshold
matches no metric, or the command fails (UNKNOWN with the reason).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, FiniteFloat, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, Result, Status, worst
from checks.plugin import (
    CommandConfig,
    Completed,
    NotStarted,
    cap,
    describe_signal,
    run_command,
    stderr_excerpt,
)
from checks.types import Thresholds, expected_error

logger = logging.getLogger(__name__)

META_ENV = "MACKEREL_AGENT_PLUGIN_META"
#: Key in ``CheckContext.state`` holding the last graph meta answer.
GRAPH_META_KEY = "graph_meta"
#: Ask for graph meta again after this long (a plugin upgrade may add graphs).
META_REFRESH = 86400.0
#: Mackerel drops metrics stamped further than this from now (custom-metrics docs).
MAX_SKEW = 86400.0
#: Bytes of stdout kept: exporter-style plugins print thousands of lines.
METRIC_STDOUT_LIMIT = 4 * 1024 * 1024
MESSAGE_LIMIT = 4096

_NAME = re.compile(r"^[-a-zA-Z0-9_.]+$")
_META_HEADER = re.compile(r"^#\s*mackerel-agent-plugin\b(.*)")


class MetricThreshold(CheckConfig):
    """warning/critical for the metrics a glob matches; ``below: true`` = lower is worse."""

    warning: FiniteFloat | None = None
    critical: FiniteFloat | None = None
    below: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, dict | int | float):
            raise expected_error("{warning: N, critical: N, below: false} or a bare number "
                                 "(critical)", value)
        return value if isinstance(value, dict) else {"critical": value}

    @model_validator(mode="after")
    def _ordered(self) -> MetricThreshold:
        w, c = self.warning, self.critical
        if w is not None and c is not None and (w < c if self.below else w > c):
            side = "below" if self.below else "above"
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) not {side} critical ({c})"
                + (" when below: true (lower is worse)" if self.below else ""),
                {"w": f"{w:g}", "c": f"{c:g}", "side": side})
        return self

    def judge(self, value: float) -> Status:
        """Status of ``value``: ``>=`` a level, or ``<=`` with ``below``."""
        if not self.below:
            return Thresholds(warning=self.warning, critical=self.critical).judge(value)
        # Lower is worse: the same >= comparison on negated numbers.
        return Thresholds(warning=_neg(self.warning), critical=_neg(self.critical)).judge(-value)

    def limit(self, status: Status) -> float | None:
        return {Status.CRITICAL: self.critical, Status.WARNING: self.warning}.get(status)


def _neg(value: float | None) -> float | None:
    return None if value is None else -value


class MetricPluginConfig(CommandConfig):
    """Options of a ``type: metric_plugin`` check (documented in config/example.yaml)."""

    #: metric-name glob → threshold; the first glob (in config order) matching a metric judges it.
    thresholds: dict[str, MetricThreshold] = Field(default_factory=dict)
    #: Ask the plugin for its graph definitions (MACKEREL_AGENT_PLUGIN_META=1).
    graph_meta: bool = True


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricLines:
    """Values a metric plugin printed, and the lines that were not metrics."""

    values: dict[str, float]
    #: "line N: why: 'the line'" for each line ignored
    rejected: tuple[str, ...] = ()


def parse_metric_lines(stdout: str, now: float) -> MetricLines:
    """``name value epoch`` lines → values (a repeated name: the last one wins)."""
    values: dict[str, float] = {}
    rejected: list[str] = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _metric_line(line, now)
        if isinstance(parsed, str):
            rejected.append(f"line {number}: {parsed}: {cap(line.strip(), 80)!r}")
        else:
            values[parsed[0]] = parsed[1]
    return MetricLines(values, tuple(rejected))


def _metric_line(line: str, now: float) -> tuple[str, float] | str:
    """(name, value), or why the line is not a metric."""
    fields = line.split()
    if len(fields) != 3:
        return "expected name<TAB>value<TAB>epoch seconds"
    name, value, stamp = fields
    if not _NAME.match(name):
        return "a metric name holds only letters, digits and - _ ."
    number, epoch = _finite(value), _finite(stamp)
    if number is None:
        return "the value is not a number"
    if epoch is None:
        return "the timestamp is not epoch seconds"
    if abs(epoch - now) > MAX_SKEW:
        return "the timestamp is more than 24 h from now (Mackerel would drop it)"
    return name, number


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class MetaError(ValueError):
    """Graph meta output that does not follow the mackerel-agent-plugin format."""


def parse_graph_meta(stdout: str) -> dict[str, dict[str, Any]]:
    """Graph definitions from a ``MACKEREL_AGENT_PLUGIN_META=1`` run, normalised to
    ``{graph: {"label", "unit", "metrics": [{"name", "label", "stacked"}]}}``."""
    header, _, body = stdout.partition("\n")
    match = _META_HEADER.match(header)
    if match is None:
        raise MetaError(f"the first line is not '# mackerel-agent-plugin': {cap(header, 80)!r}")
    fields = dict(f.partition("=")[::2] for f in match[1].split())
    if fields.get("version", "1") != "1":
        raise MetaError(f"unsupported meta version {fields['version']!r} (only 1 exists)")
    try:
        # Go's json.Decoder reads the first value and ignores what follows: so do we.
        data, _ = json.JSONDecoder().raw_decode(body.strip())
    except json.JSONDecodeError as exc:
        raise MetaError(f"the JSON after the header does not parse: {exc}") from exc
    graphs = _key(data, "graphs") if isinstance(data, dict) else None
    if not isinstance(graphs, dict):
        raise MetaError('expected a JSON object with "graphs": {name: definition}')
    return {str(name): _graph(str(name), graph) for name, graph in graphs.items()}


def _graph(name: str, graph: Any) -> dict[str, Any]:
    if not isinstance(graph, dict):
        raise MetaError(f"graph {name!r} is not a JSON object")
    metrics = _key(graph, "metrics") or []
    if not isinstance(metrics, list) or not all(
            isinstance(m, dict) and isinstance(_key(m, "name"), str) for m in metrics):
        raise MetaError(f'graph {name!r}: "metrics" must be a list of {{"name": …}} objects')
    return {"label": str(_key(graph, "label") or ""),
            "unit": str(_key(graph, "unit") or "float"),  # mackerel-agent's default
            "metrics": [{"name": _key(m, "name"), "label": str(_key(m, "label") or ""),
                         "stacked": bool(_key(m, "stacked"))} for m in metrics]}


def _key(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]``, matching keys case-insensitively as Go's encoding/json does."""
    if name in obj:
        return obj[name]
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name), None)


def graph_definitions(state: MutableMapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The graph definitions a metric_plugin check last got from its plugin ({} if none)."""
    meta = state.get(GRAPH_META_KEY) or {}
    return dict(meta.get("graphs") or {})


def _fingerprint(command: tuple[str, ...]) -> str:
    """Stands for the command in the stored state: arguments may hold passwords."""
    return hashlib.sha256(json.dumps(command).encode()).hexdigest()[:16]


# -- the check ------------------------------------------------------------------------------


class MetricPluginCheck(Check):
    """One Mackerel metric plugin: its figures become metrics, thresholds judge them."""

    type_name: ClassVar[str] = "metric_plugin"
    Config: ClassVar[type[CheckConfig]] = MetricPluginConfig
    #: mackerel-agent collects plugin metrics once a minute.
    default_interval: ClassVar[float] = 60.0

    @property
    def _config(self) -> MetricPluginConfig:
        return self.config  # type: ignore[return-value]

    def run(self) -> Result:
        config = self._config
        target = config.target or self.name
        started = time.monotonic()
        try:
            if config.graph_meta and self._meta_is_stale():
                self._ask_for_meta(self.timeout / 2)  # a hung meta run leaves time for values
            remaining = max(self.timeout - (time.monotonic() - started), 0.1)
            done = run_command(config.command, timeout=remaining, cwd=config.cwd,
                               env=config.environment({META_ENV: None}),
                               stdout_limit=METRIC_STDOUT_LIMIT)
        except NotStarted as exc:
            return Result(Status.UNKNOWN, self.context.scrub(str(exc)), target)
        status, message, metrics = self._judge(done)
        return Result(status, cap(self.context.scrub(message), MESSAGE_LIMIT), target, metrics)

    # graph meta

    def _meta_is_stale(self) -> bool:
        meta = self.context.state.get(GRAPH_META_KEY) or {}
        age = self.context.clock.now().timestamp() - float(meta.get("asked_at", 0))
        return meta.get("command") != _fingerprint(self._config.command) \
            or not 0 <= age < META_REFRESH

    def _ask_for_meta(self, timeout: float) -> None:
        config = self._config
        done = run_command(config.command, timeout=timeout, cwd=config.cwd,
                           env=config.environment({META_ENV: "1"}),
                           stdout_limit=METRIC_STDOUT_LIMIT)
        graphs: dict[str, Any] | None = None
        note = ""
        if done.timed_out or done.exit_code != 0:
            note = "timed out" if done.timed_out else f"exited with code {done.exit_code}"
        else:
            try:
                graphs = parse_graph_meta(done.stdout)
            except MetaError as exc:
                note = str(exc)
        if note:
            logger.info("check %s: no graph definitions from %s (%s=1): %s", self.name,
                        config.command[0], META_ENV, note)
        self.context.state[GRAPH_META_KEY] = {
            "command": _fingerprint(config.command),
            "asked_at": self.context.clock.now().timestamp(),
            "graphs": graphs, "note": self.context.scrub(note)}

    # judging

    def _judge(self, done: Completed) -> tuple[Status, str, dict[str, float]]:
        program = self._config.command[0]
        if done.timed_out:
            return Status.UNKNOWN, (
                f"{program} did not finish within the check's timeout ({self.timeout:g} s) "
                "and was killed with its child processes; raise the check's `timeout`"
                + stderr_excerpt(done.stderr)), {}
        lines = parse_metric_lines(done.stdout, self.context.clock.now().timestamp())
        failure = _failure(program, done, lines)
        verdicts = self._verdicts(lines.values) if lines.values else []
        statuses = [s for s, _ in verdicts] + ([Status.UNKNOWN] if failure else [])
        status = worst(statuses)
        parts = ([failure] if failure else []) + [t for s, t in verdicts if s is not Status.OK]
        if not parts:
            parts = [_summary(program, lines.values, verdicts)]
        return status, "; ".join(parts) + _rejected(lines, done), lines.values

    def _verdicts(self, values: dict[str, float]) -> list[tuple[Status, str]]:
        """One (status, text) per judged metric, worst first, plus an UNKNOWN per
        threshold glob that matched nothing (a renamed metric must not go quiet)."""
        verdicts: list[tuple[Status, str]] = []
        used: set[str] = set()
        for name, value in values.items():
            pattern = next((p for p in self._config.thresholds
                            if fnmatch.fnmatchcase(name, p)), None)
            if pattern is not None:
                used.add(pattern)
                verdicts.append(_verdict(name, value, self._config.thresholds[pattern]))
        for pattern in self._config.thresholds:
            if pattern not in used:
                verdicts.append((Status.UNKNOWN, _unmatched(pattern, values)))
        rank = {Status.CRITICAL: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.OK: 3}
        return sorted(verdicts, key=lambda v: rank[v[0]])


def _verdict(name: str, value: float, threshold: MetricThreshold) -> tuple[Status, str]:
    status = threshold.judge(value)
    limit = threshold.limit(status)
    if limit is None:
        return status, f"{name} = {value:g}"
    sign = "≤" if threshold.below else "≥"
    return status, f"{name} = {value:g} {sign} {status.name.lower()} {limit:g}"


def _unmatched(pattern: str, values: dict[str, float]) -> str:
    shown = ", ".join(list(values)[:5]) + (", …" if len(values) > 5 else "")
    return (f"threshold pattern {pattern!r} matched none of the {len(values)} metrics "
            f"printed ({shown}); fix the pattern or the plugin")


def _failure(program: str, done: Completed, lines: MetricLines) -> str:
    """Why the run failed, or "" if it did not."""
    code = done.exit_code
    if code is not None and code < 0:
        return f"{program} was killed by {describe_signal(-code)}" + stderr_excerpt(done.stderr)
    if code:
        return f"{program} exited with code {code}" + stderr_excerpt(done.stderr)
    if not lines.values:
        return f"{program} printed no metrics" + stderr_excerpt(done.stderr)
    return ""


def _summary(program: str, values: dict[str, float],
             verdicts: list[tuple[Status, str]]) -> str:
    text = f"{len(values)} metric{'s' if len(values) != 1 else ''} from {program}"
    if verdicts:
        text += f", {len(verdicts)} judged against thresholds, all within"
    return text


def _rejected(lines: MetricLines, done: Completed) -> str:
    text = ""
    if lines.rejected:
        count = len(lines.rejected)
        text = (f"; {count} malformed line{'s' if count != 1 else ''} ignored "
                f"({lines.rejected[0]}{', …' if count > 1 else ''})")
        logger.warning("metric plugin printed %d malformed lines: %s", count,
                       list(lines.rejected[:10]))
    if done.stdout_dropped:
        text += f"; output beyond {METRIC_STDOUT_LIMIT // (1024 * 1024)} MiB ignored"
    return text

