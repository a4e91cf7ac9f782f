"""RDS actions: reboot (with a Multi-AZ failover if asked), start, stop, snapshot, and
the verify "the DB instance is available".

The RDS API has no ``DryRun``: a dry run describes the DB instance instead — proof
that it exists and what state it is in — and says that this is all it could check.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

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
from runbooks.actions.aws_ec2 import now_stamp
from runbooks.actions.base import Action, ActionContext, ActionError, ActionResult

#: RDS DB instance identifiers: 1–63 letters, digits, hyphens; a letter first.
DB_ID = r"^([A-Za-z][A-Za-z0-9-]{0,62})?$"
NO_DRY_RUN = "the RDS API has no DryRun: DescribeDBInstances shows"


class DbArgs(AwsArgs, WaitArgs):
    db_instance: str = Field("", pattern=DB_ID)     # default: the target's
    every: Duration = 30.0


def _where(args: DbArgs, ctx: ActionContext) -> Located:
    return locate(args, ctx, args.db_instance, "DB instance identifier")


def describe(at: Located) -> dict[str, Any]:
    """The DB instance (an error naming it if there is none)."""
    try:
        found = call(at.client("rds"), "DescribeDBInstances", at,
                     DBInstanceIdentifier=at.resource)["DBInstances"]
    except ActionError as exc:
        if error_code(exc) == "DBInstanceNotFound":
            raise ActionError(f"no DB instance {at}: check the target") from None
        raise
    return dict(found[0])


def _facts(at: Located, db: dict[str, Any]) -> dict[str, Any]:
    return {"db_instance": at.resource, "region": at.region, "account": at.account.name,
            "status": db.get("DBInstanceStatus"), "multi_az": bool(db.get("MultiAZ")),
            "instance_class": db.get("DBInstanceClass"), "engine": db.get("Engine")}


def _shown(facts: dict[str, Any]) -> str:
    az = "Multi-AZ" if facts["multi_az"] else "single-AZ"
    return f"{facts['db_instance']} exists ({facts['status']}, {az}, {facts['engine']})"


def _wait_available(at: Located, ctx: ActionContext, args: WaitArgs) -> str:
    def probe() -> tuple[bool, str]:
        status = str(describe(at).get("DBInstanceStatus"))
        if status in ("failed", "incompatible-parameters", "incompatible-restore",
                      "storage-full", "inaccessible-encryption-credentials"):
            raise ActionError(f"{at} is {status}: it will not become available by waiting")
        return status == "available", status

    state, _ = wait_until(ctx, f"{at} to be available", probe, args)
    return state


class RebootArgs(DbArgs):
    force_failover: bool = False    # Multi-AZ: fail over to the standby while rebooting


class RdsReboot(Action):
    """RebootDBInstance, optionally forcing a Multi-AZ failover; waits for *available*."""

    name: ClassVar[str] = "aws.rds.reboot"
    Args = RebootArgs

    def run(self, args: RebootArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        facts = _facts(at, describe(at))
        if args.force_failover and not facts["multi_az"]:
            raise ActionError(f"{at} is not Multi-AZ: there is no standby to fail over to "
                              "(reboot without force_failover)", facts)
        if facts["status"] != "available":
            raise ActionError(f"{at} is {facts['status']}: RDS reboots only an available "
                              "DB instance", facts)
        how = " with a failover to the standby" if args.force_failover else ""
        if ctx.dry_run:
            return ActionResult(False, f"{NO_DRY_RUN} {_shown(facts)}; would reboot it{how}",
                                facts)
        params: dict[str, Any] = {"DBInstanceIdentifier": at.resource}
        if args.force_failover:
            params["ForceFailover"] = True
        call(at.client("rds"), "RebootDBInstance", at, **params)
        if args.wait:
            _wait_available(at, ctx, args)
        return ActionResult(True, f"{at} rebooted{how}", _facts(at, describe(at)))


class RdsStart(Action):
    """StartDBInstance (a stopped one); waits for *available*."""

    name: ClassVar[str] = "aws.rds.start"
    Args = DbArgs
    resumable = True

    def run(self, args: DbArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        facts = _facts(at, describe(at))
        if facts["status"] in ("available", "starting"):
            if ctx.dry_run:
                return ActionResult(False, f"{_shown(facts)}: nothing to start", facts)
            if args.wait:
                _wait_available(at, ctx, args)
            return ActionResult(False, f"{at} was running already", facts)
        if facts["status"] != "stopped":
            raise ActionError(f"{at} is {facts['status']}: only a stopped DB instance "
                              "can be started", facts)
        if ctx.dry_run:
            return ActionResult(False, f"{NO_DRY_RUN} {_shown(facts)}; would start it", facts)
        call(at.client("rds"), "StartDBInstance", at, DBInstanceIdentifier=at.resource)
        if args.wait:
            _wait_available(at, ctx, args)
        return ActionResult(True, f"{at} started", _facts(at, describe(at)))


class RdsStop(Action):
    """StopDBInstance (an available one; RDS starts it again by itself after 7 days);
    waits for *stopped*."""

    name: ClassVar[str] = "aws.rds.stop"
    Args = DbArgs
    resumable = True

    def run(self, args: DbArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        facts = _facts(at, describe(at))
        if facts["status"] in ("stopped", "stopping"):
            return ActionResult(False, f"{at} is {facts['status']} already", facts)
        if facts["status"] != "available":
            raise ActionError(f"{at} is {facts['status']}: only an available DB instance "
                              "can be stopped", facts)
        if ctx.dry_run:
            return ActionResult(False, f"{NO_DRY_RUN} {_shown(facts)}; would stop it "
                                       "(RDS starts it again after 7 days)", facts)
        call(at.client("rds"), "StopDBInstance", at, DBInstanceIdentifier=at.resource)
        if args.wait:
            def probe() -> tuple[bool, str]:
                status = str(describe(at).get("DBInstanceStatus"))
                return status == "stopped", status

            wait_until(ctx, f"{at} to be stopped", probe, args)
        return ActionResult(True, f"{at} stopped", _facts(at, describe(at)))


class SnapshotArgs(DbArgs):
    #: default: kanshi-<db>-<UTC yyyymmdd-hhmmss>
    snapshot_id: str = Field("", max_length=255, pattern=r"^([A-Za-z](-?[A-Za-z0-9])*)?$")
    tags: dict[str, str] = Field(default_factory=dict)


class RdsSnapshot(Action):
    """CreateDBSnapshot, tagged; waits for the snapshot to be *available*."""

    name: ClassVar[str] = "aws.rds.snapshot"
    Args = SnapshotArgs

    def run(self, args: SnapshotArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        facts = _facts(at, describe(at))
        snapshot = args.snapshot_id or f"kanshi-{at.resource}-{now_stamp()}"[:255]
        if ctx.dry_run:
            return ActionResult(False, f"{NO_DRY_RUN} {_shown(facts)}; would snapshot it "
                                       f"as {snapshot}", {**facts, "snapshot": snapshot})
        if facts["status"] != "available":
            raise ActionError(f"{at} is {facts['status']}: RDS snapshots only an available "
                              "DB instance", facts)
        rds = at.client("rds")
        call(rds, "CreateDBSnapshot", at, DBInstanceIdentifier=at.resource,
             DBSnapshotIdentifier=snapshot,
             Tags=[{"Key": k, "Value": v} for k, v in {**args.tags, "kanshi:series":
                                                        "manual"}.items()])
        if args.wait:
            def probe() -> tuple[bool, str]:
                found = call(rds, "DescribeDBSnapshots", at,
                             DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
                status = str(found.get("Status"))
                if status == "failed":
                    raise ActionError(f"snapshot {snapshot} of {at} failed")
                return status == "available", f"{status} {found.get('PercentProgress', '')}%"

            wait_until(ctx, f"snapshot {snapshot} of {at}", probe, args)
        return ActionResult(True, f"snapshot {snapshot} of {at}",
                            {**facts, "snapshot": snapshot})


class RdsAvailable(Action):
    """Until the DB instance is *available* (the verify after an RDS action)."""

    name: ClassVar[str] = "aws.rds.available"
    Args = DbArgs
    mutating = False
    resumable = True

    def run(self, args: DbArgs, ctx: ActionContext) -> ActionResult:
        at = _where(args, ctx)
        if ctx.dry_run:
            facts = _facts(at, describe(at))
            return ActionResult(False, f"{_shown(facts)}; would wait for it to be available",
                                facts)
        _wait_available(at, ctx, args)
        facts = _facts(at, describe(at))
        return ActionResult(False, f"{at} is available", facts)
