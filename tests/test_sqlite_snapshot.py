"""Lookups from a held SQLite read snapshot (registry.sqlite_snapshot).

A store's own writes show at once; another process's show after
``refresh_reads`` or once the snapshot ages out, and an aged-out snapshot
no longer holds a read transaction open (it would pin the WAL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from protocol.values import HandleValue
from registry.sqlite_store import SQLiteStore

KEY = "88.100.1/SNAP"


def url(data: bytes) -> list[HandleValue]:
    return [HandleValue(1, "URL", data)]


async def stored_data(store: SQLiteStore) -> bytes | None:
    record = await store.get(KEY)
    return None if record is None else record[0].data


async def inline_data(store: SQLiteStore) -> bytes | None:
    record = store.read_now(KEY)
    return None if record is None else next(iter(record)).data


async def test_a_store_reads_its_own_writes_at_once(tmp_path: Path):
    async with SQLiteStore(tmp_path / "s.db", read_snapshot_seconds=3600) as store:
        assert await stored_data(store) is None  # a snapshot is held from here on
        for n in range(3):
            await store.put(KEY, url(b"v%d" % n))
            assert await stored_data(store) == b"v%d" % n
            assert await inline_data(store) == b"v%d" % n
        await store.delete(KEY)
        assert await stored_data(store) is None


async def test_another_writer_shows_after_refresh_reads(tmp_path: Path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path, read_snapshot_seconds=3600) as node, SQLiteStore(path) as other:
        await node.put(KEY, url(b"old"))
        assert await inline_data(node) == b"old"
        await other.put(KEY, url(b"new"))
        # Still the snapshot: what makes the node's coherence hooks necessary.
        assert await inline_data(node) == b"old"
        node.refresh_reads()
        assert await inline_data(node) == b"new"
        assert await stored_data(node) == b"new"


async def test_a_snapshot_ages_out_and_releases_its_transaction(tmp_path: Path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path, read_snapshot_seconds=0.05) as node, SQLiteStore(path) as other:
        await node.put(KEY, url(b"old"))
        assert await inline_data(node) == b"old"
        assert node._lookups is not None and node._lookups.conn.in_transaction
        await other.put(KEY, url(b"new"))
        await asyncio.sleep(0.3)
        assert not node._lookups.conn.in_transaction  # the WAL is not pinned while idle
        assert await inline_data(node) == b"new"


async def test_without_a_snapshot_every_lookup_sees_the_latest_commit(tmp_path: Path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as node, SQLiteStore(path) as other:
        await node.put(KEY, url(b"old"))
        assert await inline_data(node) == b"old"
        await other.put(KEY, url(b"new"))
        assert await inline_data(node) == b"new"
        assert node._lookups is not None and not node._lookups.conn.in_transaction


async def test_an_aged_out_snapshot_lets_the_wal_be_truncated(tmp_path: Path):
    """A held snapshot needs the WAL frames it began on; once it ages out, a
    checkpoint can empty the WAL even if the node reads nothing more."""
    path = tmp_path / "s.db"
    async with SQLiteStore(path, read_snapshot_seconds=1.0) as node, SQLiteStore(path) as other:
        await node.put(KEY, url(b"0"))
        assert await inline_data(node) == b"0"
        for n in range(1, 20):
            await other.put(KEY, url(b"%d" % n))
        probe = sqlite3.connect(path, timeout=0)  # no busy wait: the loop must run
        try:
            checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"
            assert probe.execute(checkpoint).fetchone()[0] == 1  # busy: the snapshot
            await asyncio.sleep(1.5)
            assert probe.execute(checkpoint).fetchone()[0] == 0
        finally:
            probe.close()


def test_a_negative_snapshot_age_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="read_snapshot_seconds"):
        SQLiteStore(tmp_path / "s.db", read_snapshot_seconds=-1)


def test_a_node_holds_snapshots_unless_it_shares_a_redis_tier(tmp_path: Path):
    """With Redis a node may miss another node's broadcast (it then distrusts
    its cache and reads the store each time): those reads must be fresh."""
    from resolver.config import NodeConfig
    from resolver.node import open_store

    plain = open_store(NodeConfig(store=str(tmp_path / "s.db")))
    shared = open_store(NodeConfig(store=str(tmp_path / "s.db"), redis="redis://127.0.0.1:1/0"))
    assert isinstance(plain, SQLiteStore) and isinstance(shared, SQLiteStore)
    assert plain._read_snapshot_seconds == NodeConfig().sqlite_read_snapshot > 0
    assert shared._read_snapshot_seconds == 0


def test_serve_takes_a_snapshot_age_and_refuses_a_negative_one():
    from resolver.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--sqlite-snapshot", "0"]).sqlite_snapshot == 0
    assert parser.parse_args(["serve", "--sqlite-snapshot", "0.5"]).sqlite_snapshot == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--sqlite-snapshot", "-1"])
