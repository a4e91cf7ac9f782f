"""The ``metric_plugin`` check: Mackerel metric plugins, with and without graph meta.

No Mackerel plugin is packaged for Debian or PyPI, so the plugins here are small
real shell scripts written into each test's tmp dir that speak the format as
mackerel-agent's own example (example/metrics-plugins/dice-with-meta.rb) and
go-mackerel-plugin do: ``name<TAB>value<TAB>epoch`` lines, and under
``MACKEREL_AGENT_PLUGIN_META=1`` a ``# mackerel-agent-plugin`` line and JSON.
"""

from __future__ import annotations

import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import checks
from agent.clock import FrozenClock, SystemClock
from agent.config import load_config
from agent.runner import CheckRunner
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import CheckContext, Clock, LocalResources, Result, Status
from checks.metricplugin import (
    GRAPH_META_KEY,
    MetaError,
    MetricPluginCheck,
    MetricPluginConfig,
    graph_definitions,
    parse_graph_meta,
    parse_metric_lines,
)

NOW = 1_790_000_000.0


def config(command: Any, **options: Any) -> MetricPluginConfig:
    return MetricPluginCheck.Config.model_validate({"command": command, **options})  # type: ignore[return-value]


def run(command: Any, *, state: dict[str, Any] | None = None, timeout: float = 10.0,
        clock: Clock | None = None, **options: Any) -> Result:
    context = CheckContext(clock=clock or SystemClock(),
                           state=state if state is not None else {})
    [result] = MetricPluginCheck("metrics", config(command, **options), timeout=timeout,
                                 context=context).execute()
    return result


def script(folder: Path, body: str, name: str = "plugin") -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip(), encoding="utf-8")
    path.chmod(0o755)
    return str(path)


DICE_META = {"graphs": {"dice": {"label": "My Dice", "unit": "integer", "metrics": [
    {"name": "d6", "label": "Die (d6)"}, {"name": "d20", "label": "Die (d20)", "stacked": True}]}}}


def dice(folder: Path, *, meta: bool) -> str:
    """A dice plugin like mackerel-agent's example; it counts its runs in ``runs``."""
    (folder / "meta.json").write_text(json.dumps(DICE_META))
    answer = f"""
        if [ "$MACKEREL_AGENT_PLUGIN_META" = "1" ]; then
          echo "# mackerel-agent-plugin"
          cat {folder}/meta.json
          exit 0
        fi
    """ if meta else ""
    return script(folder, f"""
        echo "${{MACKEREL_AGENT_PLUGIN_META:-unset}}" >> {folder}/runs
        {textwrap.dedent(answer).strip()}
        now=$(date +%s)
        printf 'dice.d6\\t4\\t%s\\n' "$now"
        printf 'dice.d20\\t17\\t%s\\n' "$now"
    """)


# -- config --------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = config(["/opt/mackerel/plugin"])
    assert MetricPluginCheck.type_name == "metric_plugin"
    assert MetricPluginCheck.default_interval == 60.0
    assert (cfg.thresholds, cfg.graph_meta, cfg.target) == ({}, True, "")


def test_thresholds_take_a_bare_critical_a_pair_or_lower_is_worse() -> None:
    cfg = config(["p"], thresholds={"queue.*": 100, "dice.d6": {"warning": 5, "critical": 6},
                                    "mem.free": {"warning": 20, "critical": 10, "below": True}})
    assert [(p, t.warning, t.critical, t.below) for p, t in cfg.thresholds.items()] == [
        ("queue.*", None, 100.0, False), ("dice.d6", 5.0, 6.0, False),
        ("mem.free", 20.0, 10.0, True)]


@pytest.mark.parametrize(("thresholds", "says"), [
    pytest.param({"a": {"warning": 9, "critical": 5}},
                 "expected warning (9) not above critical (5)", id="upside-down"),
    pytest.param({"a": {"warning": 5, "critical": 9, "below": True}},
                 "expected warning (5) not below critical (9) when below: true",
                 id="below-upside-down"),
    pytest.param({"a": True}, "or a bare number (critical), got true", id="boolean"),
    pytest.param({"a": {"critical": "inf"}}, "finite number", id="infinite"),
])
def test_bad_thresholds_are_refused(thresholds: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(["p"], thresholds=thresholds)
    assert says in str(caught.value)


# -- parsing -------------------------------------------------------------------------------


def test_metric_lines_are_name_value_epoch() -> None:
    lines = parse_metric_lines(f"tcp.CLOSING\t0\t{NOW:.0f}\n\nmem.used\t1.5e9\t{NOW:.0f}\n",
                               NOW)
    assert lines.values == {"tcp.CLOSING": 0.0, "mem.used": 1.5e9}
    assert lines.rejected == ()


def test_spaces_separate_fields_as_mackerel_agent_allows() -> None:
    assert parse_metric_lines(f"a.b 1 {NOW:.0f}", NOW).values == {"a.b": 1.0}


def test_a_repeated_name_keeps_the_last_value() -> None:
    assert parse_metric_lines(f"a 1 {NOW:.0f}\na 2 {NOW:.0f}", NOW).values == {"a": 2.0}


@pytest.mark.parametrize(("line", "why"), [
    pytest.param("only.two\t1", "expected name<TAB>value<TAB>epoch seconds", id="two-fields"),
    pytest.param(f"a\t1\t{NOW:.0f}\textra", "expected name<TAB>value<TAB>epoch seconds",
                 id="four-fields"),
    pytest.param(f"bad/name\t1\t{NOW:.0f}", "a metric name holds only", id="bad-name"),
    pytest.param(f"a\tmany\t{NOW:.0f}", "the value is not a number", id="word-value"),
    pytest.param(f"a\tNaN\t{NOW:.0f}", "the value is not a number", id="nan-value"),
    pytest.param("a\t1\tyesterday", "the timestamp is not epoch seconds", id="bad-epoch"),
    pytest.param(f"a\t1\t{NOW - 2 * 86400:.0f}", "the timestamp is more than 24 h from now",
                 id="stale"),
    pytest.param(f"a\t1\t{NOW + 2 * 86400:.0f}", "the timestamp is more than 24 h from now",
                 id="future"),
])
def test_a_malformed_line_is_rejected_with_its_number_and_reason(line: str, why: str) -> None:
    lines = parse_metric_lines(f"ok\t1\t{NOW:.0f}\n{line}\n", NOW)
    assert lines.values == {"ok": 1.0}
    assert len(lines.rejected) == 1
    assert lines.rejected[0].startswith(f"line 2: {why}")


GO_META = ('# mackerel-agent-plugin\n{"graphs":{"memcached.connections":{"label":"Memcached '
           'Connections","unit":"integer","metrics":[{"name":"curr_connections","label":'
           '"Connections","stacked":false}]}}}\n')


def test_graph_meta_as_go_mackerel_plugin_prints_it() -> None:
    assert parse_graph_meta(GO_META) == {"memcached.connections": {
        "label": "Memcached Connections", "unit": "integer",
        "metrics": [{"name": "curr_connections", "label": "Connections", "stacked": False}]}}


def test_graph_meta_reads_like_go_case_blind_keys_default_unit_and_version_1() -> None:
    text = ('#mackerel-agent-plugin version=1\n{"Graphs": {"g": {"Label": "G", "Metrics": '
            '[{"Name": "m", "Stacked": true}]}}}\ntrailing text is ignored\n')
    assert parse_graph_meta(text) == {"g": {"label": "G", "unit": "float", "metrics": [
        {"name": "m", "label": "", "stacked": True}]}}


@pytest.mark.parametrize(("text", "says"), [
    pytest.param("dice.d6\t4\t1\n", "the first line is not '# mackerel-agent-plugin'",
                 id="plain-metrics"),
    pytest.param("# mackerel-agent-plugin version=2\n{}", "unsupported meta version '2'",
                 id="version-2"),
    pytest.param("# mackerel-agent-plugin\n{graphs:", "the JSON after the header does not parse",
                 id="broken-json"),
    pytest.param("# mackerel-agent-plugin\n[]", 'expected a JSON object with "graphs"',
                 id="not-an-object"),
    pytest.param('# mackerel-agent-plugin\n{"graphs": {"g": {"metrics": [{"label": "x"}]}}}',
                 "\"metrics\" must be a list of {\"name\": …} objects", id="metric-without-name"),
])
def test_bad_graph_meta_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(MetaError, match=None) as caught:
        parse_graph_meta(text)
    assert says in str(caught.value)


# -- real script plugins ---------------------------------------------------------------------


def test_a_plugin_without_meta_exports_its_metrics_under_their_names(tmp_path: Path) -> None:
    state: dict[str, Any] = {}
    result = run([dice(tmp_path, meta=False)], state=state)
    assert (result.status, result.target) == (Status.OK, "metrics")
    assert result.message == f"2 metrics from {tmp_path / 'plugin'}"
    assert result.metrics == {"dice.d6": 4.0, "dice.d20": 17.0}
    assert graph_definitions(state) == {}
    assert state[GRAPH_META_KEY]["note"].startswith("the first line is not")


def test_graph_meta_is_asked_for_once_kept_in_state_and_values_run_without_it(
        tmp_path: Path) -> None:
    state: dict[str, Any] = {}
    plugin = dice(tmp_path, meta=True)
    first, second = run([plugin], state=state), run([plugin], state=state)
    assert first.metrics == second.metrics == {"dice.d6": 4.0, "dice.d20": 17.0}
    assert first.status is second.status is Status.OK
    # One meta run, then one values run per check run, with the variable unset.
    assert (tmp_path / "runs").read_text().split() == ["1", "unset", "unset"]
    assert graph_definitions(state) == {"dice": {"label": "My Dice", "unit": "integer", "metrics": [
        {"name": "d6", "label": "Die (d6)", "stacked": False},
        {"name": "d20", "label": "Die (d20)", "stacked": True}]}}


def test_graph_meta_is_asked_again_after_a_day_or_a_new_command(tmp_path: Path) -> None:
    plugin = script(tmp_path, f"""
        echo "${{MACKEREL_AGENT_PLUGIN_META:-unset}}" >> {tmp_path}/runs
        printf 'a\\t1\\t%s\\n' "$EPOCH"
    """)
    clock = FrozenClock(datetime.fromtimestamp(NOW, UTC))
    state: dict[str, Any] = {}

    def run_at(hours: float, *extra: str) -> Result:
        clock.advance(hours * 3600 - (clock.now().timestamp() - NOW))
        epoch = f"{clock.now().timestamp():.0f}"
        return run([plugin, *extra], state=state, clock=clock, env={"EPOCH": epoch})

    assert [run_at(h, *x).status for h, x in [(0, ()), (23, ()), (25, ()), (25, ("-v",))]] == [
        Status.OK] * 4
    assert (tmp_path / "runs").read_text().split() == [
        "1", "unset",   # first run: meta, then values
        "unset",        # 23 h later: values only
        "1", "unset",   # after a day: asked again
        "1", "unset"]   # the command changed: asked again


def test_a_hung_meta_run_leaves_time_for_the_values(tmp_path: Path) -> None:
    plugin = script(tmp_path, """
        [ "$MACKEREL_AGENT_PLUGIN_META" = "1" ] && exec sleep 1000
        printf 'a\\t1\\t%s\\n' "$(date +%s)"
    """)
    state: dict[str, Any] = {}
    started = time.monotonic()
    result = run([plugin], state=state, timeout=3)
    assert time.monotonic() - started < 6
    assert (result.status, result.metrics) == (Status.OK, {"a": 1.0})
    assert state[GRAPH_META_KEY]["note"] == "timed out"


@pytest.mark.parametrize(("thresholds", "status", "message"), [
    pytest.param({"dice.*": {"warning": 50}}, Status.OK,
                 "2 metrics from {p}, 2 judged against thresholds, all within", id="within"),
    pytest.param({"dice.d20": {"warning": 10, "critical": 20}}, Status.WARNING,
                 "dice.d20 = 17 ≥ warning 10", id="warning"),
    pytest.param({"dice.d20": 15, "dice.*": {"warning": 3}}, Status.CRITICAL,
                 "dice.d20 = 17 ≥ critical 15; dice.d6 = 4 ≥ warning 3",
                 id="first-matching-glob-judges"),
    pytest.param({"dice.d6": {"warning": 5, "critical": 4, "below": True}}, Status.CRITICAL,
                 "dice.d6 = 4 ≤ critical 4", id="lower-is-worse"),
    pytest.param({"queue.depth": 100}, Status.UNKNOWN,
                 "threshold pattern 'queue.depth' matched none of the 2 metrics printed "
                 "(dice.d6, dice.d20); fix the pattern or the plugin",
                 id="pattern-matches-nothing"),
])
def test_thresholds_judge_metrics_by_glob(tmp_path: Path, thresholds: dict[str, Any],
                                         status: Status, message: str) -> None:
    plugin = dice(tmp_path, meta=False)
    result = run([plugin], thresholds=thresholds)
    assert (result.status, result.message) == (status, message.format(p=plugin))
    assert result.metrics == {"dice.d6": 4.0, "dice.d20": 17.0}


def test_malformed_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    plugin = script(tmp_path, """
        now=$(date +%s)
        printf 'good\\t1\\t%s\\n' "$now"
        echo "this is not a metric"
        printf 'bad/name\\t2\\t%s\\n' "$now"
        echo
    """)
    result = run([plugin])
    assert (result.status, result.metrics) == (Status.OK, {"good": 1.0})
    assert result.message == (f"1 metric from {plugin}; 2 malformed lines ignored (line 2: "
                              "expected name<TAB>value<TAB>epoch seconds: 'this is not a "
                              "metric', …)")


@pytest.mark.parametrize(("body", "message"), [
    pytest.param("printf 'a\\t1\\t%s\\n' \"$(date +%s)\"\necho 'db down' >&2\nexit 1\n",
                 "{p} exited with code 1; stderr: db down", id="non-zero-exit"),
    pytest.param("echo 'nothing to report' >&2\n", "{p} printed no metrics; stderr: nothing "
                 "to report", id="no-metrics"),
    pytest.param("kill -TERM $$\n", "{p} was killed by signal 15 (SIGTERM)", id="signal"),
])
def test_a_failing_plugin_is_unknown_with_the_reason(tmp_path: Path, body: str,
                                                     message: str) -> None:
    plugin = script(tmp_path, body)
    result = run([plugin], graph_meta=False)
    assert (result.status, result.message) == (Status.UNKNOWN, message.format(p=plugin))


def test_a_plugin_that_hangs_is_unknown(tmp_path: Path) -> None:
    plugin = script(tmp_path, "exec sleep 1000\n")
    result = run([plugin], graph_meta=False, timeout=1)
    assert result.status is Status.UNKNOWN
    assert result.message.startswith(f"{plugin} did not finish within the check's timeout (1 s)")
    assert result.metrics == {}


def test_a_missing_plugin_is_unknown(tmp_path: Path) -> None:
    result = run([str(tmp_path / "nope")])
    assert (result.status, result.message) == (
        Status.UNKNOWN, f"plugin {tmp_path / 'nope'} not found: install it or fix `command`")


def test_a_metric_plugin_check_loads_from_yaml_and_runs_under_the_runner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.REGISTRY, "metric_plugin", "checks.metricplugin:MetricPluginCheck")
    plugin = dice(tmp_path, meta=True)
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent(f"""
        agent: {{state_dir: {tmp_path / 'state'}}}
        checks:
          - name: dice
            type: metric_plugin
            command: [{plugin}]
            thresholds: {{"dice.d20": {{warning: 10}}}}
    """))
    spec = load_config(path, environ={}).checks[0]
    state: dict[str, Any] = {}
    shared = LocalResources()
    check = build_check(spec, SystemClock(), shared, Redactor(), state)
    [result] = CheckRunner(SystemClock()).run(check, spec.timeout)
    shared.close()
    assert (result.check, result.status, result.message) == (
        "dice", Status.WARNING, "dice.d20 = 17 ≥ warning 10")
    assert list(graph_definitions(state)) == ["dice"]
