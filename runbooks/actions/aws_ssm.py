"""SSM Run Command on an EC2 instance: restart a service, run a procedure — no SSH.

AWS-RunShellScript runs its ``commands`` parameter through ``sh`` on the instance.
Steps give argument lists, never shell lines: each word is quoted
(:func:`shlex.quote`) before it goes into the document parameter, so a parameter
full of shell metacharacters reaches the program as one literal argument.

SSM has no ``DryRun``: a dry run asks DescribeInstanceInformation whether the
instance is a managed instance that is online — what a real run needs — and shows
the command lines it would send.
"""

from __future__ import annotations

import contextlib
import shlex
from typing import Any, ClassVar

from pydantic import Field, model_validator

from checks.types import Duration
from runbooks.actions.aws_base import (
    AwsArgs,
    Located,
    WaitArgs,
    call,
    error_code,
    locate,
    wait_until,
)
from runbooks.actions.aws_ec2 import INSTANCE_ID
from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult

DOCUMENT = "AWS-RunShellScript"
#: Command invocation states that are final (SSM API reference, GetCommandInvocation).
FINAL = {"Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated",
         "InvalidPlatform", "AccessDenied", "DeliveryTimedOut", "ExecutionTimedOut"}
#: Characters of stdout / stderr kept in the step's outputs (SSM itself returns at most
#: 24,000 in GetCommandInvocation).
OUTPUT_LIMIT = 8000


class RunArgs(AwsArgs, WaitArgs):
    instance_id: str = Field("", pattern=INSTANCE_ID)       # default: the target's
    argv: tuple[str, ...] = ()                  # one command as an argument list
    commands: tuple[tuple[str, ...], ...] = ()  # or several, run one after the other
    working_directory: str = ""
    execution_timeout: Duration = Field(600.0, ge=1, le=172800)  # on the instance
    expect_exit: tuple[int, ...] = (0,)
    changes: bool = True        # False: read-only (it runs in dry runs too)
    every: Duration = 2.0
    comment: str = Field("kanshi runbook", max_length=100)

    @model_validator(mode="after")
    def _one(self) -> RunArgs:
        if bool(self.argv) == bool(self.commands):
            raise ValueError("give either argv (one command) or commands (a list of them)")
        if any(not c for c in self.commands):
            raise ValueError("every command needs at least one word")
        return self

    def lines(self) -> list[str]:
        """Each argument list as a shell line that runs exactly those words."""
        return [shlex.join(argv) for argv in (self.commands or (self.argv,))]


class SsmRun(Action):
    """Send AWS-RunShellScript to an instance, wait for the invocation, keep its output."""

    name: ClassVar[str] = "aws.ssm.run"
    Args = RunArgs

    def run(self, args: RunArgs, ctx: ActionContext) -> ActionResult:
        at = locate(args, ctx, args.instance_id, "instance id (i-…)")
        managed = _managed(at)
        lines = args.lines()
        if ctx.dry_run and args.changes:
            return ActionResult(False, f"SSM has no DryRun: DescribeInstanceInformation "
                                       f"shows {managed}; would run {lines}",
                                {"instance_id": at.resource, "commands": lines})
        command_id = _send(at, args, lines)
        ctx.log(f"SSM command {command_id} sent to {at}")
        try:
            found = _invocation(at, ctx, args, command_id)
        except ActionError:
            _cancel(at, command_id)
            raise
        return _result(at, args, command_id, found)


def _managed(at: Located) -> str:
    """What SSM knows of the instance; an error unless it is managed and online."""
    found = call(at.client("ssm"), "DescribeInstanceInformation", at, Filters=[
        {"Key": "InstanceIds", "Values": [at.resource]}]).get("InstanceInformationList", [])
    if not found:
        raise ActionError(f"{at} is not a managed instance: SSM Agent is not running or "
                          "the instance profile lacks AmazonSSMManagedInstanceCore")
    info = found[0]
    if info.get("PingStatus") != "Online":
        raise ActionError(f"{at}'s SSM Agent is {info.get('PingStatus')}: SSM cannot reach "
                          "it now")
    return f"{at.resource} is managed and online ({info.get('PlatformName', '?')}, SSM " \
           f"Agent {info.get('AgentVersion', '?')})"


def _send(at: Located, args: RunArgs, lines: list[str]) -> str:
    parameters: dict[str, list[str]] = {"commands": lines,
                                        "executionTimeout": [str(int(args.execution_timeout))]}
    if args.working_directory:
        parameters["workingDirectory"] = [args.working_directory]
    sent = call(at.client("ssm"), "SendCommand", at, InstanceIds=[at.resource],
                DocumentName=DOCUMENT, Parameters=parameters, Comment=args.comment)
    return str(sent["Command"]["CommandId"])


def _invocation(at: Located, ctx: ActionContext, args: RunArgs,
                command_id: str) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def probe() -> tuple[bool, str]:
        try:
            box["found"] = call(at.client("ssm"), "GetCommandInvocation", at,
                                CommandId=command_id, InstanceId=at.resource)
        except ActionError as exc:
            if error_code(exc) == "InvocationDoesNotExist":  # not registered yet
                return False, "not delivered yet"
            raise
        status = str(box["found"].get("Status"))
        return status in FINAL, status

    wait_until(ctx, f"SSM command {command_id} on {at}", probe, args)
    return dict(box["found"])


def _cancel(at: Located, command_id: str) -> None:
    # It may have ended meanwhile; the step's error says why it stopped.
    with contextlib.suppress(ActionError):
        call(at.client("ssm"), "CancelCommand", at, CommandId=command_id,
             InstanceIds=[at.resource])


def _result(at: Located, args: RunArgs, command_id: str,
            found: dict[str, Any]) -> ActionResult:
    status = str(found.get("Status"))
    code = int(found.get("ResponseCode", -1))
    outputs: dict[str, Any] = {
        "command_id": command_id, "instance_id": at.resource, "status": status,
        "exit_code": code, "stdout": _cut(found.get("StandardOutputContent", "")),
        "stderr": _cut(found.get("StandardErrorContent", ""))}
    if status != "Success" and not (status == "Failed" and code in args.expect_exit):
        detail = str(outputs["stderr"] or outputs["stdout"] or
                     found.get("StatusDetails", "")).strip()[:500]
        raise ActionError(f"SSM command {command_id} on {at} ended {status} (exit {code}): "
                          f"{detail}", outputs)
    if code not in args.expect_exit:
        raise ActionError(f"SSM command on {at} exited {code}: "
                          f"{str(outputs['stderr'] or outputs['stdout']).strip()[:500]}", outputs)
    return ActionResult(args.changes, f"ran {len(args.lines())} command(s) on {at} via SSM "
                                      f"(exit {code})", outputs)


def _cut(value: Any) -> str:
    text = str(value or "")
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "… (truncated)"
