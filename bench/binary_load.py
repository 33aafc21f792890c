"""Load generators for the binary Handle protocol, on protocol/ codecs only.

    python -m bench.binary_load udp --port P --handles FILE [--seconds 5] [--window 64]
    python -m bench.binary_load tcp --port P --handles FILE [--seconds 5] [--connections 64]
    python -m bench.binary_load floor --port P --reply FILE   # a bare UDP responder

UDP: one process, one connected non-blocking socket, a window of W requests in
flight. A RESOLUTION packet (PUBL|RECU) is encoded once per handle; each send
writes a fresh requestId into a copy (envelope offset 8) and remembers the send
time under that id. The loop sends until W are outstanding, waits (SO_RCVTIMEO,
no poll per datagram) for one reply, drains whatever else has arrived, and
every ``TIMEOUT_SCAN`` seconds gives up on requests older than ``timeout``
(counted as lost datagrams; a reply that still comes is counted ``late``).
Replies are counted by response code (header offset 4, no decode); every
``VERIFY_EVERY``-th is decoded in full and checked to echo its request's handle.
Latency is per request: perf_counter at send to perf_counter at receipt, so
with a full window it includes the queueing of W requests (Little's law).

TCP: one request per connection, as the protocol says (handle-wire.md §9):
C asyncio workers (uvloop when installed), each connect → write → read to EOF
→ close in a loop. Connection setup and teardown dominate both sides' cost.

Both report the generator's own CPU (``os.times`` user+system over the timed
loop) next to its wall time, so a saturated generator is visible, and, given
``server_pid``, the server's CPU over the same interval from /proc/<pid>/stat.
With ``--json`` the result is one JSON object on stdout (bench/binary.py runs
the generators this way, pinned to their own core).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocol.handle_wire import (
    FLAG_PUBL,
    FLAG_RECU,
    Envelope,
    HandleProtocolError,
    Message,
    OpCode,
    ResolutionRequest,
    ValuesBody,
    decode_response,
    encode_packet,
)

REQUEST_ID_OFFSET = 8  # envelope: version (4), sessionId (4), requestId (4)
RC_OFFSET = 24  # envelope (20) + opCode (4): the header's responseCode
VERIFY_EVERY = 1009  # decode one reply in this many in full
TIMEOUT_SCAN = 0.05  # seconds between scans for lost requests
_U32 = 0xFFFFFFFF
_TICKS = os.sysconf("SC_CLK_TCK")
_RID = struct.Struct(">I")


def resolution_request(handle: str, request_id: int = 0) -> bytes:
    """An anonymous public-values resolution, as Handle.Net clients send it."""
    msg = Message(OpCode.RESOLUTION, 0, FLAG_PUBL | FLAG_RECU, ResolutionRequest(handle))
    return encode_packet(Envelope(request_id=request_id), msg)


def with_request_id(packet: bytes, request_id: int) -> bytes:
    return packet[:REQUEST_ID_OFFSET] + _RID.pack(request_id & _U32) + packet[12:]


def process_times(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a live process (all threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" that ends the command name, utime and stime are fields 12 and 13.
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all threads)."""
    times = process_times(pid)
    return None if times is None else times[0] + times[1]


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat (busy = all but idle and iowait)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(f) for f in fields]
                out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def core_busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
              ) -> dict[int, float]:
    """Share of each core's time spent busy between two core_ticks(), by any process."""
    busy = {}
    for cpu, (b1, n1) in after.items():
        b0, n0 = before.get(cpu, (b1, n1))
        if n1 > n0:
            busy[cpu] = (b1 - b0) / (n1 - n0)
    return busy


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class LoadResult:
    transport: str
    concurrency: int  # UDP window or TCP connections
    sent: int = 0
    in_flight: int = 0  # sent but neither answered nor given up when time ran out
    replies: int = 0  # replies matched to an outstanding request
    rc: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0  # requests given up on (lost datagrams, stalled connections)
    late: int = 0  # replies to requests already counted as timed out
    stray: int = 0  # replies with a requestId never sent, or too short to read
    errors: int = 0  # refused (ICMP port unreachable), TCP: reset/closed without a reply
    verified: int = 0  # replies decoded in full and checked against the request
    mismatched: int = 0  # ... of which did not decode or echoed another handle
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the generator's own user+system CPU in the loop
    server_cpu_seconds: float | None = None  # the server's, same interval
    core_busy: dict[int, float] = field(default_factory=dict)  # every core, any process
    latency: dict[str, float] = field(default_factory=dict)  # seconds: p50 p90 p99 max

    @property
    def rate(self) -> float:
        return self.replies / self.seconds if self.seconds else 0.0

    @property
    def cpu_utilisation(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def per_server_cpu_second(self) -> float | None:
        if not self.server_cpu_seconds:
            return None
        return self.replies / self.server_cpu_seconds

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(
            requests_per_second=self.rate,
            cpu_utilisation=self.cpu_utilisation,
            requests_per_server_cpu_second=self.per_server_cpu_second,
        )
        return out


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    last = len(ordered) - 1
    return {
        "p50": ordered[last * 50 // 100],
        "p90": ordered[last * 90 // 100],
        "p99": ordered[last * 99 // 100],
        "max": ordered[last],
    }


def _check_reply(data: bytes, handle: str) -> bool:
    try:
        _, msg = decode_response(data)
    except HandleProtocolError:
        return False
    if msg.response_code == 1:
        return isinstance(msg.body, ValuesBody) and msg.body.handle == handle
    return True


class _Meter:
    """CPU of this process and (optionally) of the server around a timed loop."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> _Meter:
        self._server0 = process_cpu(self.server_pid) if self.server_pid else None
        self._cores0 = core_ticks()
        self._cpu0 = own_cpu()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu = own_cpu() - self._cpu0
        self.cores = core_busy(self._cores0, core_ticks())
        server1 = process_cpu(self.server_pid) if self.server_pid else None
        self.server_cpu = (
            server1 - self._server0 if server1 is not None and self._server0 is not None else None
        )

    def fill(self, result: LoadResult) -> None:
        result.seconds = self.seconds
        result.cpu_seconds = self.cpu
        result.server_cpu_seconds = self.server_cpu
        result.core_busy = self.cores


# --- UDP ---------------------------------------------------------------------------


def udp_load(
    host: str,
    port: int,
    handles: Sequence[str],
    *,
    seconds: float = 5.0,
    count: int | None = None,
    window: int = 64,
    timeout: float = 1.0,
    server_pid: int | None = None,
    first_request_id: int = 1,
) -> LoadResult:
    """Resolve ``handles`` round-robin over UDP for ``seconds`` or ``count`` requests."""
    templates = [resolution_request(h) for h in handles]
    n_templates = len(templates)
    result = LoadResult("udp", window)
    rcs: Counter[int] = Counter()
    latencies = array("d")
    pending: dict[int, float] = {}  # requestId -> send time
    given_up: set[int] = set()  # bounded: cleared of ids once their late reply comes
    limit = count if count is not None else 1 << 62
    base = first_request_id

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    # A blocking recv that gives up after 10 ms: no poll() before each recv, as a
    # Python-level timeout would add, and no spinning while the window is full.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 10_000))
    sock.connect((host, port))
    send, recv = sock.send, sock.recv
    perf = time.perf_counter
    pack = _RID.pack
    dontwait = socket.MSG_DONTWAIT
    sent = replies = late = stray = verified = mismatched = timeouts = refused = 0

    def on_reply(data: bytes, now: float) -> None:
        nonlocal replies, late, stray, verified, mismatched
        if len(data) < RC_OFFSET + 4:
            stray += 1
            return
        rid = int.from_bytes(data[8:12], "big")
        t = pending.pop(rid, None)
        if t is None:
            if rid in given_up:
                given_up.discard(rid)
                late += 1
            else:
                stray += 1
            return
        latencies.append(now - t)
        replies += 1
        rcs[int.from_bytes(data[24:28], "big")] += 1
        if replies % VERIFY_EVERY == 0:
            verified += 1
            if not _check_reply(data, handles[(rid - base) % n_templates]):
                mismatched += 1

    try:
        with _Meter(server_pid) as meter:
            deadline = perf() + seconds
            next_scan = perf() + TIMEOUT_SCAN
            while True:
                while len(pending) < window and sent < limit:
                    rid = (base + sent) & _U32
                    t = templates[sent % n_templates]
                    try:
                        send(t[:8] + pack(rid) + t[12:])
                    except ConnectionRefusedError:  # ICMP port unreachable: nobody there
                        refused += 1
                        break
                    pending[rid] = perf()
                    sent += 1
                try:
                    data = recv(2048)  # up to 10 ms
                except ConnectionRefusedError:
                    refused += 1
                    data = b""
                except BlockingIOError:
                    data = b""
                now = perf()
                if data:
                    on_reply(data, now)
                    while True:
                        try:
                            data = recv(2048, dontwait)
                        except (BlockingIOError, ConnectionRefusedError):
                            break
                        on_reply(data, perf())
                    now = perf()
                if now >= next_scan:
                    next_scan = now + TIMEOUT_SCAN
                    cutoff = now - timeout
                    for rid in [r for r, t in pending.items() if t < cutoff]:
                        del pending[rid]
                        timeouts += 1
                        if len(given_up) < 1_000_000:
                            given_up.add(rid)
                if now >= deadline or (sent >= limit and not pending):
                    break
    finally:
        sock.close()
    meter.fill(result)
    result.sent, result.in_flight = sent, len(pending)
    result.replies, result.late, result.stray = replies, late, stray
    result.verified, result.mismatched, result.timeouts = verified, mismatched, timeouts
    result.errors = refused
    result.rc = {str(k): v for k, v in sorted(rcs.items())}
    result.latency = percentiles(latencies)
    return result


# --- TCP ---------------------------------------------------------------------------


class _OneExchange(asyncio.Protocol):
    """One request, the reply read until the server closes."""

    def __init__(self, packet: bytes, done: asyncio.Future[bytes]) -> None:
        self.packet = packet
        self.done = done
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.packet)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is not None:
                self.done.set_exception(exc)
            else:
                self.done.set_result(b"".join(self.chunks))


async def _tcp_run(
    host: str,
    port: int,
    handles: Sequence[str],
    result: LoadResult,
    *,
    seconds: float,
    count: int | None,
    connections: int,
    timeout: float,
    server_pid: int | None,
) -> None:
    templates = [resolution_request(h) for h in handles]
    loop = asyncio.get_running_loop()
    rcs: Counter[int] = Counter()
    latencies = array("d")
    limit = count if count is not None else 1 << 62
    state = {"sent": 0}
    perf = time.perf_counter

    async def worker(deadline: float) -> None:
        while perf() < deadline and state["sent"] < limit:
            n = state["sent"]
            state["sent"] = n + 1
            rid = (n + 1) & _U32
            t = templates[n % len(templates)]
            packet = t[:8] + _RID.pack(rid) + t[12:]
            done: asyncio.Future[bytes] = loop.create_future()
            start = perf()
            transport = None
            try:
                async with asyncio.timeout(timeout):
                    transport, _ = await loop.create_connection(
                        lambda p=packet, d=done: _OneExchange(p, d), host, port)
                    data = await done
            except TimeoutError:
                result.timeouts += 1
                continue
            except OSError:
                result.errors += 1
                continue
            finally:
                if transport is not None:
                    transport.close()
            if len(data) < RC_OFFSET + 4 or int.from_bytes(data[8:12], "big") != rid:
                result.errors += 1
                continue
            latencies.append(perf() - start)
            result.replies += 1
            rcs[int.from_bytes(data[24:28], "big")] += 1
            if result.replies % VERIFY_EVERY == 0:
                result.verified += 1
                if not _check_reply(data, handles[n % len(handles)]):
                    result.mismatched += 1

    with _Meter(server_pid) as meter:
        deadline = perf() + seconds
        await asyncio.gather(*(worker(deadline) for _ in range(connections)))
    meter.fill(result)
    result.sent = state["sent"]
    result.rc = {str(k): v for k, v in sorted(rcs.items())}
    result.latency = percentiles(latencies)


def tcp_load(
    host: str,
    port: int,
    handles: Sequence[str],
    *,
    seconds: float = 5.0,
    count: int | None = None,
    connections: int = 64,
    timeout: float = 5.0,
    server_pid: int | None = None,
) -> LoadResult:
    """Resolve ``handles`` round-robin over TCP, one connection per request."""
    result = LoadResult("tcp", connections)
    run = _tcp_run(host, port, handles, result, seconds=seconds, count=count,
                   connections=connections, timeout=timeout, server_pid=server_pid)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run)
    else:
        uvloop.run(run)
    return result


# --- the floor: what any Python UDP server pays per datagram ---------------------------


class _Floor(asyncio.DatagramProtocol):
    """Answers every datagram with one fixed reply packet, the request's ids patched
    in: no lookup, no decode, no metrics. What is left is uvloop's receive, one
    callback and one sendto: the least a Python UDP server on uvloop can pay."""

    def __init__(self, reply: bytes) -> None:
        self.head, self.tail = reply[:4], reply[12:]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.transport is not None and len(data) >= 12:
            self.transport.sendto(self.head + data[4:12] + self.tail, addr)


async def _serve_floor(host: str, port: int, reply: bytes) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Floor(reply),
                                                       local_addr=(host, port))
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


def serve_floor(host: str, port: int, reply: bytes) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_floor(host, port, reply))
    else:
        uvloop.run(_serve_floor(host, port, reply))


# --- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("transport", choices=("udp", "tcp", "floor"),
                        help="floor: serve UDP on --port, answering every datagram with the "
                             "packet in --reply (ids patched)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--handles", type=Path, help="one handle per line")
    parser.add_argument("--reply", type=Path, help="floor: the reply packet, raw bytes")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=None, help="stop after this many requests")
    parser.add_argument("--window", type=int, default=64, help="UDP requests in flight")
    parser.add_argument("--connections", type=int, default=64, help="TCP connections at once")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds before a request counts as lost (UDP 1, TCP 5)")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="also measure this process's CPU over the run")
    parser.add_argument("--first-request-id", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.transport == "floor":
        if args.reply is None:
            parser.error("floor needs --reply")
        with contextlib.suppress(KeyboardInterrupt):
            serve_floor(args.host, args.port, args.reply.read_bytes())
        return 0
    if args.handles is None:
        parser.error(f"{args.transport} needs --handles")
    handles = [h for h in args.handles.read_text().split("\n") if h]
    if args.transport == "udp":
        result = udp_load(args.host, args.port, handles, seconds=args.seconds, count=args.count,
                          window=args.window, timeout=args.timeout or 1.0,
                          server_pid=args.server_pid, first_request_id=args.first_request_id)
    else:
        result = tcp_load(args.host, args.port, handles, seconds=args.seconds, count=args.count,
                          connections=args.connections, timeout=args.timeout or 5.0,
                          server_pid=args.server_pid)
    if args.json:
        json.dump(result.as_dict(), sys.stdout)
        print()
        return 0
    print(f"{result.transport}: {result.rate:,.0f} replies/s over {result.seconds:.2f} s "
          f"({result.replies:,} of {result.sent:,} sent; {result.timeouts} timed out, "
          f"{result.late} late, {result.stray} stray, {result.errors} errors)")
    print(f"  response codes {result.rc}; {result.verified} decoded in full, "
          f"{result.mismatched} wrong")
    lat = {k: f"{v * 1e3:.2f} ms" for k, v in result.latency.items()}
    print(f"  latency {lat}")
    print(f"  generator CPU {result.cpu_seconds:.2f} s ({result.cpu_utilisation:.0%} of one core)")
    busy = ", ".join(f"core {c} {b:.0%}" for c, b in sorted(result.core_busy.items()))
    print(f"  cores busy (any process): {busy}")
    if result.server_cpu_seconds is not None:
        with contextlib.suppress(TypeError):
            print(f"  server CPU {result.server_cpu_seconds:.2f} s: "
                  f"{result.per_server_cpu_second:,.0f} replies per server-CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
