"""``aws.call``: one AWS API operation from the allow-list, for catalogue items that
have no action of their own yet (NTT 別紙5 第2表: Auto Scaling capacity, Lambda
settings, CloudFront invalidation, Route 53 records …).

Only ``service:Operation`` pairs on the allow-list are called — anything else is
refused before a client is made, in a dry run too. The agent may replace the list
(:class:`~runbooks.actions.aws_base.AwsSessions` ``allowed_calls``); a runbook
cannot widen it.

In a dry run an operation with a ``DryRun`` member is called with ``DryRun=True``;
a read-only one (Describe/Get/List) is called as it is; any other is checked against
the service model (names and types of its parameters) and not called.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from checks.types import Duration
from runbooks.actions.aws_base import (
    AwsArgs,
    Located,
    WaitArgs,
    call,
    dry_run,
    locate,
    plain,
    sessions_of,
    wait_until,
)
from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult

#: The operations catalogue items aws.call may do by default (SPEC §2), and a few reads.
DEFAULT_ALLOWED: frozenset[str] = frozenset({
    # Auto Scaling min / max / desired, launch template
    "autoscaling:UpdateAutoScalingGroup", "autoscaling:SetDesiredCapacity",
    "autoscaling:DescribeAutoScalingGroups",
    # Lambda environment, memory, timeout, concurrency
    "lambda:UpdateFunctionConfiguration", "lambda:PutFunctionConcurrency",
    "lambda:GetFunctionConfiguration",
    # ECS service desired count and task definition
    "ecs:UpdateService", "ecs:DescribeServices",
    # CloudFront invalidation, enable / disable
    "cloudfront:CreateInvalidation", "cloudfront:GetInvalidation",
    # Route 53 record edit
    "route53:ChangeResourceRecordSets", "route53:GetChange",
    # S3 versioning
    "s3:PutBucketVersioning", "s3:GetBucketVersioning",
    # CloudWatch alarm and metric filter creation
    "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "logs:PutMetricFilter",
    # WAF IP set
    "wafv2:GetIPSet", "wafv2:UpdateIPSet",
    # Budgets alert threshold
    "budgets:UpdateNotification", "budgets:DescribeNotificationsForBudget",
    # ELB instance register / deregister, health-check values
    "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:DescribeTargetHealth",
    # EC2 / EBS / RDS changes without an action of their own
    "ec2:ModifyVolume", "ec2:DescribeVolumesModifications", "ec2:CreateImage",
    "ec2:DescribeImages", "ec2:ModifyInstanceAttribute", "ec2:DescribeInstances",
    "ec2:DescribeSnapshots", "rds:DescribeDBSnapshots",
    "rds:ModifyDBInstance", "rds:FailoverDBCluster", "rds:CreateDBClusterSnapshot",
    "rds:DescribeDBInstances", "rds:DescribeDBClusters",
    # SNS / SQS settings
    "sns:SetTopicAttributes", "sqs:SetQueueAttributes",
})
_READ_ONLY = ("Describe", "Get", "List")


class CallArgs(AwsArgs, WaitArgs):
    service: str = Field(pattern=r"^[a-z0-9-]+$")           # boto3's name: ec2, lambda …
    operation: str = Field(pattern=r"^[A-Z][A-Za-z0-9]+$")  # the API's: UpdateService …
    parameters: dict[str, Any] = Field(default_factory=dict)
    waiter: str = Field("", pattern=r"^([a-z0-9_]+)?$")     # boto3 waiter, e.g. services_stable
    waiter_parameters: dict[str, Any] = Field(default_factory=dict)
    every: Duration = Field(15.0, gt=0)
    #: JMESPath expression → the value it must give (e.g. ``"Snapshots[0].State":
    #: completed``): a read used as a verify; polled until ``within`` if that is set
    expect: dict[str, Any] = Field(default_factory=dict)


def allowed(ctx: ActionContext) -> frozenset[str]:
    configured = sessions_of(ctx).allowed_calls
    return configured if configured is not None else DEFAULT_ALLOWED


class AwsCall(Action):
    """Call one allow-listed AWS API operation (and wait with a boto3 waiter)."""

    name: ClassVar[str] = "aws.call"
    Args = CallArgs

    def run(self, args: CallArgs, ctx: ActionContext) -> ActionResult:
        wanted = f"{_iam_prefix(args.service)}:{args.operation}"
        if wanted not in allowed(ctx):
            raise ActionError(f"aws.call refuses {wanted}: it is not on the allow-list of "
                              "operations runbooks may call (the agent's configuration "
                              "decides; a runbook cannot widen it)")
        at = locate(args, ctx, "-", "resource")
        client = at.client(args.service)
        model = _operation(client, args.operation)
        if ctx.dry_run:
            return self._plan(at, client, model, args)
        if args.expect:
            return _expect(client, at, args, ctx, wanted)
        response = plain(call(client, args.operation, at, **args.parameters))
        if args.waiter:
            _wait(client, at, args, ctx)
        return ActionResult(not args.operation.startswith(_READ_ONLY),
                            f"{wanted} done in {at.account.name}, {at.region}"
                            + (f" ({args.waiter})" if args.waiter else ""),
                            {"response": response})

    def _plan(self, at: Located, client: Any, model: Any, args: CallArgs) -> ActionResult:
        where = f"{args.service}:{args.operation} in {at.account.name}, {at.region}"
        members = model.input_shape.members if model.input_shape is not None else {}
        if "DryRun" in members:
            verdict = dry_run(client, args.operation, at, **args.parameters)
            return ActionResult(False, f"would call {where}: {verdict}")
        if args.operation.startswith(_READ_ONLY):
            response = plain(call(client, args.operation, at, **args.parameters))
            return ActionResult(False, f"read {where} (read-only, so called as it is)",
                                {"response": response})
        _validate(model, args.parameters, where)
        return ActionResult(False, f"would call {where} with {sorted(args.parameters)}: "
                                   "this API has no DryRun, so only the parameters were "
                                   "checked against the service model")


def _expect(client: Any, at: Located, args: CallArgs, ctx: ActionContext,
            wanted: str) -> ActionResult:
    """Read until every ``expect`` expression gives its value (once, without ``within``)."""
    import jmespath

    if not args.operation.startswith(_READ_ONLY):
        raise ActionError(f"expect is for reads (Describe/Get/List), not {wanted}")
    box: dict[str, Any] = {}

    def probe() -> tuple[bool, str]:
        box["response"] = plain(call(client, args.operation, at, **args.parameters))
        wrong = {path: jmespath.search(path, box["response"]) for path in args.expect}
        wrong = {p: v for p, v in wrong.items() if v != args.expect[p]}
        return not wrong, "; ".join(f"{p} is {v!r}, not {args.expect[p]!r}"
                                    for p, v in wrong.items()) or "as expected"

    if args.within is None:
        done, state = probe()
        if not done:
            raise ActionError(f"{wanted}: {state}", {"response": box["response"]})
    else:
        state, _ = wait_until(ctx, wanted, probe, args)
    return ActionResult(False, f"{wanted}: {state}", {"response": box["response"]})


def _iam_prefix(service: str) -> str:
    """The IAM prefix of a boto3 service name (as the allow-list spells it)."""
    return {"elbv2": "elasticloadbalancing", "elb": "elasticloadbalancing"}.get(service,
                                                                               service)


def _operation(client: Any, operation: str) -> Any:
    model = client.meta.service_model
    if operation not in model.operation_names:
        raise ActionError(f"{model.service_name} has no operation {operation}")
    return model.operation_model(operation)


def _validate(model: Any, parameters: dict[str, Any], where: str) -> None:
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    try:
        validate_parameters(parameters, model.input_shape)
    except ParamValidationError as exc:
        raise ActionError(f"plan error: {where}: {exc}") from None


def _wait(client: Any, at: Located, args: CallArgs, ctx: ActionContext) -> None:
    """A boto3 waiter, bounded by ``within`` and the step's deadline."""
    from botocore.exceptions import WaiterError

    if args.waiter not in client.waiter_names:
        raise ActionError(f"{args.service} has no waiter {args.waiter} (it has "
                          f"{', '.join(client.waiter_names) or 'none'})")
    within = min(args.within or ctx.left(), ctx.left())
    attempts = max(1, math.floor(within / args.every))
    try:
        client.get_waiter(args.waiter).wait(
            **args.waiter_parameters, WaiterConfig={"Delay": args.every,
                                                    "MaxAttempts": attempts})
    except WaiterError as exc:
        raise ActionError(f"{args.waiter} did not finish in {at.account.name}, {at.region} "
                          f"within {within:g} s: {exc}") from None
