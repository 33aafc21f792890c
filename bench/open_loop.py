"""Fixed-rate open-loop HTTP/1.1 load: requests go out when they are due, answered or not.

A closed loop (wrk, locust) sends a connection's next request only after the
last answer, so a slow server is offered less, and the requests that would
have queued behind a stall are never sent, never timed ("coordinated
omission"). Here request ``i`` is due at a fixed time from the schedule; it
is written on its connection (HTTP/1.1 pipelining on a raw keep-alive socket)
at the first loop tick at or after that time, and its latency is taken from
when it was DUE to when its reply's last byte was read: time spent queued in
the generator, the kernel or the server all counts.

Requests are spread round-robin over ``connections`` keep-alive connections.
Due requests are written every ``TICK`` (0.2 ms, a timerfd: bench/pacer), in
one write per connection; latency is still timed from each one's own due
time. Replies are matched to requests in order per connection (HTTP/1.1
answers pipelined requests in order) by ``bench.reply_parser``.
A lost connection fails its unanswered requests (status 0) and is reopened;
requests due meanwhile wait in its buffer and are timed from their due time.

One process sustains well over 20k requests/s: it spends ~13 µs of CPU per
request, send and reply (measured: bench/README.md, "Overload").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from array import array
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench import pacer
from bench.reply_parser import ReplyError, ReplyParser

DRAIN_SECONDS = 10.0  # after the last due time, how long unanswered requests are waited for
TICK = 0.0002  # send due requests this often (bench/pacer: finer than the loop's timers)
LATE = 0.010  # a tick this late behind its first due request counts in ``late_sends``
FAILED = 0  # status recorded for a request that got no reply
_clock = time.perf_counter
T = TypeVar("T")


@dataclass(frozen=True)
class Phase:
    seconds: float
    rate: float  # requests per second, evenly spaced


@dataclass
class Recorded:
    """One entry per request: when it was due (s from the start), its latency (s), status."""

    due: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    status: array = field(default_factory=lambda: array("H"))
    late_sends: int = 0  # ticks that ran more than 10 ms behind their first due request
    max_backlog: int = 0  # most requests unanswered on one connection at a tick

    def add(self, due: float, latency: float, status: int) -> None:
        self.due.append(due)
        self.latency.append(latency)
        self.status.append(status)

    def merge(self, other: Recorded) -> None:
        self.due.extend(other.due)
        self.latency.extend(other.latency)
        self.status.extend(other.status)
        self.late_sends += other.late_sends
        self.max_backlog = max(self.max_backlog, other.max_backlog)

    def __len__(self) -> int:
        return len(self.due)


RequestSource = Callable[[int], bytes]  # request number -> its bytes (a whole HTTP/1.1 request)


def due_times(phases: Sequence[Phase]) -> list[tuple[float, float, int]]:
    """(phase start, interval, request count) per phase, from time 0."""
    out, start = [], 0.0
    for phase in phases:
        count = round(phase.seconds * phase.rate)
        out.append((start, 1.0 / phase.rate if phase.rate > 0 else 0.0, count))
        start += phase.seconds
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection: pipelined writes, replies matched in order."""

    def __init__(self, recorded: Recorded) -> None:
        self._recorded = recorded
        self.origin = 0.0  # the schedule's time 0 (due times are recorded from it)
        self._parser = ReplyParser()
        self.dues: deque[float] = deque()  # absolute due times of unanswered requests
        self.transport: asyncio.Transport | None = None
        self.backlog: list[bytes] = []  # written while disconnected
        self.lost = asyncio.Event()
        self.reconnects = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lost.clear()
        self._parser = ReplyParser()
        if self.backlog:
            self.transport.write(b"".join(self.backlog))  # type: ignore[union-attr]
            self.backlog.clear()

    def data_received(self, data: bytes) -> None:
        now = _clock()
        try:
            statuses = self._parser.feed(data)
        except ReplyError:
            if self.transport is not None:
                self.transport.abort()  # unanswered requests fail in connection_lost
            return
        add, dues, origin = self._recorded.add, self.dues, self.origin
        for status in statuses:
            due = dues.popleft()
            add(due - origin, now - due, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail_unanswered()
        self.lost.set()

    def fail_unanswered(self) -> None:
        now = _clock()
        for due in self.dues:
            self._recorded.add(due - self.origin, now - due, FAILED)
        self.dues.clear()
        self.backlog.clear()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        else:
            self.backlog.append(data)


async def drive(host: str, port: int, phases: Sequence[Phase], source: RequestSource, *,
                connections: int) -> Recorded:
    """Offer ``phases`` of load; returns every request's due time, latency and status."""
    loop = asyncio.get_running_loop()
    recorded = Recorded()
    conns = [_Connection(recorded) for _ in range(connections)]
    for conn in conns:
        await loop.create_connection(lambda c=conn: c, host, port)  # type: ignore[misc]
    origin = _clock() + 0.01
    for conn in conns:
        conn.origin = origin
    keeper = asyncio.ensure_future(_reconnect(loop, conns, host, port))
    try:
        await _send_schedule(conns, phases, source, origin, recorded)
        deadline = _clock() + DRAIN_SECONDS
        while any(c.dues for c in conns) and _clock() < deadline:
            await asyncio.sleep(0.005)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        for conn in conns:
            conn.fail_unanswered()  # still unanswered after the drain: failed
            if conn.transport is not None:
                conn.transport.abort()
    return recorded


class _Schedule:
    """Sends every request whose due time has come, each time ``tick`` is called."""

    def __init__(self, conns: list[_Connection], phases: Sequence[Phase], source: RequestSource,
                 origin: float, recorded: Recorded) -> None:
        self._conns = conns
        self._source = source
        self._recorded = recorded
        self._phases = [(origin + start, interval, count)
                        for start, interval, count in due_times(phases) if count]
        self._phase = 0
        self._i = 0  # next request within the phase
        self._number = 0  # requests sent so far
        self.done = asyncio.get_running_loop().create_future()
        if not self._phases:
            self.done.set_result(None)

    def next_due(self) -> float:
        start, interval, _ = self._phases[self._phase]
        return start + self._i * interval

    def tick(self) -> None:
        if self.done.done():
            return
        now = _clock()
        conns, n_conns, source = self._conns, len(self._conns), self._source
        batch: dict[int, list[bytes]] = {}
        while self._phase < len(self._phases):
            start, interval, count = self._phases[self._phase]
            i, number = self._i, self._number
            if i < count and now - (start + i * interval) > LATE:
                self._recorded.late_sends += 1
            while i < count:
                due = start + i * interval
                if due > now:
                    break
                slot = number % n_conns
                conns[slot].dues.append(due)
                pieces = batch.get(slot)
                if pieces is None:
                    batch[slot] = [source(number)]
                else:
                    pieces.append(source(number))
                i += 1
                number += 1
            self._i, self._number = i, number
            if i < count:
                break
            self._phase += 1
            self._i = 0
        for slot, pieces in batch.items():
            conn = conns[slot]
            conn.send(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            if len(conn.dues) > self._recorded.max_backlog:
                self._recorded.max_backlog = len(conn.dues)
        if self._phase >= len(self._phases):
            self.done.set_result(None)


async def _send_schedule(conns: list[_Connection], phases: Sequence[Phase], source: RequestSource,
                         origin: float, recorded: Recorded) -> None:
    schedule = _Schedule(conns, phases, source, origin, recorded)
    if pacer.available():
        ticker = pacer.Pacer(TICK, schedule.tick)
        try:
            await schedule.done
        finally:
            ticker.stop()
        return
    while not schedule.done.done():  # millisecond ticks (shorter sleeps would spin)
        await asyncio.sleep(max(0.001, schedule.next_due() - _clock()))
        schedule.tick()


async def _reconnect(loop: asyncio.AbstractEventLoop, conns: list[_Connection], host: str,
                     port: int) -> None:
    """Reopen lost connections (requests due meanwhile wait in their buffer)."""
    while True:
        for conn in conns:
            if conn.lost.is_set() and conn.transport is None:
                conn.lost.clear()
                conn.reconnects += 1
                try:
                    await loop.create_connection(lambda c=conn: c, host, port)  # type: ignore[misc]
                except OSError:
                    conn.lost.set()  # try again next round
        await asyncio.sleep(0.05)


def get_requests(host: str, paths: Sequence[str]) -> list[bytes]:
    """Pre-encoded keep-alive GETs, one per path."""
    return [f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for p in paths]


def request_bytes(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run(host: str, port: int, phases: Sequence[Phase], source: RequestSource, *,
        connections: int) -> Recorded:
    """``drive`` on a fresh event loop."""
    return run_loop(drive(host, port, phases, source, connections=connections))


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh uvloop event loop (asyncio's where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://host:port/path (GET, repeated)")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    rest = args.url.split("://", 1)[-1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    request = get_requests(hostport, ["/" + path])[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    recorded = run(host, int(port or 80), [Phase(args.seconds, args.rate)], lambda n: request,
                   connections=args.connections)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = [lat for lat, st in zip(recorded.latency, recorded.status, strict=True) if st]
    p50, p99 = percentile(ok, 50), percentile(ok, 99)
    print(f"{len(recorded)} requests in {wall:.1f} s, {len(ok)} answered, "
          f"p50 {1000 * (p50 or 0):.2f} ms, p99 {1000 * (p99 or 0):.2f} ms, "
          f"late ticks {recorded.late_sends}, max backlog {recorded.max_backlog}, "
          f"generator CPU {cpu:.1f} s (this process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
