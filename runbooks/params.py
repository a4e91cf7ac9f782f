"""Runbook parameters: typed, validated before anything runs, every error at once."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from checks.types import parse_duration
from runbooks.schema import Parameter, Runbook

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ParameterError(ValueError):
    """Bad parameters; ``problems`` lists every one as ``name: what was expected``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def resolve(runbook: Runbook, given: Mapping[str, Any]) -> dict[str, Any]:
    """The runbook's parameters from ``given`` (strings from a CLI are converted)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name in given:
        if name not in runbook.parameters:
            close = difflib.get_close_matches(name, list(runbook.parameters), n=1)
            hint = f" — did you mean '{close[0]}'?" if close else \
                f" (known: {', '.join(sorted(runbook.parameters)) or 'none'})"
            problems.append(f"{name}: unknown parameter{hint}")
    for name, spec in runbook.parameters.items():
        if name in given:
            try:
                values[name] = convert(spec, given[name])
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        elif spec.required:
            problems.append(f"{name}: required ({spec.description or spec.type})")
        else:
            values[name] = spec.default
    if problems:
        raise ParameterError(problems)
    return values


def convert(spec: Parameter, raw: Any) -> Any:
    """``raw`` as ``spec.type``, checked against its choices and pattern."""
    value = _typed(spec.type, raw)
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"expected one of {', '.join(map(str, spec.choices))}, got {raw!r}")
    if spec.pattern is not None:
        for item in value if isinstance(value, list) else [value]:
            if not re.fullmatch(spec.pattern, str(item)):
                shown = "the value" if spec.type == "secret" else repr(item)
                raise ValueError(f"{shown} does not match {spec.pattern}")
    return value


def _typed(kind: str, raw: Any) -> Any:
    text = raw if isinstance(raw, str) else None
    if kind in ("string", "secret"):
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise ValueError(f"expected text, got {type(raw).__name__}")
        return str(raw)
    if kind == "integer":
        return _number(raw, int, "an integer")
    if kind == "number":
        return _number(raw, float, "a number")
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind == "duration":
        try:
            return parse_duration(raw)
        except Exception:
            raise ValueError(f"expected a duration such as 30s or 10m, got {raw!r}") from None
    return _list(raw)


def _number(raw: Any, kind: type, label: str) -> Any:
    if isinstance(raw, bool):
        raise ValueError(f"expected {label}, got {raw!r}")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected {label}, got {raw!r}") from None
    if kind is int and isinstance(raw, float) and raw != value:
        raise ValueError(f"expected {label}, got {raw!r}")
    return value


def _list(raw: Any) -> list[str]:
    if isinstance(raw, list | tuple):
        return [str(item) for item in raw]
    if isinstance(raw, str):
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                parsed = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON list or comma-separated words ({exc})") \
                    from None
            if isinstance(parsed, list):
                return [str(item) for item in parsed]
        return [part.strip() for part in raw.split(",") if part.strip()]
    raise ValueError(f"expected a list, got {raw!r}")
