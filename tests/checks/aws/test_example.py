"""The documented AWS options in config/example.yaml load as written."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_config

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "example.yaml"


def test_the_documented_aws_checks_load_with_every_option() -> None:
    loaded = load_config(EXAMPLE, environ={"KANSHI_PROD_EXTERNAL_ID": "ext-7f3a",
                                           "KANSHI_PUBLISH_EXTERNAL_ID": "pub-9c1d",
                                           "KANSHI_HEARTBEAT_URL": "https://hc.example.jp/x"})

    specs = {s.name: s for s in loaded.checks}
    assert {specs[n].type_name for n in ("aws-prod", "ec2-status", "ec2-events",
                                         "aws-health")} == {"cloudwatch", "ec2_status",
                                                            "ec2_events", "aws_health"}
    assert (specs["aws-prod"].interval, specs["aws-prod"].timeout) == (300.0, 60.0)
    assert specs["ec2-events"].max_attempts == specs["aws-health"].max_attempts == 1
    assert {"ext-7f3a", "pub-9c1d"} <= loaded.secrets(), "external IDs are scrubbed from logs"
    prod = specs["ec2-status"].config.accounts[0]  # type: ignore[attr-defined]
    assert prod == specs["aws-prod"].config.accounts[0]  # type: ignore[attr-defined]
    publish = loaded.root.cloudwatch_publish
    assert publish is not None
    assert (publish.namespace, publish.timeout) == ("CWAgent", 10.0)
