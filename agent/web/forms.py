"""The runbook form: one field per typed parameter, and errors next to their field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runbooks.params import ParameterError, resolve
from runbooks.schema import Parameter, Runbook

TARGET = "target"
MAX_TARGET = 255


@dataclass(frozen=True)
class Field:
    name: str
    widget: str                  # select | checkbox-select | number | password | text
    label: str
    hint: str
    required: bool
    value: str
    options: tuple[tuple[str, str], ...] = ()   # (value, label) for selects
    step: str = ""
    error: str = ""


def fields(book: Runbook, given: dict[str, str] | None = None,
           errors: dict[str, str] | None = None) -> list[Field]:
    """The form fields of ``book``'s parameters; ``given`` refills them (not secrets)."""
    given, errors = given or {}, errors or {}
    return [_field(name, spec, given.get(name), errors.get(name, ""))
            for name, spec in book.parameters.items()]


def _field(name: str, spec: Parameter, given: str | None, error: str) -> Field:
    default = "" if spec.default is None else _text(spec.default)
    value = default if given is None else given
    hint = _hint(spec)
    if spec.choices is not None:
        options = tuple((_text(c), _text(c)) for c in spec.choices)
        if not spec.required:
            options = (("", "—"), *options)
        return Field(name, "select", name, hint, spec.required, value, options, error=error)
    if spec.type == "boolean":
        return Field(name, "select", name, hint, spec.required, value,
                     (("", "—"), ("true", "true"), ("false", "false")), error=error)
    if spec.type in ("integer", "number"):
        return Field(name, "number", name, hint, spec.required, value,
                     step="1" if spec.type == "integer" else "any", error=error)
    if spec.type == "secret":  # never sent back to the browser
        return Field(name, "password", name, hint, spec.required, "", error=error)
    return Field(name, "text", name, hint, spec.required, value, error=error)


def _hint(spec: Parameter) -> str:
    parts = [spec.description] if spec.description else []
    if spec.type == "list":
        parts.append("comma-separated")
    elif spec.type == "duration":
        parts.append("e.g. 30s, 10m, 2h")
    if spec.pattern:
        parts.append(f"pattern {spec.pattern}")
    return "; ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def parse(book: Runbook, form: dict[str, str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The target and resolved parameters of a posted form, or the errors by field."""
    errors: dict[str, str] = {}
    target = form.get(TARGET, "").strip()
    if not target:
        errors[TARGET] = "required: what the runbook acts on"
    elif len(target) > MAX_TARGET or any(ord(c) < 32 for c in target):
        errors[TARGET] = f"at most {MAX_TARGET} printable characters"
    given = {name: form[name] for name in book.parameters
             if name in form and form[name].strip() != ""}
    params: dict[str, Any] = {}
    try:
        params = resolve(book, given)
    except ParameterError as exc:
        for problem in exc.problems:
            name, _, text = problem.partition(": ")
            errors[name if name in book.parameters else "_"] = text or problem
    return target, params, errors
