"""One ICMP socket on an event loop: send echo requests, match what comes back.

Every sweep of an engine shares the channel. A reply is ours only if its echo
identifier (raw sockets; the kernel owns it on datagram sockets), sequence
number, payload token *and* source address all match a probe still in flight,
so concurrent sweeps never take each other's replies and other pingers on the
host are ignored. Sequence numbers are 16-bit and never reused while in flight.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from collections import deque

from checks.icmp_packet import (
    ECHO6_REPLY,
    ECHO_REPLY,
    TOKEN_SIZE,
    EchoReply,
    EchoTemplate,
    IcmpError,
    describe_error,
    parse_ipv4,
    parse_ipv6,
)

logger = logging.getLogger(__name__)

SEQ_SPACE = 1 << 16
_RECV_SIZE = 2048
_ANCILLARY = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("=qq")
_SEQ = struct.Struct("!H")
#: Packets read per readiness callback, so a flood cannot starve the loop.
_DRAIN_LIMIT = 4096


class TargetState:
    """What a sweep has learnt about one target so far."""

    # Running RTT figures instead of a list: a 10,000-target sweep should leave few
    # objects behind for the garbage collector to walk (it showed up in profiles).
    __slots__ = ("address", "channel", "error", "family", "last_sent", "late", "name",
                 "packed", "reason", "received", "rtt_max", "rtt_min", "rtt_sum", "sent",
                 "sockaddr")

    def __init__(self, name: str) -> None:
        self.name = name
        self.address = ""
        self.family = socket.AF_INET
        self.packed = b""
        self.sockaddr: tuple[str, int] | tuple[str, int, int, int] = ("", 0)
        self.channel: Channel | None = None
        self.sent = 0
        self.received = 0
        self.rtt_sum = 0.0
        self.rtt_min = float("inf")
        self.rtt_max = 0.0
        self.late = 0
        self.last_sent = 0.0
        self.reason = ""
        self.error = ""

    def resolved(self, family: socket.AddressFamily, address: str, packed: bytes,
                 scope: int = 0) -> None:
        """Record the address probes go to (``address`` as recvfrom will show it)."""
        self.family = family
        self.address = address
        self.packed = packed
        self.sockaddr = (address, 0, 0, scope) if family == socket.AF_INET6 else (address, 0)


class Probe:
    """One echo request in flight."""

    __slots__ = ("channel", "deadline", "sent_at", "seq", "sweep", "target")

    def __init__(self, target: TargetState, sent_at: float, sweep: SweepState,
                 channel: Channel, seq: int) -> None:
        self.target = target
        self.sent_at = sent_at
        self.deadline = sent_at + sweep.timeout
        self.sweep = sweep
        self.channel = channel
        self.seq = seq


class SweepState:
    """The probes of one sweep; ``done`` resolves when the last one is answered."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.timeout = timeout
        self.outstanding = 0
        self.sending = True
        self.done: asyncio.Future[None] = loop.create_future()
        self.probes: deque[Probe] = deque()

    def answered(self, probe: Probe, at: float) -> None:
        rtt = at - probe.sent_at
        target = probe.target
        # The verdict comes from the timeout (DESIGN pitfalls): a late reply is a loss.
        if rtt > self.timeout:
            target.late += 1
        else:
            rtt = rtt if rtt > 0.0 else 0.0  # kernel and loop clocks differ by ~µs
            target.received += 1
            target.rtt_sum += rtt
            if rtt < target.rtt_min:
                target.rtt_min = rtt
            if rtt > target.rtt_max:
                target.rtt_max = rtt
        self.outstanding -= 1
        if not self.outstanding and not self.sending and not self.done.done():
            self.done.set_result(None)

    def finish_sending(self) -> None:
        self.sending = False
        if not self.outstanding and not self.done.done():
            self.done.set_result(None)

    def expire(self, now: float) -> None:
        """Forget probes past their deadline, freeing their sequence numbers."""
        probes = self.probes
        while probes and probes[0].deadline <= now:
            probe = probes.popleft()
            probe.channel.forget(probe)

    def release(self) -> None:
        """Forget every probe still in flight (the sweep is over)."""
        self.expire(float("inf"))


class Channel:
    """An ICMP socket registered with the loop, and the probes it has in flight."""

    def __init__(self, sock: socket.socket, *, raw: bool, token: bytes,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.ipv6 = sock.family == socket.AF_INET6
        self.raw = raw
        self.token = token
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.template = EchoTemplate(ipv6=self.ipv6, ident=self.ident, token=token)
        self.inflight: dict[int, Probe] = {}
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._loop = loop
        loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # -- sending -------------------------------------------------------------

    def _next_seq(self) -> int | None:
        """A sequence number not in flight, or ``None`` when all 65,536 are."""
        inflight = self.inflight
        if len(inflight) >= SEQ_SPACE:
            return None
        seq = self._seq
        while seq in inflight:
            seq = (seq + 1) & 0xFFFF
        self._seq = (seq + 1) & 0xFFFF
        return seq

    def send(self, target: TargetState, sweep: SweepState) -> bool:
        """Send one probe; ``False`` if it must wait (socket full, no free sequence)."""
        seq = self._seq
        if seq in self.inflight:  # rare: only after 65,536 sends within one timeout
            free = self._next_seq()
            if free is None:
                return False
            seq = free
        else:
            self._seq = (seq + 1) & 0xFFFF
        packet = self.template.build(seq)
        sent_at = time.monotonic()
        try:
            self.sock.sendto(packet, target.sockaddr)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return False
            target.sent += 1  # refused locally (no route, firewall): a lost probe
            target.last_sent = sent_at
            target.reason = f"send failed: {exc.strerror or exc}"
            return True
        target.sent += 1
        target.last_sent = sent_at
        probe = Probe(target, sent_at, sweep, self, seq)
        self.inflight[seq] = probe
        sweep.outstanding += 1
        sweep.probes.append(probe)
        return True

    async def writable(self) -> None:
        """Wait until the kernel will take another packet."""
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self.sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def forget(self, probe: Probe) -> None:
        if self.inflight.get(probe.seq) is probe:
            del self.inflight[probe.seq]

    # -- receiving -----------------------------------------------------------

    def _on_readable(self) -> None:
        recvmsg, inflight, token = self.sock.recvmsg, self.inflight, self.token
        ident = self.ident if self.raw else None
        header_len = 20 if self.raw and not self.ipv6 else 0
        reply_type = ECHO6_REPLY if self.ipv6 else ECHO_REPLY
        # Kernel timestamps are wall-clock; probes are stamped on the monotonic clock.
        offset = time.monotonic() - time.time()
        for _ in range(_DRAIN_LIMIT):
            try:
                data, ancillary, _flags, source = recvmsg(_RECV_SIZE, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # a queued socket error; the next read goes on
                logger.debug("ICMP receive error: %s", exc)
                continue
            # Fast path for the common case (an echo reply behind a 20-byte IPv4
            # header): a 10,000-target sweep spends most of its time here.
            if len(data) >= header_len + 16 and data[header_len] == reply_type \
                    and (not header_len or data[0] == 0x45):
                probe = inflight.get(_SEQ.unpack_from(data, header_len + 6)[0])
                if probe is None or data[header_len + 8:header_len + 16] != token \
                        or source[0] != probe.target.address \
                        or (ident is not None and _SEQ.unpack_from(data, header_len + 4)[0]
                            != ident):
                    continue
                del inflight[probe.seq]
                at = _kernel_time(ancillary) + offset if ancillary else time.monotonic()
                probe.sweep.answered(probe, at)
                continue
            self._on_other(data, source[0])

    def _on_other(self, data: bytes, source: str) -> None:
        """Anything but a plain echo reply: IPv4 options, or an ICMP error."""
        parsed = parse_ipv6(data) if self.ipv6 else parse_ipv4(data, ip_header=self.raw)
        if type(parsed) is IcmpError:
            self._on_error(parsed, source)
        elif type(parsed) is EchoReply:
            self._on_reply(parsed, source, time.monotonic())

    def _on_reply(self, reply: EchoReply, source: str, at: float) -> None:
        probe = self.inflight.get(reply.seq)
        if probe is None or reply.token != self.token or source != probe.target.address \
                or (self.raw and reply.ident != self.ident):
            return
        del self.inflight[reply.seq]
        probe.sweep.answered(probe, at)

    def _on_error(self, error: IcmpError, source: str) -> None:
        probe = self.inflight.get(error.seq)
        if probe is None or error.destination != probe.target.packed \
                or (self.raw and error.ident != self.ident) \
                or (len(error.token) == TOKEN_SIZE and error.token != self.token):
            return
        # Recorded as the reason only: the probe is still judged by its timeout.
        probe.target.reason = describe_error(error, source, ipv6=self.ipv6)


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    seconds: int
    nanoseconds: int
    seconds, nanoseconds = _TIMESPEC.unpack_from(ancillary[0][2])
    return seconds + nanoseconds * 1e-9
