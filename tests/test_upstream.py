"""The recursive role's upstream client against scripted UDP servers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from protocol.codes import RC
from protocol.handle_wire import (
    Message,
    ReferralBody,
    ResolutionRequest,
    ValuesBody,
    decode_request,
    encode_reply,
)
from protocol.identifier import parse_handle
from protocol.site_info import Interface, InterfaceType, Protocol, ServerInfo, SiteInfo, encode_site
from protocol.values import HS_SITE, HandleValue
from resolver.cache import ResolutionCache
from resolver.handle_site import node_site
from resolver.recursive import RecursionTooDeep, RecursiveResolver
from resolver.upstream import (
    Endpoint,
    HandleUpstream,
    UpstreamUnavailable,
    endpoints,
    parse_endpoint,
)

Answer = Callable[[Message, int], tuple[int, object]]


@asynccontextmanager
async def scripted_server(answer: Answer, *, reply_from_other_port: bool = False
                          ) -> AsyncIterator[int]:
    """A UDP server answering each RESOLUTION with ``answer(msg, own_port)``."""
    loop = asyncio.get_running_loop()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.setblocking(False)

    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            env, msg = decode_request(data)
            rc, body = answer(msg, port)
            reply = encode_reply(env, msg, rc, body, now=int(time.time()))  # type: ignore[arg-type]
            if reply_from_other_port:
                other.sendto(reply, addr)
            else:
                self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        yield port
    finally:
        transport.close()
        other.close()


def _record(msg: Message, port: int) -> tuple[int, object]:
    assert isinstance(msg.body, ResolutionRequest)
    return RC.SUCCESS, ValuesBody(msg.body.handle, (HandleValue(1, "URL", b"https://x"),))


async def test_answers_come_back_and_spoofed_replies_are_ignored() -> None:
    upstream = HandleUpstream(timeout=0.4)
    await upstream.start()
    try:
        async with scripted_server(_record) as port:
            reply = await upstream.resolve([Endpoint("127.0.0.1", port, True)], "1/a")
            assert reply.response_code == RC.SUCCESS
        async with scripted_server(_record, reply_from_other_port=True) as port:
            with pytest.raises(UpstreamUnavailable):
                await upstream.resolve([Endpoint("127.0.0.1", port, True)], "1/a")
        assert upstream.failures == 1
    finally:
        await upstream.stop()


async def test_referral_loops_end_with_rc_6() -> None:
    def refer_to_myself(msg: Message, port: int) -> tuple[int, object]:
        assert isinstance(msg.body, ResolutionRequest)
        site = encode_site(node_site("127.0.0.1", port, 1))
        return RC.SERVICE_REFERRAL, ReferralBody(msg.body.handle, (HandleValue(1, HS_SITE, site),))

    upstream = HandleUpstream(timeout=0.5)
    await upstream.start()
    try:
        async with scripted_server(refer_to_myself) as port:
            root = [Endpoint("127.0.0.1", port, True)]
            cache = ResolutionCache(max_bytes=1 << 20, max_ttl=60, negative_ttl=1)
            resolver = RecursiveResolver(upstream, root, cache)
            with pytest.raises(RecursionTooDeep) as caught:
                await resolver.resolve(parse_handle("0.NA/1"))
            assert caught.value.rc == RC.RECURSION_COUNT_TOO_HIGH
    finally:
        await upstream.stop()


def test_endpoints_prefer_primaries_and_udp() -> None:
    tcp_only = SiteInfo(primary=False, servers=(ServerInfo(
        1, "10.0.0.2", interfaces=(Interface(InterfaceType.BOTH, Protocol.TCP, 2641),)),))
    primary = SiteInfo(primary=True, servers=(ServerInfo(1, "10.0.0.1", interfaces=(
        Interface(InterfaceType.BOTH, Protocol.TCP, 2641),
        Interface(InterfaceType.QUERY, Protocol.UDP, 2642),
        Interface(InterfaceType.BOTH, Protocol.HTTP, 8000))),))
    admin_only = SiteInfo(servers=(ServerInfo(
        1, "10.0.0.3", interfaces=(Interface(InterfaceType.ADMIN, Protocol.TCP, 1),)),))
    assert endpoints([tcp_only, admin_only, primary]) == (
        Endpoint("10.0.0.1", 2642, True), Endpoint("10.0.0.2", 2641, False))


@pytest.mark.parametrize("text", ["host", ":1", "h:0", "h:70000", "h:x"])
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)


def test_parse_endpoint() -> None:
    assert parse_endpoint("[::1]:2641") == Endpoint("::1", 2641, True)
    assert parse_endpoint("top.example:2641") == Endpoint("top.example", 2641, True)
