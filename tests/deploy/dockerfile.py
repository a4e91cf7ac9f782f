"""A small reader for the project's Dockerfile and .dockerignore (no Docker needed)."""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    stage: int       # 0 for ARGs before the first FROM, then 1, 2 …
    keyword: str     # upper case
    args: str        # continuation lines joined
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def words(self) -> list[str]:
        return shlex.split(self.args)


def instructions(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """Every instruction, comments and parser directives dropped, continuations joined."""
    found: list[Instruction] = []
    stage, buffer, start = 0, "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        text = (buffer + line).strip()
        buffer = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword, args.strip(), start))
    return found


def ignored(relative: str, path: Path = ROOT / ".dockerignore") -> bool:
    """Whether the build context leaves ``relative`` out (last matching pattern wins;
    a pattern matching a parent folder matches what is inside it)."""
    verdict = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for raw in path.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(_match(pattern, prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def _match(pattern: str, path: str) -> bool:
    if pattern == "**":
        return True
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatchcase("/".join(path.split("/")[i:]), tail)
                   for i in range(len(path.split("/"))))
    return fnmatch.fnmatchcase(path, pattern)
