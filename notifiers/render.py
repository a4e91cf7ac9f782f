"""Render a notice's subject and body from the Jinja2 templates of its language."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = ("en", "ja")


def render(fields: dict[str, Any], locale: str) -> tuple[str, str]:
    """``(subject, body)`` for an alert described by ``fields`` in ``locale``."""
    env = _environment()
    lang = locale if locale in LOCALES else "en"
    subject = env.get_template(f"{lang}/subject.j2").render(fields).strip()
    body = env.get_template(f"{lang}/body.j2").render(fields).strip() + "\n"
    return " ".join(subject.split()), body


def format_duration(seconds: float | None, locale: str) -> str:
    """``1h 2m`` / ``1時間2分``; seconds shown only under ten minutes."""
    if seconds is None:
        return "?"
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = (("日", "時間", "分", "秒") if locale == "ja" else ("d", "h", "m", "s"))
    parts = [(days, units[0]), (hours, units[1]), (minutes, units[2])]
    if total < 600:
        parts.append((secs, units[3]))
    text = ("" if locale == "ja" else " ").join(f"{n}{u}" for n, u in parts if n)
    return text or f"0{units[3]}"


@functools.cache
def _environment() -> Any:
    # Imported here: an agent that never alerts never pays for Jinja2.
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=False)
    env.filters["duration"] = format_duration
    return env
