"""Render reports: Jinja2 templates per language give Markdown; HTML is made from
that Markdown (markdown-it-py), so both formats always say the same thing."""

from __future__ import annotations

import functools
import html
import zoneinfo
from datetime import datetime
from pathlib import Path
from typing import Any

from notifiers.render import format_duration

TEMPLATES = Path(__file__).parent / "templates"

PAGE = """<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.5}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;
text-align:left}}</style></head>
<body>
{body}</body></html>
"""


def render_report(name: str, context: dict[str, Any], lang: str, fmt: str,
                  timezone: str) -> str:
    """``name`` (incident | month) in ``lang`` as ``md`` or ``html``."""
    zone = zoneinfo.ZoneInfo(timezone)
    helpers = {"lang": lang, "local": lambda moment: _local(moment, zone),
               "duration": lambda seconds: format_duration(seconds, lang)}
    template = _environment().get_template(f"{lang}/{name}.md.j2")
    text: str = template.render({**context, **helpers}).strip() + "\n"
    if fmt == "md":
        return text
    title = html.escape(text.splitlines()[0].lstrip("# "))
    body: str = _markdown().render(text)
    return PAGE.format(lang=lang, title=title, body=body)


def _local(moment: datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


@functools.cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = cell
    return env


#: Characters that make Markdown: emphasis, code, links, images, autolinks, HTML,
#: tables. Check messages and names are not trusted markup (a log line can say
#: anything), so each is backslash-escaped, which CommonMark allows for any ASCII
#: punctuation.
_MARKUP = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~!"})


def cell(value: object) -> str:
    """Text that stays text in Markdown: one line, markup characters escaped."""
    return " ".join(str(value).split()).translate(_MARKUP) or "-"


@functools.cache
def _markdown() -> Any:
    # Imported here: only `kanshi report … --format html` needs it. "js-default"
    # escapes raw HTML in the text; links and images are switched off too: the
    # templates use none, and a message must never become one.
    from markdown_it import MarkdownIt

    return MarkdownIt("js-default").enable("table").disable(["link", "image", "autolink"])
