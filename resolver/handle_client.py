"""A binary Handle protocol client: resolve over UDP (falling back to TCP) or TCP."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from protocol.codes import RC
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
    ValuesBody,
    decode_response,
    encode_packet,
)
from protocol.values import HandleValue

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Resolved:
    rc: int
    handle: str
    values: tuple[HandleValue, ...]
    message: str = ""
    transport: str = "udp"


def resolution_packet(
    handle: str, *, types: tuple[str, ...] = (), indexes: tuple[int, ...] = (),
    request_id: int | None = None,
) -> tuple[int, bytes]:
    """A public-only RESOLUTION request (PUBL: no challenge for restricted values)."""
    request_id = request_id if request_id is not None else int.from_bytes(os.urandom(4), "big")
    message = Message(OpCode.RESOLUTION, 0, FLAG_PUBL | FLAG_RECU,
                      ResolutionRequest(handle, indexes, types), expiration=int(time.time()))
    return request_id, encode_packet(Envelope(request_id=request_id), message)


def _result(msg: Message, transport: str) -> Resolved:
    body = msg.body
    if msg.response_code == RC.SUCCESS and isinstance(body, ValuesBody):
        return Resolved(msg.response_code, body.handle, body.values, transport=transport)
    text = getattr(body, "message", "")
    return Resolved(msg.response_code, "", (), text, transport)


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._reassembler = UdpReassembler()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.done.done() or len(data) < 20:
            return
        if int.from_bytes(data[8:12], "big") != self.request_id:
            return  # not ours (a late reply to an earlier request)
        if data[2] & ENV_TRUNCATED:
            whole = self._reassembler.add(addr, data, time.monotonic())  # type: ignore[arg-type]
            if whole is None:
                return
            data = whole
        self.done.set_result(data)


async def resolve_udp(
    host: str, port: int, handle: str, *, types: tuple[str, ...] = (),
    indexes: tuple[int, ...] = (), timeout: float = TIMEOUT_SECONDS,
) -> Resolved:
    """Resolve over UDP; a reply that does not arrive whole is asked again over TCP."""
    request_id, packet = resolution_packet(handle, types=types, indexes=indexes)
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: _UdpClient(request_id), remote_addr=(host, port)
    )
    try:
        transport.sendto(packet)
        try:
            reply = await asyncio.wait_for(client.done, timeout)
        except TimeoutError:
            reply = None
    finally:
        transport.close()
    if reply is None:
        return await resolve_tcp(host, port, handle, types=types, indexes=indexes,
                                 timeout=timeout)
    return _result(decode_response(reply)[1], "udp")


async def resolve_tcp(
    host: str, port: int, handle: str, *, types: tuple[str, ...] = (),
    indexes: tuple[int, ...] = (), timeout: float = TIMEOUT_SECONDS,
) -> Resolved:
    _, packet = resolution_packet(handle, types=types, indexes=indexes)
    _, reply = await exchange_tcp(host, port, packet, timeout=timeout)
    return _result(reply, "tcp")


async def exchange_tcp(
    host: str, port: int, packet: bytes, *, timeout: float = TIMEOUT_SECONDS
) -> tuple[Envelope, Message]:
    """Send one request on a new connection and read the one reply, decoded."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(packet)
        framer = TcpFramer(decode=decode_response)
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                framer.receive_data(chunk)
                event = framer.next_message()
                if isinstance(event, tuple):
                    return event
                if not chunk:
                    raise HandleProtocolError("Connection closed before a reply")
    finally:
        writer.close()
