"""/readyz: ready while the store answers, at a cost that does not grow with it,
and not while an LMDB store is still mapping its pages."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest
from live import init_store

from registry import lmdb_store
from registry.lmdb_store import LMDBStore
from registry.sqlite_store import SQLiteStore
from registry.store import Store
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


@contextlib.asynccontextmanager
async def serving(path: Path, store: Store) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A node on ``store`` (at ``path``): a client session and the node's base URL."""
    config = NodeConfig(store=str(path), port=0, handle_port=0, shed_lag=0)
    running = RunningNode(config, Node(config, store=store))
    await running.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{running.port}"
    finally:
        await running.stop()


async def test_readyz_asks_the_store_without_scanning_it(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await init_store(path)
    store = _NoScans(path)
    async with serving(path, store) as (session, url):
        async with session.get(f"{url}/readyz") as r:
            assert r.status == 200 and await r.json() == {"status": "ready"}
        await store.close()  # the store stops answering
        async with session.get(f"{url}/readyz") as r:
            assert r.status == 503 and await r.json() == {"status": "unavailable"}


async def test_readyz_says_warming_until_an_lmdb_map_is_populated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.lmdb"
    await init_store(path)
    mapped = threading.Event()  # populating lasts until the test lets it end
    monkeypatch.setattr(lmdb_store, "_populate_map", lambda data_file: mapped.wait(10))
    try:
        async with serving(path, LMDBStore(path, populate=True)) as (session, url):
            async with session.get(f"{url}/readyz") as r:
                assert r.status == 503 and await r.json() == {"status": "warming"}
            async with session.get(f"{url}/healthz") as r:
                assert r.status == 200  # alive all along: only kept out of the rotation
            mapped.set()
            for _ in range(100):
                async with session.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        assert await r.json() == {"status": "ready"}
                        break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("still warming after the map was populated")
    finally:
        mapped.set()
