"""AWS runbooks through the real engine and store, against moto (``mock_aws``): the
shipped EC2 / EBS / RDS runbooks change what they should, dry runs change nothing and
ask AWS with ``DryRun=True``, budgets, locks, secrets and the ``aws.call`` allow-list.

Where moto has no answer (SSM Run Command, an impaired status check, a DryRun
refused for lack of permission) the test says so and uses botocore's Stubber —
validated against the service model — or an ``after-call`` hook on moto's answer.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.runbook_library import RunbookLibrary, action_class
from agent.store import Store, open_store
from checks.aws.session import AwsAccount
from runbooks.actions.aws_base import AwsSessions
from runbooks.engine import Engine, Outcome, RunRequest
from runbooks.params import resolve
from runbooks.schema import Runbook
from tests.runbooks.test_engine import Clock, Recorder

REGION = "ap-northeast-1"
AMI = "ami-12c6146b"
ROLE = "arn:aws:iam::222222222222:role/kanshi-operations"
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
          "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
FAST = {"settle": 0, "within": 30}


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake keys, no profile files, no instance metadata: nothing can reach real AWS."""
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "state")
    yield s
    s.close()


LIBRARY = RunbookLibrary.load()


class Calls:
    """Every AWS call the runbooks' clients make: (operation, parameters)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []

    def hook(self, client: Any) -> None:
        client.meta.events.register(
            "before-parameter-build",
            lambda params, model, **_: self.made.append((model.name, dict(params))))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.made if name == operation]


class Harness:
    """The engine with the real store and library; the agent's side is a recorder."""

    def __init__(self, store: Store, sessions: AwsSessions,
                 books: dict[str, Runbook] | None = None) -> None:
        self.store = store
        self.books = books or {}
        self.hooks = Recorder()
        self.engine = Engine(store.runbooks, self.hooks, Clock(), self._book, action_class,
                             {"notify": self.hooks.notify, "aws": sessions},
                             emergency_ack_timeout=0.6, poll=0.05)

    def _book(self, name: str) -> Runbook:
        return self.books.get(name) or LIBRARY.get(name)

    def request(self, name: str, target: str, params: dict[str, Any] | None = None, *,
                dry_run: bool = False, trigger: str = "manual") -> RunRequest:
        book = self._book(name)
        values = resolve(book, params or {})
        now = datetime.now(UTC)
        run_id = self.store.runbooks.create(
            runbook=name, target=target, params=values, trigger=trigger, incident_id=None,
            requested_by="test", dry_run=dry_run, state="waiting_lock", scheduled_for=now,
            now=now, owner="test")
        return RunRequest(run_id, book, target, values, trigger, dry_run)

    def run(self, name: str, target: str, params: dict[str, Any] | None = None,
            **kw: Any) -> Outcome:
        return self.engine.execute(self.request(name, target, params, **kw))


def ec2(**kw: Any) -> Any:
    import boto3

    return boto3.client("ec2", region_name=REGION, **kw)


def rds() -> Any:
    import boto3

    return boto3.client("rds", region_name=REGION)


def instance(client: Any = None, **kw: Any) -> str:
    made = (client or ec2()).run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                                           InstanceType="t3.micro", **kw)
    return str(made["Instances"][0]["InstanceId"])


def described(instance_id: str) -> dict[str, Any]:
    return dict(ec2().describe_instances(InstanceIds=[instance_id])
                ["Reservations"][0]["Instances"][0])


def state(instance_id: str) -> str:
    return str(described(instance_id)["State"]["Name"])


def snapshots() -> list[dict[str, Any]]:
    return list(ec2().describe_snapshots(OwnerIds=["self"])["Snapshots"])


def summaries(h: Harness, run_id: int) -> str:
    """What each step of a run said (a dry run's plan, step by step)."""
    return " | ".join(f"{s.step}: {s.summary}" for s in h.store.runbooks.steps(run_id))


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def h(store: Store, calls: Calls) -> Harness:
    prod = AwsAccount(name="prod", regions=(REGION,))
    return Harness(store, AwsSessions([prod], hooks=(calls.hook,)))


MUTATING = ("RebootInstances", "StopInstances", "StartInstances", "CreateSnapshot",
            "DeleteSnapshot", "ModifyInstanceAttribute", "RebootDBInstance",
            "CreateDBSnapshot", "StopDBInstance", "StartDBInstance")


def only_dry_runs(calls: Calls) -> None:
    for name, params in calls.made:
        if name in MUTATING:
            assert params.get("DryRun") is True, f"{name} was called for real: {params}"


# -- EC2 ----------------------------------------------------------------------------------

@pytest.mark.usefixtures("aws")
def test_a_dry_run_of_ec2_server_down_changes_nothing_and_asks_aws_with_dry_run(
        h: Harness, calls: Calls) -> None:
    iid = instance()
    outcome = h.run("ec2-server-down", f"prod/{REGION}/{iid}", FAST, dry_run=True)
    assert outcome.state == "planned", outcome.message
    assert state(iid) == "running"
    only_dry_runs(calls)
    assert calls.of("RebootInstances") == [{"InstanceIds": [iid], "DryRun": True}]
    assert {"InstanceIds": [iid], "DryRun": True} in calls.of("StopInstances")
    assert {"InstanceIds": [iid], "DryRun": True} in calls.of("StartInstances")
    assert "RebootInstances would succeed (DryRun)" in summaries(h, 1)
    assert h.store.runbooks.holder(f"prod/{REGION}/{iid}") is None, "a dry run takes no lock"


@pytest.mark.usefixtures("aws")
def test_a_dry_run_of_every_ec2_operation_changes_nothing(h: Harness, calls: Calls) -> None:
    iid = instance()
    target = f"prod/{REGION}/{iid}"
    before = len(snapshots())
    for name, params in [("ec2-reboot", {"settle": 0}), ("ec2-stop", {}), ("ec2-start", {}),
                         ("ec2-change-type", {"instance_type": "t3.small"}),
                         ("ebs-snapshot", {})]:
        outcome = h.run(name, target, params, dry_run=True)
        assert outcome.state == "planned", (name, outcome.message)
        assert "would" in summaries(h, h.store.runbooks.recent(1)[0].id), name
    only_dry_runs(calls)
    assert calls.of("CreateSnapshot") and calls.of("ModifyInstanceAttribute")
    assert state(iid) == "running" and described(iid)["InstanceType"] == "t3.micro"
    assert len(snapshots()) == before


@pytest.mark.usefixtures("aws")
def test_level_1_reboots_the_instance_and_verifies_its_status_checks(
        h: Harness, calls: Calls) -> None:
    iid = instance()
    outcome = h.run("ec2-server-down", f"prod/{REGION}/{iid}", {**FAST, "login_port": 0})
    assert outcome.state == "succeeded", outcome.message
    assert outcome.message == "recovery verified at level 1 (reboot the instance)"
    assert calls.of("RebootInstances") == [{"InstanceIds": [iid]}]
    assert not calls.of("StopInstances")


def impaired_until_stopped(client: Any) -> None:
    """moto reports every running instance's status checks ok, always: this hook makes
    its DescribeInstanceStatus answer say the system check is impaired until the
    instance has been stopped once (failed hardware that a reboot does not cure)."""
    moved: list[bool] = []
    client.meta.events.register("after-call.ec2.StopInstances",
                                lambda **_: moved.append(True))

    def impair(parsed: dict[str, Any], **_: Any) -> None:
        for status in parsed.get("InstanceStatuses", []):
            if not moved and status["InstanceState"]["Name"] == "running":
                status["SystemStatus"] = {"Status": "impaired", "Details": [
                    {"Name": "reachability", "Status": "failed"}]}

    client.meta.events.register("after-call.ec2.DescribeInstanceStatus", impair)


@pytest.mark.usefixtures("aws")
def test_a_reboot_that_does_not_verify_goes_on_to_stop_and_start(
        store: Store, calls: Calls) -> None:
    h = Harness(store, AwsSessions(hooks=(calls.hook, impaired_until_stopped)))
    iid = instance()
    ip_before = described(iid)["PublicIpAddress"]
    outcome = h.run("ec2-server-down", f"{REGION}/{iid}",
                    {"settle": 0, "within": 0.5, "login_port": 0})
    assert outcome.state == "succeeded", outcome.message
    assert outcome.message.startswith("recovery verified at level 2")
    assert calls.of("RebootInstances") == [{"InstanceIds": [iid]}]
    assert calls.of("StopInstances") == [{"InstanceIds": [iid], "Force": False}]
    assert calls.of("StartInstances") == [{"InstanceIds": [iid]}]
    assert state(iid) == "running"
    steps = {s.step: s for s in store.runbooks.steps(1)}
    assert steps["stop-start"].outputs["previous_public_ip"] == ip_before
    assert ("runbook_step", "failed: " + (steps["verify"].error or "")) not in h.hooks.records
    verifies = [s for s in store.runbooks.steps(1) if s.step == "verify"]
    assert [v.state for v in verifies] == ["failed", "succeeded"]
    assert "system impaired" in (verifies[0].error or "")


@pytest.mark.usefixtures("aws")
def test_when_nothing_verifies_the_instance_goes_to_people(store: Store) -> None:
    def always_impaired(client: Any) -> None:
        client.meta.events.register("after-call.ec2.DescribeInstanceStatus", lambda parsed, **_: [
            s.update(InstanceStatus={"Status": "impaired"})
            for s in parsed.get("InstanceStatuses", [])])

    h = Harness(store, AwsSessions(hooks=(always_impaired,)))
    iid = instance()
    outcome = h.run("ec2-server-down", f"{REGION}/{iid}",
                    {"settle": 0, "within": 0.3, "login_port": 0})
    assert outcome.state == "escalated"
    assert "still not healthy after a reboot and a stop-start" in outcome.message
    assert h.hooks.notices[-1][0] == "runbook_escalation"


@pytest.mark.usefixtures("aws")
def test_the_login_port_is_part_of_the_verify(h: Harness) -> None:
    iid = instance()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        outcome = h.run("ec2-reboot", f"prod/{REGION}/{iid}",
                        {"settle": 0, "login_port": port, "within": 5})
    # the login host defaults to the instance's private IP, which moto makes up: the
    # verify must have tried it (and not passed on status checks alone)
    assert outcome.state == "escalated"
    verify = next(s for s in h.store.runbooks.steps(1) if s.step == "verify")
    assert verify.state == "failed" and "login port" in (verify.error or "")


@pytest.mark.usefixtures("aws")
def test_the_restart_storm_budget_stops_repeated_reboots(h: Harness, calls: Calls) -> None:
    iid = instance()
    target = f"prod/{REGION}/{iid}"
    params = {**FAST, "login_port": 0}
    assert [h.run("ec2-server-down", target, params).state for _ in range(3)] == \
        ["succeeded"] * 3
    fourth = h.run("ec2-server-down", target, params)
    assert fourth.state == "escalated"
    assert fourth.message.startswith(f"restart-storm budget spent: reboot ran 3 times on "
                                     f"{target}")
    assert len(calls.of("RebootInstances")) == 3, "no fourth reboot"


@pytest.mark.usefixtures("aws")
def test_one_runbook_per_aws_target_at_a_time(h: Harness, calls: Calls) -> None:
    iid = instance()
    target = f"prod/{REGION}/{iid}"
    holder = h.request("ec2-stop", target)
    assert h.store.runbooks.lock(target, holder.run_id, datetime.now(UTC)) is None
    outcome = h.run("ec2-reboot", target, {"settle": 0})
    assert outcome.state == "refused"
    assert f"run #{holder.run_id}" in outcome.message
    assert not calls.of("RebootInstances") and state(iid) == "running"


@pytest.mark.usefixtures("aws")
def test_stop_start_and_type_change_operations_change_the_instance(h: Harness) -> None:
    iid = instance()
    target = f"prod/{REGION}/{iid}"
    assert h.run("ec2-stop", target).state == "succeeded"
    assert state(iid) == "stopped"
    assert h.run("ec2-stop", target).state == "succeeded", "stopping a stopped one is fine"
    assert h.run("ec2-start", target).state == "succeeded"
    assert state(iid) == "running"
    outcome = h.run("ec2-change-type", target, {"instance_type": "t3.small"})
    assert outcome.state == "succeeded", outcome.message
    assert described(iid)["InstanceType"] == "t3.small" and state(iid) == "running"


@pytest.mark.usefixtures("aws")
def test_ebs_snapshots_are_tagged_and_pruned_to_their_generations(h: Harness) -> None:
    iid = instance()
    volume = described(iid)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    made = []
    for _ in range(3):
        outcome = h.run("ebs-snapshot", f"prod/{REGION}/{iid}", {"keep": 2, "series": "daily"})
        assert outcome.state == "succeeded", outcome.message
        made.append(h.store.runbooks.steps(h.store.runbooks.recent(1)[0].id)[0]
                    .outputs["snapshots"][0])
    left = [s for s in snapshots() if {"Key": "kanshi:series", "Value": "daily"} in
            s.get("Tags", [])]
    assert len(left) == 2
    assert made[-1] in {s["SnapshotId"] for s in left}, "the newest is kept"
    assert all({"Key": "kanshi:volume", "Value": volume} in s["Tags"] for s in left)


@pytest.mark.usefixtures("aws")
def test_an_unknown_instance_is_a_clear_error(h: Harness) -> None:
    outcome = h.run("ec2-reboot", f"prod/{REGION}/i-0123456789abcdef0", {"settle": 0})
    assert outcome.state == "failed"
    assert "no instance i-0123456789abcdef0 (prod, ap-northeast-1)" in outcome.message


# -- RDS ----------------------------------------------------------------------------------

def database(name: str = "orders", multi_az: bool = True) -> str:
    rds().create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro",
                             Engine="postgres", MasterUsername="kanshi",
                             MasterUserPassword="not-a-secret-1", AllocatedStorage=20,
                             MultiAZ=multi_az)
    return name


@pytest.mark.usefixtures("aws")
def test_rds_reboot_with_failover_and_snapshot(h: Harness, calls: Calls) -> None:
    db = database()
    target = f"prod/{REGION}/{db}"
    assert h.run("rds-failover", target).state == "succeeded"
    assert calls.of("RebootDBInstance") == [{"DBInstanceIdentifier": db,
                                             "ForceFailover": True}]
    outcome = h.run("rds-snapshot", target, {"snapshot_id": "orders-before-upgrade"})
    assert outcome.state == "succeeded", outcome.message
    (snap,) = rds().describe_db_snapshots(DBInstanceIdentifier=db,
                                          SnapshotType="manual")["DBSnapshots"]
    assert snap["DBSnapshotIdentifier"] == "orders-before-upgrade"
    assert snap["Status"] == "available"


@pytest.mark.usefixtures("aws")
def test_an_rds_dry_run_describes_the_database_and_changes_nothing(
        h: Harness, calls: Calls) -> None:
    db = database()
    target = f"prod/{REGION}/{db}"
    for name in ("rds-reboot", "rds-failover", "rds-snapshot", "rds-stop"):
        outcome = h.run(name, target, dry_run=True)
        assert outcome.state == "planned", (name, outcome.message)
        assert "the RDS API has no DryRun: DescribeDBInstances shows orders exists " \
               "(available, Multi-AZ, postgres)" in \
               summaries(h, h.store.runbooks.recent(1)[0].id)
    only_dry_runs(calls)
    assert not [n for n, _ in calls.made if n in MUTATING]
    assert rds().describe_db_snapshots(DBInstanceIdentifier=db,
                                       SnapshotType="manual")["DBSnapshots"] == []


@pytest.mark.usefixtures("aws")
def test_a_failover_of_a_single_az_database_is_refused_with_the_reason(h: Harness) -> None:
    db = database("single", multi_az=False)
    outcome = h.run("rds-failover", f"prod/{REGION}/{db}")
    assert outcome.state == "failed"
    assert "is not Multi-AZ: there is no standby to fail over to" in outcome.message


# -- accounts and secrets -----------------------------------------------------------------

@pytest.mark.usefixtures("aws")
def test_the_external_id_never_reaches_the_audit_log_or_the_store(
        store: Store, calls: Calls) -> None:
    import boto3

    sts = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=ROLE, RoleSessionName="setup")["Credentials"]
    theirs = instance(ec2(aws_access_key_id=sts["AccessKeyId"],
                          aws_secret_access_key=sts["SecretAccessKey"],
                          aws_session_token=sts["SessionToken"]))
    h = Harness(store, AwsSessions(hooks=(calls.hook,)))
    secret = "kanshi-ext-9d1c77"
    outcome = h.run("ec2-reboot", f"customer/{REGION}/{theirs}",
                    {"role_arn": ROLE, "external_id": secret, "settle": 0})
    assert outcome.state == "succeeded", outcome.message
    (assumed,) = calls.of("AssumeRole")
    assert assumed["ExternalId"] == secret and assumed["RoleArn"] == ROLE
    assert calls.of("RebootInstances") == [{"InstanceIds": [theirs]}], \
        "rebooted in the role's account"
    assert secret not in repr(h.hooks.records)
    # The run's own parameters keep it (a scheduled run needs it later); every step,
    # output and audit line has it masked.
    dump = "\n".join(line for line in store.db._conn.iterdump()
                     if not line.startswith('INSERT INTO "runbook_runs"'))
    assert secret not in dump
    assert "********" in dump


@pytest.mark.usefixtures("aws")
def test_an_unknown_account_name_lists_the_configured_ones(h: Harness) -> None:
    iid = instance()
    outcome = h.run("ec2-reboot", f"staging/{REGION}/{iid}", {"settle": 0})
    assert outcome.state == "failed"
    assert "unknown AWS account 'staging': configured are prod" in outcome.message


# -- aws.call -----------------------------------------------------------------------------

def book(text: str) -> Runbook:
    return Runbook.model_validate(yaml.safe_load(textwrap.dedent(text)))


TERMINATE = book("""
name: terminate
levels:
  - name: try it
    steps:
      - id: call
        action: aws.call
        with: {service: ec2, operation: TerminateInstances,
               parameters: {InstanceIds: ["{{ target.split('/')[-1] }}"]}}
    verify:
      action: aws.ec2.state
      with: {state: [terminated]}
""")


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("dry_run", [False, True], ids=["for-real", "dry-run"])
def test_aws_call_refuses_an_operation_that_is_not_on_the_allow_list(
        store: Store, calls: Calls, dry_run: bool) -> None:
    h = Harness(store, AwsSessions(hooks=(calls.hook,)), {"terminate": TERMINATE})
    iid = instance()
    outcome = h.run("terminate", f"{REGION}/{iid}", dry_run=dry_run)
    assert "aws.call refuses ec2:TerminateInstances: it is not on the allow-list" in \
        outcome.message
    assert not calls.of("TerminateInstances") and state(iid) == "running"


@pytest.mark.usefixtures("aws")
def test_the_agent_decides_the_allow_list_and_aws_call_can_verify(
        store: Store, calls: Calls) -> None:
    allowed = {"ec2:TerminateInstances", "ec2:DescribeInstances"}
    h = Harness(store, AwsSessions(hooks=(calls.hook,), allowed_calls=allowed),
                {"terminate": TERMINATE})
    iid = instance()
    planned = h.run("terminate", f"{REGION}/{iid}", dry_run=True)
    assert planned.state == "planned"
    assert "TerminateInstances would succeed (DryRun)" in \
        summaries(h, h.store.runbooks.recent(1)[0].id)
    assert state(iid) == "running"
    assert h.run("terminate", f"{REGION}/{iid}").state == "succeeded"
    assert state(iid) == "terminated"
    h2 = Harness(store, AwsSessions(allowed_calls=set()))
    assert h2.run("ebs-snapshot", f"{REGION}/{instance()}").state == "escalated"
    verify = next(s for s in store.runbooks.steps(store.runbooks.recent(1)[0].id)
              if s.step == "verify")
    assert "not on the allow-list" in (verify.error or ""), \
        "the library's read-only verify obeys the agent's list too"


# -- Stubber: what moto lacks -------------------------------------------------------------

class Stubbed(AwsSessions):
    """Every client is the test's own (botocore Stubber)."""

    def __init__(self, clients: dict[str, Any]) -> None:
        super().__init__()
        self.stubbed = clients

    def client(self, account: AwsAccount, service: str, region: str) -> Any:
        return self.stubbed[service]


def stubbed(service: str) -> tuple[Any, Any]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(service, region_name=REGION)
    return client, Stubber(client)


IID = "i-0123456789abcdef0"
CID = "5f0cbd5a-3c5b-4d6e-9f5e-1a2b3c4d5e6f"


def test_a_dry_run_refused_for_lack_of_permission_is_a_plan_error(store: Store) -> None:
    """moto accepts every DryRun; a Stubber gives EC2's UnauthorizedOperation answer."""
    client, stub = stubbed("ec2")
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [
        {"InstanceId": IID, "State": {"Name": "running", "Code": 16}}]}]},
        {"InstanceIds": [IID]})
    stub.add_client_error("reboot_instances", "UnauthorizedOperation",
                          "You are not authorized to perform this operation.",
                          http_status_code=403,
                          expected_params={"InstanceIds": [IID], "DryRun": True})
    h = Harness(store, Stubbed({"ec2": client}))
    with stub:
        request = h.request("ec2-reboot", f"{REGION}/{IID}", {"settle": 0}, dry_run=True)
        (reboot_level, _people) = request.runbook.levels
        outcome = h.engine.execute(request.__class__(
            request.run_id, request.runbook.model_copy(update={"levels": (reboot_level,)}),
            request.target, request.params, request.trigger, True))
    assert "plan error: RebootInstances on i-0123456789abcdef0 (default, ap-northeast-1) " \
           "would be refused: the identity lacks ec2:RebootInstances" in outcome.message
    assert outcome.state == "failed", "a plan that would fail is not a plan (exit non-zero)"
    assert outcome.message.startswith("the dry run found what would fail: level 1:")
    (step,) = store.runbooks.steps(1)[:1]
    assert step.state == "failed"


SSM_SERVICE = "web; rm -rf / $(reboot)"


def ssm_book() -> Runbook:
    return book("""
    name: ssm-restart
    parameters:
      service: {type: string, required: true}
    levels:
      - name: restart
        steps:
          - id: restart
            action: aws.ssm.run
            with: {argv: [systemctl, restart, "{{ params.service }}"], every: 0.05}
        verify:
          action: aws.ssm.run
          with: {argv: [systemctl, is-active, "{{ params.service }}"], changes: false,
                 every: 0.05}
    """)


def test_ssm_run_command_passes_argument_lists_literally_and_keeps_the_output(
        store: Store) -> None:
    """moto has no DescribeInstanceInformation and answers GetCommandInvocation with
    made-up output: SSM is a Stubber, validated against the service model."""
    client, stub = stubbed("ssm")
    command = {"CommandId": CID, "DocumentName": "AWS-RunShellScript"}
    for argv, out in ((["systemctl", "restart", SSM_SERVICE], ""),
                      (["systemctl", "is-active", SSM_SERVICE], "active\n")):
        stub.add_response("describe_instance_information", {"InstanceInformationList": [
            {"InstanceId": IID, "PingStatus": "Online", "PlatformName": "Amazon Linux",
             "AgentVersion": "3.3.0"}]},
            {"Filters": [{"Key": "InstanceIds", "Values": [IID]}]})
        line = " ".join(argv[:2]) + " 'web; rm -rf / $(reboot)'"
        stub.add_response("send_command", {"Command": command}, {
            "InstanceIds": [IID], "DocumentName": "AWS-RunShellScript",
            "Parameters": {"commands": [line], "executionTimeout": ["600"]},
            "Comment": "kanshi runbook"})
        stub.add_client_error("get_command_invocation", "InvocationDoesNotExist",
                              expected_params={"CommandId": CID, "InstanceId": IID})
        stub.add_response("get_command_invocation", {"Status": "InProgress"},
                          {"CommandId": CID, "InstanceId": IID})
        stub.add_response("get_command_invocation", {
            "Status": "Success", "ResponseCode": 0, "StandardOutputContent": out,
            "StandardErrorContent": ""}, {"CommandId": CID, "InstanceId": IID})
    h = Harness(store, Stubbed({"ssm": client}), {"ssm-restart": ssm_book()})
    with stub:
        outcome = h.run("ssm-restart", f"{REGION}/{IID}", {"service": SSM_SERVICE})
    assert outcome.state == "succeeded", outcome.message
    stub.assert_no_pending_responses()
    verify = next(s for s in store.runbooks.steps(1) if s.step == "verify")
    assert verify.outputs["stdout"] == "active\n" and verify.outputs["exit_code"] == 0


def test_an_ssm_dry_run_checks_the_instance_is_managed_and_sends_nothing(
        store: Store) -> None:
    """SSM has no DryRun; the Stubber stands in for DescribeInstanceInformation and would
    fail the test on any SendCommand (none is queued)."""
    client, stub = stubbed("ssm")
    for _ in range(2):  # the step; the verify is read-only and would run, so stop there
        stub.add_response("describe_instance_information", {"InstanceInformationList": [
            {"InstanceId": IID, "PingStatus": "ConnectionLost"}]})
    h = Harness(store, Stubbed({"ssm": client}), {"ssm-restart": ssm_book()})
    with stub:
        outcome = h.run("ssm-restart", f"{REGION}/{IID}", {"service": "nginx"},
                        dry_run=True)
    assert "SSM Agent is ConnectionLost: SSM cannot reach it now" in outcome.message


def test_a_failed_ssm_command_fails_the_step_with_its_output(store: Store) -> None:
    """Stubber (see above): a command that exits 5 on the instance."""
    client, stub = stubbed("ssm")
    stub.add_response("describe_instance_information", {"InstanceInformationList": [
        {"InstanceId": IID, "PingStatus": "Online"}]})
    stub.add_response("send_command", {"Command": {"CommandId": CID}})
    stub.add_response("get_command_invocation", {
        "Status": "Failed", "ResponseCode": 5, "StandardOutputContent": "",
        "StandardErrorContent": "Unit nginx.service not found.\n"})
    h = Harness(store, Stubbed({"ssm": client}), {"ssm-restart": ssm_book()})
    with stub:
        outcome = h.run("ssm-restart", f"{REGION}/{IID}", {"service": "nginx"})
    assert outcome.state == "failed"
    assert "ended Failed (exit 5): Unit nginx.service not found." in outcome.message


# -- the library --------------------------------------------------------------------------

SHIPPED = sorted((Path(__file__).parents[2] / "runbooks" / "library").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_kanshi_runbook_validate_accepts_every_shipped_runbook(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["runbook", "validate", str(path)]) == 0
    assert "OK — runbook" in capsys.readouterr().out


def test_the_operations_catalogue_is_there_for_operators() -> None:
    operations = {n for n in LIBRARY.names() if LIBRARY.get(n).category == "operation"}
    assert {"ec2-reboot", "ec2-stop", "ec2-start", "ec2-change-type", "ebs-snapshot",
            "rds-reboot", "rds-failover", "rds-snapshot", "rds-start", "rds-stop",
            "asg-capacity"} <= operations
    for name in operations:
        book_ = LIBRARY.get(name)
        assert book_.parameters["external_id"].type == "secret", name
        assert all(level.verify is not None for level in book_.levels if level.steps), name
