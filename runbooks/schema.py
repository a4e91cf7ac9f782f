"""The runbook format: typed parameters, levels of steps, a verify, what next.

A level is one of:

- ``steps`` + ``verify`` (+ ``on_verify_failure``): act, then check that it worked;
- ``run``: hand over to another runbook (service-down's level 2 is server-down);
- ``escalate``: stop acting and hand the incident to people with a message.

Step arguments are Jinja2 templates rendered in a sandbox
(``{{ params.port }}``, ``{{ steps.restart.outputs.pid }}``); a value that is a
single expression keeps its type. Nothing is ever run through a shell.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from checks.types import Duration, OptionalDuration

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(Model):
    """A typed runbook parameter, validated before anything runs."""

    type: Literal["string", "integer", "number", "boolean", "list", "secret",
                  "duration"] = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None       # a regex a string (or each list item) must match fully

    @model_validator(mode="after")
    def _pattern(self) -> Parameter:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise PydanticCustomError("kanshi", "expected a regular expression ({e})",
                                          {"e": str(exc)}) from None
        if self.required and self.default is not None:
            raise PydanticCustomError("kanshi", "expected either required or a default")
        return self


class Budget(Model):
    """At most ``max`` of these actions on one target within ``per`` (restart storms)."""

    key: str = Field(pattern=ID_PATTERN)
    max: int = Field(ge=1, le=1000)
    per: Duration


class Approval(Model):
    """A person must say yes before the step runs."""

    approvers: tuple[str, ...] = ()         # empty: any operator
    timeout: Duration = 1800.0
    on_timeout: Literal["abort", "continue", "escalate"] = "escalate"
    message: str = ""


OnFailure = Annotated[str, Field(pattern=r"^(abort|continue|goto:[a-z0-9][a-z0-9_-]*)$")]


class Step(Model):
    id: str = Field(pattern=ID_PATTERN)
    action: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    description: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = 300.0
    retries: int = Field(0, ge=0, le=20)
    retry_delay: Duration = 10.0
    on_failure: OnFailure = "abort"
    resumable: bool | None = None      # safe to run again after a crash (default: the action's)
    budget: Budget | None = None
    approval: Approval | None = None
    when: str | None = None            # a template; the step runs only if it renders truthy


class Verify(Model):
    action: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: Duration = 300.0


class Level(Model):
    name: str = Field(min_length=1)
    steps: tuple[Step, ...] = ()
    verify: Verify | None = None
    on_verify_failure: Literal["next", "escalate"] = "next"
    run: str | None = Field(None, pattern=NAME_PATTERN)       # hand over to another runbook
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")   # its parameters
    escalate: str | None = None        # hand over to people with this message
    #: acts on the target (outside business hours it waits for the emergency contact)
    acts: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Level:
        kinds = [bool(self.steps), self.run is not None, self.escalate is not None]
        if sum(kinds) != 1:
            raise PydanticCustomError("kanshi", "expected exactly one of steps, run or "
                                                "escalate")
        if self.steps and self.verify is None:
            raise PydanticCustomError("kanshi", "expected a verify after the steps (how do "
                                                "we know it worked?)")
        ids = [s.id for s in self.steps]
        if len(ids) != len(set(ids)):
            raise PydanticCustomError("kanshi", "expected unique step ids in a level")
        for step in self.steps:
            if step.on_failure.startswith("goto:") and step.on_failure[5:] not in ids:
                raise PydanticCustomError("kanshi", "expected on_failure to go to a step of "
                                                    "this level, got {v}",
                                          {"v": step.on_failure})
        return self


class Runbook(Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    #: recovery runs on incidents (plan.automatic_recovery); operation is the
    #: operations catalogue, run by operators (plan.operations)
    category: Literal["recovery", "operation"] = "recovery"
    target: str = "host"               # what kind of thing it acts on (for people)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    levels: tuple[Level, ...] = Field(min_length=1)
    #: the run's overall time limit
    timeout: OptionalDuration = 3600.0

    @model_validator(mode="after")
    def _names(self) -> Runbook:
        for name in self.parameters:
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise PydanticCustomError("kanshi", "expected parameter names like "
                                                    "service_name, got {v}", {"v": name})
        return self

    @property
    def secret_parameters(self) -> set[str]:
        return {n for n, p in self.parameters.items() if p.type == "secret"}
