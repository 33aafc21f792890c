"""Past its bounds the node sheds load with 503 / RC 3 at once, and recovers at once."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from live import ADMIN, PREFIX, SECRET, init_store

from protocol.codes import RC
from protocol.values import HandleValue
from registry.sqlite_store import SQLiteStore
from registry.store import StoreBusy
from resolver.admission import Admission
from resolver.config import NodeConfig
from resolver.server import RunningNode

VALUES = b'{"values":[{"index":1,"type":"URL","data":"https://example.com/x"}]}'
BUSY = {"responseCode": 3, "message": "Server too busy"}


def auth() -> dict[str, str]:
    login = ADMIN.replace(":", "%3A", 1)
    return {"Authorization": aiohttp.encode_basic_auth(login, SECRET),
            "Content-Type": "application/json"}


async def test_admission_refuses_past_max_inflight() -> None:
    admission = Admission(max_inflight=2, max_lag=0)
    assert not admission.refuse()
    admission.inflight = 2
    assert admission.refuse() and admission.shed == 1
    admission.inflight = 1
    assert not admission.refuse()


async def test_requests_caught_behind_a_busy_loop_are_refused() -> None:
    admission = Admission(max_inflight=100, max_lag=0.3)
    admission.start()
    try:
        await asyncio.sleep(0.02)
        assert not admission.refuse()
        time.sleep(0.4)  # the loop is busy: whatever it handles now is handled late
        assert admission.refuse() and admission.shed == 1
        await asyncio.sleep(0.02)  # back on time: admission resumes by itself
        assert not admission.refuse()
    finally:
        admission.stop()
    time.sleep(0.4)
    assert not admission.refuse()  # stopped: no lag shedding


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
