"""Read YAML keeping where every value came from (file and line).

Mappings and sequences are returned as :class:`MarkedDict` / :class:`MarkedList`
(plain ``dict``/``list`` subclasses) whose ``marks`` say, for each key or index,
the file and line it was written on — so an error found later by validation can
point at the line, even after profiles were merged in by ``include:``.

``${VAR}`` and ``${VAR:-default}`` in strings are replaced from the environment
(``$${`` is a literal ``${``); the paths they land on are remembered so error
messages never echo a value that may be a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """Where a value was written. ``index`` is its position in its file's list;
    ``origins`` lists (file, index) for every file a merged list item came from."""

    file: str
    line: int  # 1-based
    index: int | None = None
    origins: tuple[tuple[str, int], ...] = ()

    def index_in(self, file: str) -> int | None:
        """The item's position in ``file``'s list (its own, if ``file`` is not known)."""
        return dict(self.origins).get(file, self.index)


@dataclass
class Issue:
    """One problem found in a config file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class MarkedDict(dict[str, Any]):
    """A mapping that remembers where each key was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: dict[str, Mark] = {}
        self.env_keys: dict[str, str] = {}  # key -> the variable its value came from


class MarkedList(list[Any]):
    """A sequence that remembers where each item was written."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.marks: list[Mark] = []
        self.env_keys: dict[int, str] = {}


@dataclass
class Loaded:
    """One file's data and the problems met reading it."""

    data: Any
    issues: list[Issue] = field(default_factory=list)


_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_file(path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Parse one YAML file into marked data; syntax errors become issues."""
    env = os.environ if environ is None else environ
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return Loaded(None, [Issue(name, None, "", f"cannot read: {exc.strerror or exc}")])
    except UnicodeDecodeError as exc:
        return Loaded(None, [Issue(name, None, "", f"not UTF-8 text ({exc.reason})")])
    return _parse(text, name, env)


def _parse(text: str, name: str, env: Mapping[str, str]) -> Loaded:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # e.g. control characters: the reader refuses the text
        return Loaded(None, [Issue(name, None, "", f"invalid YAML: {exc}")])
    try:
        node = loader.get_single_node()
        if node is None:
            return Loaded(MarkedDict())
        builder = _Builder(loader, name, env)
        data = builder.build(node, ())
        return Loaded(data, builder.issues)
    except _TooBig as exc:
        return Loaded(None, [Issue(name, exc.line, "", str(exc))])
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        return Loaded(None, [Issue(name, line, "", f"invalid YAML: {problem}")])
    except yaml.YAMLError as exc:
        return Loaded(None, [Issue(name, None, "", f"invalid YAML: {exc}")])
    finally:
        loader.dispose()


#: No config has this many values; a file that expands past it is an alias bomb.
MAX_VALUES = 100_000
MAX_DEPTH = 100


class _TooBig(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.file = file
        self.env = env
        self.issues: list[Issue] = []
        self._values = 0
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self._values += 1
        line = node.start_mark.line + 1
        if self._values > MAX_VALUES:
            raise _TooBig(f"the file expands to more than {MAX_VALUES} values "
                          "(aliases that multiply? a YAML bomb?)", line)
        if len(path) > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep", line)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self._value(node, path)[0]
        if id(node) in self._open:
            raise _TooBig("an alias refers to a collection that contains it (a cycle)", line)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return self._sequence(node, path)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> MarkedDict:
        self.loader.flatten_mapping(node)  # YAML merge keys (<<)
        out = MarkedDict()
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                first = out.marks[key].line
                self._issue(line, (*path, key), f"duplicate key (first written on line {first})")
            out.marks[key] = Mark(self.file, line)
            out[key], var = self._value(value_node, (*path, key))
            if var:
                out.env_keys[key] = var
        return out

    def _sequence(self, node: yaml.SequenceNode, path: Path_) -> MarkedList:
        out = MarkedList()
        for i, item in enumerate(node.value):
            out.marks.append(Mark(self.file, item.start_mark.line + 1, i))
            value, var = self._value(item, (*path, i))
            out.append(value)
            if var:
                out.env_keys[i] = var
        return out

    def _value(self, node: yaml.Node, path: Path_) -> tuple[Any, str]:
        """A child value, and the environment variable it came from ("" if none)."""
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str):
                return self._interpolate(value, node, path)
            return value, ""
        return self.build(node, path), ""

    def _interpolate(self, value: str, node: yaml.Node, path: Path_) -> tuple[str, str]:
        """Replace ``${VAR}``; return the text and the first variable used ("" if none)."""
        used: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            var, default = match.group(1), match.group(2)
            used.append(var)
            if var in self.env:
                return self.env[var]
            if default is not None:
                return default
            self._issue(node.start_mark.line + 1, path,
                        f"environment variable {var} is not set (write ${{{var}:-default}} "
                        "to give a default)")
            return ""

        return _ENV.sub(substitute, value), (used[0] if used else "")

    def _issue(self, line: int, path: Path_, message: str) -> None:
        self.issues.append(Issue(self.file, line, format_path(path), message))


def format_path(path: Path_) -> str:
    """``('checks', 2, 'threshold')`` → ``checks[2].threshold``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
