"""UDP and TCP servers for the binary Handle protocol (default port 2641).

UDP: resolution and site info. The hot path reads the handle straight from
the datagram (no decode), finds the node's cache entry, and answers with the
reply packet stored there for an identical request, re-addressed by
``patch_reply``; anything else is decoded and answered by ``HandleService``.
Replies over 512 bytes go out as fragments with TC set (handle-wire.md §10);
one that would need more than ``MAX_UDP_FRAGMENTS`` is cut to its first
fragment instead, so a small request cannot draw a large reply at a spoofed
address, and the client retries over TCP.

TCP: every operation; one request per connection, then close (as the
reference server). Admin operations arrive here, and their challenge answers
on a second connection. A cached anonymous resolution that arrives whole in the
connection's first segment takes the stored-reply path (re-addressed); on a
miss its full answer is stored for the next one.

Overload: a request that is not a stored reply and waited longer than the
node's ``--shed-lag`` between being read and being taken up by the event loop
is refused (TCP: RC 3, server too busy) or dropped (UDP: the client retries),
as over HTTP (resolver/admission); in-flight requests are bounded per transport.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any, NamedTuple

from protocol.codes import RC
from protocol.handle_envelope import ENV_TRUNCATED, EXPIRATION_SECONDS, MAX_UDP_PACKET
from protocol.handle_wire import (
    CLOSED,
    MSG_SERVER_ERROR,
    NEED_DATA,
    HandleProtocolError,
    OpCode,
    TcpFramer,
    UdpReassembler,
    decode_request,
    encode_early_error,
    patch_reply,
    reply_cache_key,
    split_datagrams,
)
from resolver.cache import CacheEntry
from resolver.handle_service import HandleService
from resolver.node import Node

log = logging.getLogger(__name__)

MAX_UDP_FRAGMENTS = 8
TCP_IDLE_SECONDS = 30.0  # a connection that sends no complete request in time is dropped
MAX_INFLIGHT_UDP = 1024  # slow-path datagrams being answered at once; more are dropped
MAX_INFLIGHT_TCP = 256  # TCP requests being answered at once; more get RC 3 (server too busy)

_IDS = struct.Struct(">II")  # sessionId, requestId at envelope offset 4
_IDS_OFFSET, _IDS_END = 4, 12
_EXPIRATION = struct.Struct(">I")
TIMING_SAMPLE = 16  # time one stored-reply answer in this many
_HANDLE_LENGTH = struct.Struct(">I")
MAX_UDP_REQUEST = 512
MAX_EXACT_REPLIES = 65_536
_EXPIRATION_OFFSET = 36  # envelope (20) + the header's expiration at 16
_BODY_LENGTH = struct.Struct(">I")
_BODY_LENGTH_OFFSET = 40  # the header's last int4
_NO_CREDENTIAL = b"\x00\x00\x00\x00"
_OPCODE_LOW_BYTE = 23  # the opCode is the header's first int4, after the 20-byte envelope
_HANDLE_OFFSET = 44  # envelope (20) + header (24): a RESOLUTION body starts with the handle
_ENVELOPE_SIZE = 20
_MSG_LENGTH = struct.Struct(">I")
_MSG_LENGTH_OFFSET = 16  # the envelope's messageLength


def readdress(template: bytes, data: bytes) -> bytes:
    """A stored reply with the ids of request ``data`` and a fresh expiration."""
    session_id, request_id = _IDS.unpack_from(data, _IDS_OFFSET)
    return patch_reply(template, request_id, session_id, int(time.time()) + EXPIRATION_SECONDS)


def cached_reply(node: Node, data: bytes, key: bytes) -> tuple[CacheEntry, bytes] | None:
    """The cache entry and the reply stored there for this request (``key``: its
    ``reply_cache_key``); None on any miss. Reads the handle straight from the packet."""
    if data[_OPCODE_LOW_BYTE] != OpCode.RESOLUTION:  # GET_SITE_INFO has no entry
        return None
    if len(data) < _HANDLE_OFFSET + 4:
        return None  # no room for the handle: decode it, and refuse it, the long way
    (length,) = _HANDLE_LENGTH.unpack_from(data, _HANDLE_OFFSET)
    if _HANDLE_OFFSET + 4 + length + 4 > len(data):
        return None
    try:
        text = data[_HANDLE_OFFSET + 4 : _HANDLE_OFFSET + 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None
    cache_key = node.fast_key(text)
    entry = node.cache.peek(cache_key) if cache_key is not None else None
    if entry is None:
        return None
    template = entry.encodings.get(key)
    if template is None:
        return None
    # The key covers the body only: take the shortcut for an empty
    # credential alone (what anonymous clients send); anything else is
    # decoded, and refused if malformed, like a miss.
    body_end = _HANDLE_OFFSET + _BODY_LENGTH.unpack_from(data, _BODY_LENGTH_OFFSET)[0]
    if data[body_end : body_end + 4] != _NO_CREDENTIAL:
        return None
    return entry, template  # type: ignore[return-value]


class ExactReply(NamedTuple):
    """A stored reply for requests byte-identical to one answered before, ids and
    expiration aside: the request's bytes around those fields, to compare, and the
    reply's, to join around the new request's ids and a fresh expiration."""

    entry: CacheEntry  # valid while the cache still holds this very entry
    cache_key: str
    request_head: bytes  # request[:4]
    request_middle: bytes  # request[12:36]
    reply_head: bytes  # reply[:4]
    reply_middle: bytes  # reply[12:36]
    reply_tail: bytes  # reply[40:]
    fits: bool  # one datagram: no fragmenting


class UdpServer(asyncio.DatagramProtocol):
    def __init__(self, node: Node, service: HandleService) -> None:
        self.node = node
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None
        self._reassembler = UdpReassembler()
        # request[40:] (body length, body, credential) -> the stored reply
        self._exact: dict[bytes, ExactReply] = {}
        self._peek = node.cache.peek
        self._inflight: set[asyncio.Future[None]] = set()
        self._admission = node.admission
        self._fast = node.requests.route("udp", "resolve")
        self._slow = node.requests.route("udp", "other")
        self._shed = node.requests.route("udp", "shed")  # dropped unanswered (as 503 over HTTP)
        self._resolved = node.usage.resolutions  # per prefix, for statistics upward
        self._untimed = 0  # stored replies sent since the last timed one
        self._last_seconds = 0.0  # how long the last timed one took
        self._expiration = b""  # the header's expiration for replies sent now, packed
        self._expiration_until = 0.0  # time.time() at which it moves on
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.node.requests.flushes.add(self._flush_untimed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.requests.flushes.discard(self._flush_untimed)
        self._flush_untimed()

    def _flush_untimed(self) -> None:
        """Count the untimed stored replies (at the last timed one's latency)."""
        if self._untimed:
            self._fast.observe(200, self._last_seconds, self._untimed)
            self._untimed = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # The hot path: a request byte-identical (ids and its expiration aside) to
        # one answered from the cache before gets that reply while the entry lives.
        # Everything here is per datagram, so it is inlined, and only one stored
        # reply in TIMING_SAMPLE is timed (perf_counter and the histogram cost
        # ~10% of it); its time stands for the untimed ones since the last.
        timed = self._untimed >= TIMING_SAMPLE - 1
        start = time.perf_counter() if timed else 0.0
        if _HANDLE_OFFSET <= len(data) <= MAX_UDP_REQUEST and not data[2] & ENV_TRUNCATED:
            exact = self._exact.get(data[_EXPIRATION_OFFSET + 4 :])
            if (
                exact is not None
                and data.startswith(exact.request_head)
                and data.startswith(exact.request_middle, _IDS_END)
                and self._peek(exact.cache_key) is exact.entry
            ):
                now = time.time()
                if now >= self._expiration_until:
                    self._next_expiration(now)
                reply = b"".join((
                    exact.reply_head, data[_IDS_OFFSET:_IDS_END], exact.reply_middle,
                    self._expiration, exact.reply_tail,
                ))  # fmt: skip
                self._resolved[exact.entry.prefix] += 1
                if exact.fits and self.transport is not None:
                    self.transport.sendto(reply, addr)
                else:
                    self._send(reply, addr)
                if timed:
                    self._last_seconds = time.perf_counter() - start
                    self._fast.observe(200, self._last_seconds, self._untimed + 1)
                    self._untimed = 0
                else:
                    self._untimed += 1
                return
        self._received(data, addr, start if timed else time.perf_counter())

    def _next_expiration(self, now: float) -> None:
        second = int(now)
        self._expiration = _EXPIRATION.pack((second + EXPIRATION_SECONDS) & 0xFFFFFFFF)
        self._expiration_until = second + 1.0

    def _received(self, data: bytes, addr: Any, start: float) -> None:
        """Everything but a stored reply: fragments, errors, first answers, the decoder."""
        try:
            if len(data) > 2 and data[2] & ENV_TRUNCATED:
                packet = self._reassembler.add(addr, data, time.monotonic())
                if packet is None:
                    return
                data = packet
            elif len(data) > MAX_UDP_REQUEST:
                # Handle.Net's receive buffer is 512 bytes: a bigger datagram
                # without TC is refused with RC 2 (handle-wire.md §10).
                raise HandleProtocolError(MSG_SERVER_ERROR, RC.ERROR, env_flags=data[2])
        except HandleProtocolError as exc:
            self._send(encode_early_error(exc, now=int(time.time())), addr)
            return
        exact_key = data[_EXPIRATION_OFFSET + 4 :]
        seen = self._exact.get(exact_key)
        if seen is not None and self._peek(seen.cache_key) is not seen.entry:
            del self._exact[exact_key]  # that entry was dropped or replaced
        key = reply_cache_key(data)
        if key is not None:
            found = self._cached(data, key)
            if found is not None:
                entry, template = found
                if len(self._exact) >= MAX_EXACT_REPLIES and exact_key not in self._exact:
                    del self._exact[next(iter(self._exact))]  # oldest first
                # A reassembled packet (TC set) is never looked up on the hot path.
                self._exact[exact_key] = ExactReply(
                    entry, entry.key, data[:_IDS_OFFSET], data[_IDS_END:_EXPIRATION_OFFSET],
                    template[:_IDS_OFFSET], template[_IDS_END:_EXPIRATION_OFFSET],
                    template[_EXPIRATION_OFFSET + 4 :], len(template) <= MAX_UDP_PACKET,
                )
                self._resolved[entry.prefix] += 1
                self._send(self._readdress(template, data), addr)
                self._last_seconds = time.perf_counter() - start
                self._fast.observe(200, self._last_seconds)
                return
        if len(self._inflight) >= MAX_INFLIGHT_UDP:
            self.dropped += 1  # shed load: the client retries (or tries TCP)
            self._shed.observe(503, time.perf_counter() - start)
            return
        task = asyncio.ensure_future(self._answer(data, addr, key, start))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    @staticmethod
    def _readdress(template: bytes, data: bytes) -> bytes:
        return readdress(template, data)

    def _cached(self, data: bytes, key: bytes) -> tuple[CacheEntry, bytes] | None:
        return cached_reply(self.node, data, key)

    async def _answer(self, data: bytes, addr: Any, key: bytes | None, start: float) -> None:
        if self._admission.late(time.perf_counter() - start):
            self.dropped += 1  # waited too long for the loop: the client retries (or tries TCP)
            self._shed.observe(503, time.perf_counter() - start)
            return
        try:
            reply = await answer_packet(self.service, data, admin_interface=False, cache_key=key,
                                        peer=peer_address(addr))
            self._send(reply, addr)
            self._slow.observe(200, time.perf_counter() - start)
        except Exception:
            log.exception("UDP request from %s failed", addr)

    def _send(self, reply: bytes, addr: Any) -> None:
        if self.transport is None:
            return
        datagrams = split_datagrams(reply)
        if len(datagrams) > MAX_UDP_FRAGMENTS:
            datagrams = datagrams[:1]  # TC set: the client asks again over TCP
        for datagram in datagrams:
            self.transport.sendto(datagram, addr)


async def answer_packet(
    service: HandleService, data: bytes, *, admin_interface: bool,
    cache_key: bytes | None = None, peer: str = "",
) -> bytes:
    """Decode and answer one request packet; malformed input gets Handle's error reply."""
    try:
        env, msg = decode_request(data)
    except HandleProtocolError as exc:
        return encode_early_error(exc, now=int(time.time()))
    return await service.answer(env, msg, admin_interface=admin_interface, cache_key=cache_key,
                                peer=peer)


def peer_address(addr: Any) -> str:
    """The host part of a socket address (IPv4 or IPv6 tuple), for throttling."""
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


class TcpServer(asyncio.Protocol):
    """One connection: frame one request, answer it, close."""

    def __init__(self, node: Node, service: HandleService, inflight: set[asyncio.Task[None]]
                 ) -> None:
        self.node = node
        self.service = service
        self._admission = node.admission
        self._inflight = inflight  # shared by the server's connections
        self._framer = TcpFramer()
        self._answered = False
        self._first_segment_seen = False
        self._cache_key: bytes | None = None
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._stats = node.requests.route("tcp", "request")
        self._shed = node.requests.route("tcp", "shed")  # answered RC 3 (as 503 over HTTP)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._idle = asyncio.get_running_loop().call_later(TCP_IDLE_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._task is not None or self._answered:
            return  # one request per connection: later bytes are ignored
        if not self._first_segment_seen:
            # The whole request in the first segment (as clients send it): a cached
            # anonymous resolution is answered with its stored reply packet, as over UDP.
            start = time.perf_counter()
            self._first_segment_seen = True
            key = reply_cache_key(data)
            whole = key is not None and len(data) == _ENVELOPE_SIZE + _MSG_LENGTH.unpack_from(
                data, _MSG_LENGTH_OFFSET)[0]
            if key is not None and whole:
                found = cached_reply(self.node, data, key)
                if found is not None:
                    entry, template = found
                    self.node.usage.resolutions[entry.prefix] += 1
                    self._answered = True
                    self._reply(readdress(template, data))
                    self._stats.observe(200, time.perf_counter() - start)
                    return
                self._cache_key = key  # a miss: the full answer stores its reply under it
        try:
            self._framer.receive_data(data)
            event = self._framer.next_message()
        except HandleProtocolError as exc:
            self._reply(encode_early_error(exc, now=int(time.time())))
            return
        if event is NEED_DATA or event is CLOSED:
            return
        if len(self._inflight) >= MAX_INFLIGHT_TCP:
            self._admission.shed += 1
            self._busy(event[1])  # type: ignore[index]
            return
        read_at = time.perf_counter()  # its wait for the loop starts now (resolver/admission)
        self._task = asyncio.ensure_future(self._answer(event, read_at))  # type: ignore[arg-type]
        self._inflight.add(self._task)
        self._task.add_done_callback(self._inflight.discard)

    def _busy(self, msg: Any) -> None:
        busy = HandleProtocolError("Server too busy", RC.SERVER_TOO_BUSY, op_code=int(msg.op_code))
        self._reply(encode_early_error(busy, now=int(time.time())))
        self._shed.observe(503, 0.0)

    def eof_received(self) -> bool | None:
        if self._task is None:
            try:  # a half-closed partial request: say what was missing
                self._framer.receive_data(b"")
                self._framer.next_message()
            except HandleProtocolError as exc:
                self._reply(encode_early_error(exc, now=int(time.time())))
        return True  # keep the socket open until the reply is written

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()

    async def _answer(self, packet: tuple[Any, Any], read_at: float) -> None:
        start = time.perf_counter()
        env, msg = packet
        if self._admission.late(start - read_at):
            self._busy(msg)
            return
        try:
            reply = await self.service.answer(env, msg, admin_interface=True,
                                              cache_key=self._cache_key, peer=self._peer())
        except Exception:
            log.exception("TCP request failed")
            if self._transport is not None:
                self._transport.close()
            return
        self._reply(reply)
        self._stats.observe(200, time.perf_counter() - start)

    def _peer(self) -> str:
        if self._transport is None:
            return ""
        return peer_address(self._transport.get_extra_info("peername"))

    def _reply(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(reply)
            self._transport.close()


PORT_ATTEMPTS = 20


async def start_handle_servers(
    node: Node, service: HandleService, host: str, port: int, *, reuse_port: bool = False
) -> tuple[asyncio.DatagramTransport, asyncio.Server]:
    """UDP and TCP on one port; port 0 picks one free for both (retrying if TCP's is taken).

    ``reuse_port``: SO_REUSEPORT, so the workers of one node share the port.
    """
    reuse = reuse_port or None
    loop = asyncio.get_running_loop()
    tcp_inflight: set[asyncio.Task[None]] = set()
    for attempt in range(PORT_ATTEMPTS if port == 0 else 1):
        udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpServer(node, service), local_addr=(host, port), reuse_port=reuse
        )
        bound_port = udp.get_extra_info("sockname")[1]
        try:
            tcp = await loop.create_server(
                lambda: TcpServer(node, service, tcp_inflight), host, bound_port,
                reuse_port=reuse,
            )
        except OSError:
            udp.close()
            if port != 0 or attempt == PORT_ATTEMPTS - 1:
                raise
            continue  # that number is taken for TCP: pick another
        return udp, tcp
    raise AssertionError("unreachable")
