"""Turn pydantic validation errors into issues a person can fix.

Each issue names the file and line (from the marks the YAML reader kept), the
key path (``checks[2].threshold``) and what was expected, and offers
"did you mean …?" for unknown keys. A value that came from ``${ENV}`` is never
echoed: it may be a secret.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from agent.config.base import NAME_PATTERN
from agent.config.source import Issue, Mark, MarkedDict, MarkedList, Path_, format_path
from checks.types import yaml_repr

_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)", "path_type": "a file path",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<",
           "less_than_equal": "≤"}


def issues_from(exc: ValidationError, data: Any, prefix: Path_,
                model: type[BaseModel]) -> list[Issue]:
    """One issue per pydantic error; ``data`` is the marked input at ``prefix``."""
    return [_issue(err, data, prefix, model) for err in exc.errors()]


def issue_at(data: Any, path: Path_, message: str) -> Issue:
    """An issue for ``path`` inside ``data`` (marks give file and line)."""
    mark, shown, _ = locate(data, path)
    return Issue(mark.file if mark else "?", mark.line if mark else None, shown, message)


def _issue(err: Any, data: Any, prefix: Path_, model: type[BaseModel]) -> Issue:
    loc: Path_ = tuple(p for p in err["loc"] if not _is_wrapper(p))
    mark, shown, env_var = locate(data, prefix + loc)
    message = _message(err, model, loc, env_var)
    return Issue(mark.file if mark else "?", mark.line if mark else None, shown, message)


_WRAPPER = re.compile(r"^(function-(before|after|wrap|plain)|nullable|chain|lax-or-strict|"
                      r"json-or-python|default)\[.*\]$")


def _is_wrapper(part: Any) -> bool:
    # pydantic adds validator names such as "function-after[_check(), str]" to some
    # locations; a user's own key may contain brackets too, so match pydantic's forms.
    return isinstance(part, str) and _WRAPPER.match(part) is not None


def locate(data: Any, path: Path_) -> tuple[Mark | None, str, str]:
    """The deepest known mark along ``path``, the path as the author sees it,
    and the environment variable the value came from ("" if none)."""
    mark: Mark | None = None
    items: list[tuple[str | int, Mark | None]] = []
    env_var = ""
    node = data
    for part in path:
        found = _child_mark(node, part)
        if found is not None:
            mark = found
        items.append((part, found))
        env_var = _env_of(node, part)
        node = _child(node, part)
    # List positions as they are in the file the message points into.
    shown = [_shown_index(part, found, mark) for part, found in items]
    return mark, format_path(tuple(shown)), env_var


def _shown_index(part: str | int, found: Mark | None, leaf: Mark | None) -> str | int:
    if not isinstance(part, int) or found is None:
        return part
    index = found.index_in(leaf.file) if leaf is not None else found.index
    return part if index is None else index


def _child_mark(node: Any, part: str | int) -> Mark | None:
    if isinstance(node, MarkedDict) and isinstance(part, str):
        return node.marks.get(part)
    if isinstance(node, MarkedList) and isinstance(part, int) and 0 <= part < len(node.marks):
        return node.marks[part]
    return None


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _env_of(node: Any, part: str | int) -> str:
    if isinstance(node, MarkedDict | MarkedList):
        return node.env_keys.get(part, "")  # type: ignore[arg-type]
    return ""


def _message(err: Any, model: type[BaseModel], loc: Path_, env_var: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), allowed_keys(model, loc[:-1]))
    if kind == "missing":
        return "required key missing"
    text = _expected(kind, err)
    if _is_secret(model, loc):
        return f"{text} (a secret: the value is not shown)"
    if env_var:
        return f"{text} (the value comes from ${{{env_var}}} and is not shown)"
    if kind == "kanshi":
        return str(err["msg"])
    if "input" not in err:  # the model hides inputs (hide_input_in_errors): may be secret
        return text
    return f"{text}, got {yaml_repr(err['input'])}"


def _expected(kind: str, err: Any) -> str:
    ctx = err.get("ctx") or {}
    if kind == "kanshi":
        return str(err["msg"]).split(", got ")[0]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"expected a number {_BOUNDS[kind]} {bound}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern == NAME_PATTERN:
            return "expected letters, digits and . _ @ - (starting with a letter or digit)"
        return f"expected text matching {pattern}"
    if kind in ("string_too_short", "too_short"):
        return "expected a non-empty value"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return f"invalid value ({err['msg']})"


def unknown_key(key: str, allowed: list[str]) -> str:
    """'unknown key …' with the closest allowed key, if one is close."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}' — did you mean '{close[0]}'?"
    listed = ", ".join(sorted(allowed)) if allowed else "none"
    return f"unknown key '{key}' (allowed here: {listed})"


def allowed_keys(model: type[BaseModel], loc: Path_) -> list[str]:
    """The keys the model accepts at ``loc`` (walking nested models and lists)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _is_secret(model: type[BaseModel], loc: Path_) -> bool:
    """Is the value at ``loc`` declared a secret (``SecretStr``)?"""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return False
    return _unwrap(current) is SecretStr


def _step(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is dict and isinstance(part, str):
        return typing.get_args(annotation)[1]
    if isinstance(part, int):
        args = typing.get_args(annotation)
        return args[0] if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return _unwrap(info.annotation)
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the model or container."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
