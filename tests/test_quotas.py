"""Quotas hold in total across nodes sharing one store (SQLite file or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pg_service
import pytest
from live import ADMIN, PREFIX, SECRET

from protocol.values import HandleValue
from registry.backends import open_store_at
from resolver import admin_tasks
from resolver.config import NodeConfig
from resolver.quotas import IdentifierQuotaExceeded
from resolver.server import RunningNode

HOST = "127.0.0.1"
AUTH = {"Authorization": aiohttp.encode_basic_auth(ADMIN.replace(":", "%3A", 1), SECRET)}
BODY = orjson.dumps({"values": [{"index": 1, "type": "URL", "data": "https://example.com/q"}]})
IDENTIFIERS = 6  # <PREFIX>/ADMIN exists: 5 more fit
REQUESTS = 30


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgresql":
        pytest.importorskip("asyncpg")
        await pg_service.require_postgres()
        location = pg_service.url_for(tmp_path)
    else:
        location = str(tmp_path / "node.db")
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.init(location, PREFIX, SECRET, False,
                               master_key=str(tmp_path / "master.key"))
    yield location
    if request.param == "postgresql":
        await pg_service.drop_schema(tmp_path)


async def test_two_nodes_share_identifier_and_request_quotas(store_location: str, tmp_path: Path):
    config = NodeConfig(
        store=store_location, port=0, handle_port=None, master_key=str(tmp_path / "master.key"),
        quotas=(f"{PREFIX}:identifiers={IDENTIFIERS},requests={REQUESTS}",),
    )
    nodes = [RunningNode(config), RunningNode(config)]
    for node in nodes:
        await node.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def send(method: str, n: int, name: str) -> tuple[int, int | None]:
                url = f"http://{HOST}:{nodes[n % 2].port}/api/handles/{PREFIX}/{name}"
                async with http.request(method, url, data=BODY if method == "PUT" else None,
                                        headers={"Content-Type": "application/json", **AUTH}
                                        ) as reply:
                    return reply.status, (await reply.json()).get("responseCode")

            # 12 creates, half through each node, at once: 5 fit in total.
            created = await asyncio.gather(*(send("PUT", i, f"q{i}") for i in range(12)))
            assert sorted(created).count((201, 1)) == IDENTIFIERS - 1, created
            assert [r for r in created if r != (201, 1)] == [(429, 604)] * 7
            store = nodes[0].node.store
            assert await store.count_handles(PREFIX) == IDENTIFIERS
            # 12 requests charged so far; 30 deletes of missing handles: 18 more fit.
            deletes = await asyncio.gather(*(send("DELETE", i, f"none{i}") for i in range(30)))
            assert sorted(deletes).count((404, 100)) == REQUESTS - 12, deletes
            assert deletes.count((429, 603)) == 12
    finally:
        for node in nodes:
            await node.stop()


async def test_offline_writes_are_counted_again(store_location: str, tmp_path: Path):
    config = NodeConfig(
        store=store_location, port=0, handle_port=None, master_key=str(tmp_path / "master.key"),
        quotas=(f"{PREFIX}:identifiers=3",),
    )
    node = RunningNode(config)
    await node.start()
    try:
        quotas = node.node.quotas
        assert await quotas.reserve_identifiers([PREFIX, PREFIX]) == [
            f"identifiers/{PREFIX}/{await node.node.store.unannounced_writes() or 0}"] * 2
        # An offline import fills the prefix: the next reservation counts the store again.
        async with open_store_at(store_location) as offline:  # type: ignore[attr-defined]
            await offline.put(f"{PREFIX}/IMPORTED", (HandleValue(1, "URL", b"x"),))
        with pytest.raises(IdentifierQuotaExceeded):
            await quotas.reserve_identifiers([PREFIX, PREFIX])
        assert len(await quotas.reserve_identifiers([PREFIX])) == 1  # ADMIN, IMPORTED + 1
    finally:
        await node.stop()
