"""EC2 and EBS actions: reboot, stop, start, stop-then-start, instance type change,
EBS snapshots (created, waited for, tagged, pruned to N generations), and the verify
of the server-failure levels on EC2 (running, both status checks ok, login port).

Every change is asked of AWS with ``DryRun=True`` in a dry run. Stop-then-start is
the EC2 answer to "the server does not come back": a stopped and started EBS-backed
instance starts on another host (EC2 User Guide, "Stop and start Amazon EC2
instances"); its public IP changes unless it has an Elastic IP.
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from pydantic import Field

from checks.types import Duration
from runbooks.actions.aws_base import (
    AwsArgs,
    Located,
    Pause,
    WaitArgs,
    call,
    dry_run,
    error_code,
    locate,
    pause,
    wait_until,
)
from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult

INSTANCE_ID = r"^(i-[0-9a-f]{8,17})?$"
#: States from which an instance can be stopped or started (EC2 instance lifecycle).
_STOPPABLE = {"pending", "running", "stopping", "stopped"}


class InstanceArgs(AwsArgs, WaitArgs):
    instance_id: str = Field("", pattern=INSTANCE_ID)   # default: the target's


def _where(args: InstanceArgs, ctx: ActionContext) -> Located:
    return locate(args, ctx, args.instance_id, "instance id (i-…)")


def describe(at: Located) -> dict[str, Any]:
    """The instance as DescribeInstances tells it (an error if there is none)."""
    try:
        found = call(at.client("ec2"), "DescribeInstances", at, InstanceIds=[at.resource])
    except ActionError as exc:
        if error_code(exc).startswith("InvalidInstanceID"):
            raise ActionError(f"no instance {at}: check the target") from None
        raise
    for reservation in found.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            return dict(instance)
    raise ActionError(f"no instance {at}: check the target")


def _state(instance: dict[str, Any]) -> str:
    return str(instance["State"]["Name"])


def _facts(at: Located, instance: dict[str, Any]) -> dict[str, Any]:
    return {"instance_id": at.resource, "region": at.region, "account": at.account.name,
            "state": _state(instance), "instance_type": instance.get("InstanceType"),
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress")}


def _wait_state(at: Located, ctx: ActionContext, args: WaitArgs, goal: str) -> str:
    def probe() -> tuple[bool, str]:
        state = _state(describe(at))
        return state == goal, state

    state, _ = wait_until(ctx, f"{at} to be {goal}", probe, args)
    return state


class Ec2Reboot(Action):
    """RebootInstances (SkyArch level 1 "reboot" on EC2); a running instance only."""

    name: ClassVar[str] = "aws.ec2.reboot"
    Args = InstanceArgs

    def run(self, args: InstanceArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        instance = describe(at)
        facts = _facts(at, instance)
        if facts["state"] != "running":
            raise ActionError(f"{at} is {facts['state']}: a reboot needs a running instance "
                              "(start it, or stop-then-start)", facts)
        ec2 = at.client("ec2")
        if ctx.dry_run:
            verdict = dry_run(ec2, "RebootInstances", at, InstanceIds=[at.resource])
            return ActionResult(False, f"{at} is running; would reboot it: {verdict}", facts)
        call(ec2, "RebootInstances", at, InstanceIds=[at.resource])
        return ActionResult(True, f"reboot of {at} requested", facts)


class StopArgs(InstanceArgs):
    force: bool = False       # StopInstances Force: no clean OS shutdown (a hung instance)


def _stop(at: Located, ctx: ActionContext, args: StopArgs, instance: dict[str, Any]) -> bool:
    """Stop (and wait, if asked); False if it was stopped already."""
    state = _state(instance)
    if state not in _STOPPABLE:
        raise ActionError(f"{at} is {state}: it cannot be stopped")
    if instance.get("RootDeviceType", "ebs") != "ebs":
        raise ActionError(f"{at} has an instance-store root volume: it cannot be stopped "
                          "(only terminated) — people must decide")
    if state == "stopped":
        return False
    if state != "stopping":
        call(at.client("ec2"), "StopInstances", at, InstanceIds=[at.resource],
             Force=args.force)
        ctx.log(f"stopping {at}")
    if args.wait:
        _wait_state(at, ctx, args, "stopped")
    return True


def _start(at: Located, ctx: ActionContext, args: WaitArgs, state: str) -> bool:
    """Start (and wait for running, if asked); False if it was running already."""
    if state in ("running", "pending"):
        if args.wait:
            _wait_state(at, ctx, args, "running")
        return False
    if state == "stopping":
        _wait_state(at, ctx, args, "stopped")
    elif state != "stopped":
        raise ActionError(f"{at} is {state}: it cannot be started")
    call(at.client("ec2"), "StartInstances", at, InstanceIds=[at.resource])
    ctx.log(f"starting {at}")
    if args.wait:
        _wait_state(at, ctx, args, "running")
    return True


class Ec2Stop(Action):
    """StopInstances, then wait for *stopped*; a stopped instance is left as it is."""

    name: ClassVar[str] = "aws.ec2.stop"
    Args = StopArgs
    resumable = True

    def run(self, args: StopArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        instance = describe(at)
        if ctx.dry_run:
            return _dry(at, instance, ("StopInstances",), "stop")
        changed = _stop(at, ctx, args, instance)
        facts = _facts(at, describe(at))
        return ActionResult(changed, f"{at} stopped" if changed else
                            f"{at} was stopped already", facts)


class Ec2Start(Action):
    """StartInstances, then wait for *running*; a running instance is left as it is."""

    name: ClassVar[str] = "aws.ec2.start"
    Args = InstanceArgs
    resumable = True

    def run(self, args: InstanceArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        instance = describe(at)
        if ctx.dry_run:
            return _dry(at, instance, ("StartInstances",), "start")
        changed = _start(at, ctx, args, _state(instance))
        facts = _facts(at, describe(at))
        return ActionResult(changed, f"{at} started" if changed else
                            f"{at} was running already", facts)


class Ec2StopStart(Action):
    """Stop, wait for *stopped*, start, wait for *running*: the instance moves to
    another host (level 2 of the server-failure response on EC2)."""

    name: ClassVar[str] = "aws.ec2.stop_start"
    Args = StopArgs
    resumable = True    # stop and start each look at the state first

    def run(self, args: StopArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        instance = describe(at)
        before = _facts(at, instance)
        if ctx.dry_run:
            return _dry(at, instance, ("StopInstances", "StartInstances"), "stop and start")
        waiting = args.model_copy(update={"wait": True})  # start needs it stopped
        _stop(at, ctx, waiting, instance)
        _start(at, ctx, args, "stopped")
        after = _facts(at, describe(at))
        moved = "" if before["public_ip"] == after["public_ip"] else \
            f"; public IP {before['public_ip']} → {after['public_ip']}"
        return ActionResult(True, f"{at} stopped and started (on another host){moved}",
                            {**after, "previous_public_ip": before["public_ip"],
                             "previous_private_ip": before["private_ip"]})


def _dry(at: Located, instance: dict[str, Any], operations: tuple[str, ...],
         verb: str) -> ActionResult:
    facts = _facts(at, instance)
    if _state(instance) not in _STOPPABLE:
        raise ActionError(f"plan error: {at} is {facts['state']}: it cannot {verb}", facts)
    verdicts = [dry_run(at.client("ec2"), op, at, InstanceIds=[at.resource])
                for op in operations]
    return ActionResult(False, f"{at} is {facts['state']}; would {verb} it: "
                               f"{'; '.join(verdicts)}", facts)


class TypeArgs(StopArgs):
    instance_type: str = Field(pattern=r"^[a-z0-9-]+\.[a-z0-9-]+$")
    start: bool = True      # start it again afterwards if it was running


class Ec2ChangeType(Action):
    """Instance type change (NTT operations catalogue): stop → modify → start."""

    name: ClassVar[str] = "aws.ec2.change_type"
    Args = TypeArgs
    resumable = True    # each part looks at the current type and state first

    def run(self, args: TypeArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        instance = describe(at)
        facts = _facts(at, instance)
        if facts["instance_type"] == args.instance_type:
            return ActionResult(False, f"{at} is {args.instance_type} already", facts)
        ec2 = at.client("ec2")
        modify = {"InstanceId": at.resource, "InstanceType": {"Value": args.instance_type}}
        if ctx.dry_run:
            verdicts = [dry_run(ec2, "StopInstances", at, InstanceIds=[at.resource]),
                        dry_run(ec2, "ModifyInstanceAttribute", at, **modify)]
            return ActionResult(False, f"{at} is {facts['instance_type']} "
                                       f"({facts['state']}); would stop it, make it "
                                       f"{args.instance_type} and start it: "
                                       f"{'; '.join(verdicts)}", facts)
        was_running = facts["state"] in ("running", "pending")
        _stop(at, ctx, args.model_copy(update={"wait": True}), instance)
        call(ec2, "ModifyInstanceAttribute", at, **modify)
        if was_running and args.start:
            _start(at, ctx, args, "stopped")
        return ActionResult(True, f"{at}: {facts['instance_type']} → {args.instance_type}",
                            {**_facts(at, describe(at)),
                             "previous_instance_type": facts["instance_type"]})


# -- verify -------------------------------------------------------------------------------

class HealthyArgs(InstanceArgs):
    login_port: int = Field(0, ge=0, le=65535)  # 0: do not check a login port
    login_host: str = ""        # default: the instance's private IP (after a move, its new one)
    settle: Pause = 0.0         # wait before the first look (a reboot takes a moment to begin)
    every: Duration = 10.0


class Ec2Healthy(Action):
    """Until the instance is running with the system, instance (and attached EBS)
    status checks ok — then, if asked, until its login port answers (SkyArch §3:
    complete when reachable and remote login is confirmed)."""

    name: ClassVar[str] = "aws.ec2.healthy"
    Args = HealthyArgs
    mutating = False
    resumable = True

    def run(self, args: HealthyArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        if ctx.dry_run:
            facts = _facts(at, describe(at))
            login = f", then login port {args.login_port}" if args.login_port else ""
            return ActionResult(False, f"{at} is {facts['state']}; would wait for it to run "
                                       f"with both status checks ok{login}", facts)
        pause(ctx, args.settle)
        state, waited = wait_until(ctx, f"{at} status checks", lambda: _status(at, ctx), args)
        facts = _facts(at, describe(at))
        if args.login_port:
            host = args.login_host or facts["private_ip"] or facts["public_ip"]
            if not host:
                raise ActionError(f"{at} has no IP address to check the login port on", facts)
            _wait_port(ctx, args, str(host))
            state += f"; {host}:{args.login_port} answers"
        return ActionResult(False, f"{at}: {state}", {**facts, "waited_seconds": waited})


#: States an instance does not leave by itself: no use waiting for its status checks.
_DOWN = {"stopping", "stopped", "shutting-down", "terminated"}


def _status(at: Located, ctx: ActionContext) -> tuple[bool, str]:
    found = call(at.client("ec2"), "DescribeInstanceStatus", at, InstanceIds=[at.resource],
                 IncludeAllInstances=True).get("InstanceStatuses", [])
    if not found:
        return False, "not reported yet"
    status = found[0]
    state = status["InstanceState"]["Name"]
    if state in _DOWN:
        raise ActionError(f"{at} is {state}: it will not pass its status checks by waiting")
    checks = {"system": status.get("SystemStatus", {}).get("Status"),
              "instance": status.get("InstanceStatus", {}).get("Status")}
    if "AttachedEbsStatus" in status:  # reported only where EC2 has it
        checks["ebs"] = status["AttachedEbsStatus"].get("Status")
    text = f"{state}, " + ", ".join(f"{k} {v or '?'}" for k, v in checks.items())
    return state == "running" and all(v == "ok" for v in checks.values()), text


def _wait_port(ctx: ActionContext, args: HealthyArgs, host: str) -> None:
    def probe() -> tuple[bool, str]:
        try:
            with socket.create_connection((host, args.login_port),
                                          timeout=min(5.0, max(ctx.left(), 0.1))):
                return True, "open"
        except OSError as exc:
            return False, exc.strerror or str(exc)

    wait_until(ctx, f"login port {host}:{args.login_port}", probe, args)


class StateArgs(InstanceArgs):
    state: tuple[str, ...] = Field(("running",), min_length=1)   # any of these
    instance_type: str = ""     # and of this type, if given
    every: Duration = 5.0


class Ec2InState(Action):
    """Until the instance is in one of ``state`` (and of ``instance_type``): the verify
    of stop, start and type-change operations."""

    name: ClassVar[str] = "aws.ec2.state"
    Args = StateArgs
    mutating = False
    resumable = True

    def run(self, args: StateArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        wanted = " or ".join(args.state) + (f" as {args.instance_type}"
                                            if args.instance_type else "")
        if ctx.dry_run:
            facts = _facts(at, describe(at))
            return ActionResult(False, f"{at} is {facts['state']} ({facts['instance_type']}); "
                                       f"would check that it is {wanted}", facts)

        def probe() -> tuple[bool, str]:
            facts = _facts(at, describe(at))
            typed = not args.instance_type or facts["instance_type"] == args.instance_type
            return facts["state"] in args.state and typed, \
                f"{facts['state']} ({facts['instance_type']})"

        state, _ = wait_until(ctx, f"{at} to be {wanted}", probe, args)
        return ActionResult(False, f"{at} is {state}", _facts(at, describe(at)))


# -- EBS snapshots ------------------------------------------------------------------------

class SnapshotArgs(AwsArgs, WaitArgs):
    volume_id: str = Field("", pattern=r"^(vol-[0-9a-f]{8,17})?$")
    instance_id: str = Field("", pattern=INSTANCE_ID)  # every EBS volume attached to it
    description: str = Field("kanshi snapshot", max_length=255)
    tags: dict[str, str] = Field(default_factory=dict)
    #: generations of this series to keep per volume (0 = keep every one); SkyArch
    #: keeps daily backups for 7 generations
    keep: int = Field(0, ge=0, le=1000)
    series: str = Field("manual", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    every: Duration = 15.0


#: Tags that tell kanshi's own snapshots apart for pruning.
SERIES_TAG, VOLUME_TAG = "kanshi:series", "kanshi:volume"


class EbsSnapshot(Action):
    """CreateSnapshot of a volume (or every volume of an instance), tagged, waited for
    until *completed*, then older snapshots of the same series pruned to ``keep``."""

    name: ClassVar[str] = "aws.ebs.snapshot"
    Args = SnapshotArgs

    def run(self, args: SnapshotArgs, ctx: ActionContext) -> ActionResult:
        at = locate(args, ctx, args.volume_id or args.instance_id, "volume or instance id")
        volumes = _volumes(at)
        ec2 = at.client("ec2")
        if ctx.dry_run:
            verdicts = {dry_run(ec2, "CreateSnapshot", at, VolumeId=v) for v in volumes}
            prune = f", then keep {args.keep} generations" if args.keep else ""
            return ActionResult(False, f"would snapshot {', '.join(volumes)} of {at}{prune}: "
                                       f"{'; '.join(sorted(verdicts))}", {"volumes": volumes})
        made = [_snapshot(at, ctx, args, v) for v in volumes]
        pruned = [s for v in volumes for s in _prune(at, ctx, args, v, made)] \
            if args.keep else []
        note = f"; pruned {len(pruned)} older" if pruned else ""
        return ActionResult(True, f"snapshot {', '.join(made)} of {at}{note}",
                            {"snapshots": made, "volumes": volumes, "pruned": pruned})


def _volumes(at: Located) -> list[str]:
    if at.resource.startswith("vol-"):
        return [at.resource]
    instance = describe(at)
    found = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])
             if "Ebs" in m]
    if not found:
        raise ActionError(f"{at} has no EBS volumes to snapshot")
    return found


def _snapshot(at: Located, ctx: ActionContext, args: SnapshotArgs, volume: str) -> str:
    tags = {**args.tags, SERIES_TAG: args.series, VOLUME_TAG: volume}
    made = call(at.client("ec2"), "CreateSnapshot", at, VolumeId=volume,
                Description=args.description,
                TagSpecifications=[{"ResourceType": "snapshot",
                                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    snapshot = str(made["SnapshotId"])
    ctx.log(f"{snapshot} of {volume} started")
    if args.wait:
        def probe() -> tuple[bool, str]:
            found = call(at.client("ec2"), "DescribeSnapshots", at,
                         SnapshotIds=[snapshot])["Snapshots"][0]
            if found["State"] == "error":
                raise ActionError(f"{snapshot} failed: {found.get('StateMessage', '?')}")
            return found["State"] == "completed", f"{found['State']} {found.get('Progress', '')}"

        wait_until(ctx, f"snapshot {snapshot} of {volume}", probe, args)
    return snapshot


def _prune(at: Located, ctx: ActionContext, args: SnapshotArgs, volume: str,
           made: list[str]) -> list[str]:
    """Delete this series' completed snapshots of ``volume`` beyond the newest ``keep``
    (the ones just made count as the newest, whatever their start times say)."""
    ec2 = at.client("ec2")
    found = call(ec2, "DescribeSnapshots", at, OwnerIds=["self"], Filters=[
        {"Name": f"tag:{SERIES_TAG}", "Values": [args.series]},
        {"Name": f"tag:{VOLUME_TAG}", "Values": [volume]},
        {"Name": "status", "Values": ["completed"]}])["Snapshots"]
    found.sort(key=lambda s: (s["SnapshotId"] in made, s["StartTime"]), reverse=True)
    old = [str(s["SnapshotId"]) for s in found[args.keep:]]
    for snapshot in old:
        call(ec2, "DeleteSnapshot", at, SnapshotId=snapshot)
        ctx.log(f"deleted {snapshot} (older than the newest {args.keep})")
    return old


def now_stamp() -> str:
    """UTC ``YYYYMMDD-HHMMSS`` for names of things made now."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())
