"""HTTP input limits: slow-loris connections are closed, oversized headers refused."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from resolver.config import NodeConfig
from resolver.server import RunningNode
from tests.live import PREFIX, init_store


@pytest.fixture
async def quick_node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    await init_store(tmp_path / "node.db")
    config = dataclasses.replace(
        NodeConfig(store=str(tmp_path / "node.db"), port=0, handle_port=None), idle_timeout=1.0
    )
    running = RunningNode(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_a_trickled_request_is_cut_off_after_the_idle_timeout(quick_node: RunningNode):
    reader, writer = await asyncio.open_connection("127.0.0.1", quick_node.port)
    writer.write(f"GET /api/handles/{PREFIX}/x HTTP/1.1\r\nHost: a\r\n".encode())
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 10:
        try:
            writer.write(b"X-Slow: 1\r\n")  # a header line now and then, never the end
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
        except TimeoutError:
            continue
        except ConnectionError:
            closed = True
        if closed:
            break
    assert closed, "the node kept a never-finished request open"
    assert time.monotonic() - started < 6
    writer.close()
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{quick_node.port}/api/handles/{PREFIX}/x"
    ) as r:
        assert r.status == 404  # others are served as usual


async def test_oversized_header_is_refused_with_400(quick_node: RunningNode):
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{quick_node.port}/api/handles/{PREFIX}/x",
        headers={"X-Big": "a" * 20_000},
    ) as r:
        assert r.status == 400


@pytest.mark.parametrize(
    ("path", "status", "rc"),
    [
        (f"/api/handles/{PREFIX}/a%00b", 400, 102),  # NUL
        (f"/api/handles/{PREFIX}/a%0d%0aX-Injected:%201", 400, 102),  # header injection
        ("/api/handles/..%2F..%2Fetc%2Fpasswd", 400, 102),  # traversal, encoded
    ],
)
async def test_hostile_handle_paths_are_invalid_handles_or_not_found(
    quick_node: RunningNode, path: str, status: int, rc: int
):
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{quick_node.port}{path}"
    ) as r:
        assert r.status == status
        body = await r.json()
        assert body["responseCode"] == rc
        assert "\r\n" not in "".join(f"{k}{v}" for k, v in r.headers.items())


async def test_raw_traversal_path_is_an_unknown_endpoint(quick_node: RunningNode):
    reader, writer = await asyncio.open_connection("127.0.0.1", quick_node.port)
    writer.write(b"GET /api/handles/../../etc/passwd HTTP/1.1\r\n"
                 b"Host: a\r\nConnection: close\r\n\r\n")
    reply = await reader.read()
    writer.close()
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"404")
    assert b"root:" not in reply
