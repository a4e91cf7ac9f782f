"""The ``cpu``, ``memory``, ``load`` and ``network`` checks on this machine's real figures.

Each is compared with the kernel file the trusted tools read (/proc/stat,
/proc/meminfo via ``free -b``, /proc/loadavg, /proc/net/dev) in the same test.
Network rates are measured inside a network namespace the test creates, so the
traffic counted is exactly the traffic the test sends; a counter reset there is a
real one (the interface is deleted and created again).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest

import checks
from agent.clock import FrozenClock, SystemClock
from agent.config import load_config
from agent.secrets import Redactor
from agent.service import build_check
from checks.base import Check, CheckContext, LocalResources, Result, Status
from checks.resources import (
    STATE_KEY,
    CpuCheck,
    Delta,
    LoadCheck,
    MemoryCheck,
    NetworkCheck,
    boot_id,
    cpu_percentages,
    judge_cpu,
    judge_load,
    judge_memory,
    judge_swap,
)
from tests.checks.icmp_netns import Netns
from tests.support import needs

#: /proc/stat "cpu" columns, in order (proc(5)).
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                    "guest", "guest_nice")
USER_HZ = 100  # sysconf(_SC_CLK_TCK) on Linux


def make(cls: type[Check], state: dict[str, Any] | None = None, clock: Any = None,
         **options: Any) -> Check:
    context = CheckContext(clock=clock or SystemClock(), state={} if state is None else state)
    return cls(cls.type_name, cls.Config.model_validate(options), timeout=30.0,
               context=context)


def by_target(check: Check) -> dict[str, Result]:
    return {r.target: r for r in check.execute()}


def proc_stat_cpu() -> dict[str, int]:
    line = Path("/proc/stat").read_text().splitlines()[0].split()
    assert line[0] == "cpu"
    return dict(zip(PROC_STAT_FIELDS, map(int, line[1:]), strict=False))


# -- config --------------------------------------------------------------------------------


def test_defaults_follow_the_zabbix_linux_template() -> None:
    cpu, memory = CpuCheck.Config(), MemoryCheck.Config()
    load, network = LoadCheck.Config(), NetworkCheck.Config()

    assert (cpu.threshold.warning, cpu.threshold.critical) == (80.0, 90.0)
    assert (memory.threshold.warning, memory.threshold.critical) == (80.0, 90.0)
    assert (memory.swap.warning, memory.swap.critical) == (50.0, None)
    assert (load.per_cpu, load.load1.warning, load.load5.warning) == (True, 1.5, None)
    assert (network.include, network.exclude) == ((), ("lo",))
    assert (cpu.first_sample, cpu.max_sample_age) == (1.0, 3600.0)
    assert {c.default_interval for c in (CpuCheck, MemoryCheck, LoadCheck, NetworkCheck)} \
        == {60.0}


def test_the_first_sample_sets_the_least_timeout_and_can_be_switched_off() -> None:
    assert CpuCheck.minimum_timeout(CpuCheck.Config.model_validate({"first_sample": "2s"})) \
        == 2.0
    assert NetworkCheck.minimum_timeout(
        NetworkCheck.Config.model_validate({"first_sample": None})) == 0.0


@pytest.mark.parametrize(("cls", "options", "message"), [
    pytest.param(CpuCheck, {"threshold": 120}, "expected a number between 0 and 100, got 120",
                 id="cpu-over-100"),
    pytest.param(CpuCheck, {"first_sample": 0}, "expected a duration greater than 0",
                 id="zero-sample"),
    pytest.param(MemoryCheck, {"swap": {"warning": 90, "critical": 50}},
                 "expected warning (90) not above critical (50)", id="swap-upside-down"),
    pytest.param(LoadCheck, {"load1": 3}, "Input should be a valid dictionary",
                 id="load-needs-a-pair"),
    pytest.param(NetworkCheck, {"include": [""]}, "expected a list of interface names",
                 id="empty-interface-name"),
    pytest.param(NetworkCheck, {"inbound": {"warning": "fast"}}, "valid number",
                 id="rate-not-a-number"),
])
def test_bad_config_is_refused_with_a_readable_message(
        cls: type[Check], options: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        cls.Config.model_validate(options)

    assert message in str(caught.value)


# -- cpu -----------------------------------------------------------------------------------


def test_the_first_cpu_run_measures_over_a_short_sample() -> None:
    result = by_target(make(CpuCheck, first_sample="200ms"))["cpu"]

    assert result.status is not Status.UNKNOWN
    assert result.message.endswith("; first run: measured over a 0.2 s sample")
    assert 0.15 < result.metrics["sample_seconds"] < 5
    parts = ("user", "nice", "system", "iowait", "irq", "softirq", "steal", "idle")
    assert sum(result.metrics[f"{p}_percent"] for p in parts) == pytest.approx(100.0)
    assert result.metrics["used_percent"] == pytest.approx(
        100.0 - result.metrics["idle_percent"] - result.metrics["iowait_percent"])


def test_the_cpu_counters_read_are_those_of_proc_stat() -> None:
    state: dict[str, Any] = {}
    before = proc_stat_cpu()
    make(CpuCheck, state, first_sample=None).execute()
    after = proc_stat_cpu()

    stored = state[STATE_KEY]["items"]["cpu"]
    for name, ticks in before.items():
        assert ticks <= round(stored[name] * USER_HZ) <= after[name], name


def test_cpu_used_is_busy_over_total_as_proc_stat_defines_them() -> None:
    state: dict[str, Any] = {}
    check = make(CpuCheck, state, first_sample=None)
    check.execute()
    first = dict(state[STATE_KEY]["items"]["cpu"])
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)

    result = check.execute()[0]
    second = state[STATE_KEY]["items"]["cpu"]

    delta = {k: round((second[k] - first[k]) * USER_HZ) for k in PROC_STAT_FIELDS}
    busy = sum(delta[k] for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    total = busy + delta["idle"] + delta["iowait"]
    assert result.metrics["used_percent"] == pytest.approx(100.0 * busy / total, abs=1e-6)
    assert "first run" not in result.message


@pytest.mark.real
def test_a_busy_core_shows_in_cpu_used() -> None:
    """One core spun for 2 s; other tests on this machine can only add to it."""
    cpus = int(subprocess.run(["getconf", "_NPROCESSORS_ONLN"], capture_output=True,
                              text=True, check=True).stdout)
    spinner = subprocess.Popen([sys.executable, "-c",
                                "import time\nend = time.monotonic() + 2\n"
                                "while time.monotonic() < end: pass"])
    try:
        result = by_target(make(CpuCheck, first_sample="1s"))["cpu"]
    finally:
        spinner.wait()

    assert result.metrics["used_percent"] >= 0.7 * 100 / cpus


@pytest.mark.parametrize(("edit", "reason"), [
    pytest.param({"boot": "another-boot"}, "the host rebooted since the last run",
                 id="reboot"),
    pytest.param({"at": -7200.0}, "the last reading is 7200 s old (more than max_sample_age)",
                 id="stale"),
    pytest.param({"items": {"cpu": {"user": 1e12, "idle": 1e12}}},
                 "counters went back since the last run (reset, re-created or wrapped)",
                 id="counters-went-back"),
])
def test_a_previous_reading_that_cannot_be_used_is_not_used(edit: dict[str, Any],
                                                            reason: str) -> None:
    """The stored state is edited here to stand for a reboot, a long stop, a reset."""
    clock = FrozenClock()
    state: dict[str, Any] = {}
    make(CpuCheck, state, clock, first_sample=None).execute()
    clock.advance(60)
    saved = state[STATE_KEY]
    saved.update({k: (clock.monotonic() + v if k == "at" else v) for k, v in edit.items()})

    [result] = make(CpuCheck, state, clock, first_sample=None).execute()

    assert result.status is Status.OK
    assert result.message == f"cpu: no rate yet ({reason}); the next run measures it"
    assert state[STATE_KEY]["boot"] == boot_id()  # re-based on this reading


def test_cpu_thresholds_name_what_was_crossed() -> None:
    share = cpu_percentages({"user": 60.0, "system": 10.0, "iowait": 25.0, "idle": 5.0,
                             "steal": 0.0})
    assert share is not None
    config = CpuCheck.Config.model_validate({"iowait": {"warning": 20}})

    result = judge_cpu(share, Delta({}, 60.0), config)

    assert result.status is Status.WARNING
    assert result.message == ("CPU 70.0% used over 60 s (user 60.0%, system 10.0%, iowait "
                              "25.0%, steal 0.0%) — iowait ≥ warning 20%")


# -- memory --------------------------------------------------------------------------------


def free_bytes() -> tuple[int, int, int, int]:
    """total, available (Mem: row) and total, free (Swap: row) from ``free -b``."""
    needs.command("free", "procps")
    rows = {line.split()[0]: line.split()[1:] for line in subprocess.run(
        ["free", "-b"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]}
    mem, swap = rows["Mem:"], rows["Swap:"]
    return int(mem[0]), int(mem[5]), int(swap[0]), int(swap[2])


def test_memory_used_agrees_with_free_available() -> None:
    total, avail_before, _, _ = free_bytes()
    results = by_target(make(MemoryCheck))
    _, avail_after, _, _ = free_bytes()

    memory = results["memory"]
    assert memory.metrics["total_bytes"] == total
    low, high = sorted([avail_before, avail_after])
    # Memory moves between the three readings (other tests run): allow 64 MiB.
    assert low - 2**26 <= memory.metrics["available_bytes"] <= high + 2**26
    assert memory.metrics["used_percent"] == pytest.approx(
        100.0 * (total - memory.metrics["available_bytes"]) / total)


def test_swap_agrees_with_free() -> None:
    _, _, swap_total, _ = free_bytes()

    swap = by_target(make(MemoryCheck))["swap"]

    assert swap.metrics["total_bytes"] == swap_total
    if swap_total == 0:
        assert (swap.status, swap.message) == (Status.OK, "no swap configured")


@pytest.mark.parametrize(("available", "status", "tail"), [
    pytest.param(21, Status.OK, "", id="79-percent"),
    pytest.param(20, Status.WARNING, " ≥ warning 80%", id="80-percent-boundary-included"),
    pytest.param(10, Status.CRITICAL, " ≥ critical 90%", id="90-percent"),
])
def test_memory_is_judged_on_available_memory(available: int, status: Status,
                                              tail: str) -> None:
    gib = 2**30
    result = judge_memory(100 * gib, available * gib, MemoryCheck.Config().threshold)

    assert result.status is status
    assert result.message == (f"memory {100 - available:.1f}% used ({100 - available:.1f} GiB "
                              f"of 100.0 GiB, {available:.1f} GiB available){tail}")


def test_swap_is_judged_on_used_over_total() -> None:
    result = judge_swap(4 * 2**30, 1 * 2**30, MemoryCheck.Config().swap)

    assert result.status is Status.WARNING
    assert result.message == "swap 75.0% used (3.0 GiB of 4.0 GiB) ≥ warning 50%"


# -- load ----------------------------------------------------------------------------------


def test_load_agrees_with_proc_loadavg_and_counts_online_cpus() -> None:
    before = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    result = by_target(make(LoadCheck))["load"]
    after = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    cpus = int(subprocess.run(["getconf", "_NPROCESSORS_ONLN"], capture_output=True,
                              text=True, check=True).stdout)

    loads = [result.metrics[k] for k in ("load1", "load5", "load15")]
    # getloadavg(3) has more digits than /proc/loadavg's two (the kernel rounds them).
    assert loads == pytest.approx(before, abs=0.006) or loads == pytest.approx(after, abs=0.006)
    assert result.metrics["cpus"] == cpus
    assert result.metrics["load1_per_cpu"] == pytest.approx(loads[0] / cpus)


@pytest.mark.parametrize(("options", "status", "tail"), [
    pytest.param({}, Status.WARNING, "; 1-min per CPU 1.60 ≥ warning 1.5", id="per-cpu-default"),
    pytest.param({"per_cpu": False, "load1": {"warning": 4}}, Status.OK, "",
                 id="absolute-below"),
    pytest.param({"load15": {"critical": 0.5}}, Status.CRITICAL,
                 "; 1-min per CPU 1.60 ≥ warning 1.5; 15-min per CPU 0.60 ≥ critical 0.5",
                 id="two-windows"),
])
def test_load_is_judged_per_cpu_by_default(options: dict[str, Any], status: Status,
                                           tail: str) -> None:
    result = judge_load((3.2, 2.0, 1.2), 2, LoadCheck.Config.model_validate(options))

    assert result.status is status
    assert result.message == ("load average 3.20, 2.00, 1.20 (1, 5, 15 min) on 2 CPUs = "
                              f"1.60, 1.00, 0.60 per CPU{tail}")


# -- network: this machine -----------------------------------------------------------------


def test_every_interface_but_loopback_gets_a_rate_on_this_machine() -> None:
    names = {line.split(":")[0].strip()
             for line in Path("/proc/net/dev").read_text().splitlines()[2:]}

    results = by_target(make(NetworkCheck, first_sample="200ms"))

    assert set(results) == names - {"lo"}
    for result in results.values():
        assert result.status is Status.OK
        assert result.metrics["in_bytes_per_second"] >= 0
        assert "first run: measured over a 0.2 s sample" in result.message


def test_an_interface_named_in_include_beats_the_default_exclude() -> None:
    results = by_target(make(NetworkCheck, include=["lo"], first_sample="100ms"))

    assert set(results) == {"lo"}


def test_an_interface_named_in_include_that_does_not_exist_is_critical() -> None:
    results = by_target(make(NetworkCheck, include=["lo", "kanshi-none0"], first_sample=None))

    assert results["kanshi-none0"].status is Status.CRITICAL
    assert results["kanshi-none0"].message == ("kanshi-none0: no such network interface (named "
                                               "in include); is it down and removed, or "
                                               "renamed?")


def test_nothing_matching_is_unknown_and_lists_what_exists() -> None:
    [result] = make(NetworkCheck, include=["kanshi-*"], first_sample=None).execute()

    assert result.status is Status.UNKNOWN
    assert result.message.startswith("no network interface matches include/exclude "
                                     "(present: ")
    assert "lo" in result.message


def test_the_state_stays_json() -> None:
    state: dict[str, Any] = {}
    make(NetworkCheck, state, first_sample=None).execute()
    make(CpuCheck, state, first_sample=None).execute()

    assert json.loads(json.dumps(state)) == state


# -- network: rates in a namespace of the test's own ----------------------------------------

#: Runs ops in the namespace: check runs on a frozen or real clock, UDP traffic,
#: /proc/net/dev snapshots, ip commands. Prints what each op saw.
NET = textwrap.dedent("""
    import json, socket, subprocess, sys
    from agent.clock import FrozenClock, SystemClock
    from checks.base import CheckContext
    from checks.resources import NetworkCheck
    args = json.load(sys.stdin)
    clock = FrozenClock() if args.get("clock") == "frozen" else SystemClock()
    config = NetworkCheck.Config.model_validate(args["config"])
    check = NetworkCheck("net", config, timeout=30.0,
                         context=CheckContext(clock=clock, state={}))

    def dev():
        rows = {}
        for line in open("/proc/net/dev").read().splitlines()[2:]:
            name, data = line.split(":", 1)
            f = [int(x) for x in data.split()]
            rows[name.strip()] = {"rx_bytes": f[0], "rx_packets": f[1],
                                  "tx_bytes": f[8], "tx_packets": f[9]}
        return rows

    def udp_loopback(count, size):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(count):
            tx.sendto(b"k" * size, rx.getsockname())
            rx.recv(65536)  # received: nothing is left in flight when we read counters

    def udp_to(address, count, size):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(count):
            tx.sendto(b"k" * size, (address, 9))

    out = []
    for op in args["ops"]:
        if op[0] == "run":
            out.append([{"target": r.target, "status": r.status.name, "message": r.message,
                         "metrics": r.metrics} for r in check.execute()])
        elif op[0] == "dev":
            out.append(dev())
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "loopback":
            udp_loopback(op[1], op[2])
        elif op[0] == "send":
            udp_to(op[1], op[2], op[3])
        elif op[0] == "ip":
            subprocess.run(["ip", *op[1:]], check=True)
    print(json.dumps(out))
""")

#: A veth whose peer drops what it is sent (ARP off): traffic to 10.198.1.9 leaves
#: through kv0 and goes nowhere else.
VETH = [["ip", "link", "add", "kv0", "type", "veth", "peer", "name", "kv1"],
        ["ip", "addr", "add", "10.198.1.1/24", "dev", "kv0"],
        ["ip", "link", "set", "kv0", "arp", "off"],
        ["ip", "link", "set", "kv0", "up"], ["ip", "link", "set", "kv1", "up"]]


def targets(run: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in run}


@pytest.mark.real
def test_loopback_rates_between_two_runs_agree_with_proc_net_dev(netns: Netns) -> None:
    """The clock is frozen and advanced 10 s so the expected rate is exact."""
    first, before, after, second = netns.python(NET, {
        "clock": "frozen", "config": {"include": ["lo"], "first_sample": None},
        "ops": [["run"], ["dev"], ["loopback", 200, 1000], ["dev"], ["advance", 10],
                ["run"]]})

    assert targets(first)["lo"]["message"] == ("lo: no rate yet (first run); the next run "
                                               "measures it")
    lo = targets(second)["lo"]
    rx = after["lo"]["rx_bytes"] - before["lo"]["rx_bytes"]
    tx = after["lo"]["tx_bytes"] - before["lo"]["tx_bytes"]
    assert after["lo"]["rx_packets"] - before["lo"]["rx_packets"] == 200
    assert rx >= 200 * 1028  # payload + UDP and IP headers
    assert lo["metrics"]["in_bytes_per_second"] == rx / 10
    assert lo["metrics"]["out_bytes_per_second"] == tx / 10
    assert lo["metrics"]["in_packets_per_second"] == 20.0
    assert lo["status"] == "OK"


@pytest.mark.real
def test_a_rate_threshold_is_judged_in_bytes_per_second(netns: Netns) -> None:
    [_, second] = netns.python(NET, {
        "clock": "frozen",
        "config": {"include": ["lo"], "first_sample": None,
                   "inbound": {"warning": 10_000, "critical": 20_000}},
        "ops": [["run"], ["loopback", 100, 1000], ["advance", 10], ["run"]]})

    lo = targets(second)["lo"]
    assert lo["status"] == "WARNING"
    assert " ≥ warning 10000 B/s, out " in lo["message"]


@pytest.mark.real
def test_interfaces_that_appear_are_measured_and_those_that_go_are_dropped(
        netns: Netns) -> None:
    runs = netns.python(NET, {
        "clock": "frozen", "config": {"include": ["kv*"], "first_sample": None},
        "ops": [["run"], *VETH, ["advance", 10], ["run"], ["send", "10.198.1.9", 50, 500],
                ["advance", 10], ["run"], ["ip", "link", "del", "kv0"], ["advance", 10],
                ["run"]]})
    none_yet, appeared, measured, gone = runs

    assert [r["status"] for r in none_yet] == ["UNKNOWN"]
    assert targets(appeared)["kv0"]["message"] == ("kv0: no rate yet (new since the last run);"
                                                   " the next run measures it")
    assert set(targets(measured)) == {"kv0", "kv1"}
    assert targets(measured)["kv0"]["metrics"]["out_packets_per_second"] >= 5.0
    assert [r["status"] for r in gone] == ["UNKNOWN"]  # kv0 and its peer kv1 are gone


@pytest.mark.real
def test_a_real_counter_reset_is_measured_over_a_short_sample(netns: Netns) -> None:
    """kv0 is deleted and created again between runs: its counters restart from zero."""
    runs = netns.python(NET, {
        "config": {"include": ["kv0"], "first_sample": "200ms"},
        "ops": [*VETH, ["send", "10.198.1.9", 100, 1000], ["run"],
                ["send", "10.198.1.9", 100, 1000], ["run"],
                ["ip", "link", "del", "kv0"], *VETH, ["send", "10.198.1.9", 5, 100],
                ["run"]]})
    first, second, after_reset = (targets(r)["kv0"] for r in runs)

    assert "first run: measured over a 0.2 s sample" in first["message"]
    assert "sample" not in second["message"]
    assert second["metrics"]["out_bytes_per_second"] > 0
    assert after_reset["status"] == "OK"
    assert after_reset["message"].endswith(
        "; counters went back since the last run (reset, re-created or wrapped): measured "
        "over a 0.2 s sample")
    assert after_reset["metrics"]["out_bytes_per_second"] >= 0


# -- through the loader --------------------------------------------------------------------


def test_the_loader_builds_all_four_from_yaml(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in (("cpu", "CpuCheck"), ("memory", "MemoryCheck"), ("load", "LoadCheck"),
                      ("network", "NetworkCheck")):
        monkeypatch.setitem(checks.REGISTRY, name, f"checks.resources:{cls}")
    path = tmp_path / "kanshi.yaml"
    path.write_text(textwrap.dedent("""\
        checks:
          - {name: cpu, type: cpu, first_sample: 100ms}
          - {name: mem, type: memory, swap: {warning: 60}}
          - {name: load, type: load, per_cpu: false, load5: {critical: 1000}}
          - {name: net, type: network, include: [lo], first_sample: 100ms}
        """))

    specs = load_config(path, environ={}).checks
    results = [r for spec in specs
               for r in build_check(spec, SystemClock(), LocalResources(), Redactor()).execute()]

    assert [r.target for r in results] == ["cpu", "memory", "swap", "load", "lo"]
    assert Status.UNKNOWN not in {r.status for r in results}
