"""Building blocks shared by the config models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$"


def _severity(value: Any) -> Any:
    # YAML reads `severity: 1` as an integer; Microsoft's scale names it "1".
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: Microsoft Unified Support severities (SPEC §5): 1 > A > B > C.
Severity = Annotated[Literal["1", "A", "B", "C"], BeforeValidator(_severity)]
Locale = Literal["en", "ja"]


class Model(BaseModel):
    """Base: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
