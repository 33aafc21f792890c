"""/readyz: ready while the store answers, at a cost that does not grow with it."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import aiohttp
from live import init_store

from registry.sqlite_store import SQLiteStore
from resolver.config import NodeConfig
from resolver.node import Node
from resolver.server import RunningNode


class _NoScans(SQLiteStore):
    """The real store, but its scans fail: readiness must not walk the handles
    (a count of a prefix's handles reads its whole index)."""

    async def count_handles(self, prefix: str | None = None) -> NoReturn:
        raise AssertionError("/readyz scanned the store")

    async def list_handles(self, *args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("/readyz scanned the store")


async def test_readyz_asks_the_store_without_scanning_it(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await init_store(path)
    store = _NoScans(path)
    config = NodeConfig(store=str(path), port=0, handle_port=0, shed_lag=0)
    running = RunningNode(config, Node(config, store=store))
    await running.start()
    try:
        async with aiohttp.ClientSession() as session:
            ready = f"http://127.0.0.1:{running.port}/readyz"
            async with session.get(ready) as r:
                assert r.status == 200 and await r.json() == {"status": "ready"}
            await store.close()  # the store stops answering
            async with session.get(ready) as r:
                assert r.status == 503 and await r.json() == {"status": "unavailable"}
    finally:
        await running.stop()
