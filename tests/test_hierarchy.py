"""A top-level, a secondary homed at it and a recursive node, all on loopback.

Covers homing (authenticated REST writes of HS_SITE into 0.NA/<prefix>),
referral codes over REST and the binary protocol, recursive resolution with
its two caches, coalescing, negative answers and stale serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from protocol.codes import RC
from protocol.handle_envelope import Envelope
from protocol.handle_wire import (
    FLAG_PUBL,
    FLAG_RECU,
    Message,
    OpCode,
    ResolutionRequest,
    decode_request,
    decode_response,
    encode_error_reply,
    encode_packet,
)
from protocol.site_info import decode_site
from protocol.values import HS_SITE, HS_SITE_PREFIX, HandleValue
from resolver import admin_tasks
from resolver.config import NodeConfig
from resolver.handle_client import resolve_tcp, resolve_udp
from resolver.server import RunningNode
from resolver.upstream import (
    MAX_RECURSION_COUNT,
    Endpoint,
    HandleUpstream,
    arrived_recursion,
)

INDUSTRY = "88.118"
ENTERPRISE = "88.118.1"
DELEGATION_SECRET = "top-secret-118"
ADMIN_SECRET = "admin-secret-118"


@dataclasses.dataclass
class Hierarchy:
    top: RunningNode
    secondary: RunningNode
    recursive: RunningNode
    session: aiohttp.ClientSession

    @staticmethod
    def url(node: RunningNode, handle: str) -> str:
        return f"http://127.0.0.1:{node.port}/api/handles/{handle}"

    async def get(self, node: RunningNode, handle: str) -> tuple[int, dict, aiohttp.ClientResponse]:
        async with self.session.get(self.url(node, handle)) as reply:
            return reply.status, await reply.json(), reply


async def _stores(tmp_path: Path) -> tuple[Path, Path]:
    top, secondary = tmp_path / "top.db", tmp_path / "secondary.db"
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.delegate(str(top), INDUSTRY, DELEGATION_SECRET)
        await admin_tasks.init(str(secondary), INDUSTRY, ADMIN_SECRET, False)
        await admin_tasks.init(str(secondary), ENTERPRISE, ADMIN_SECRET, False)
        async with admin_tasks.opened(str(secondary)) as store:
            await store.put(f"{INDUSTRY}/PART-1", [HandleValue(1, "URL", b"https://a.example/1")])
            await store.put(f"{ENTERPRISE}/BATCH-7",
                            [HandleValue(1, "URL", b"https://b.example/7"),
                             HandleValue(2, "TRACE.material", f"{INDUSTRY}/PART-1".encode())])
    return top, secondary


@contextlib.asynccontextmanager
async def hierarchy(tmp_path: Path, **recursive_options: object) -> AsyncIterator[Hierarchy]:
    top_store, secondary_store = await _stores(tmp_path)
    top = RunningNode(NodeConfig(store=str(top_store), port=0, handle_port=0, role="top-level"))
    await top.start()
    secondary = RunningNode(NodeConfig(
        store=str(secondary_store), port=0, handle_port=0, role="secondary",
        home_at=f"http://127.0.0.1:{top.port}", home_auth=f"300:0.NA/{INDUSTRY}",
        home_secret=DELEGATION_SECRET,
    ))
    recursive: RunningNode | None = None
    session = aiohttp.ClientSession()
    try:
        await secondary.start()
        assert secondary.homing is not None
        await asyncio.wait_for(secondary.homing.homed_once.wait(), 10)
        recursive = RunningNode(NodeConfig(
            store=str(tmp_path / "recursive.db"), port=0, handle_port=0, role="recursive",
            top_level=(f"127.0.0.1:{top.handle_port}",), **recursive_options,  # type: ignore[arg-type]
        ))
        await recursive.start()
        yield Hierarchy(top, secondary, recursive, session)
    finally:
        await session.close()
        for node in (recursive, secondary, top):
            if node is not None:
                await node.stop()


def _values(body: dict) -> dict[str, dict]:
    return {v["type"]: v for v in body["values"]}


# -- homing and the top-level ----------------------------------------------------


async def test_secondary_homes_its_site_at_the_top_level(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        status, body, _ = await h.get(h.top, f"0.NA/{INDUSTRY}")
        assert status == 200
        values = _values(body)
        assert values[HS_SITE]["data"]["format"] == "site"
        assert values[HS_SITE_PREFIX]["index"] == 2
        entry = await h.top.node.resolve(h.top.node.parse(f"0.NA/{INDUSTRY}"))
        site = decode_site(next(v.data for v in entry.values or () if v.type == HS_SITE))
        ports = {i.port for s in site.servers for i in s.interfaces}
        assert ports == {h.secondary.handle_port, h.secondary.port}
        assert "HS_SECKEY" not in values  # the delegation secret is never public


async def test_homing_refuses_a_wrong_secret(tmp_path: Path) -> None:
    from resolver.auth import Identity
    from resolver.homing import Homing, HomingError

    async with hierarchy(tmp_path) as h:
        wrong = Homing(f"http://127.0.0.1:{h.top.port}", Identity.parse(f"300:0.NA/{INDUSTRY}"),
                       "not-the-secret")
        site = decode_site(wrong.site_values(_any_site())[0].data)
        with pytest.raises(HomingError, match=r"HTTP 40[13]"):
            await wrong.home(site)


def _any_site():
    from resolver.handle_site import node_site

    return node_site("127.0.0.1", 1, 2)


async def test_top_level_refers_derived_prefixes_rest_and_binary(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        status, body, _ = await h.get(h.top, f"0.NA/{ENTERPRISE}")
        assert (status, body["responseCode"]) == (300, RC.PREFIX_REFERRAL)
        assert set(_values(body)) == {HS_SITE_PREFIX}
        for resolve in (resolve_udp, resolve_tcp):
            reply = await resolve("127.0.0.1", h.top.handle_port, f"0.NA/{ENTERPRISE}")
            assert reply.rc == RC.PREFIX_REFERRAL
        # Unknown prefix: not found. A handle under a delegated prefix: not here.
        status, body, _ = await h.get(h.top, "0.NA/99.9")
        assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND)
        status, body, _ = await h.get(h.top, f"{INDUSTRY}/PART-1")
        assert (status, body["responseCode"]) == (400, RC.SERVER_NOT_RESP)
        reply = await resolve_udp("127.0.0.1", h.top.handle_port, f"{INDUSTRY}/PART-1")
        assert reply.rc == RC.SERVER_NOT_RESP


async def test_secondary_answers_unserved_prefixes_not_responsible(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        for handle in ("77.1/x", f"0.NA/{INDUSTRY}.9", f"{INDUSTRY}.9/x"):
            status, body, _ = await h.get(h.secondary, handle)
            assert (status, body["responseCode"]) == (400, RC.SERVER_NOT_RESP), handle
            reply = await resolve_udp("127.0.0.1", h.secondary.handle_port, handle)
            assert reply.rc == RC.SERVER_NOT_RESP
        status, body, _ = await h.get(h.secondary, f"0.NA/{ENTERPRISE}")
        assert status == 200


# -- the recursive node --------------------------------------------------------


async def test_recursive_resolves_across_levels_and_caches(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        upstream = h.recursive.node.upstream
        assert upstream is not None
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert status == 200 and _values(body)["URL"]["data"]["value"] == "https://a.example/1"
        # Derived prefix: the top-level refers (303), the secondary holds it.
        status, body, _ = await h.get(h.recursive, f"{ENTERPRISE}/batch-7")
        assert status == 200
        assert body["handle"] == f"{ENTERPRISE}/batch-7"
        assert _values(body)["TRACE.material"]["data"]["value"] == f"{INDUSTRY}/PART-1"
        asked = upstream.requests
        hits = h.recursive.node.cache.hits
        status, _, _ = await h.get(h.recursive, f"{ENTERPRISE}/BATCH-7")
        assert status == 200
        assert upstream.requests == asked  # answered from the cache
        assert h.recursive.node.cache.hits > hits
        # A new handle under a known prefix: one request, the site is cached.
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/missing")
        assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND)
        assert upstream.requests == asked + 1
        # Over the binary protocol too.
        reply = await resolve_udp("127.0.0.1", h.recursive.handle_port, f"{INDUSTRY}/PART-1")
        assert reply.rc == RC.SUCCESS and reply.values[0].data == b"https://a.example/1"


async def test_recursive_never_invents_records(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        for handle in ("99.9/x", f"{INDUSTRY}.9/x", f"0.NA/{INDUSTRY}.9"):
            status, body, _ = await h.get(h.recursive, handle)
            assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND), handle
        # Prefix records resolve through the root, following the referral.
        status, body, _ = await h.get(h.recursive, f"0.NA/{ENTERPRISE}")
        assert status == 200 and "HS_ADMIN" in _values(body)


async def test_recursive_coalesces_concurrent_misses(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        upstream = h.recursive.node.upstream
        assert upstream is not None
        before = upstream.requests
        replies = await asyncio.gather(
            *(h.get(h.recursive, f"{ENTERPRISE}/BATCH-7") for _ in range(20))
        )
        assert {status for status, _, _ in replies} == {200}
        # 0.NA/88.118.1 at the top (303) and at the secondary, then the record.
        assert upstream.requests - before == 3


async def _resolve_counted(port: int, handle: str, recursion: int) -> int:
    """The RC a node answers a UDP resolution that has passed ``recursion`` servers."""
    message = Message(OpCode.RESOLUTION, 0, FLAG_PUBL | FLAG_RECU,
                      ResolutionRequest(handle, (), ()), recursion_count=recursion)
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not reply.done():
                reply.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(encode_packet(Envelope(request_id=5), message))
        return decode_response(await asyncio.wait_for(reply, 5))[1].response_code
    finally:
        transport.close()


async def test_recursion_count_is_passed_on_and_bounded(tmp_path: Path) -> None:
    """A request that has passed too many servers is refused (RC 6), not forwarded."""
    async with hierarchy(tmp_path) as h:
        upstream = h.recursive.node.upstream
        assert upstream is not None
        port = h.recursive.handle_port
        asked = upstream.requests
        rc = await _resolve_counted(port, f"{INDUSTRY}/PART-1", MAX_RECURSION_COUNT)
        assert rc == RC.RECURSION_COUNT_TOO_HIGH and upstream.requests == asked
        # Not cached as an answer: with room left it resolves.
        assert await _resolve_counted(port, f"{INDUSTRY}/PART-1", 3) == RC.SUCCESS


async def test_upstream_queries_carry_the_arrived_count_plus_one() -> None:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Peer(asyncio.DatagramProtocol):
        """A server that notes the count a query arrives with and says not found."""

        def connection_made(self, transport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr) -> None:
            env, msg = decode_request(data)
            if not seen.done():
                seen.set_result(msg.recursion_count)
            self.transport.sendto(encode_error_reply(env, msg, RC.HANDLE_NOT_FOUND, "", now=0),
                                  addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    upstream = HandleUpstream(timeout=2)
    await upstream.start()
    token = arrived_recursion.set(3)
    try:
        port = transport.get_extra_info("sockname")[1]
        reply = await upstream.resolve([Endpoint("127.0.0.1", port, udp=True)], "88.1/x")
        assert reply.response_code == RC.HANDLE_NOT_FOUND and await seen == 4
    finally:
        arrived_recursion.reset(token)
        await upstream.stop()
        transport.close()


async def test_recursive_serves_stale_while_the_secondary_is_down(tmp_path: Path) -> None:
    async with hierarchy(tmp_path, cache_max_ttl=0.5, stale_window=30.0,
                         upstream_timeout=0.4, cache_negative_ttl=0.5) as h:
        status, _, reply = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert status == 200 and "X-Idnode-Stale" not in reply.headers
        await h.secondary.stop()
        await asyncio.sleep(0.7)
        status, body, reply = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert status == 200
        assert reply.headers["X-Idnode-Stale"] == "1"
        assert reply.headers["Warning"].startswith("110")
        assert _values(body)["URL"]["data"]["value"] == "https://a.example/1"
        assert h.recursive.node.cache.stale_hits >= 1
        stale = await resolve_udp("127.0.0.1", h.recursive.handle_port, f"{INDUSTRY}/PART-1")
        assert stale.rc == RC.SUCCESS and stale.values[0].data == b"https://a.example/1"
        # Never seen before: nothing stale to give, so an error, not a record.
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/never-seen")
        assert (status, body["responseCode"]) == (500, RC.ERROR)
        assert "Upstream unavailable" in body.get("message", "")
        # The marker is on the pre-encoded fast path too (a second request hits it).
        status, _, reply = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert status == 200 and reply.headers["X-Idnode-Stale"] == "1"
        metrics = await (await h.session.get(f"http://127.0.0.1:{h.recursive.port}/metrics")).text()
        assert "idnode_cache_stale_served_total" in metrics
        assert "idnode_upstream_failures_total" in metrics


async def test_stale_window_is_bounded(tmp_path: Path) -> None:
    async with hierarchy(tmp_path, cache_max_ttl=0.3, stale_window=0.5,
                         upstream_timeout=0.2) as h:
        status, _, _ = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert status == 200
        await h.secondary.stop()
        await asyncio.sleep(1.0)  # past expiry + stale window
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert (status, body["responseCode"]) == (500, RC.ERROR)


# -- HOME_NA / UNHOME_NA / LIST_HOMED_NAS (opCodes 300-302) ------------------------


async def test_binary_prefix_homing_by_server_admins(tmp_path: Path) -> None:
    from test_handle_server import admin_exchange

    from protocol.handle_wire import FLAG_RECU, HandleBody, HandleListBody, Message, OpCode
    from resolver.auth import Identity

    _, store = await _stores(tmp_path)
    admin = Identity(300, f"{INDUSTRY}/ADMIN")
    node = RunningNode(NodeConfig(store=str(store), port=0, handle_port=0,
                                  server_admins=(admin.text,)))
    await node.start()
    try:
        port = node.handle_port
        assert port is not None
        secret = ADMIN_SECRET.encode()

        def request(op: OpCode, text: str) -> Message:
            return Message(op, 0, FLAG_RECU, HandleBody(text))

        listed = await admin_exchange(port, request(OpCode.LIST_HOMED_NAS, "/"), admin, secret)
        assert listed.response_code == RC.SUCCESS
        assert isinstance(listed.body, HandleListBody)
        assert set(listed.body.handles) == {f"0.NA/{INDUSTRY}", f"0.NA/{ENTERPRISE}"}
        # Not a prefix handle: RC 102 before any challenge.
        bad = await admin_exchange(port, request(OpCode.HOME_NA, "88.118/x"), admin, secret)
        assert bad.response_code == RC.INVALID_HANDLE
        # The enterprise's admin authenticates but is no server admin.
        other = Identity(300, f"{ENTERPRISE}/ADMIN")
        refused = await admin_exchange(port, request(OpCode.HOME_NA, "0.NA/88.118.2"), other,
                                       secret)
        assert refused.response_code == RC.INSUFFICIENT_PERMISSIONS
        assert not node.node.serves("88.118.2")
        homed = await admin_exchange(port, request(OpCode.HOME_NA, "0.NA/88.118.2"), admin,
                                     secret)
        assert homed.response_code == RC.SUCCESS and node.node.serves("88.118.2")
        gone = await admin_exchange(port, request(OpCode.UNHOME_NA, ENTERPRISE), admin, secret)
        assert gone.response_code == RC.SUCCESS and not node.node.serves(ENTERPRISE)
        reply = await resolve_udp("127.0.0.1", port, f"{ENTERPRISE}/BATCH-7")
        assert reply.rc == RC.SERVER_NOT_RESP  # no longer served, never a stale record
    finally:
        await node.stop()


async def test_unhoming_removes_the_site_and_resolution_stops(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        assert h.secondary.homing is not None
        await h.secondary.homing.stop()  # no refresh puts it back
        await h.secondary.homing.unhome()
        status, body, _ = await h.get(h.top, f"0.NA/{INDUSTRY}")
        assert status == 200 and set(_values(body)) == {"HS_ADMIN"}
        status, body, _ = await h.get(h.top, f"0.NA/{ENTERPRISE}")
        assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND)
        # A recursive node that never cached the site finds no server for the
        # prefix: not found, and that answer is cached like any negative one.
        upstream = h.recursive.node.upstream
        assert upstream is not None
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/PART-1")
        assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND)
        asked = upstream.requests
        status, body, _ = await h.get(h.recursive, f"{INDUSTRY}/PART-2")
        assert (status, body["responseCode"]) == (404, RC.HANDLE_NOT_FOUND)
        assert upstream.requests == asked  # the prefix's negative answer, from the cache


def test_unhome_command_reports_an_unreachable_top_level(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from resolver.cli import main

    code = main(["unhome", "--home-at", "http://127.0.0.1:9", "--home-auth",
                 f"300:0.NA/{INDUSTRY}", "--home-secret", "s"])
    assert code == 2 and "idnode:" in capsys.readouterr().err
    assert main(["unhome", "--home-at", "http://127.0.0.1:9", "--home-auth", "300:88.118/ADMIN",
                 "--home-secret", "s"]) == 2  # not a 0.NA identity


async def test_prefixes_homed_later_resolve_through_the_recursive_node(tmp_path: Path) -> None:
    """The application workflow's hook: ``Node.home_prefix`` at the secondary, nothing at
    the top-level (it refers 88.118.<n> to the secondary), with or without admin values."""
    from resolver.admin_tasks import prefix_record

    async with hierarchy(tmp_path) as h:
        node = h.secondary.node
        await node.home_prefix("88.118.7", prefix_record("88.118.7/ADMIN", 300))
        await node.home_prefix("88.118.8", [])
        for prefix in ("88.118.7", "88.118.8"):
            await node.store.put(f"{prefix}/LOT-1", [HandleValue(1, "URL", b"https://lot")])
            status, body, _ = await h.get(h.recursive, f"{prefix}/LOT-1")
            assert status == 200, (prefix, body)
        status, body, _ = await h.get(h.secondary, "0.NA/88.118.8")
        assert (status, body["responseCode"]) == (200, RC.VALUES_NOT_FOUND)


@pytest.mark.parametrize("args", [
    ["--role", "recursive"],  # no --top-level
    ["--role", "recursive", "--top-level", "nowhere"],  # not HOST:PORT
    ["--home-at", "http://127.0.0.1:9"],  # no --home-auth / --home-secret
])
def test_serve_refuses_incomplete_role_options(args: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from resolver.cli import main

    assert main(["serve", "--store", str(tmp_path / "x.db"), *args]) == 2
    assert capsys.readouterr().err.startswith("idnode: ")


async def test_hs_serv_names_a_service_handle_held_at_the_top_level(tmp_path: Path) -> None:
    """``0.NA/77.1`` with HS_SERV → ``0.SERV/77`` (homed at the top-level) holding HS_SITE."""
    async with hierarchy(tmp_path) as h:
        top = h.top.node
        await top.home_prefix("0.SERV", [])
        site = next(v for v in await top.store.get(f"0.NA/{INDUSTRY}") or ()
                    if v.type == HS_SITE)
        await top.store.put("0.SERV/77", [HandleValue(1, HS_SITE, site.data)])
        await top.store.put("0.NA/77.1", [HandleValue(1, "HS_SERV", b"0.SERV/77")])
        await h.secondary.node.home_prefix("77.1", [])
        await h.secondary.node.store.put("77.1/SERVED", [HandleValue(1, "URL", b"https://s")])
        status, body, _ = await h.get(h.recursive, "77.1/SERVED")
        assert status == 200 and _values(body)["URL"]["data"]["value"] == "https://s"


async def test_a_secondary_may_write_its_values_but_not_its_admins(tmp_path: Path) -> None:
    async with hierarchy(tmp_path) as h:
        login = f"300%3A0.NA/{INDUSTRY}"
        auth = {"Authorization": aiohttp.encode_basic_auth(login, DELEGATION_SECRET)}
        url = h.url(h.top, f"0.NA/{INDUSTRY}")
        admin = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "0.NA/88.999", "index": 300, "permissions": "111111111111"}}}
        async with h.session.put(url, params={"index": "100"}, json={"values": [admin]},
                                 headers=auth) as reply:
            assert reply.status == 403, await reply.text()
        note = {"index": 3, "type": "EMAIL", "data": "ops@secondary.example"}
        async with h.session.put(url, params={"index": "3"}, json={"values": [note]},
                                 headers=auth) as reply:
            assert reply.status in (200, 201), await reply.text()


async def test_delegate_after_reporter_add_keeps_one_identity(tmp_path: Path) -> None:
    store = str(tmp_path / "top.db")
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.reporter_add(store, INDUSTRY, "first")
        await admin_tasks.delegate(store, INDUSTRY, "second")
        with pytest.raises(admin_tasks.CommandError):
            await admin_tasks.delegate(store, "not a prefix/", None)
    async with admin_tasks.opened(store) as opened_store:
        values = await opened_store.get(f"0.NA/{INDUSTRY}")
    assert values is not None
    assert sorted((v.index, v.type) for v in values) == [(100, "HS_ADMIN"), (300, "HS_SECKEY")]
