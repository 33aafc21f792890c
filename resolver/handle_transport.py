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
on a second connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

from protocol.codes import RC
from protocol.handle_envelope import ENV_TRUNCATED, EXPIRATION_SECONDS
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

_IDS = struct.Struct(">II")  # sessionId, requestId at envelope offset 4
_HANDLE_LENGTH = struct.Struct(">I")
MAX_UDP_REQUEST = 512
MAX_EXACT_REPLIES = 65_536
_EXPIRATION_OFFSET = 36  # envelope (20) + the header's expiration at 16
_BODY_LENGTH = struct.Struct(">I")
_BODY_LENGTH_OFFSET = 40  # the header's last int4
_NO_CREDENTIAL = b"\x00\x00\x00\x00"
_OPCODE_LOW_BYTE = 23  # the opCode is the header's first int4, after the 20-byte envelope
_HANDLE_OFFSET = 44  # envelope (20) + header (24): a RESOLUTION body starts with the handle


class UdpServer(asyncio.DatagramProtocol):
    def __init__(self, node: Node, service: HandleService) -> None:
        self.node = node
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None
        self._reassembler = UdpReassembler()
        # request bytes less ids and expiration -> (cache entry, reply template)
        self._exact: dict[bytes, tuple[CacheEntry, bytes]] = {}
        self._inflight: set[asyncio.Future[None]] = set()
        self._fast = node.requests.route("udp", "resolve")
        self._slow = node.requests.route("udp", "other")
        self._resolved = node.usage.resolutions  # per prefix, for statistics upward
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        start = time.perf_counter()
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
        # Byte-identical to a request answered from the cache before (ids and
        # the request's expiration aside): same reply while that entry lives.
        exact = data[:4] + data[12:_EXPIRATION_OFFSET] + data[_EXPIRATION_OFFSET + 4 :]
        seen = self._exact.get(exact)
        if seen is not None:
            entry, template = seen
            if self.node.cache.peek(entry.key) is entry:
                self._resolved[entry.prefix] += 1
                self._send(self._readdress(template, data), addr)
                self._fast.observe(200, time.perf_counter() - start)
                return
            del self._exact[exact]
        key = reply_cache_key(data)
        if key is not None:
            found = self._cached(data, key)
            if found is not None:
                if len(self._exact) >= MAX_EXACT_REPLIES:
                    del self._exact[next(iter(self._exact))]  # oldest first
                self._exact[exact] = found
                self._resolved[found[0].prefix] += 1
                self._send(self._readdress(found[1], data), addr)
                self._fast.observe(200, time.perf_counter() - start)
                return
        if len(self._inflight) >= MAX_INFLIGHT_UDP:
            self.dropped += 1  # shed load: the client retries
            return
        task = asyncio.ensure_future(self._answer(data, addr, key, start))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    @staticmethod
    def _readdress(template: bytes, data: bytes) -> bytes:
        session_id, request_id = _IDS.unpack_from(data, 4)
        return patch_reply(template, request_id, session_id, int(time.time()) + EXPIRATION_SECONDS)

    def _cached(self, data: bytes, key: bytes) -> tuple[CacheEntry, bytes] | None:
        """The cache entry and stored reply for this request; None on any miss."""
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
        cache_key = self.node.fast_key(text)
        entry = self.node.cache.peek(cache_key) if cache_key is not None else None
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

    async def _answer(self, data: bytes, addr: Any, key: bytes | None, start: float) -> None:
        try:
            reply = await answer_packet(self.service, data, admin_interface=False, cache_key=key)
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
    service: HandleService, data: bytes, *, admin_interface: bool, cache_key: bytes | None = None
) -> bytes:
    """Decode and answer one request packet; malformed input gets Handle's error reply."""
    try:
        env, msg = decode_request(data)
    except HandleProtocolError as exc:
        return encode_early_error(exc, now=int(time.time()))
    return await service.answer(env, msg, admin_interface=admin_interface, cache_key=cache_key)


class TcpServer(asyncio.Protocol):
    """One connection: frame one request, answer it, close."""

    def __init__(self, node: Node, service: HandleService) -> None:
        self.service = service
        self._framer = TcpFramer()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._stats = node.requests.route("tcp", "request")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._idle = asyncio.get_running_loop().call_later(TCP_IDLE_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._task is not None:
            return  # one request per connection: later bytes are ignored
        try:
            self._framer.receive_data(data)
            event = self._framer.next_message()
        except HandleProtocolError as exc:
            self._reply(encode_early_error(exc, now=int(time.time())))
            return
        if event is NEED_DATA or event is CLOSED:
            return
        self._task = asyncio.ensure_future(self._answer(event))  # type: ignore[arg-type]

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

    async def _answer(self, packet: tuple[Any, Any]) -> None:
        start = time.perf_counter()
        env, msg = packet
        try:
            reply = await self.service.answer(env, msg, admin_interface=True)
        except Exception:
            log.exception("TCP request failed")
            if self._transport is not None:
                self._transport.close()
            return
        self._reply(reply)
        self._stats.observe(200, time.perf_counter() - start)

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
    for attempt in range(PORT_ATTEMPTS if port == 0 else 1):
        udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpServer(node, service), local_addr=(host, port), reuse_port=reuse
        )
        bound_port = udp.get_extra_info("sockname")[1]
        try:
            tcp = await loop.create_server(
                lambda: TcpServer(node, service), host, bound_port, reuse_port=reuse
            )
        except OSError:
            udp.close()
            if port != 0 or attempt == PORT_ATTEMPTS - 1:
                raise
            continue  # that number is taken for TCP: pick another
        return udp, tcp
    raise AssertionError("unreachable")
