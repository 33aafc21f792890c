"""Three ``idnode serve --redis`` processes sharing one store (a SQLite file,
or one PostgreSQL database) and one Redis: after a write is acknowledged by any
of them, none serves the old record."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import orjson
import pg_service
import pytest
from processes import ServerProcess, init_store
from redis_service import shared_redis

__all__ = ["shared_redis"]  # fixture

pytestmark = pytest.mark.slow

PREFIX = "88.100.1"
SECRET = "redis-processes-secret"
AUTH = {"Authorization": aiohttp.encode_basic_auth(f"300%3A{PREFIX}/ADMIN", SECRET),
        "Content-Type": "application/json"}
HANDLES = 4
ROUNDS = 60


def body(url: str) -> bytes:
    return orjson.dumps({"values": [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": url}},
        {"index": 100, "type": "HS_ADMIN",
         "data": {"format": "admin", "value": {"handle": f"{PREFIX}/ADMIN", "index": 300,
                                               "permissions": "011111110011"}}},
    ]})


async def read(session: aiohttp.ClientSession, node: ServerProcess, handle: str):
    async with session.get(f"{node.url}/api/handles/{handle}") as r:
        if r.status != 200:
            return r.status, None
        values = (await r.json())["values"]
        return 200, next(v["data"]["value"] for v in values if v["type"] == "URL")


@pytest.mark.parametrize(("backend", "workers"),
                         [("sqlite", 1), ("sqlite", 2), ("postgresql", 1)])
async def test_three_nodes_read_their_writes(
    tmp_path: Path, shared_redis, backend: str, workers: int
):
    """With ``--workers 2`` each worker is a member of its own (six in all)."""
    redis_url, prefix = shared_redis
    flags: tuple[str, ...] = ("--redis", redis_url, "--redis-prefix", prefix,
                              "--redis-timeout", "0.1", "--workers", str(workers))
    store: Path | str
    if backend == "postgresql":
        await pg_service.require_postgres()
        store = pg_service.url_for(tmp_path)
        key = ("--master-key", str(tmp_path / "master.key"))
        await asyncio.to_thread(init_store, store, PREFIX, SECRET, *key)
        flags += key
        nodes = [ServerProcess(store, *flags, log_path=tmp_path / f"node{n}.log")
                 for n in range(3)]
    else:
        store = tmp_path / "shared.db"
        await asyncio.to_thread(init_store, store, PREFIX, SECRET)
        nodes = [ServerProcess(store, *flags, log_path=tmp_path / f"node{n}.log")
                 for n in range(3)]
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        rng = random.Random(7)
        handles = [f"{PREFIX}/rp-{n}" for n in range(HANDLES)]
        current: dict[str, str | None] = dict.fromkeys(handles)
        async with aiohttp.ClientSession() as session:
            for round_ in range(ROUNDS):
                handle = rng.choice(handles)
                writer = rng.choice(nodes)
                # Every node's caches hold the record as it is.
                await asyncio.gather(*(read(session, n, handle) for n in nodes))
                url = f"{writer.url}/api/handles/{handle}"
                if current[handle] is not None and rng.random() < 0.25:
                    async with session.delete(url, headers=AUTH) as r:
                        assert r.status == 200, await r.text()
                    current[handle] = None
                else:
                    new = f"https://example.com/{round_}"
                    async with session.put(url, data=body(new), headers=AUTH) as r:
                        assert r.status in (200, 201), await r.text()
                    current[handle] = new
                seen = await asyncio.gather(*(read(session, n, handle) for n in nodes))
                want = (404, None) if current[handle] is None else (200, current[handle])
                assert all(s == want for s in seen), f"round {round_}: {seen} != {want}"
    finally:
        for node in nodes:
            node.stop()
        if backend == "postgresql":
            await pg_service.drop_schema(tmp_path)
    for node in nodes:
        assert "Traceback" not in node.log(), node.log()
