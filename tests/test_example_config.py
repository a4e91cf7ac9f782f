"""config/example.yaml is valid and documents every option there is."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import checks
import notifiers
from agent.config import load_config
from agent.config.models import CheckEntry, NotifierEntry, RootConfig
from agent.plugins import load_plugin

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def keys_in(model: type[BaseModel]) -> set[str]:
    """Every option of ``model`` and of the models nested in it (in lists and maps too)."""
    found: set[str] = set()
    for name, info in model.model_fields.items():
        found.add(info.alias or name)
        for nested in models_in(info.annotation):
            found |= keys_in(nested)
    return found


def models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def all_models() -> list[type[BaseModel]]:
    plugins = [load_plugin(checks.REGISTRY, t).Config for t in checks.REGISTRY]
    plugins += [load_plugin(notifiers.REGISTRY, t).Config for t in notifiers.REGISTRY]
    return [RootConfig, CheckEntry, NotifierEntry, *plugins]


#: The secrets the example requires (the rest have ${VAR:-} defaults).
REQUIRED_ENV = {"KANSHI_PROD_EXTERNAL_ID": "ext-7f3a", "KANSHI_PUBLISH_EXTERNAL_ID": "pub-9c1d",
                "KANSHI_HEARTBEAT_URL": "https://hc.example.jp/ping/6f1e"}


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE, environ=REQUIRED_ENV)
    assert "https://hc.example.jp/ping/6f1e" in config.secrets()
    assert {c.type_name for c in config.checks} == set(checks.REGISTRY)
    assert {n.type_name for n in config.notifiers} == set(notifiers.REGISTRY)


@pytest.mark.parametrize("model", all_models(), ids=lambda m: m.__qualname__)
def test_every_option_is_documented_in_the_example(model: type[BaseModel]) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = [key for key in sorted(keys_in(model))
               if not re.search(rf"(^|[\s{{,#-]){re.escape(key)}:", text, re.MULTILINE)]
    assert missing == [], f"undocumented in config/example.yaml: {missing}"
