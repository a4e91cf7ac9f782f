"""``kanshi aws setup`` against moto (SNS, CloudWatch alarms): the dry run prints the
plan and changes nothing, the first run creates, the second changes nothing and says
so, a changed threshold updates one alarm."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import pytest

import checks
from agent.cli.aws import add_parser, aws
from tests.checks.aws.conftest import REGION, client, run_instances

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, path in {"cloudwatch": "checks.cloudwatch:CloudWatchCheck",
                       "ec2_status": "checks.ec2_status:Ec2StatusCheck",
                       "ec2_events": "checks.ec2_status:Ec2EventsCheck",
                       "aws_health": "checks.aws_health:AwsHealthCheck"}.items():
        monkeypatch.setitem(checks.REGISTRY, name, path)


def write(tmp_path: Path, extra: str = "", critical: int = 90) -> Path:
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent(f"""
        agent: {{name: watcher, state_dir: state}}
        checks:
          - name: aws-prod
            type: cloudwatch
            accounts: [&prod {{name: prod, regions: [{REGION}]}}]
            tags: {{Env: prod}}
            components: [ec2]
            overrides:
              - {{component: ec2, item: cpu, critical: {critical}}}
            setup:
              topic: ops-alarms
              subscriptions: [{{protocol: email, endpoint: ops@example.com}}]
        """) + textwrap.indent(textwrap.dedent(extra), "  "), encoding="utf-8")
    return path


def cli(path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kanshi")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return aws(parser.parse_args(["aws", *argv, "-c", str(path)]))


def alarms() -> dict[str, dict[str, Any]]:
    found = client("cloudwatch").describe_alarms(AlarmNamePrefix="kanshi-")["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def topics() -> list[str]:
    return [t["TopicArn"] for t in client("sns").list_topics()["Topics"]]


def test_the_dry_run_prints_the_plan_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})

    code = cli(write(tmp_path), "setup", "--dry-run")

    out = capsys.readouterr().out
    assert code == 0
    assert f"{REGION}: would create SNS topic ops-alarms" in out
    assert "would subscribe email ops@example.com" in out
    assert f"would create alarm kanshi-ec2-{instance}-cpu — CPUUtilization Average 5m ≥ 90 " \
           "for 3 periods, missing data missing" in out
    assert f"would create alarm kanshi-ec2-{instance}-status_check" in out
    assert "skip alarm for ec2" in out and "no disk_used_percent metric yet" in out
    assert "dry run:" in out and "nothing changed" in out
    assert alarms() == {} and topics() == []


def test_setup_creates_topic_and_alarms_then_a_second_run_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    path = write(tmp_path)

    assert cli(path, "setup") == 0
    first = capsys.readouterr().out
    assert cli(path, "setup") == 0
    second = capsys.readouterr().out

    made = alarms()
    assert set(made) == {f"kanshi-ec2-{instance}-{i}" for i in ("status_check", "cpu",
                                                                 "memory")}
    cpu = made[f"kanshi-ec2-{instance}-cpu"]
    assert (cpu["Namespace"], cpu["MetricName"], cpu["Statistic"], cpu["Period"],
            cpu["Threshold"], cpu["ComparisonOperator"], cpu["TreatMissingData"]) == (
        "AWS/EC2", "CPUUtilization", "Average", 300, 90.0, "GreaterThanOrEqualToThreshold",
        "missing")
    (topic,) = topics()
    assert topic.endswith(":ops-alarms") and cpu["AlarmActions"] == [topic]
    assert "created SNS topic ops-alarms" in first and "3 alarm" not in first
    assert "subscribed email ops@example.com" in first
    assert second.strip().splitlines()[-1] == (
        "nothing to change: 1 topic(s), 1 subscription(s) and 3 alarm(s) already as planned")


def test_a_changed_threshold_updates_only_that_alarm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (instance,) = run_instances(1, {"Env": "prod"})
    cli(write(tmp_path), "setup")
    capsys.readouterr()

    assert cli(write(tmp_path, critical=95), "setup") == 0

    out = capsys.readouterr().out
    assert f"updated alarm kanshi-ec2-{instance}-cpu — Threshold, AlarmDescription changed" in out
    assert "1 change(s) made" in out
    assert alarms()[f"kanshi-ec2-{instance}-cpu"]["Threshold"] == 95.0


def test_cost_shows_queries_per_run_and_the_monthly_estimate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_instances(2, {"Env": "prod"})
    path = write(tmp_path, extra="""
          - name: health
            type: aws_health
            accounts: [*prod]
        """)

    assert cli(path, "cost") == 0

    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # 2 instances × (status check [1 min], cpu, memory, swap, network in, network out
    # [5 min]) = 12 queries in 2 calls a run; the disk has no CWAgent metric to query.
    # 8,760 runs a month; ListMetrics (the disk's paths) once an hour: 730 requests.
    row = lines["aws-prod"]
    assert row[2:6] == [REGION, "2", "12", "2"]
    assert row[6:9] == ["5m", "105,120", "730"]
    assert row[-1] == f"${(105_120 + 730) * 0.01 / 1000:.2f}"
    assert lines["health"][-2:] == ["free", "API"]
    assert "alarms `kanshi aws setup` would keep: 6" in out


def test_the_config_option_works_before_and_after_the_action(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="kanshi")
    add_parser(parser.add_subparsers(dest="command", required=True))

    before = parser.parse_args(["aws", "-c", "a.yaml", "setup", "--dry-run"])
    after = parser.parse_args(["aws", "cost", "-c", "b.yaml"])

    assert (before.config, before.aws_command, before.dry_run) == ("a.yaml", "setup", True)
    assert (after.config, after.aws_command) == ("b.yaml", "cost")


def test_without_an_aws_check_the_command_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kanshi.yaml"
    path.write_text("agent: {name: w, state_dir: state}\n"
                    "checks: [{name: root, type: disk}]\n", encoding="utf-8")

    with pytest.raises(SystemExit) as stop:
        cli(path, "cost")

    assert stop.value.code == 1
    assert "no AWS check in the config" in capsys.readouterr().err
