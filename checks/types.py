"""Config value types shared by checks: durations, percentages, warning/critical pairs.

Their validation errors read "expected …, got …" so the config loader can show
them unchanged next to the key path and file line.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BaseModel as _BaseModel
from pydantic import BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from checks.base import Status

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
#: Longer than any schedule or deadline makes sense for; keeps date arithmetic finite.
MAX_DURATION = 366 * 86400.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def expected_error(expected: str, value: Any) -> PydanticCustomError:
    """A validation error reading "expected …, got …" (the value as YAML spells it)."""
    return PydanticCustomError("kanshi", "expected {expected}, got {got}",
                               {"expected": expected, "got": yaml_repr(value)})


def yaml_repr(value: Any) -> str:
    """A value as the YAML author wrote it: strings quoted, null/true/false."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    return repr(value)


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"10m"``, ``"1.5h"``, ``"250ms"``, ``"1d"``."""
    if isinstance(value, bool):
        raise expected_error('a duration such as 30s, 10m or 1h', value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise expected_error("a duration such as 30s, 10m or 1h", value)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION:
        raise expected_error("a duration greater than 0 and at most 366d", value)
    return seconds


def parse_percent(value: Any) -> float:
    """A number in 0–100 (a trailing ``%`` is accepted)."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().removesuffix("%"))
        except ValueError:
            number = None
    if number is None or not (0.0 <= number <= 100.0):
        raise expected_error("a number between 0 and 100", value)
    return number


Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]


def _optional(parse: Any) -> Any:
    return lambda value: None if value is None else parse(value)


OptionalPercent = Annotated[float | None, BeforeValidator(_optional(parse_percent))]
OptionalDuration = Annotated[float | None, BeforeValidator(_optional(parse_duration))]


class Thresholds(_BaseModel):
    """A warning/critical pair; ``None`` switches a level off.

    Comparison is ``>=`` (SPEC §1: "≥ 90 %"). A bare value means critical only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: float | None = None
    critical: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warning is not None and self.critical is not None \
                and self.warning > self.critical:
            raise PydanticCustomError(
                "kanshi", "expected warning ({w}) not above critical ({c})",
                {"w": f"{self.warning:g}", "c": f"{self.critical:g}"})
        return self

    def judge(self, value: float) -> Status:
        """The status of ``value`` against these thresholds (higher is worse)."""
        if self.critical is not None and value >= self.critical:
            return Status.CRITICAL
        if self.warning is not None and value >= self.warning:
            return Status.WARNING
        return Status.OK


class PercentThresholds(Thresholds):
    """Thresholds in percent: ``{warning: 80, critical: 90}`` or a bare ``90``."""

    warning: OptionalPercent = None
    critical: OptionalPercent = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {"critical": parse_percent(value)}


class DurationThresholds(Thresholds):
    """Thresholds in seconds: ``{warning: 200ms, critical: 1s}`` or a bare ``1s``."""

    warning: OptionalDuration = None
    critical: OptionalDuration = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {"critical": parse_duration(value)}
