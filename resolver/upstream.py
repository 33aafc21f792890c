"""Asking other Handle servers: the recursive role's client side of the binary protocol.

One UDP socket serves every upstream query of the node: replies are matched
to requests by request id, so a miss costs one datagram out and one in, no
socket set-up. A reply that does not come whole (truncated, fragments lost)
or a site without a UDP query interface is asked over TCP, on a connection
of its own. A server that does not answer within the timeout (after
``UDP_ATTEMPTS`` sends) raises ``UpstreamUnavailable``, the exception the
recursive cache turns into a stale answer when it has one.

Which server of a site: sites here have one server each; with several, the
first that has a query interface is asked (Handle.Net hashes the handle to
choose one; idnode sites never split a prefix across servers).

Recursion count (RFC 3652, the message header's count of servers a request
has passed through): a query sent upstream carries the count its own request
arrived with, plus one (``arrived_recursion``, set by the binary front end).
Past ``MAX_RECURSION_COUNT`` the node answers RC 6 instead of asking, so
recursive nodes that name each other as sites (a wrong or hostile HS_SITE)
cannot pass one request round for ever.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Container, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from protocol.codes import RC
from protocol.errors import HandleError
from protocol.handle_envelope import ENV_TRUNCATED, Envelope
from protocol.handle_wire import (
    FLAG_PUBL,
    FLAG_RECU,
    HandleProtocolError,
    Message,
    OpCode,
    ResolutionRequest,
    TcpFramer,
    UdpReassembler,
    decode_response,
    encode_packet,
)
from protocol.site_info import Protocol, SiteInfo, decode_site
from protocol.values import HS_SITE, HS_SITE_PREFIX, HandleValue

UDP_ATTEMPTS = 2  # sends before giving up on UDP (Handle.Net's resolver retries too)
MAX_INFLIGHT = 65_536
MAX_RECURSION_COUNT = 8  # hops a resolution may take through recursive servers

# The recursion count of the request being answered (0 for HTTP and direct clients).
arrived_recursion: ContextVar[int] = ContextVar("arrived_recursion", default=0)


class UpstreamUnavailable(HandleError):
    """No server of the sites asked gave an answer (timeout, refused, garbage)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Upstream unavailable: {message}", RC.ERROR)


class RecursionTooDeep(HandleError):
    """Too many servers or referrals for one resolution (RC 6)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, RC.RECURSION_COUNT_TOO_HIGH)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to ask one server: its address and the query transport."""

    host: str
    port: int
    udp: bool


def parse_endpoint(text: str) -> Endpoint:
    """``host:port`` (``[v6]:port``) of a server's binary interface, asked over UDP first."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Expected HOST:PORT, got {text!r}")
    return Endpoint(host.strip("[]"), int(port), udp=True)


def endpoints(sites: Iterable[SiteInfo]) -> tuple[Endpoint, ...]:
    """Query endpoints of ``sites``, primaries first, UDP preferred within a server."""
    found: list[Endpoint] = []
    for site in sorted(sites, key=lambda s: not s.primary):
        for server in site.servers:
            queries = [i for i in server.interfaces
                       if i.query and i.protocol in (Protocol.UDP, Protocol.TCP)]
            if not queries:
                continue
            udp = next((i for i in queries if i.protocol == Protocol.UDP), None)
            chosen = udp or queries[0]
            found.append(Endpoint(str(server.ip), chosen.port, udp is not None))
            break  # one server per site (see module docstring)
    return tuple(found)


def sites_of(values: Iterable[HandleValue], *, prefix_referral: bool = False) -> list[SiteInfo]:
    """The sites named by HS_SITE values (HS_SITE.PREFIX for a prefix referral).

    A value that does not decode is skipped: one bad site must not hide the others.
    """
    wanted = HS_SITE_PREFIX if prefix_referral else HS_SITE
    sites = []
    for v in values:
        if v.type.upper() != wanted:
            continue
        try:
            sites.append(decode_site(v.data))
        except HandleError:
            continue
    return sites


def resolution_packet(handle: str, request_id: int, recursion_count: int = 1) -> bytes:
    """A public-only RESOLUTION asking for the whole record."""
    message = Message(OpCode.RESOLUTION, 0, FLAG_PUBL | FLAG_RECU,
                      ResolutionRequest(handle, (), ()), recursion_count=recursion_count,
                      expiration=int(time.time()))
    return encode_packet(Envelope(request_id=request_id), message)


class _SharedUdp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        # request id -> (reply, the address it must come from)
        self.waiting: dict[int, tuple[asyncio.Future[bytes], tuple[str, int]]] = {}
        self._reassembler = UdpReassembler()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if len(data) < 20:
            return
        waiting = self.waiting.get(int.from_bytes(data[8:12], "big"))
        if waiting is None:
            return  # late or foreign
        future, source = waiting
        if future.done() or tuple(addr[:2]) != source:
            return  # a reply from elsewhere must not poison the cache
        if data[2] & ENV_TRUNCATED:
            whole = self._reassembler.add(addr, data, time.monotonic())  # type: ignore[arg-type]
            if whole is None:
                return
            data = whole
        future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the waiting requests time out.
        return None


class HandleUpstream:
    """Resolution requests to other servers over one shared UDP socket (TCP when needed)."""

    def __init__(self, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._transport: asyncio.DatagramTransport | None = None
        self._udp: _SharedUdp | None = None
        self.requests = 0
        self.failures = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _SharedUdp, local_addr=("0.0.0.0", 0)
        )
        self._transport, self._udp = transport, protocol

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def resolve(self, sites: Iterable[Endpoint], handle: str) -> Message:
        """The first answer of ``sites`` (in order) to a resolution of ``handle``."""
        recursion = arrived_recursion.get() + 1
        if recursion > MAX_RECURSION_COUNT:
            raise RecursionTooDeep(f"Recursion count too high resolving {handle}")
        problems = []
        for endpoint in sites:
            self.requests += 1
            try:
                return await self._ask(endpoint, handle, recursion)
            except (OSError, TimeoutError, HandleProtocolError) as exc:
                self.failures += 1
                problems.append(f"{endpoint.host}:{endpoint.port} {exc or type(exc).__name__}")
        raise UpstreamUnavailable("; ".join(problems) or "no query interface")

    async def _ask(self, endpoint: Endpoint, handle: str, recursion: int) -> Message:
        if endpoint.udp and self._udp is not None and self._transport is not None:
            reply = await self._ask_udp(endpoint, handle, recursion)
            if reply is not None:
                return decode_response(reply)[1]
        return await self._ask_tcp(endpoint, handle, recursion)

    async def _ask_udp(self, endpoint: Endpoint, handle: str, recursion: int) -> bytes | None:
        assert self._udp is not None and self._transport is not None
        waiting = self._udp.waiting
        if len(waiting) >= MAX_INFLIGHT:
            raise TimeoutError("too many upstream requests in flight")
        request_id = self._new_request_id(waiting)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[request_id] = (future, (endpoint.host, endpoint.port))
        packet = resolution_packet(handle, request_id, recursion)
        try:
            for _ in range(UDP_ATTEMPTS):
                self._transport.sendto(packet, (endpoint.host, endpoint.port))
                try:
                    return await asyncio.wait_for(asyncio.shield(future),
                                                  self.timeout / UDP_ATTEMPTS)
                except TimeoutError:
                    continue
        finally:
            del waiting[request_id]
        raise TimeoutError("no UDP reply")

    @staticmethod
    def _new_request_id(waiting: Container[int]) -> int:
        while True:
            request_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
            if request_id and request_id not in waiting:
                return request_id

    async def _ask_tcp(self, endpoint: Endpoint, handle: str, recursion: int) -> Message:
        packet = resolution_packet(handle, 1, recursion)
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            try:
                writer.write(packet)
                framer = TcpFramer(decode=decode_response)
                while True:
                    chunk = await reader.read(65536)
                    framer.receive_data(chunk)
                    event = framer.next_message()
                    if isinstance(event, tuple):
                        return event[1]
                    if not chunk:
                        raise HandleProtocolError("connection closed before a reply")
            finally:
                writer.close()
