"""Loading config files: includes, ${ENV}, defaults, and errors a person can fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import checks
from agent.config import ConfigError, load_config
from agent.paths import REPO_CONFIG
from checks.disk import DiskCheck


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=env or {})
    return [str(issue) for issue in caught.value.issues]


def test_the_embedded_default_config_loads() -> None:
    config = load_config(REPO_CONFIG, environ={})
    names = {c.name: c for c in config.checks}
    assert {"ping", "disk", "inode"} <= names.keys()
    assert names["ping"].interval == 600.0  # SPEC §1: ICMP ping every 10 minutes
    assert names["disk"].config.threshold.critical == 90.0  # type: ignore[attr-defined]
    assert names["inode"].config.threshold.warning == 50.0  # type: ignore[attr-defined]
    assert {n.type_name for n in config.notifiers} == {"terminal", "file"}
    assert config.state_dir == REPO_CONFIG.parent.parent.resolve() / "var"


def test_check_defaults_come_from_the_defaults_section(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        defaults: {retry_interval: 30s, max_attempts: 5, severity: 1}
        checks:
          - {name: d, type: disk}
          - {name: e, type: disk, max_attempts: 2, interval: 1m}
    """)
    d, e = load_config(path, environ={}).checks
    assert (d.retry_interval, d.max_attempts, d.severity) == (30.0, 5, "1")
    assert d.interval == DiskCheck.default_interval
    assert (e.max_attempts, e.interval, e.retry_interval) == (2, 60.0, 30.0)


def test_every_error_is_reported_at_once_with_file_line_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        agent:
          locale: fr
        checks:
          - name: a
            type: disk
            intervl: 10m
          - name: b
            type: disk
            threshold: "9O"
          - name: c
            type: pign
    """)
    assert problems(path) == [
        f"{path}:2: agent.locale: expected one of 'en' or 'ja', got \"fr\"",
        f"{path}:6: checks[0].intervl: unknown key 'intervl' — did you mean 'interval'?",
        f"{path}:9: checks[1].threshold: expected a number between 0 and 100, got \"9O\"",
        f"{path}:11: checks[2].type: unknown check type 'pign' — did you mean 'ping'?",
    ]


@pytest.mark.parametrize(("snippet", "expected"), [
    pytest.param("checks: [{name: a, type: disk, max_attempts: zero}]",
                 "checks[0].max_attempts: expected an integer, got \"zero\"", id="int"),
    pytest.param("checks: [{name: a, type: disk, max_attempts: 0}]",
                 "checks[0].max_attempts: expected a number ≥ 1, got 0", id="bound"),
    pytest.param("checks: [{name: a, type: disk, interval: soon}]",
                 "checks[0].interval: expected a duration such as 30s, 10m or 1h, got \"soon\"",
                 id="duration"),
    pytest.param("checks: [{name: a, type: disk, timeout: 20m}]",
                 "checks[0].timeout: expected at most the interval (600 s), got 1200 s",
                 id="timeout-past-interval"),
    pytest.param("checks: [{name: p, type: ping, targets: [127.0.0.1], count: 5,"
                 " probe_interval: 2s, probe_timeout: 3s, timeout: 10s}]",
                 "checks[0].timeout: expected at least 11 s, the least one run of this check "
                 "takes as configured, got 10 s", id="timeout-shorter-than-a-ping-sweep"),
    pytest.param("checks: [{name: a, type: disk, threshold: {warning: 95, critical: 90}}]",
                 "checks[0].threshold: expected warning (95) not above critical (90)",
                 id="warning-above-critical"),
    pytest.param("checks: [{name: a b, type: disk}]",
                 "checks[0].name: expected letters, digits and . _ @ - (starting with a "
                 "letter or digit), got \"a b\"", id="name"),
    pytest.param("checks: [{name: a}]",
                 "checks[0]: required key missing: type (one of " + ", ".join(sorted(
                     checks.REGISTRY)) + ")", id="no-type"),
    pytest.param("checks: [{name: a, type: disk}, {name: a, type: inode}]",
                 "checks[1].name: duplicate check name 'a'", id="duplicate-name"),
    pytest.param("checks: [{name: a, type: disk, notify: [mial]}]\n"
                 "notifiers: [{name: mail, type: terminal}]",
                 "checks[0].notify[0]: unknown notifier 'mial' — did you mean 'mail'?",
                 id="unknown-route"),
    pytest.param("notifiers: [{name: t, type: terminal, fallback: t}]",
                 "notifiers[0].fallback: a channel cannot be its own fallback", id="self-fallback"),
    pytest.param("agent: {timezone: Mars/Olympus}",
                 "agent.timezone: expected an IANA time zone such as Asia/Tokyo, got "
                 "\"Mars/Olympus\"", id="timezone"),
    pytest.param("checks: {name: a}", "checks: expected a list, got a mapping", id="not-a-list"),
    pytest.param("agent: {locale: en}\nagent: {locale: ja}",
                 "agent: duplicate key (first written on line 1)", id="duplicate-key"),
])
def test_a_bad_value_gets_a_message_that_says_what_was_expected(
        tmp_path: Path, snippet: str, expected: str) -> None:
    path = write(tmp_path, "k.yaml", snippet + "\n")
    assert any(p.split(": ", 1)[1] == expected for p in problems(path)), problems(path)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "checks:\n  - name: a\n   type: [disk\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:3: invalid YAML:")


def test_env_values_are_interpolated_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        agent: {name: "${HOST_LABEL}", state_dir: "${STATE:-/tmp/kanshi-x}"}
        notifiers:
          - {name: f, type: file, path: "$${literal}/a.jsonl"}
    """)
    config = load_config(path, environ={"HOST_LABEL": "web01"})
    assert config.root.agent.name == "web01"
    assert config.state_dir == Path("/tmp/kanshi-x")
    assert str(config.notifiers[0].config.path).endswith("${literal}/a.jsonl")  # type: ignore[attr-defined]


def test_a_missing_env_var_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "agent: {name: '${NOPE}'}\n")
    assert problems(path) == [f"{path}:1: agent.name: environment variable NOPE is not set "
                              "(write ${NOPE:-default} to give a default)"]


def test_a_secret_from_the_environment_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        notifiers:
          - name: mail
            type: email
            host: 127.0.0.1
            port: ${SMTP_PORT}
            username: ops
            password: ${SMTP_PASSWORD}
            from: kanshi@example.com
            to: [ops@example.com]
    """)
    found = problems(path, {"SMTP_PORT": "s3cr3t-port", "SMTP_PASSWORD": "hunter2"})
    assert found == [f"{path}:5: notifiers[0].port: expected an integer (the value comes "
                     "from ${SMTP_PORT} and is not shown)"]
    assert not any("s3cr3t" in p or "hunter2" in p for p in found)


def test_secrets_are_collected_for_scrubbing(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        notifiers:
          - {name: mail, type: email, host: 127.0.0.1, username: ops, password: "${PW}",
             from: a@example.com, to: [b@example.com]}
    """)
    assert "hunter2" in load_config(path, environ={"PW": "hunter2"}).secrets()


def test_includes_merge_checks_by_name_and_the_including_file_wins(tmp_path: Path) -> None:
    write(tmp_path, "profiles/base.yaml", """
        agent: {locale: ja}
        checks:
          - {name: disk, type: disk, threshold: {warning: 80, critical: 90}}
          - {name: inode, type: inode}
    """)
    path = write(tmp_path, "k.yaml", """
        include: [profiles/base.yaml]
        checks:
          - {name: disk, threshold: {critical: 95}}
          - {name: inode, enabled: false}
          - {name: extra, type: disk}
    """)
    config = load_config(path, environ={})
    by_name = {c.name: c for c in config.checks}
    assert config.root.agent.locale == "ja"
    assert by_name["disk"].config.threshold.warning == 80.0  # type: ignore[attr-defined]
    assert by_name["disk"].config.threshold.critical == 95.0  # type: ignore[attr-defined]
    assert not by_name["inode"].enabled
    assert [c.name for c in config.enabled_checks] == ["disk", "extra"]


def test_an_error_in_an_included_file_points_into_that_file(tmp_path: Path) -> None:
    profile = write(tmp_path, "profiles/base.yaml", """
        checks:
          - {name: disk, type: disk, threshold: {critical: 200}}
    """)
    path = write(tmp_path, "k.yaml", "include: [profiles/base.yaml]\n")
    assert problems(path) == [f"{profile}:2: checks[0].threshold.critical: expected a number "
                              "between 0 and 100, got 200"]


def test_include_cycles_and_missing_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: [k.yaml]\n")
    path = write(tmp_path, "k.yaml", "include: [a.yaml, nope.yaml]\n")
    found = problems(path)
    assert any("include cycle through k.yaml" in p for p in found)
    assert any(p.startswith(f"{path}:1: include[1]: file not found") for p in found)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "etc/k.yaml", """
        agent: {state_dir: ../state}
        notifiers: [{name: f, type: file, path: alerts.jsonl}]
    """)
    config = load_config(path, environ={})
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.notifiers[0].config.path == (tmp_path / "etc/alerts.jsonl").resolve()  # type: ignore[attr-defined]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60,
                          check=False)


@pytest.mark.parametrize("text", [
    pytest.param("checks: [{name: a, type: disk, threshold: 9O}]\n", id="wrong-type"),
    pytest.param("checks: [{name: a, type: disk, intervl: 1m}]\n", id="unknown-key"),
    pytest.param("checks: [\n", id="bad-yaml"),
    pytest.param("- just\n- a list\n", id="not-a-mapping"),
    pytest.param("\x00\x01", id="binary"),
])
def test_config_check_exits_2_with_messages_and_no_traceback(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(text, encoding="utf-8")
    done = run_cli("config", "check", str(path))
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_config_check_on_a_good_file_exits_0() -> None:
    done = run_cli("config", "check", str(REPO_CONFIG))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_run_with_a_bad_config_exits_2_without_starting(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "checks: [{name: a, type: disk, intervl: 1m}]\n")
    done = run_cli("run", "-c", str(path))
    assert done.returncode == 2
    assert "did you mean 'interval'?" in done.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(("entry", "path"), [
    pytest.param("{name: m, type: email, host: h, from: a@b.cc, to: [c@d.ee], username: u,"
                 " password: 314159265}", "notifiers[0].password", id="smtp-password"),
    pytest.param("{name: w, type: webhook, url: 271828182}", "notifiers[0].url", id="webhook-url"),
    pytest.param("{name: w, type: webhook, url: 'https://h/x', headers: {X-Token: 161803398}}",
                 "notifiers[0].headers.X-Token", id="webhook-header"),
])
def test_a_secret_written_in_the_file_is_never_echoed_either(tmp_path: Path, entry: str,
                                                              path: str) -> None:
    config = write(tmp_path, "k.yaml", f"notifiers:\n  - {entry}\n")
    (found,) = problems(config)
    assert found.endswith(f"{path}: expected a string (a secret: the value is not shown)")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("a: &a [*a]\n", "an alias refers to a collection that contains it (a cycle)",
                 id="recursive-alias"),
    pytest.param("".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else 'x'}]\n"
                         for i in range(9)),
                 "the file expands to more than 100000 values (aliases that multiply? a YAML "
                 "bomb?)", id="alias-bomb"),
    pytest.param("x: " + "[" * 150 + "]" * 150 + "\n", "nested more than 100 levels deep",
                 id="deep-nesting"),
    pytest.param('"x[1]": 1\n', "x[1]: unknown key 'x[1]' (allowed here: agent, "
                 "business_hours, checks, clocks, cloudwatch_publish, contacts, defaults, "
                 "escalation, include, maintenance, notifiers, outbox, plan, runbooks, "
                 "scheduler, severities, store)",
                 id="brackets-in-a-key"),
    pytest.param("defaults: {flapping: {high: 25, low: 75}}\n",
                 "defaults.flapping: expected low (75) below high (25)", id="flapping-inverted"),
    pytest.param("outbox: {fallback_after: 2d, give_up_after: 1d}\n",
                 "outbox: expected fallback_after not above give_up_after", id="outbox-order"),
    pytest.param("checks: [{name: a, type: disk, interval: 100000000d}]\n",
                 "checks[0].interval: expected a duration greater than 0 and at most 366d, got "
                 "\"100000000d\"", id="duration-too-long"),
])
def test_hostile_or_odd_files_get_a_message_not_a_traceback(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    path = write(tmp_path, "k.yaml", text)
    found = [p.split(": ", 1)[1] for p in problems(path)]
    assert expected in found, found


def test_an_included_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    profile = write(tmp_path, "p.yaml", "- just a list\n")
    path = write(tmp_path, "k.yaml", "include: [p.yaml]\n")
    assert problems(path) == [f"{profile}:1: expected a mapping at the top of an included file"]


def test_list_positions_are_given_as_in_the_file_the_message_points_into(
        tmp_path: Path) -> None:
    profile = write(tmp_path, "p.yaml", """
        checks:
          - {name: p1, type: disk}
          - {name: p2, type: ping, targets: []}
    """)
    path = write(tmp_path, "k.yaml", """
        include: [p.yaml]
        checks:
          - {name: x, type: disk}
          - {name: y, type: disk}
          - {name: p2, count: 0}
    """)
    assert sorted(problems(path)) == sorted([
        f"{profile}:3: checks[1].targets: expected a list of at least one host name or IP "
        "address, got an empty list",
        f"{path}:5: checks[2].count: expected a whole number of probes from 1 to 100, got 0"])


def test_warnings_name_notices_that_would_go_nowhere(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        checks: [{name: a, type: disk, notify: [m]}]
        notifiers:
          - {name: m, type: terminal, enabled: false}
          - {name: t, type: terminal, fallback: m}
    """)
    warnings = [str(w) for w in load_config(path, environ={}).warnings]
    assert warnings == [
        f"{path}:1: checks[0].notify[0]: notifier 'm' is disabled: these notices are dropped",
        f"{path}:1: checks[0]: none of this check's notifiers is enabled: its problems will "
        "only be logged",
        f"{path}:4: notifiers[1].fallback: notifier 'm' is disabled: undelivered notices will "
        "not be copied"]


def test_an_empty_config_loads_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", "")
    assert [w.message for w in load_config(path, environ={}).warnings] == [
        "no check is enabled: the agent will watch nothing",
        "no notification channel is enabled: problems will only be logged"]


def test_contacts_and_escalation_names_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        notifiers: [{name: mail, type: terminal}]
        contacts:
          - {name: tanaka, notify: [mial]}
        escalation:
          - levels: [{contacts: [tanka], repeat: 10m}, {contacts: [tanaka]}]
    """)
    assert [p.split(": ", 1)[1] for p in problems(path)] == [
        "contacts[0].notify[0]: unknown notifier 'mial' — did you mean 'mail'?",
        "escalation[0].levels[0].contacts[0]: unknown contact 'tanka' — did you mean "
        "'tanaka'?"]


def test_an_escalation_level_that_cannot_be_left_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        notifiers: [{name: mail, type: terminal}]
        contacts: [{name: tanaka, notify: [mail]}]
        escalation:
          - levels: [{contacts: [tanaka]}, {contacts: [tanaka]}]
    """)
    assert [p.split(": ", 1)[1] for p in problems(path)] == [
        "escalation[0]: expected repeat on every level but the last (it says when to go to "
        "the next level)"]


@pytest.mark.parametrize("profile", sorted(
    p.name for p in (REPO_CONFIG.parent / "profiles").glob("*.yaml")))
def test_every_provider_profile_loads(tmp_path: Path, profile: str) -> None:
    path = write(tmp_path, "k.yaml", f"include: [{REPO_CONFIG.parent}/profiles/{profile}]\n")
    config = load_config(path, environ={})
    assert config.root.plan.name or profile == "host-baseline.yaml"


def test_a_log_hold_shorter_than_the_confirmation_is_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "k.yaml", """
        notifiers: [{name: t, type: terminal}]
        checks:
          - {name: app, type: logfile, paths: [/var/log/app.log], patterns: [ERROR],
             hold: 1m, max_attempts: 3, retry_interval: 1m}
    """)
    (warning,) = load_config(path, environ={}).warnings
    assert warning.path == "checks[0]"
    assert warning.message.startswith("hold (60 s) is shorter than confirming a problem takes "
                                      "(120 s")
