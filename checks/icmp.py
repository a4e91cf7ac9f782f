"""The ICMP ping engine: fping-style pipelined sweeps over one shared socket.

:class:`IcmpEngine` runs an event loop in a daemon thread and owns one ICMP
socket per address family; every check of an agent shares it
(``context.shared``), because every raw socket receives a copy of every ICMP
packet on the host (DESIGN pitfalls: one socket per task made sweeps slower).

A sweep sends ``count`` probes per target, ``interval`` apart per target and
pipelined across targets, paced to ``max_pps`` for the whole engine. A probe is
lost when no reply came within ``timeout`` of its send, so N dead hosts cost
one timeout, not N. ICMP errors (host unreachable…) are recorded as the reason
but never decide the verdict: they come late and are rate limited.

The method is chosen once: a raw socket (root or ``CAP_NET_RAW``), else an
unprivileged datagram "ping socket" (``net.ipv4.ping_group_range``), else the
system ``ping`` binary. When nothing is permitted every result carries the
reason in ``error`` — a monitor must not call a permission problem a down host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import os
import socket
import threading
from collections.abc import Coroutine
from typing import Any, NamedTuple, TypeVar

from checks.icmp_channel import Channel, SweepState, TargetState
from checks.icmp_exec import ExecOutcome, is_permission_problem, ping_argv, run_ping
from checks.icmp_method import EXEC_CONCURRENCY, NOT_PERMITTED, Choice, Method, choose
from checks.icmp_packet import TOKEN_SIZE
from checks.icmp_socket import SocketKind, open_icmp_socket

__all__ = ["DEFAULT_MAX_PPS", "NOT_PERMITTED", "IcmpEngine", "Method", "PingStats", "Pinger"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
DEFAULT_MAX_PPS = 500.0
#: Sends between two yields to the loop, so replies are drained while we send;
#: 128 replies (~150 KB queued) fit even a buffer capped by net.core.rmem_max.
_BATCH = 128
_RESOLVE_TIMEOUT = 5.0


class PingStats(NamedTuple):
    """The outcome for one target. RTTs are in seconds, ``None`` without replies.

    ``reason`` says why probes were lost when the network told us (an ICMP error,
    a local send error); ``error`` means the target could not be measured at all
    (name not resolved, ICMP not permitted) — not that it is down.
    """

    target: str
    address: str = ""
    sent: int = 0
    received: int = 0
    rtt_min: float | None = None
    rtt_avg: float | None = None
    rtt_max: float | None = None
    reason: str = ""
    error: str = ""

    @property
    def loss_percent(self) -> float:
        """Lost probes in percent (100 when nothing could be sent)."""
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0


def _stats(state: TargetState, timeout: float) -> PingStats:
    received = state.received
    reason = state.reason
    if state.late and not reason:
        reason = f"{state.late} replies came after the {timeout:g} s timeout"
    if not received:
        return PingStats(state.name, state.address, state.sent, 0, reason=reason,
                         error=state.error)
    return PingStats(state.name, state.address, state.sent, received, state.rtt_min,
                     state.rtt_sum / received, state.rtt_max, reason, state.error)


class _Pacer:
    """Packets-per-second limit for the whole engine (virtual scheduling, GCRA)."""

    def __init__(self, max_pps: float) -> None:
        self.gap = 1.0 / max_pps if max_pps > 0 else 0.0
        # A small burst (20 ms worth) keeps timer wake-ups to ~50 a second.
        self._tolerance = self.gap * max(0.0, max_pps / 50 - 1)
        self._tat = 0.0

    def reserve(self, at: float) -> float:
        """The time at which a packet wanted at ``at`` may go out."""
        if not self.gap:
            return at
        send_at = max(at, self._tat - self._tolerance)
        self._tat = max(self._tat, send_at) + self.gap
        return send_at


class Pinger:
    """The engine's async core, bound to the loop it was opened on."""

    def __init__(self, choice: Choice, max_pps: float) -> None:
        self.method = choice.method
        self.reason = choice.reason
        self._loop = asyncio.get_running_loop()
        self._ping = choice.ping
        self._pacer = _Pacer(max_pps)
        self.max_pps = max_pps
        self._token = os.urandom(TOKEN_SIZE)
        self._channels: dict[socket.AddressFamily, Channel | str] = {}
        if choice.sock is not None:
            self._channels[socket.AF_INET] = self._channel(choice.sock)
        self._exec_slots = asyncio.Semaphore(EXEC_CONCURRENCY)

    @classmethod
    async def open(cls, method: Method = "auto", max_pps: float = DEFAULT_MAX_PPS) -> Pinger:
        """Choose the ICMP method (logged once, with why) and open its socket."""
        return cls(await choose(method), max_pps)

    def close(self) -> None:
        for channel in self._channels.values():
            if isinstance(channel, Channel):
                channel.close()
        self._channels.clear()

    def _channel(self, sock: socket.socket) -> Channel:
        return Channel(sock, raw=self.method == "raw", token=self._token, loop=self._loop)

    def estimate(self, targets: int, *, count: int, interval: float, timeout: float) -> float:
        """Seconds a sweep should take at most (name resolution aside)."""
        if self.method == "exec":
            rounds = math.ceil(targets / EXEC_CONCURRENCY)
            return rounds * ((count - 1) * interval + timeout + 0.5)
        pacing = targets * count * self._pacer.gap
        return max((count - 1) * interval + targets * self._pacer.gap, pacing) + timeout

    async def sweep(self, targets: list[str], *, count: int = 3, interval: float = 1.0,
                    timeout: float = 1.0) -> dict[str, PingStats]:
        """Ping every target ``count`` times; one :class:`PingStats` per distinct target."""
        _check_arguments(count, interval, timeout)
        states = [TargetState(name) for name in dict.fromkeys(targets)]
        names = [s for s in states if not _resolve_literal(s)]
        await asyncio.gather(*(self._resolve(s) for s in names))
        live = [s for s in states if not s.error]
        if self.method == "none":
            for state in live:
                state.error = self.reason
        elif self.method == "exec":
            return await self._sweep_exec(states, count, interval, timeout)
        else:
            await self._sweep_sockets(live, count, interval, timeout)
        return {s.name: _stats(s, timeout) for s in states}

    # -- name resolution -------------------------------------------------------

    async def _resolve(self, state: TargetState) -> None:
        name = state.name.strip()
        try:
            infos = await asyncio.wait_for(self._loop.getaddrinfo(
                name, None, type=socket.SOCK_DGRAM), _RESOLVE_TIMEOUT)
        except TimeoutError:
            state.error = f"cannot resolve name: no answer within {_RESOLVE_TIMEOUT:g} s"
            return
        except (OSError, UnicodeError) as exc:
            state.error = f"cannot resolve name: {getattr(exc, 'strerror', None) or exc}"
            return
        # IPv4 first, as check_icmp does; IPv6 when the name has no A record.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, _, _, _, sockaddr = infos[0]
        address = str(sockaddr[0])
        scope = int(sockaddr[3]) if family == socket.AF_INET6 else 0  # type: ignore[misc]
        state.resolved(family, address, socket.inet_pton(family, address.partition("%")[0]),
                       scope)

    # -- socket sweeps -----------------------------------------------------------

    async def _sweep_sockets(self, states: list[TargetState], count: int, interval: float,
                             timeout: float) -> None:
        sweep = SweepState(self._loop, timeout)
        routed = [s for s in states if self._route(s)]
        try:
            await self._send_rounds(routed, count, interval, sweep)
            sweep.finish_sending()
            last = max((s.last_sent for s in routed), default=0.0) + timeout
            timer = self._loop.call_at(last, _resolve_future, sweep.done)
            try:
                await sweep.done
            finally:
                timer.cancel()
        finally:
            sweep.release()

    def _route(self, state: TargetState) -> bool:
        """Attach the channel for the target's family; ``False`` if there is none."""
        channel = self._channels.get(state.family)
        if channel is None:
            channel = self._open_family(state.family)
        if isinstance(channel, str):
            state.error = channel
            return False
        state.channel = channel
        return True

    def _open_family(self, family: socket.AddressFamily) -> Channel | str:
        kind: SocketKind = "raw" if self.method == "raw" else "dgram"
        try:
            opened: Channel | str = self._channel(open_icmp_socket(family, kind))
        except OSError as exc:
            name = "IPv6" if family == socket.AF_INET6 else "IPv4"
            opened = f"{name} ICMP unavailable ({kind} socket: {exc.strerror or exc})"
            logger.warning("ICMP: %s", opened)
        self._channels[family] = opened
        return opened

    async def _send_rounds(self, routed: list[TargetState], count: int,
                           interval: float, sweep: SweepState) -> None:
        loop, reserve = self._loop, self._pacer.reserve
        batch = 0
        paced = bool(self._pacer.gap)
        for round_no in range(count):
            for state in routed:
                channel: Channel = state.channel  # type: ignore[assignment]
                if round_no and state.last_sent + interval > loop.time():
                    await asyncio.sleep(state.last_sent + interval - loop.time())
                if paced:  # reserve the slot only once due: a future slot would stall others
                    now = loop.time()
                    send_at = reserve(now)
                    if send_at > now:
                        await asyncio.sleep(send_at - now)
                if not channel.send(state, sweep):
                    await self._send_slowly(state, channel, sweep)
                batch += 1
                if batch >= _BATCH:
                    batch = 0
                    sweep.expire(loop.time())
                    await asyncio.sleep(0)

    async def _send_slowly(self, state: TargetState, channel: Channel,
                           sweep: SweepState) -> None:
        """Wait for a free sequence number and socket space, up to one timeout."""
        give_up = self._loop.time() + sweep.timeout
        for attempt in itertools.count(1):
            sweep.expire(self._loop.time())
            if channel.send(state, sweep):
                return
            if self._loop.time() >= give_up:
                break
            await channel.writable()
            await asyncio.sleep(min(0.001 * attempt, 0.05))  # ENOBUFS: let queues drain
        state.sent += 1
        state.reason = ("send failed: no socket buffer space or free sequence number "
                        "within the timeout (lower max_pps)")

    # -- exec fallback ---------------------------------------------------------

    async def _sweep_exec(self, states: list[TargetState], count: int, interval: float,
                          timeout: float) -> dict[str, PingStats]:
        limit = (count - 1) * interval + timeout + 5.0

        async def one(state: TargetState) -> PingStats:
            if state.error:
                return _stats(state, timeout)
            argv = ping_argv(self._ping, state.address, count=count, interval=interval,
                             timeout=timeout)
            async with self._exec_slots:
                return _exec_stats(state, await run_ping(argv, limit=limit), count)

        results = await asyncio.gather(*(one(s) for s in states))
        return {r.target: r for r in results}


def _exec_stats(state: TargetState, outcome: ExecOutcome, count: int) -> PingStats:
    error = outcome.error
    if is_permission_problem(outcome):
        error = f"{NOT_PERMITTED} ({outcome.error})"
    low, avg, high = outcome.rtt or (None, None, None)
    # "connect: Network is unreachable" comes without a summary: count the probes lost.
    sent = outcome.sent or (count if outcome.reason else 0)
    return PingStats(state.name, state.address, sent, outcome.received, low, avg, high,
                     outcome.reason, error)


def _resolve_literal(state: TargetState) -> bool:
    """Resolve an IP literal in place; a task per target would cost more than the ping."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, state.name.strip())
        except OSError:
            continue
        state.resolved(family, socket.inet_ntop(family, packed), packed)
        return True
    return False


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _check_arguments(count: int, interval: float, timeout: float) -> None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not (interval > 0 and timeout > 0):
        raise ValueError(f"interval and timeout must be > 0, got {interval}, {timeout}")


# -- the thread facade -------------------------------------------------------------


class IcmpEngine:
    """The engine behind a daemon thread's event loop, usable from any thread."""

    def __init__(self, *, method: Method = "auto", max_pps: float = DEFAULT_MAX_PPS,
                 start_timeout: float = 15.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kanshi-icmp",
                                        daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._pinger = self._call(Pinger.open(method, max_pps), start_timeout)
        except BaseException:
            self._stop_loop()
            raise

    @property
    def method(self) -> str:
        """The method in use: ``raw``, ``dgram``, ``exec`` or ``none``."""
        return self._pinger.method

    @property
    def reason(self) -> str:
        """Why nothing can ping (``method == "none"``), else empty."""
        return self._pinger.reason

    def estimate(self, targets: int, *, count: int, interval: float, timeout: float) -> float:
        """Seconds a sweep of ``targets`` should take at most (name resolution aside)."""
        return self._pinger.estimate(targets, count=count, interval=interval, timeout=timeout)

    async def sweep(self, targets: list[str], *, count: int = 3, interval: float = 1.0,
                    timeout: float = 1.0) -> dict[str, PingStats]:
        """:meth:`Pinger.sweep` awaited from any event loop."""
        coro = self._pinger.sweep(targets, count=count, interval=interval, timeout=timeout)
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(self._submit(coro))

    def ping_sync(self, targets: list[str], *, count: int = 3, interval: float = 1.0,
                  timeout: float = 1.0, wait: float | None = None) -> dict[str, PingStats]:
        """Sweep from a plain thread, waiting at most ``wait`` seconds."""
        if wait is None:
            wait = self.estimate(len(targets), count=count, interval=interval,
                                 timeout=timeout) + _RESOLVE_TIMEOUT + 5.0
        coro = self._pinger.sweep(targets, count=count, interval=interval, timeout=timeout)
        return self._call(coro, wait, "the ping sweep")

    def close(self) -> None:
        """Stop the loop and close the sockets; sweeps still running are cancelled."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10.0)
        finally:
            self._stop_loop()

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        if self._closed:
            coro.close()
            raise RuntimeError("the ICMP engine is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro: Coroutine[Any, Any, _T], wait: float,
              what: str = "opening the ICMP socket") -> _T:
        future = self._submit(coro)
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{what} did not finish within {wait:g} s") from None
        except concurrent.futures.CancelledError:
            raise RuntimeError("the ICMP engine was closed during the sweep") from None

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pinger.close()
        await self._loop.shutdown_default_executor()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()
