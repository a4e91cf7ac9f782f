"""The runbooks an agent knows: shipped ones (runbooks/library) and the customer's.

Each file is validated like the config — every problem at once, with file, line
and key path — including the names of actions, the arguments they take, and the
runbooks a level hands over to. A customer runbook with a shipped one's name
replaces it (the customer's agreed procedure wins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import runbooks
from agent.config.errors import issue_at, issues_from, unknown_key
from agent.config.loader import ConfigError, unknown_name
from agent.config.source import Issue, MarkedDict, load_file
from agent.plugins import load_plugin
from runbooks.actions import REGISTRY as ACTIONS
from runbooks.actions.base import Action
from runbooks.schema import Runbook

logger = logging.getLogger(__name__)

SHIPPED = Path(runbooks.__file__).resolve().parent / "library"


def action_class(name: str) -> type[Action]:
    """The action registered as ``name``."""
    cls: type[Action] = load_plugin(ACTIONS, name)
    return cls


class RunbookLibrary:
    """Runbooks by name."""

    def __init__(self, books: dict[str, Runbook], sources: dict[str, Path]) -> None:
        self.books = books
        self.sources = sources

    @classmethod
    def load(cls, directories: Iterable[Path] = ()) -> RunbookLibrary:
        """Read every ``*.yaml`` runbook; :class:`ConfigError` lists every problem."""
        issues: list[Issue] = []
        books: dict[str, Runbook] = {}
        sources: dict[str, Path] = {}
        for folder in (SHIPPED, *directories):
            if not folder.is_dir():
                issues.append(Issue(str(folder), None, "", "runbook directory not found"))
                continue
            for path in sorted(folder.glob("*.yaml")):
                book = load_runbook_file(path, issues)
                if book is None:
                    continue
                if book.name in books and folder != SHIPPED:
                    logger.info("runbook %s from %s replaces %s", book.name, path,
                                sources[book.name])
                books[book.name], sources[book.name] = book, path
        _check_handovers(books, sources, issues)
        if issues:
            raise ConfigError(issues)
        return cls(books, sources)

    def get(self, name: str) -> Runbook:
        try:
            return self.books[name]
        except KeyError:
            raise LookupError(unknown_name("runbook", name, set(self.books))) from None

    def names(self) -> list[str]:
        return sorted(self.books)


def load_runbook_file(path: Path, issues: list[Issue]) -> Runbook | None:
    """One runbook file, or None with its problems added to ``issues``."""
    loaded = load_file(path)
    issues.extend(loaded.issues)
    data = loaded.data
    if loaded.issues or data is None:
        return None
    if not isinstance(data, MarkedDict):
        issues.append(Issue(str(path), 1, "", "expected a mapping at the top"))
        return None
    try:
        book = Runbook.model_validate(data)
    except ValidationError as exc:
        issues.extend(issues_from(exc, data, (), Runbook))
        return None
    found = list(_step_problems(book, data))
    issues.extend(found)
    return None if found else book


def _step_problems(book: Runbook, data: MarkedDict) -> Iterable[Issue]:
    """Unknown actions and argument names (values are templates, checked at run time)."""
    for i, level in enumerate(book.levels):
        entries: list[tuple[tuple[Any, ...], str, dict[str, Any]]] = [
            (("levels", i, "steps", j), s.action, s.with_) for j, s in enumerate(level.steps)]
        if level.verify is not None:
            entries.append((("levels", i, "verify"), level.verify.action, level.verify.with_))
        for where, action, args in entries:
            if action not in ACTIONS:
                yield issue_at(data, (*where, "action"),
                               unknown_name("action", action, set(ACTIONS)))
                continue
            allowed = [f.alias or n for n, f in action_class(action).Args.model_fields.items()]
            for key in args:
                if key not in allowed:
                    yield issue_at(data, (*where, "with", key), unknown_key(key, allowed))


def _check_handovers(books: dict[str, Runbook], sources: dict[str, Path],
                     issues: list[Issue]) -> None:
    for name, book in books.items():
        for i, level in enumerate(book.levels):
            if level.run is not None and level.run not in books:
                issues.append(Issue(str(sources[name]), None, f"levels[{i}].run",
                                    unknown_name("runbook", level.run, set(books))))
