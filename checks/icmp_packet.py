"""ICMP / ICMPv6 echo packets: build requests, parse replies and errors, name errors.

Pure functions on bytes, no sockets, so every branch is testable on its own.
Layouts: RFC 792 (ICMP), RFC 4443 (ICMPv6), RFC 791 (the IPv4 header a raw
IPv4 socket hands back in front of the ICMP message).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

ECHO_REPLY = 0
DEST_UNREACH = 3
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
ECHO6_REQUEST = 128
ECHO6_REPLY = 129
DEST6_UNREACH = 1
TIME6_EXCEEDED = 3

#: Data bytes per echo request, as ``ping`` and ``fping`` send by default.
PAYLOAD_SIZE = 56
TOKEN_SIZE = 8

_HEADER = struct.Struct("!BBHHH")
_IDENT_SEQ = struct.Struct("!HH")

_UNREACH_V4 = {
    0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
    3: "port unreachable", 4: "fragmentation needed", 5: "source route failed",
    6: "destination network unknown", 7: "destination host unknown",
    9: "network administratively prohibited", 10: "host administratively prohibited",
    11: "network unreachable for TOS", 12: "host unreachable for TOS",
    13: "communication administratively prohibited", 14: "host precedence violation",
    15: "precedence cutoff in effect",
}
_UNREACH_V6 = {
    0: "no route to destination", 1: "communication administratively prohibited",
    2: "beyond scope of source address", 3: "address unreachable", 4: "port unreachable",
    5: "source address failed ingress/egress policy", 6: "reject route to destination",
}
_EXCEEDED = {0: "TTL exceeded in transit", 1: "fragment reassembly time exceeded"}


class EchoReply(NamedTuple):
    """An echo reply: whose (``ident``), which probe (``seq``), and the payload token."""

    ident: int
    seq: int
    token: bytes


class IcmpError(NamedTuple):
    """An ICMP error about one of our echo requests (quoted in the error)."""

    ident: int
    seq: int
    token: bytes
    destination: bytes  # packed address the quoted request was sent to
    type: int
    code: int


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    return ~_fold(total) & 0xFFFF


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


class EchoTemplate:
    """Echo requests that differ only in sequence number, built in ~1 µs each.

    The checksum is updated incrementally from a precomputed sum (RFC 1624):
    the hot path of a 10,000-target sweep must not re-sum 64 bytes per packet.
    The kernel fills the checksum itself on ICMPv6 and on datagram sockets.
    """

    def __init__(self, *, ipv6: bool, ident: int, token: bytes) -> None:
        self.type = ECHO6_REQUEST if ipv6 else ECHO_REQUEST
        self.ident = ident
        self.payload = token + bytes(PAYLOAD_SIZE - len(token))
        self._needs_checksum = not ipv6
        self._base = _fold(sum(struct.unpack(
            f"!{(8 + PAYLOAD_SIZE) // 2}H",
            _HEADER.pack(self.type, 0, 0, ident, 0) + self.payload)))

    def build(self, seq: int) -> bytes:
        """The request with sequence number ``seq`` (0–65535)."""
        cksum = ~_fold(self._base + seq) & 0xFFFF if self._needs_checksum else 0
        return _HEADER.pack(self.type, 0, cksum, self.ident, seq) + self.payload


def parse_ipv4(data: bytes, *, ip_header: bool) -> EchoReply | IcmpError | None:
    """Parse what an IPv4 ICMP socket received; ``None`` for anything not ours to judge.

    Raw sockets deliver the IPv4 header first, datagram (ping) sockets do not.
    """
    start = (data[0] & 0x0F) << 2 if ip_header else 0
    if len(data) < start + 8:
        return None
    kind = data[start]
    if kind == ECHO_REPLY:
        ident, seq = _IDENT_SEQ.unpack_from(data, start + 4)
        return EchoReply(ident, seq, data[start + 8:start + 8 + TOKEN_SIZE])
    if kind in (DEST_UNREACH, TIME_EXCEEDED):
        return _quoted_ipv4(data, start, kind)
    return None


def _quoted_ipv4(data: bytes, start: int, kind: int) -> IcmpError | None:
    """The echo request an IPv4 ICMP error quotes (RFC 792: IP header + 8 bytes)."""
    inner = start + 8
    if len(data) < inner + 20 or data[inner + 9] != socket.IPPROTO_ICMP:
        return None
    quoted = inner + ((data[inner] & 0x0F) << 2)
    if len(data) < quoted + 8 or data[quoted] != ECHO_REQUEST:
        return None
    ident, seq = _IDENT_SEQ.unpack_from(data, quoted + 4)
    token = data[quoted + 8:quoted + 8 + TOKEN_SIZE]
    return IcmpError(ident, seq, token, data[inner + 16:inner + 20], kind, data[start + 1])


def parse_ipv6(data: bytes) -> EchoReply | IcmpError | None:
    """Parse what an ICMPv6 socket received (no IPv6 header on raw or datagram sockets)."""
    if len(data) < 8:
        return None
    kind = data[0]
    if kind == ECHO6_REPLY:
        ident, seq = _IDENT_SEQ.unpack_from(data, 4)
        return EchoReply(ident, seq, data[8:8 + TOKEN_SIZE])
    if kind in (DEST6_UNREACH, TIME6_EXCEEDED):
        return _quoted_ipv6(data, kind)
    return None


def _quoted_ipv6(data: bytes, kind: int) -> IcmpError | None:
    """The echo request an ICMPv6 error quotes (RFC 4443 §3: as much as fits)."""
    inner, quoted = 8, 48  # 8-byte ICMPv6 header, then a 40-byte IPv6 header
    # A request with extension headers is not one of ours: we never add any.
    if len(data) < quoted + 8 or data[inner + 6] != socket.IPPROTO_ICMPV6 \
            or data[quoted] != ECHO6_REQUEST:
        return None
    ident, seq = _IDENT_SEQ.unpack_from(data, quoted + 4)
    token = data[quoted + 8:quoted + 8 + TOKEN_SIZE]
    return IcmpError(ident, seq, token, data[inner + 24:inner + 40], kind, data[1])


def describe_error(error: IcmpError, source: str, *, ipv6: bool) -> str:
    """What a person should read: ``host unreachable (ICMP type 3 code 1 from 10.0.0.1)``."""
    if ipv6:
        table = _UNREACH_V6 if error.type == DEST6_UNREACH else _EXCEEDED
        what = table.get(error.code, "destination unreachable"
                         if error.type == DEST6_UNREACH else "time exceeded")
        return f"{what} (ICMPv6 type {error.type} code {error.code} from {source})"
    table = _UNREACH_V4 if error.type == DEST_UNREACH else _EXCEEDED
    what = table.get(error.code, "destination unreachable"
                     if error.type == DEST_UNREACH else "time exceeded")
    return f"{what} (ICMP type {error.type} code {error.code} from {source})"
