"""Past its bounds the node sheds load with 503 / RC 3 at once, and recovers at once."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from live import ADMIN, PREFIX, SECRET, init_store

from bench.reply_parser import ReplyParser
from protocol.codes import RC
from protocol.values import HandleValue
from registry.sqlite_store import SQLiteStore
from registry.store import StoreBusy
from resolver.admission import Admission
from resolver.arrival import StampingHandler
from resolver.config import NodeConfig
from resolver.server import RunningNode

VALUES = b'{"values":[{"index":1,"type":"URL","data":"https://example.com/x"}]}'
BUSY = {"responseCode": 3, "message": "Server too busy"}


def auth() -> dict[str, str]:
    login = ADMIN.replace(":", "%3A", 1)
    return {"Authorization": aiohttp.encode_basic_auth(login, SECRET),
            "Content-Type": "application/json"}


def test_admission_refuses_past_max_inflight() -> None:
    admission = Admission(max_inflight=2, max_wait=0)
    assert not admission.refuse(0.0)
    admission.inflight = 2
    assert admission.refuse(0.0) and admission.shed == 1
    admission.inflight = 1
    assert not admission.refuse(0.0)


def test_admission_refuses_what_waited_past_the_bound_and_keeps_no_history() -> None:
    admission = Admission(max_inflight=100, max_wait=0.05)
    assert not admission.refuse(0.049)
    assert admission.refuse(0.051) and admission.shed == 1
    assert not admission.refuse(0.0)  # the next request read on time is admitted at once
    assert admission.late(0.06) and not admission.late(0.01) and admission.shed == 2
    off = Admission(max_inflight=100, max_wait=0)  # 0: wait shedding off
    assert not off.refuse(1e6) and not off.late(1e6)
    with pytest.raises(ValueError):
        Admission(max_inflight=100, max_wait=-1)


async def test_full_write_queue_fails_fast_with_store_busy(tmp_path: Path) -> None:
    """The node's store refuses a write past its queue bound instead of waiting."""
    async with SQLiteStore(tmp_path / "s.sqlite", max_pending=1, busy_when_full=True) as store:
        gate = threading.Event()
        blocker = asyncio.ensure_future(store._write(lambda conn: gate.wait(5)))
        await asyncio.sleep(0.05)  # the writer holds the only slot
        value = HandleValue(1, "URL", b"https://example.com/")
        with pytest.raises(StoreBusy):
            await asyncio.wait_for(store.put("88.100.1/X", [value]), 1)
        gate.set()
        await blocker
        assert await store.put("88.100.1/X", [value])  # room again: accepted


async def test_a_tool_store_waits_instead(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite", max_pending=1) as store:
        gate = threading.Event()
        blocker = asyncio.ensure_future(store._write(lambda conn: gate.wait(5)))
        await asyncio.sleep(0.05)
        value = HandleValue(1, "URL", b"https://example.com/")
        put = asyncio.ensure_future(store.put("88.100.1/X", [value]))
        await asyncio.sleep(0.05)
        assert not put.done()
        gate.set()
        await blocker
        assert await put


@pytest.mark.slow
async def test_node_sheds_an_overload_with_503_rc3_and_recovers(tmp_path: Path) -> None:
    store_path = tmp_path / "node.db"
    await init_store(store_path)
    config = NodeConfig(store=str(store_path), port=0, handle_port=None, max_inflight=4,
                        shed_lag=0)
    running = RunningNode(config)
    await running.start()
    url = f"http://127.0.0.1:{running.port}/api/handles/{PREFIX}"
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.put(f"{url}/warm", data=VALUES, headers=auth()) as r:
                assert r.status == 201  # the credential check is cached from here on

            async def put(i: int) -> tuple[int, dict[str, object]]:
                async with session.put(f"{url}/load-{i}", data=VALUES, headers=auth()) as r:
                    return r.status, await r.json()

            results = await asyncio.gather(*(put(i) for i in range(300)))
            statuses = [status for status, _ in results]
            assert set(statuses) <= {201, 503}, statuses  # no other 5xx, nothing lost
            assert statuses.count(503) > 0 and statuses.count(201) > 0
            assert all(body == BUSY for status, body in results if status == 503)
            assert running.node.admission.inflight == 0
            # Every write acknowledged is there; every refused one is not.
            for i, (status, _) in enumerate(results):
                async with session.get(f"{url}/load-{i}") as r:
                    assert r.status == (200 if status == 201 else 404)
            # Load gone: admitted at once.
            async with session.put(f"{url}/after", data=VALUES, headers=auth()) as r:
                assert r.status == 201
            async with session.get(f"http://127.0.0.1:{running.port}/metrics") as r:
                assert 'route="shed",status="503"' in await r.text()
    finally:
        await running.stop()


async def test_binary_tcp_past_its_bound_answers_rc3(live_node, monkeypatch) -> None:
    from resolver import handle_transport
    from resolver.handle_client import resolve_tcp

    port = live_node.running.handle_port
    monkeypatch.setattr(handle_transport, "MAX_INFLIGHT_TCP", 0)
    busy = await resolve_tcp("127.0.0.1", port, f"{PREFIX}/anything")
    assert busy.rc == RC.SERVER_TOO_BUSY
    monkeypatch.setattr(handle_transport, "MAX_INFLIGHT_TCP", 256)
    assert (await resolve_tcp("127.0.0.1", port, f"{PREFIX}/anything")).rc == RC.HANDLE_NOT_FOUND


def test_aiohttp_internals_the_arrival_stamps_rely_on() -> None:
    """resolver/arrival reads aiohttp's message queue: if aiohttp changes it, fail here."""
    slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    assert {"_messages", "_buffer_paused", "_request_factory"} <= slots
    queued = inspect.getsource(RequestHandler.data_received)
    assert "self._messages.append((msg, payload))" in queued
    start = inspect.getsource(RequestHandler.start)
    popped = start.index("self._messages.popleft()")
    built = start.index("self._request_factory(", popped)
    assert "await" not in start[popped:built]  # the factory sees the queue just popped
    # Held-back pipelined requests are emitted by re-feeding the parser nothing.
    assert 'self.data_received(b"")' in inspect.getsource(RequestHandler._resume_reading_if_drained)


@pytest.fixture
async def stalling_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[tuple[RunningNode, list[float]]]:
    """A node shedding past 50 ms of wait; set ``stall[0]`` to keep its loop busy that
    long right after each read (as a backlog of other connections' work would)."""
    stall = [0.0]
    original = StampingHandler.data_received

    def read_then_stall(self: StampingHandler, data: bytes) -> None:
        original(self, data)
        if stall[0]:
            time.sleep(stall[0])

    monkeypatch.setattr(StampingHandler, "data_received", read_then_stall)
    store_path = tmp_path / "node.db"
    await init_store(store_path)
    running = RunningNode(NodeConfig(store=str(store_path), port=0, handle_port=None,
                                     shed_lag=0.05))
    await running.start()
    try:
        yield running, stall
    finally:
        await running.stop()


async def test_a_request_that_waited_past_the_bound_is_refused_and_one_that_did_not_served(
        stalling_node: tuple[RunningNode, list[float]]) -> None:
    running, stall = stalling_node
    base = f"http://127.0.0.1:{running.port}"
    url = f"{base}/api/handles/{PREFIX}"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{url}/cached", data=VALUES, headers=auth()) as r:
            assert r.status == 201
        async with session.get(f"{url}/cached") as r:
            assert r.status == 200  # now in the cache
        async with session.get(f"{url}/missing-1") as r:
            assert r.status == 404  # read and handled at once: served

        stall[0] = 0.1  # every request now waits 100 ms for the loop, past the 50 ms bound
        async with session.get(f"{url}/missing-2") as r:  # (a 404 is cached too: a new name)
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert await r.json() == BUSY
        async with session.head(f"{url}/missing-3") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert await r.read() == b""
        async with session.put(f"{url}/refused", data=VALUES, headers=auth()) as r:
            assert r.status == 503 and await r.json() == BUSY  # the ordinary reply path
        async with session.get(f"{url}/cached") as r:
            assert r.status == 200  # a cached resolve is never refused
        async with session.get(f"{base}/healthz") as r:
            assert r.status == 200

        stall[0] = 0.0  # the loop is back on time: admitted again at once
        async with session.get(f"{url}/refused") as r:
            assert r.status == 404  # the refused write left nothing behind
    assert running.node.admission.shed == 3


async def test_pipelined_requests_carry_the_time_of_the_read_that_brought_them(
        tmp_path: Path) -> None:
    """40 GETs in one write: aiohttp queues 32 and holds the rest back until the queue
    drains; all 40 are stamped with that one read's time, and the stamps stay in step."""
    store_path = tmp_path / "node.db"
    await init_store(store_path)
    running = RunningNode(NodeConfig(store=str(store_path), port=0, handle_port=None,
                                     shed_lag=0))
    seen: list[tuple[float, float]] = []
    handle = running.frontend.handle

    async def timed(request: web.BaseRequest) -> web.StreamResponse:
        seen.append((getattr(request, "arrived", -1.0), time.perf_counter()))
        return await handle(request)

    running.frontend.handle = timed  # type: ignore[method-assign]
    await running.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        request = f"GET /api/handles/{PREFIX}/none HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        writer.write(request * 40)
        parser, statuses = ReplyParser(), []
        while len(statuses) < 40:
            statuses += parser.feed(await asyncio.wait_for(reader.read(65536), 5))
        assert statuses == [404] * 40
        assert len(seen) == 40
        assert len({arrived for arrived, _ in seen}) == 1  # one read, one stamp
        assert all(0 < arrived <= started for arrived, started in seen)
        [connection] = running._runner.server.connections  # type: ignore[union-attr]
        assert not connection._arrivals  # type: ignore[attr-defined]
        writer.close()
    finally:
        await running.stop()


async def test_binary_requests_that_waited_too_long_are_refused_or_dropped(live_node) -> None:
    from resolver.handle_client import resolve_tcp, resolve_udp

    port = live_node.running.handle_port
    async with live_node.session.put(live_node.handle_url(f"{PREFIX}/bin-cached"), data=VALUES,
                                     headers=auth()) as r:
        assert r.status == 201
    for _ in range(2):  # the second answer is stored for the stored-reply paths
        assert (await resolve_udp("127.0.0.1", port, f"{PREFIX}/bin-cached")).rc == RC.SUCCESS
        assert (await resolve_tcp("127.0.0.1", port, f"{PREFIX}/bin-cached")).rc == RC.SUCCESS
    admission = live_node.node.admission
    admission.max_wait = 1e-9  # any wait for the loop is past the bound
    udp = live_node.running._udp.get_protocol()
    dropped = udp.dropped
    # UDP: dropped (no reply); the client falls back to TCP, which answers RC 3.
    busy = await resolve_udp("127.0.0.1", port, f"{PREFIX}/nothere", timeout=0.3)
    assert busy.rc == RC.SERVER_TOO_BUSY and busy.transport == "tcp"
    assert udp.dropped == dropped + 1
    # Stored replies are never refused.
    assert (await resolve_udp("127.0.0.1", port, f"{PREFIX}/bin-cached")).rc == RC.SUCCESS
    assert (await resolve_tcp("127.0.0.1", port, f"{PREFIX}/bin-cached")).rc == RC.SUCCESS
    admission.max_wait = float("inf")
    assert (await resolve_tcp("127.0.0.1", port, f"{PREFIX}/nothere")).rc == RC.HANDLE_NOT_FOUND
    async with live_node.session.get(f"{live_node.url}/metrics") as r:
        text = await r.text()
    assert 'route="shed",status="503",transport="udp"} 1.0' in text
    assert 'route="shed",status="503",transport="tcp"} 1.0' in text
