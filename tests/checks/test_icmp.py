"""The ICMP engine: packets, the ping(8) fallback's parser, and real sweeps.

Real probes go only to 127.0.0.0/8 and ::1, or into network namespaces the
tests create themselves (see ``icmp_netns``) — never anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from checks.icmp import NOT_PERMITTED, IcmpEngine, PingStats, _Pacer
from checks.icmp_exec import is_permission_problem, parse_ping_output
from checks.icmp_packet import (
    EchoReply,
    EchoTemplate,
    IcmpError,
    checksum,
    describe_error,
    parse_ipv4,
    parse_ipv6,
)
from tests.checks.icmp_netns import Netns, connect_router, namespace
from tests.support import needs

TOKEN = b"kanshi!!"


def loopback(count: int, start: int = 1) -> list[str]:
    """``count`` distinct addresses in 127.0.0.0/8 (all answered by ``lo``)."""
    return [f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            for i in range(start, start + count)]


def ipv4_header(source: str, destination: str, payload: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload, 0, 0, 64,
                       socket.IPPROTO_ICMP, 0, socket.inet_aton(source),
                       socket.inet_aton(destination))


# -- packets ---------------------------------------------------------------------


def test_checksum_matches_the_rfc_1071_example() -> None:
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF


@pytest.mark.parametrize("seq", [0, 1, 0x1234, 0xFFFF])
def test_an_echo_request_carries_a_valid_checksum_for_every_sequence(seq: int) -> None:
    packet = EchoTemplate(ipv6=False, ident=0xBEEF, token=TOKEN).build(seq)
    assert checksum(packet) == 0
    assert struct.unpack_from("!BBHHH", packet)[3:] == (0xBEEF, seq)
    assert packet[8:16] == TOKEN and len(packet) == 64


def test_an_ipv4_echo_reply_is_parsed_behind_the_ip_header_of_a_raw_socket() -> None:
    icmp = struct.pack("!BBHHH", 0, 0, 0, 0xBEEF, 7) + TOKEN + bytes(48)
    packet = ipv4_header("127.0.0.1", "127.0.0.1", len(icmp)) + icmp
    assert parse_ipv4(packet, ip_header=True) == EchoReply(0xBEEF, 7, TOKEN)
    assert parse_ipv4(icmp, ip_header=False) == EchoReply(0xBEEF, 7, TOKEN)


def test_a_host_unreachable_is_matched_through_the_request_it_quotes() -> None:
    request = EchoTemplate(ipv6=False, ident=0xBEEF, token=TOKEN).build(9)
    quoted = ipv4_header("10.199.1.2", "10.199.9.9", len(request)) + request
    error = struct.pack("!BBHI", 3, 1, 0, 0) + quoted
    packet = ipv4_header("10.199.1.1", "10.199.1.2", len(error)) + error
    assert parse_ipv4(packet, ip_header=True) == IcmpError(
        0xBEEF, 9, TOKEN, socket.inet_aton("10.199.9.9"), 3, 1)


def test_icmp_that_is_neither_reply_nor_error_about_our_echo_is_ignored() -> None:
    echo_request = EchoTemplate(ipv6=False, ident=1, token=TOKEN).build(1)
    assert parse_ipv4(echo_request, ip_header=False) is None
    assert parse_ipv4(b"\x00\x00", ip_header=False) is None


def test_icmpv6_replies_and_errors_are_parsed() -> None:
    reply = struct.pack("!BBHHH", 129, 0, 0, 5, 6) + TOKEN
    assert parse_ipv6(reply) == EchoReply(5, 6, TOKEN)
    request = EchoTemplate(ipv6=True, ident=5, token=TOKEN).build(6)
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(request), socket.IPPROTO_ICMPV6, 64,
                       socket.inet_pton(socket.AF_INET6, "fd00::2"),
                       socket.inet_pton(socket.AF_INET6, "fd00::9"))
    error = struct.pack("!BBHI", 1, 3, 0, 0) + ipv6 + request
    assert parse_ipv6(error) == IcmpError(
        5, 6, TOKEN, socket.inet_pton(socket.AF_INET6, "fd00::9"), 1, 3)


@pytest.mark.parametrize(("kind", "code", "ipv6", "expected"), [
    pytest.param(3, 1, False, "host unreachable (ICMP type 3 code 1 from 10.0.0.1)",
                 id="host-unreachable"),
    pytest.param(3, 13, False, "communication administratively prohibited "
                 "(ICMP type 3 code 13 from 10.0.0.1)", id="firewall"),
    pytest.param(11, 0, False, "TTL exceeded in transit (ICMP type 11 code 0 from 10.0.0.1)",
                 id="ttl-exceeded"),
    pytest.param(3, 99, False, "destination unreachable (ICMP type 3 code 99 from 10.0.0.1)",
                 id="unknown-code"),
    pytest.param(1, 3, True, "address unreachable (ICMPv6 type 1 code 3 from 10.0.0.1)",
                 id="ipv6-address-unreachable"),
])
def test_icmp_errors_are_named_for_a_person(kind: int, code: int, ipv6: bool,
                                            expected: str) -> None:
    error = IcmpError(1, 1, TOKEN, b"", kind, code)
    assert describe_error(error, "10.0.0.1", ipv6=ipv6) == expected


# -- the ping(8) fallback's parser ------------------------------------------------

IPUTILS_OK = """PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.

--- 127.0.0.1 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 2030ms
rtt min/avg/max/mdev = 0.031/0.045/0.061/0.012 ms
"""
IPUTILS_UNREACHABLE = """PING 10.199.9.9 (10.199.9.9) 56(84) bytes of data.
From 10.199.1.1 icmp_seq=1 Destination Host Unreachable
From 10.199.1.1 icmp_seq=2 Destination Host Unreachable

--- 10.199.9.9 ping statistics ---
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms
"""
BUSYBOX_OK = """PING 127.0.0.1 (127.0.0.1): 56 data bytes

--- 127.0.0.1 ping statistics ---
3 packets transmitted, 3 packets received, 0% packet loss
round-trip min/avg/max = 0.054/0.071/0.089 ms
"""


@pytest.mark.parametrize(("stdout", "stderr", "sent", "received", "rtt", "reason", "error"), [
    pytest.param(IPUTILS_OK, "", 3, 3, (0.031e-3, 0.045e-3, 0.061e-3), "", "", id="iputils"),
    pytest.param(BUSYBOX_OK, "", 3, 3, (0.054e-3, 0.071e-3, 0.089e-3), "", "", id="busybox"),
    pytest.param(IPUTILS_UNREACHABLE, "", 2, 0, None,
                 "destination host unreachable (reported by ping, from 10.199.1.1)", "",
                 id="router-says-unreachable"),
    pytest.param("", "ping: connect: Network is unreachable\n", 0, 0, None,
                 "send failed: ping: connect: Network is unreachable", "", id="no-route"),
    pytest.param("", "ping: socket: Operation not permitted\n", 0, 0, None, "",
                 "ping failed: ping: socket: Operation not permitted", id="not-permitted"),
])
def test_the_ping_binarys_summary_is_read(stdout: str, stderr: str, sent: int, received: int,
                                          rtt: tuple[float, float, float] | None, reason: str,
                                          error: str) -> None:
    outcome = parse_ping_output(stdout, stderr, 0 if received else 1)
    assert (outcome.sent, outcome.received, outcome.reason, outcome.error) == \
        (sent, received, reason, error)
    assert outcome.rtt == (pytest.approx(rtt) if rtt else None)


def test_a_refused_ping_socket_counts_as_a_permission_problem() -> None:
    outcome = parse_ping_output("", "ping: socket: Operation not permitted\n", 2)
    assert is_permission_problem(outcome)
    assert not is_permission_problem(parse_ping_output(IPUTILS_UNREACHABLE, "", 1))


# -- pacing and stats arithmetic ---------------------------------------------------


def test_pacing_lets_a_short_burst_through_then_spaces_packets_evenly() -> None:
    pacer = _Pacer(max_pps=100)  # burst of 2 (20 ms worth), then 10 ms apart
    times = [pacer.reserve(50.0) for _ in range(5)]
    assert times == pytest.approx([50.0, 50.0, 50.01, 50.02, 50.03])


def test_pacing_zero_means_unpaced() -> None:
    pacer = _Pacer(max_pps=0)
    assert {pacer.reserve(7.0) for _ in range(1000)} == {7.0}


@pytest.mark.parametrize(("sent", "received", "loss"), [
    pytest.param(3, 3, 0.0, id="none-lost"),
    pytest.param(3, 1, 200 / 3, id="two-of-three-lost"),
    pytest.param(0, 0, 100.0, id="nothing-could-be-sent"),
])
def test_loss_percent_counts_lost_probes(sent: int, received: int, loss: float) -> None:
    assert PingStats("h", sent=sent, received=received).loss_percent == pytest.approx(loss)


# -- real sweeps on loopback ---------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[IcmpEngine]:
    needs.root()
    engine = IcmpEngine(method="raw", max_pps=0)
    yield engine
    engine.close()


@pytest.mark.real
def test_a_sweep_of_2000_loopback_addresses_gets_every_reply(engine: IcmpEngine) -> None:
    targets = loopback(2000)
    stats = engine.ping_sync(targets, count=1, timeout=2.0)
    down = [s for s in stats.values() if s.received != 1]
    # A live host reported down is the worst bug a monitor can have (DESIGN).
    assert not down, f"{len(down)} of 2000 live addresses reported lost, e.g. {down[:3]}"
    assert sorted(stats) == sorted(targets)


@pytest.mark.real
def test_a_paced_sweep_gets_every_reply_too() -> None:
    needs.root()
    paced = IcmpEngine(method="raw", max_pps=2000)
    try:
        stats = paced.ping_sync(loopback(300), count=2, interval=0.05)
    finally:
        paced.close()
    assert {(s.sent, s.received) for s in stats.values()} == {(2, 2)}


@pytest.mark.real
def test_loopback_round_trip_times_are_sane(engine: IcmpEngine) -> None:
    stats = engine.ping_sync(["127.0.0.1"], count=3, interval=0.05)["127.0.0.1"]
    assert (stats.sent, stats.received, stats.error, stats.reason) == (3, 3, "", "")
    assert stats.rtt_min is not None and stats.rtt_avg is not None and stats.rtt_max is not None
    assert 0.0 <= stats.rtt_min <= stats.rtt_avg <= stats.rtt_max < 0.5


@pytest.mark.real
def test_two_threads_sweeping_at_once_never_take_each_others_replies(
        engine: IcmpEngine) -> None:
    # Overlapping sets: 500 addresses are in both sweeps at the same time.
    sets = [loopback(1500, start=1), loopback(1500, start=1001)]
    results: list[dict[str, PingStats]] = [{}, {}]

    def sweep(i: int) -> None:
        results[i] = engine.ping_sync(sets[i], count=2, interval=0.1, timeout=2.0)

    threads = [threading.Thread(target=sweep, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for targets, stats in zip(sets, results, strict=True):
        assert sorted(stats) == sorted(targets)
        assert {(s.sent, s.received) for s in stats.values()} == {(2, 2)}


@pytest.mark.real
def test_two_engines_on_one_host_ignore_each_others_replies(engine: IcmpEngine) -> None:
    # Every raw socket sees every reply; the id and token must keep them apart.
    other = IcmpEngine(method="raw", max_pps=0)
    try:
        results: dict[str, dict[str, PingStats]] = {}
        thread = threading.Thread(target=lambda: results.update(
            other=other.ping_sync(loopback(1000), count=2, interval=0.05)))
        thread.start()
        results["ours"] = engine.ping_sync(loopback(1000), count=2, interval=0.05)
        thread.join(60)
    finally:
        other.close()
    for stats in results.values():
        assert {(s.sent, s.received) for s in stats.values()} == {(2, 2)}


@pytest.mark.real
def test_ipv6_loopback_answers(engine: IcmpEngine) -> None:
    stats = engine.ping_sync(["::1"], count=2, interval=0.05)["::1"]
    assert (stats.address, stats.sent, stats.received, stats.error) == ("::1", 2, 2, "")


@pytest.mark.real
def test_names_are_resolved_and_unknown_names_say_so(engine: IcmpEngine) -> None:
    stats = engine.ping_sync(["localhost", "no-such-host.invalid"], count=1)
    assert stats["localhost"].received == 1
    assert stats["localhost"].address in ("127.0.0.1", "::1")
    lost = stats["no-such-host.invalid"]
    assert lost.error.startswith("cannot resolve name") and lost.sent == 0


@pytest.mark.real
def test_a_target_listed_twice_is_pinged_once(engine: IcmpEngine) -> None:
    stats = engine.ping_sync(["127.0.0.1", "127.0.0.1"], count=1)
    assert list(stats) == ["127.0.0.1"] and stats["127.0.0.1"].sent == 1


@pytest.mark.real
def test_a_sweep_can_be_awaited_from_another_event_loop(engine: IcmpEngine) -> None:
    stats = asyncio.run(engine.sweep(["127.0.0.1"], count=1))
    assert stats["127.0.0.1"].received == 1


@pytest.mark.real
def test_the_chosen_method_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    needs.root()
    caplog.set_level(logging.INFO, logger="checks")
    engine = IcmpEngine()
    try:
        engine.ping_sync(["127.0.0.1"], count=1)
        engine.ping_sync(["127.0.0.1"], count=1)
    finally:
        engine.close()
    assert engine.method == "raw"
    assert [r.getMessage() for r in caplog.records] == ["ICMP: using a raw socket"]


@pytest.mark.real
def test_a_closed_engine_refuses_to_sweep() -> None:
    needs.root()
    engine = IcmpEngine(method="raw")
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.ping_sync(["127.0.0.1"], count=1)


@pytest.mark.real
def test_the_exec_method_uses_the_system_ping_binary() -> None:
    needs.root()
    needs.command("ping", "iputils-ping")
    engine = IcmpEngine(method="exec")
    try:
        stats = engine.ping_sync(["127.0.0.1"], count=2, interval=0.2)["127.0.0.1"]
    finally:
        engine.close()
    assert engine.method == "exec"
    assert (stats.sent, stats.received, stats.error) == (2, 2, "")
    assert stats.rtt_avg is not None and 0.0 <= stats.rtt_avg < 0.5


# -- in namespaces: dead hosts, routers, permissions ---------------------------------


@pytest.mark.real
def test_a_silent_host_is_lost_by_timeout(netns: Netns) -> None:
    netns.black_hole("10.199.0.1")
    out = netns.sweep(["10.199.0.77"], count=2, interval=0.2, timeout=0.5)
    stats = out["stats"]["10.199.0.77"]
    assert (stats["sent"], stats["received"], stats["error"]) == (2, 0, "")
    assert stats["rtt_avg"] is None


@pytest.mark.real
def test_100_silent_hosts_cost_one_timeout_not_100(netns: Netns) -> None:
    netns.black_hole("10.199.0.1")
    targets = [f"10.199.0.{i}" for i in range(2, 102)]
    out = netns.sweep(targets, count=1, timeout=1.0)
    print(f"100 unreachable targets, timeout 1 s: sweep took {out['elapsed']:.3f} s")
    assert {(s["sent"], s["received"]) for s in out["stats"].values()} == {(1, 0)}
    assert out["elapsed"] < 10  # a sanity bound only; ~1 s is expected (no timing asserts)


@pytest.mark.real
def test_more_probes_in_flight_than_sequence_numbers_wait_for_free_ones(netns: Netns) -> None:
    netns.black_hole("10.199.0.1")
    for net in ("10.199.0.0/16", "10.200.0.0/16"):
        netns.ip("route", "add", net, "dev", "hole0")
    dead = [f"10.{199 + (i >> 16)}.{i >> 8 & 255}.{i & 255}" for i in range(256, 70_256)]
    # 65,536 sequence numbers: the last 4,464 probes must wait for the first to expire,
    # and the reply to the live target sent after them must still be matched.
    out = netns.sweep([*dead, "127.0.0.1"], count=1, timeout=1.0)
    print(f"70,001 targets, 65,536 sequence numbers: sweep took {out['elapsed']:.2f} s")
    stats = out["stats"]
    assert stats.pop("127.0.0.1")["received"] == 1
    assert {(s["sent"], s["received"], s["reason"]) for s in stats.values()} == {(1, 0, "")}


@pytest.mark.real
def test_a_live_host_next_to_dead_ones_is_still_reported_up(netns: Netns) -> None:
    netns.black_hole("10.199.0.1")
    out = netns.sweep(["10.199.0.1", "10.199.0.50", "127.0.0.1"], count=2, interval=0.1,
                      timeout=0.5)
    received = {name: s["received"] for name, s in out["stats"].items()}
    assert received == {"10.199.0.1": 2, "10.199.0.50": 0, "127.0.0.1": 2}


@pytest.mark.real
def test_a_routers_host_unreachable_becomes_the_reason(netns: Netns) -> None:
    with namespace() as router:
        connect_router(netns, router, unreachable="10.199.9.0/24")
        out = netns.sweep(["10.199.9.9"], count=1, timeout=1.0)
    stats = out["stats"]["10.199.9.9"]
    assert (stats["sent"], stats["received"]) == (1, 0)
    assert stats["reason"] == "host unreachable (ICMP type 3 code 1 from 10.199.1.1)"


@pytest.mark.real
def test_a_target_without_a_route_is_lost_with_the_send_error(netns: Netns) -> None:
    out = netns.sweep(["10.250.0.1"], count=2, interval=0.1, timeout=0.5)
    stats = out["stats"]["10.250.0.1"]
    assert (stats["sent"], stats["received"], stats["error"]) == (2, 0, "")
    assert stats["reason"] == "send failed: Network is unreachable"


@pytest.mark.real
def test_without_cap_net_raw_the_engine_falls_back_to_datagram_sockets(netns: Netns) -> None:
    needs.command("setpriv", "util-linux")
    netns.sysctl("net.ipv4.ping_group_range=0 2147483647")  # per namespace
    targets = ["127.0.0.1", *loopback(200, start=2), "::1"]
    out = netns.sweep(targets, count=2, interval=0.1, drop_net_raw=True)
    assert out["method"] == "dgram"
    assert {(s["sent"], s["received"]) for s in out["stats"].values()} == {(2, 2)}
    assert out["log"] == ["WARNING ICMP: raw socket: Operation not permitted; using an "
                          "unprivileged ICMP datagram socket (net.ipv4.ping_group_range "
                          "admits gid 0)"]


@pytest.mark.real
def test_without_any_icmp_permission_every_result_says_why(netns: Netns) -> None:
    needs.command("setpriv", "util-linux")
    netns.sysctl("net.ipv4.ping_group_range=1 0")
    out = netns.sweep(["127.0.0.1"], count=1, drop_net_raw=True)
    assert out["method"] == "none"
    stats = out["stats"]["127.0.0.1"]
    assert stats["error"].startswith(NOT_PERMITTED) and stats["sent"] == 0
    assert "raw socket: Operation not permitted" in stats["error"]
    assert "ping_group_range is \"1 0\", our gid is 0" in stats["error"]
    assert out["log"] == [f"WARNING {stats['error']}"]  # said once, at start


@pytest.mark.real
def test_a_forced_raw_method_without_cap_net_raw_is_not_permitted(netns: Netns) -> None:
    needs.command("setpriv", "util-linux")
    netns.sysctl("net.ipv4.ping_group_range=0 2147483647")  # dgram would work, but not asked
    out = netns.sweep(["127.0.0.1"], count=1, method="raw", drop_net_raw=True)
    assert out["method"] == "none"
    assert out["stats"]["127.0.0.1"]["error"].startswith(NOT_PERMITTED)
