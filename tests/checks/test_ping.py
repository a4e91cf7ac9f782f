"""The ``ping`` check: its config, how it judges, and real runs through ``execute()``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from agent.clock import SystemClock
from checks.base import CheckContext, LocalResources, Status
from checks.icmp import NOT_PERMITTED, PingStats
from checks.ping import PingCheck, PingConfig, judge
from tests.checks.icmp_netns import CHECK, Netns
from tests.support import needs


def config(**options: Any) -> PingConfig:
    return PingCheck.Config.model_validate({"targets": ["127.0.0.1"], **options})  # type: ignore[return-value]


# -- config --------------------------------------------------------------------------


def test_defaults_follow_spec_and_check_icmp() -> None:
    cfg = config()
    assert PingCheck.type_name == "ping" and PingCheck.default_interval == 600.0
    assert (cfg.count, cfg.probe_interval, cfg.probe_timeout) == (3, 1.0, 1.0)
    assert (cfg.loss.warning, cfg.loss.critical) == (40.0, 80.0)
    assert (cfg.rtt.warning, cfg.rtt.critical) == (0.2, 0.5)
    assert (cfg.method, cfg.max_pps) == ("auto", 500.0)


def test_durations_and_thresholds_use_the_shared_types() -> None:
    cfg = config(probe_interval="250ms", probe_timeout="2s", rtt="1s", loss="50%")
    assert (cfg.probe_interval, cfg.probe_timeout) == (0.25, 2.0)
    assert (cfg.rtt.warning, cfg.rtt.critical) == (None, 1.0)
    assert (cfg.loss.warning, cfg.loss.critical) == (None, 50.0)


def test_a_single_target_string_is_one_target() -> None:
    assert config(targets="db1.example").targets == ("db1.example",)


@pytest.mark.parametrize(("options", "where", "says"), [
    pytest.param({"count": 0}, "count", "expected a whole number of probes from 1 to 100, got 0",
                 id="count-zero"),
    pytest.param({"count": "three"}, "count", 'got "three"', id="count-not-a-number"),
    pytest.param({"count": True}, "count", "got true", id="count-boolean"),
    pytest.param({"loss": {"warning": 140}}, "loss.warning",
                 "expected a number between 0 and 100, got 140", id="loss-over-100"),
    pytest.param({"loss": {"warning": 90, "critical": 80}}, "loss",
                 "expected warning (90) not above critical (80)", id="loss-upside-down"),
    pytest.param({"rtt": {"warning": "fast"}}, "rtt.warning",
                 "expected a duration such as 30s, 10m or 1h", id="rtt-not-a-duration"),
    pytest.param({"probe_timeout": 0}, "probe_timeout", "expected a duration greater than 0",
                 id="timeout-zero"),
    pytest.param({"targets": []}, "targets", "expected a list of at least one host",
                 id="no-targets"),
    pytest.param({"targets": ["a", "a"]}, "targets", 'expected each target once, got "a" twice',
                 id="duplicate-target"),
    pytest.param({"targets": ["db1 db2"]}, "targets", "without spaces", id="target-with-space"),
    pytest.param({"method": "icmplib"}, "method", 'expected one of auto, raw, dgram, exec, '
                 'got "icmplib"', id="unknown-method"),
    pytest.param({"max_pps": -1}, "max_pps", "0 or more (0 = unpaced), got -1",
                 id="negative-pps"),
    pytest.param({"interval": "1s"}, "interval", "Extra inputs are not permitted",
                 id="unknown-key"),
])
def test_bad_config_is_refused_with_its_path(options: dict[str, Any], where: str,
                                             says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**options)
    errors = caught.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [where]
    assert says in errors[0]["msg"]


def test_the_shortest_sweep_is_known_before_running() -> None:
    assert config(count=5, probe_interval="2s", probe_timeout="3s").shortest_sweep() == 11.0


# -- judging -------------------------------------------------------------------------

MS = 0.001


def stats(sent: int = 3, received: int = 3, rtt: float = 0.04 * MS, **extra: Any) -> PingStats:
    rtts = (rtt, rtt, rtt) if received else (None, None, None)
    return PingStats(extra.pop("target", "127.0.0.1"), extra.pop("address", "127.0.0.1"),
                     sent, received, *rtts, **extra)


@pytest.mark.parametrize(("given", "status", "message"), [
    pytest.param(stats(), Status.OK,
                 "127.0.0.1 reachable: 0% loss, rtt avg 0.04 ms (3/3 replies)", id="healthy"),
    pytest.param(stats(received=2), Status.OK,
                 "127.0.0.1 reachable: 33% loss, rtt avg 0.04 ms (2/3 replies)",
                 id="one-lost-is-below-warning"),
    pytest.param(stats(received=1), Status.WARNING,
                 "127.0.0.1 losing packets: 67% loss (warning at 40%), rtt avg 0.04 ms "
                 "(1/3 replies)", id="loss-warning"),
    pytest.param(stats(sent=10, received=1), Status.CRITICAL,
                 "127.0.0.1 losing packets: 90% loss (critical at 80%), rtt avg 0.04 ms "
                 "(1/10 replies)", id="loss-critical"),
    pytest.param(stats(rtt=250 * MS), Status.WARNING,
                 "127.0.0.1 slow: rtt avg 250 ms (warning at 200 ms), 0% loss (3/3 replies)",
                 id="rtt-warning"),
    pytest.param(stats(received=1, rtt=600 * MS), Status.CRITICAL,
                 "127.0.0.1 losing packets and slow: 67% loss (warning at 40%), rtt avg 600 ms "
                 "(critical at 500 ms) (1/3 replies)", id="lossy-and-slow"),
    pytest.param(stats(target="db1", address="10.0.0.5"), Status.OK,
                 "db1 (10.0.0.5) reachable: 0% loss, rtt avg 0.04 ms (3/3 replies)",
                 id="names-show-their-address"),
])
def test_loss_then_rtt_decide_the_status(given: PingStats, status: Status,
                                         message: str) -> None:
    result = judge(given, config())
    assert (result.status, result.message, result.target) == (status, message, given.target)


def test_every_probe_lost_is_critical_unreachable_with_the_reason() -> None:
    given = stats(received=0, target="10.199.9.9", address="10.199.9.9",
                  reason="host unreachable (ICMP type 3 code 1 from 10.199.1.1)")
    result = judge(given, config(loss={"warning": None, "critical": None}))
    assert result.status is Status.CRITICAL
    assert result.message == ("10.199.9.9 unreachable: 3/3 probes lost (timeout 1 s each); "
                              "host unreachable (ICMP type 3 code 1 from 10.199.1.1)")
    assert result.metrics == {"loss_percent": 100.0, "sent": 3.0, "received": 0.0}


@pytest.mark.parametrize("error", [
    pytest.param("cannot resolve name: Name or service not known", id="unresolved"),
    pytest.param(f"{NOT_PERMITTED} (raw socket: Operation not permitted)", id="not-permitted"),
])
def test_a_target_that_could_not_be_measured_is_unknown_not_down(error: str) -> None:
    result = judge(PingStats("db1", sent=0, error=error), config())
    assert (result.status, result.message, result.metrics) == (Status.UNKNOWN,
                                                               f"db1: {error}", {})


def test_metrics_use_base_unit_names() -> None:
    result = judge(stats(received=2, rtt=2 * MS), config())
    assert result.metrics == pytest.approx({
        "loss_percent": 100 / 3, "sent": 3.0, "received": 2.0,
        "rtt_min_seconds": 0.002, "rtt_avg_seconds": 0.002, "rtt_max_seconds": 0.002})


# -- real runs -------------------------------------------------------------------------


@pytest.fixture
def shared() -> Iterator[LocalResources]:
    needs.root()
    resources = LocalResources()
    yield resources
    resources.close()


def check(shared: LocalResources, timeout: float = 30.0, **options: Any) -> PingCheck:
    return PingCheck("ping", config(**options), timeout=timeout,
                     context=CheckContext(clock=SystemClock(), shared=shared))


@pytest.mark.real
def test_loopback_is_reported_reachable_through_execute(shared: LocalResources) -> None:
    results = check(shared, targets=["127.0.0.1", "localhost", "::1"],
                    probe_interval="100ms").execute()
    assert [(r.target, r.status, r.check) for r in results] == [
        ("127.0.0.1", Status.OK, "ping"), ("localhost", Status.OK, "ping"),
        ("::1", Status.OK, "ping")]
    assert results[0].message.startswith("127.0.0.1 reachable: 0% loss, rtt avg ")
    assert results[0].message.endswith(" ms (3/3 replies)")
    assert set(results[0].metrics) == {"loss_percent", "sent", "received", "rtt_min_seconds",
                                       "rtt_avg_seconds", "rtt_max_seconds"}


@pytest.mark.real
def test_every_ping_check_of_an_agent_shares_one_engine(shared: LocalResources) -> None:
    first, second = check(shared, count=1), check(shared, count=1, targets=["127.0.0.2"])
    assert [r.status for r in first.execute() + second.execute()] == [Status.OK, Status.OK]
    assert first._engine(first.config) is second._engine(second.config)  # type: ignore[arg-type]


@pytest.mark.real
def test_a_sweep_that_cannot_fit_the_timeout_says_so_instead_of_overrunning(
        shared: LocalResources) -> None:
    results = check(shared, timeout=5.0, count=10).execute()
    assert [r.status for r in results] == [Status.UNKNOWN]
    assert results[0].message == (
        "127.0.0.1: not pinged: 1 target × 10 probes (1 s apart, 1 s timeout) need about "
        "10.0 s but the check timeout is 5 s; lower count, probe_interval or probe_timeout, "
        "or raise the check's timeout")


@pytest.mark.real
def test_the_exec_method_is_reachable_through_the_check(shared: LocalResources) -> None:
    needs.command("ping", "iputils-ping")
    results = check(shared, method="exec", count=2, probe_interval="200ms").execute()
    assert results[0].status is Status.OK, results[0].message
    assert results[0].message.endswith("(2/2 replies)")


@pytest.mark.real
def test_a_dead_host_is_critical_with_an_actionable_message(netns: Netns) -> None:
    netns.black_hole("10.199.0.1")
    results = netns.python(CHECK, {"targets": ["10.199.0.77", "10.199.0.1"],
                                   "probe_interval": "200ms"})
    assert [(r["target"], r["status"]) for r in results] == [
        ("10.199.0.77", "CRITICAL"), ("10.199.0.1", "OK")]
    assert results[0]["message"] == "10.199.0.77 unreachable: 3/3 probes lost (timeout 1 s each)"
    assert results[0]["metrics"] == {"loss_percent": 100.0, "sent": 3.0, "received": 0.0}


@pytest.mark.real
def test_no_icmp_permission_is_unknown_never_critical(netns: Netns) -> None:
    needs.command("setpriv", "util-linux")
    netns.sysctl("net.ipv4.ping_group_range=1 0")
    results = netns.python(CHECK, {"targets": ["127.0.0.1"], "count": 1}, drop_net_raw=True)
    assert [r["status"] for r in results] == ["UNKNOWN"]
    assert results[0]["message"].startswith(f"127.0.0.1: {NOT_PERMITTED} (")
