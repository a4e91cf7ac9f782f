"""Merge an included profile with the file that includes it.

Mappings merge key by key (the including file wins); the ``checks`` and
``notifiers`` lists merge item by item on ``name`` — so a profile's check can be
retuned or switched off (``enabled: false``) by naming it — and any other list
is replaced whole.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agent.config.source import Mark, MarkedDict, MarkedList

NAMED_LISTS = frozenset({"checks", "notifiers"})


def merge(base: Any, over: Any, key: str | None = None) -> Any:
    """``over`` laid on top of ``base``."""
    if isinstance(base, MarkedDict) and isinstance(over, MarkedDict):
        return _merge_dicts(base, over)
    if key in NAMED_LISTS and isinstance(base, MarkedList) and isinstance(over, MarkedList):
        return _merge_named(base, over)
    return over


def _merge_dicts(base: MarkedDict, over: MarkedDict) -> MarkedDict:
    out = MarkedDict(base)
    out.marks = dict(base.marks)
    out.env_keys = dict(base.env_keys)
    for key, value in over.items():
        out[key] = merge(base[key], value, key) if key in base else value
        out.marks[key] = over.marks[key]
        out.env_keys.pop(key, None)
        if key in over.env_keys:
            out.env_keys[key] = over.env_keys[key]
    return out


def _merge_named(base: MarkedList, over: MarkedList) -> MarkedList:
    out = MarkedList(base)
    out.marks = list(base.marks)
    position = {_name(item): i for i, item in enumerate(base) if _name(item) is not None}
    for item, mark in zip(over, over.marks, strict=True):
        name = _name(item)
        if name is not None and name in position:
            i = position[name]
            out[i] = merge(out[i], item)
            out.marks[i] = replace(mark, origins=(*_origins(out.marks[i]), *_origins(mark)))
        else:
            out.append(item)
            out.marks.append(mark)
    return out


def _origins(mark: Mark) -> tuple[tuple[str, int], ...]:
    if mark.origins:
        return mark.origins
    return ((mark.file, mark.index),) if mark.index is not None else ()


def _name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None
