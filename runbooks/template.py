"""Step arguments as Jinja2 templates, rendered in a sandbox.

``"{{ params.port }}"`` (one expression, nothing else) keeps the value's type —
an integer stays an integer, a list a list; anything else renders as text. The
result is always an argument value, never a shell line.
"""

from __future__ import annotations

import functools
import re
from typing import Any

_SINGLE = re.compile(r"^\s*\{\{\s*(.+?)\s*\}\}\s*$", re.DOTALL)


class TemplateError(ValueError):
    """A template that cannot be rendered (names the expression and why)."""


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every string rendered; dicts and lists recursively."""
    if isinstance(value, str):
        return _render_text(value, context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value


def truthy(expression: str, context: dict[str, Any]) -> bool:
    """Does a ``when:`` template render to something true?"""
    value = render(expression, context)
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none")
    return bool(value)


def _render_text(text: str, context: dict[str, Any]) -> Any:
    if "{{" not in text and "{%" not in text:
        return text
    import jinja2

    env = _environment()
    try:
        single = _SINGLE.match(text)
        if single and "{{" not in single.group(1):
            value = env.compile_expression(single.group(1), undefined_to_none=False)(**context)
            if isinstance(value, jinja2.Undefined):
                str(value)  # StrictUndefined raises here, naming what is missing
            return value
        return env.from_string(text).render(**context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{text!r}: {exc}") from None


@functools.cache
def _environment() -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
