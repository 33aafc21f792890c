"""The binary Handle protocol server against a live node: UDP, TCP, cache, errors, admin."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from live import ADMIN, PREFIX, SECRET, LiveNode

from protocol.codes import RC
from protocol.handle_envelope import ENV_TRUNCATED, FLAG_PUBL, FLAG_RECU, Envelope
from protocol.handle_wire import (
    ChallengeAnswer,
    ChallengeBody,
    HandleBody,
    IndexesBody,
    Message,
    OpCode,
    SiteInfoReply,
    ValuesBody,
    answer_secret_key_challenge,
    decode_response,
    encode_packet,
)
from protocol.values import HandleValue
from resolver.auth import Identity
from resolver.handle_client import exchange_tcp, resolution_packet, resolve_tcp, resolve_udp
from resolver.handle_service import HandleService
from resolver.throttle import FREE_FAILURES_PER_PAIR

HOST = "127.0.0.1"
URL_VALUE = {"index": 1, "type": "URL", "data": "https://example.com/b"}


async def register(n: LiveNode, handle: str, values) -> None:
    r = await n.session.put(n.handle_url(handle), data=orjson.dumps({"values": values}),
                            headers={"Content-Type": "application/json", **n.auth()})
    assert r.status in (200, 201), await r.text()


async def udp_exchange(port: int, packet: bytes, *, want: int = 1) -> list[bytes]:
    """Send one datagram, collect ``want`` datagrams back."""
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(HOST, port))
    try:
        transport.sendto(packet)
        return [await asyncio.wait_for(got.get(), 5) for _ in range(want)]
    finally:
        transport.close()


@pytest.fixture
def port(live_node: LiveNode) -> int:
    assert live_node.running.handle_port
    return live_node.running.handle_port


async def test_registered_over_http_resolves_over_udp_and_tcp(live_node: LiveNode, port: int):
    await register(live_node, f"{PREFIX}/bin-1", [URL_VALUE])
    for resolve in (resolve_udp, resolve_tcp):
        result = await resolve(HOST, port, f"{PREFIX}/BIN-1")
        assert result.rc == RC.SUCCESS and result.handle == f"{PREFIX}/BIN-1"
        assert [(v.index, v.type, v.data) for v in result.values] == [
            (1, "URL", b"https://example.com/b")]


async def test_cached_reply_is_the_fresh_reply_readdressed(live_node: LiveNode, port: int):
    await register(live_node, f"{PREFIX}/bin-2", [URL_VALUE])
    _, first = resolution_packet(f"{PREFIX}/bin-2", request_id=7)
    _, second = resolution_packet(f"{PREFIX}/bin-2", request_id=8)
    [slow] = await udp_exchange(port, first)
    hits = live_node.node.cache.hits
    [fast] = await udp_exchange(port, second)
    assert live_node.node.cache.hits > hits  # answered from the stored packet
    assert slow[8:12] == (7).to_bytes(4, "big") and fast[8:12] == (8).to_bytes(4, "big")
    # Same bytes but the requestId and the expiration (header offset 16).
    assert slow[:8] == fast[:8] and slow[12:36] == fast[12:36] and slow[40:] == fast[40:]
    # A write invalidates the stored reply with the record.
    await register(live_node, f"{PREFIX}/bin-2", [{**URL_VALUE, "data": "https://new"}])
    result = await resolve_udp(HOST, port, f"{PREFIX}/bin-2")
    assert result.values[0].data == b"https://new"


async def tcp_raw(port: int, *segments: bytes) -> bytes:
    """One connection: write ``segments`` (a pause between them), read the reply to EOF."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for i, segment in enumerate(segments):
            if i:
                await asyncio.sleep(0.05)
            writer.write(segment)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_tcp_answers_a_cached_resolution_from_the_stored_reply(
    live_node: LiveNode, port: int, monkeypatch: pytest.MonkeyPatch
):
    await register(live_node, f"{PREFIX}/bin-tcp", [URL_VALUE])
    answered = []
    full_answer = HandleService.answer

    async def counting(self: HandleService, *args: object, **kwargs: object) -> bytes:
        answered.append(kwargs.get("cache_key"))
        return await full_answer(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HandleService, "answer", counting)
    _, first = resolution_packet(f"{PREFIX}/bin-tcp", request_id=7)
    _, second = resolution_packet(f"{PREFIX}/bin-tcp", request_id=8)
    slow = await tcp_raw(port, first)
    assert len(answered) == 1 and answered[0] is not None  # a miss: answered in full, stored
    fast = await tcp_raw(port, second)
    assert len(answered) == 1  # the stored packet, not the service
    assert slow[8:12] == (7).to_bytes(4, "big") and fast[8:12] == (8).to_bytes(4, "big")
    assert slow[:8] == fast[:8] and slow[12:36] == fast[12:36] and slow[40:] == fast[40:]
    # A request split over two segments takes the full path and gets the same answer.
    _, third = resolution_packet(f"{PREFIX}/bin-tcp", request_id=9)
    split = await tcp_raw(port, third[:30], third[30:])
    assert len(answered) == 2 and split[40:] == slow[40:]
    # A write invalidates the stored reply with the record.
    await register(live_node, f"{PREFIX}/bin-tcp", [{**URL_VALUE, "data": "https://new"}])
    result = await resolve_tcp(HOST, port, f"{PREFIX}/bin-tcp")
    assert result.values[0].data == b"https://new"


async def test_error_codes(live_node: LiveNode, port: int):
    await register(live_node, f"{PREFIX}/bin-3", [URL_VALUE])
    missing = await resolve_udp(HOST, port, f"{PREFIX}/nothere")
    assert missing.rc == RC.HANDLE_NOT_FOUND
    foreign = await resolve_udp(HOST, port, "FOO/bar")
    assert foreign.rc == RC.SERVER_NOT_RESP and foreign.message == "That prefix doesn't live here"
    nothing = await resolve_udp(HOST, port, f"{PREFIX}/bin-3", types=("EMAIL",))
    assert nothing.rc == RC.VALUES_NOT_FOUND
    filtered = await resolve_tcp(HOST, port, f"{PREFIX}/bin-3", types=("url",))
    assert [v.index for v in filtered.values] == [1]


async def test_malformed_and_refused_requests(live_node: LiveNode, port: int):
    [junk] = await udp_exchange(port, b"\x01" * 10)
    _, msg = decode_response(junk)
    assert msg.response_code == RC.PROTOCOL_ERROR and junk[8:12] == b"\xff" * 4
    create = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU, ValuesBody(f"{PREFIX}/x", ()))
    [refused] = await udp_exchange(port, encode_packet(Envelope(request_id=5), create))
    _, msg = decode_response(refused)
    assert msg.response_code == RC.PROTOCOL_ERROR
    assert msg.body.message == "Received admin request on non-admin interface"
    # The server keeps answering valid requests.
    await register(live_node, f"{PREFIX}/bin-4", [URL_VALUE])
    assert (await resolve_udp(HOST, port, f"{PREFIX}/bin-4")).rc == RC.SUCCESS
    # TCP: a partial message then half-close gets RC 4 and the connection closes.
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"\x02\x0b\x02\x0b" + b"\x00" * 8)
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert decode_response(reply)[1].response_code == RC.PROTOCOL_ERROR


async def test_site_info(live_node: LiveNode, port: int):
    site_request = Message(OpCode.GET_SITE_INFO, 0, 0, HandleBody("/"))
    [reply] = await udp_exchange(port, encode_packet(Envelope(request_id=3), site_request))
    _, msg = decode_response(reply)
    assert msg.response_code == RC.SUCCESS and isinstance(msg.body, SiteInfoReply)
    ports = {(i.protocol, i.port) for i in msg.body.site().servers[0].interfaces}
    assert (0, port) in ports and (1, port) in ports and (2, live_node.running.port) in ports


async def test_large_reply_is_fragmented_with_tc(live_node: LiveNode, port: int):
    values = [{"index": i, "type": "NOTE", "data": "x" * 100} for i in range(1, 9)]
    await register(live_node, f"{PREFIX}/big", values)
    _, packet = resolution_packet(f"{PREFIX}/big", request_id=11)
    datagrams = await udp_exchange(port, packet, want=2)
    assert all(d[2] & ENV_TRUNCATED for d in datagrams)
    result = await resolve_udp(HOST, port, f"{PREFIX}/big")  # reassembles
    assert len(result.values) == 8


async def admin_exchange(
    port: int, message: Message, identity: Identity, secret: bytes, scheme: int = 0x22
):
    """Send an admin request over TCP, answer the 402 challenge on a new connection."""
    env, challenge = await exchange_tcp(HOST, port, encode_packet(Envelope(request_id=21),
                                                                  message))
    if challenge.response_code != RC.AUTHENTICATION_NEEDED:
        return challenge
    assert isinstance(challenge.body, ChallengeBody) and env.session_id
    signed = answer_secret_key_challenge(secret, challenge.body.nonce,
                                         challenge.request_digest.digest, scheme=scheme)
    answer = Message(OpCode.CHALLENGE_RESPONSE, 0, FLAG_RECU,
                     ChallengeAnswer("HS_SECKEY", identity.handle, identity.index, signed))
    _, final = await exchange_tcp(HOST, port, encode_packet(
        Envelope(session_id=env.session_id, request_id=22), answer))
    return final


async def test_admin_operations_with_challenge_response(live_node: LiveNode, port: int):
    me = Identity.parse(ADMIN)
    h = f"{PREFIX}/wire-create"
    url = HandleValue(1, "URL", b"http://example.org/w")
    admin_value = next(v for v in await live_node.node.store.get(f"{PREFIX}/ADMIN")
                       if v.type == "HS_ADMIN")
    create = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU, ValuesBody(h, (url, admin_value)))
    reply = await admin_exchange(port, create, me, SECRET.encode())
    assert reply.response_code == RC.SUCCESS and reply.body == HandleBody(h)
    assert (await resolve_udp(HOST, port, h)).values[0].data == b"http://example.org/w"
    # Create again: 101 before any challenge.
    again = await admin_exchange(port, create, me, SECRET.encode())
    assert again.response_code == RC.HANDLE_ALREADY_EXISTS
    # Wrong secret: 403, nothing changed.
    email = HandleValue(2, "EMAIL", b"a@b.c")
    add = Message(OpCode.ADD_VALUE, 0, FLAG_RECU, ValuesBody(h, (email,)))
    denied = await admin_exchange(port, add, me, b"wrong")
    assert denied.response_code == RC.AUTHENTICATION_FAILED
    assert (await resolve_tcp(HOST, port, h, types=("EMAIL",))).rc == RC.VALUES_NOT_FOUND
    assert (await admin_exchange(port, add, me, SECRET.encode())).response_code == RC.SUCCESS
    modify = Message(OpCode.MODIFY_VALUE, 0, FLAG_RECU,
                     ValuesBody(h, (HandleValue(2, "EMAIL", b"new@b.c"),)))
    assert (await admin_exchange(port, modify, me, SECRET.encode())).response_code == RC.SUCCESS
    r = await live_node.session.get(live_node.handle_url(h), params={"type": "EMAIL"})
    assert (await r.json())["values"][0]["data"]["value"] == "new@b.c"  # visible over HTTP
    remove = Message(OpCode.REMOVE_VALUE, 0, FLAG_RECU, IndexesBody(h, (2,)))
    assert (await admin_exchange(port, remove, me, SECRET.encode())).response_code == RC.SUCCESS
    delete = Message(OpCode.DELETE_HANDLE, 0, FLAG_RECU, HandleBody(h))
    assert (await admin_exchange(port, delete, me, SECRET.encode())).response_code == RC.SUCCESS
    assert (await resolve_udp(HOST, port, h)).rc == RC.HANDLE_NOT_FOUND


async def test_admin_permissions_match_the_rest_api(live_node: LiveNode, port: int):
    other = Identity(300, "88.200.1/ADMIN")
    create = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU,
                     ValuesBody(f"{PREFIX}/not-yours", (HandleValue(1, "URL", b"x"),)))
    reply = await admin_exchange(port, create, other, b"test-secret-200")
    assert reply.response_code == RC.INVALID_ADMIN
    assert await live_node.node.store.get(f"{PREFIX}/NOT-YOURS") is None


async def test_failed_challenge_answers_are_throttled(live_node: LiveNode, port: int):
    """Guessing a secret over the binary protocol backs off like HTTP Basic guessing."""
    me = Identity.parse(ADMIN)
    add = Message(OpCode.ADD_VALUE, 0, FLAG_RECU,
                  ValuesBody(f"{PREFIX}/ADMIN", (HandleValue(7, "EMAIL", b"x@y.z"),)))
    for _ in range(FREE_FAILURES_PER_PAIR):
        denied = await admin_exchange(port, add, me, b"guess")
        assert denied.response_code == RC.AUTHENTICATION_FAILED
        assert "Too many" not in str(denied.body)
    # Past the free failures even the right secret waits, answered without a check.
    blocked = await admin_exchange(port, add, me, SECRET.encode())
    assert blocked.response_code == RC.AUTHENTICATION_FAILED
    assert "Too many failed authentications" in str(blocked.body)
    assert all(v.index != 7 for v in await live_node.node.store.get(f"{PREFIX}/ADMIN"))
    # Another identity from the same address still gets its secret checked: it is
    # authenticated (then refused for lack of permission, not for the guesses).
    other = Identity(300, "88.200.1/ADMIN")
    assert (await admin_exchange(port, add, other, b"test-secret-200")).response_code == (
        RC.INVALID_ADMIN)


async def test_unknown_challenge_session(live_node: LiveNode, port: int):
    answer = Message(OpCode.CHALLENGE_RESPONSE, 0, FLAG_RECU,
                     ChallengeAnswer("HS_SECKEY", f"{PREFIX}/ADMIN", 300, b"\x02" + b"0" * 20))
    _, reply = await exchange_tcp(HOST, port, encode_packet(
        Envelope(session_id=12345, request_id=9), answer))
    assert reply.response_code == RC.ERROR


async def test_restricted_values_need_authentication(live_node: LiveNode, port: int):
    secret_value = {"index": 300, "type": "HS_SECKEY", "data": "s"}
    await register(live_node, f"{PREFIX}/restricted", [URL_VALUE, secret_value])
    public = await resolve_udp(HOST, port, f"{PREFIX}/restricted")  # PUBL set
    assert [v.index for v in public.values] == [1]
    request = resolution_packet(f"{PREFIX}/restricted", request_id=4)[1]
    # Clear PUBL (header op flags at offset 28): restricted values draw a 402.
    flags = int.from_bytes(request[28:32], "big") & ~FLAG_PUBL
    request = request[:28] + flags.to_bytes(4, "big") + request[32:]
    [reply] = await udp_exchange(port, request)
    assert decode_response(reply)[1].response_code == RC.AUTHENTICATION_NEEDED


@pytest.mark.parametrize("scheme", [0x22, 0x12, 0x13, 0x02, 0x01])
async def test_every_secret_key_scheme_the_reference_accepts(
    live_node: LiveNode, port: int, scheme: int
):
    """PBKDF2-HMAC-SHA1 (Java 9.x), HMAC-SHA1/SHA256, and the 2.1-era digests."""
    h = f"{PREFIX}/scheme-{scheme:x}"
    create = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU,
                     ValuesBody(h, (HandleValue(1, "URL", b"https://s"),)))
    reply = await admin_exchange(port, create, Identity.parse(ADMIN), SECRET.encode(), scheme)
    assert reply.response_code == RC.SUCCESS
    other = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU,
                    ValuesBody(f"{h}-wrong", (HandleValue(1, "URL", b"https://s"),)))
    wrong = await admin_exchange(port, other, Identity.parse(ADMIN), b"nope", scheme)
    assert wrong.response_code == RC.AUTHENTICATION_FAILED


async def test_stored_replies_counted_exactly_though_timed_by_sample(
        live_node: LiveNode, port: int):
    """The hot path times one stored reply in 16; every reply is still counted, at scrape."""
    await register(live_node, f"{PREFIX}/bin-count", [URL_VALUE])
    _, warm = resolution_packet(f"{PREFIX}/bin-count", request_id=1)
    await udp_exchange(port, warm)  # a miss, answered the long way
    fast = live_node.node.requests.route("udp", "resolve")
    before = fast.codes.get(200, 0), sum(fast.buckets)
    for rid in range(2, 39):  # 37 stored replies: two timed ones and 5 untimed left over
        _, packet = resolution_packet(f"{PREFIX}/bin-count", request_id=rid)
        [reply] = await udp_exchange(port, packet)
        assert reply[8:12] == rid.to_bytes(4, "big")
        expiration = int.from_bytes(reply[36:40], "big")
        assert abs(expiration - (time.time() + 43200)) < 5
    text = await (await live_node.session.get(f"{live_node.url}/metrics")).text()
    assert 'idnode_requests_total{route="resolve",status="200",transport="udp"} ' in text
    assert fast.codes[200] - before[0] == 37 and sum(fast.buckets) - before[1] == 37
