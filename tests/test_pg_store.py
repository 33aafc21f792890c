"""PostgresStore specifics: migrations, the partitioned layout, error mapping, bulk paths.

The Store contract itself is checked on this backend by test_store_conformance.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pg_service
import pytest

from protocol.codes import RC
from protocol.errors import HandleAlreadyExists
from protocol.values import HandleValue
from registry.store import IncompatibleSchema, PutItem, StoreBusy, StoreClosed, StoreError

asyncpg = pytest.importorskip("asyncpg")

from registry import pg_schema  # noqa: E402
from registry.pg_store import PostgresStore, _map_error  # noqa: E402


def url(index: int, text: str) -> HandleValue:
    return HandleValue(index, "URL", text.encode(), timestamp=1_700_000_000)


@pytest.fixture
async def schema_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """A private schema (named after tmp_path), dropped after the test."""
    await pg_service.require_postgres()
    yield tmp_path
    await pg_service.drop_schema(tmp_path)


async def _admin(directory: Path):  # a plain connection inside the test's schema
    return await asyncpg.connect(pg_service.url_for(directory))


# -- migrations -------------------------------------------------------------------------


async def test_first_open_creates_the_schema_then_reopen_applies_nothing(schema_dir: Path):
    async with PostgresStore(pg_service.url_for(schema_dir), max_size=2) as store:
        assert store.applied_migrations == list(range(1, pg_schema.SCHEMA_VERSION + 1))
    async with PostgresStore(pg_service.url_for(schema_dir), max_size=2) as store:
        assert store.applied_migrations == []
    conn = await _admin(schema_dir)
    try:
        rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, pg_schema.SCHEMA_VERSION + 1))
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits JOIN pg_class c ON c.oid = inhparent"
            " WHERE c.relname = 'handles' AND c.relnamespace = current_schema()::regnamespace"
        )
        assert partitions == pg_schema.PARTITIONS == 64
    finally:
        await conn.close()


async def test_a_v1_store_is_migrated_in_place_keeping_its_handles(schema_dir: Path):
    async with PostgresStore(pg_service.url_for(schema_dir), partitions=8) as store:
        await store.put("88.1/A", (url(1, "a"),))
    conn = await _admin(schema_dir)
    try:  # back to what a version-1 idnode left behind
        await conn.execute("DROP TABLE applications, stats_reports, stats_counts;"
                           " DELETE FROM schema_version WHERE version > 1")
    finally:
        await conn.close()
    async with PostgresStore(pg_service.url_for(schema_dir)) as store:
        assert store.applied_migrations == [2]
        assert await store.get("88.1/A") == (url(1, "a"),)
        assert await store.list_applications() == []


async def test_nodes_starting_together_migrate_once(schema_dir: Path):
    stores = [PostgresStore(pg_service.url_for(schema_dir), max_size=1, partitions=8)
              for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        applied = sorted(s.applied_migrations for s in stores)
        assert applied == [[], [], [], [], list(range(1, pg_schema.SCHEMA_VERSION + 1))]
        await stores[0].put("88.1/A", (url(1, "a"),))
        assert await stores[4].get("88.1/A") == (url(1, "a"),)  # one database, shared
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_newer_schema_is_refused_and_left_alone(schema_dir: Path):
    async with PostgresStore(pg_service.url_for(schema_dir), partitions=8) as store:
        await store.put("88.1/A", (url(1, "a"),))
    conn = await _admin(schema_dir)
    try:
        await conn.execute("INSERT INTO schema_version(version, description) VALUES (99, 'x')")
    finally:
        await conn.close()
    store = PostgresStore(pg_service.url_for(schema_dir))
    with pytest.raises(IncompatibleSchema, match="99 is newer"):
        await store.open()
    with pytest.raises(StoreClosed):
        await store.get("88.1/A")


async def test_foreign_tables_are_refused(schema_dir: Path):
    conn = await asyncpg.connect(pg_service.POSTGRES_URL)
    try:
        name = pg_service.schema_for(schema_dir)
        await conn.execute(f'CREATE SCHEMA "{name}"; CREATE TABLE "{name}".handles(x int)')
    finally:
        await conn.close()
    with pytest.raises(IncompatibleSchema, match="no schema_version"):
        await PostgresStore(pg_service.url_for(schema_dir)).open()


# -- layout --------------------------------------------------------------------------------


async def test_get_probes_one_partition_and_listing_is_an_index_range(schema_dir: Path):
    async with PostgresStore(pg_service.url_for(schema_dir)) as store:
        await store.put_many([PutItem(f"88.1/{i}", (url(1, str(i)),)) for i in range(200)])
    conn = await _admin(schema_dir)
    try:
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT record FROM handles WHERE key = '88.1/7'"))
        assert plan.count("Index Scan") == 1 and "Append" not in plan, plan
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT key FROM handles WHERE key >= '88.1/' AND key < '88.10'"
            " ORDER BY key LIMIT 10"))
        assert "Merge Append" in plan and "Sort" not in plan.replace("Sort Key", ""), plan
    finally:
        await conn.close()


# -- errors -------------------------------------------------------------------------------


async def test_unreachable_server_is_store_busy_without_the_password():
    store = PostgresStore("postgresql://idnode:hunter2@127.0.0.1:1/test")
    with pytest.raises(StoreBusy) as info:
        await store.open()
    assert info.value.rc == RC.SERVER_TOO_BUSY
    assert "hunter2" not in info.value.message and "***" in info.value.message


async def _terminate_backends(application_name: str) -> int:
    conn = await asyncpg.connect(pg_service.POSTGRES_URL)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1", application_name)
    finally:
        await conn.close()
    await asyncio.sleep(0.2)  # let the terminations reach the client
    return int(killed)


async def test_lost_connections_writes_fail_busy_reads_retry_then_recover(schema_dir: Path):
    name = f"idnode-test-{uuid.uuid4().hex[:12]}"
    store = PostgresStore(pg_service.url_for(schema_dir), min_size=3, max_size=3,
                          partitions=8, server_settings={"application_name": name})
    async with store:
        await store.put("88.1/A", (url(1, "a"),))
        assert await _terminate_backends(name) == 3
        # A write is not retried (it might have committed): at most one
        # StoreBusy per dead connection, then writes work again.
        outcomes: list[object] = []
        for i in range(5):
            try:
                outcomes.append(await store.put("88.1/A", (url(1, str(i)),)))
            except StoreBusy as exc:
                assert exc.rc == RC.SERVER_TOO_BUSY
                outcomes.append("busy")
        assert outcomes.count("busy") <= 3 and outcomes[-1] is False, outcomes
        # Reads go on at once: each dead connection is replaced and the read retried.
        assert await _terminate_backends(name) >= 1
        assert await store.get("88.1/A") == (url(1, "4"),)
        assert await store.count_handles() == 1


def test_error_mapping():
    assert isinstance(_map_error(asyncpg.exceptions.DeadlockDetectedError("x")), StoreBusy)
    assert isinstance(_map_error(asyncpg.exceptions.TooManyConnectionsError("x")), StoreBusy)
    assert isinstance(_map_error(asyncpg.exceptions.AdminShutdownError("x")), StoreBusy)
    assert isinstance(_map_error(ConnectionResetError()), StoreBusy)
    assert isinstance(_map_error(asyncpg.exceptions.UniqueViolationError("x")),
                      HandleAlreadyExists)
    full = _map_error(asyncpg.exceptions.DiskFullError("x"))
    assert type(full) is StoreError and full.rc == RC.ERROR and "disk full" in full.message
    other = _map_error(asyncpg.exceptions.UndefinedTableError("x"))
    assert type(other) is StoreError
    assert isinstance(_map_error(asyncpg.exceptions.InterfaceError("x"), closed=True),
                      StoreClosed)


# -- put_many paths ------------------------------------------------------------------------


async def test_bulk_copy_path_with_existing_keys_and_duplicates(schema_dir: Path):
    async with PostgresStore(pg_service.url_for(schema_dir), partitions=8) as store:
        old = [PutItem(f"88.1/{i:05d}", (url(1, "old"),)) for i in range(0, 3000, 2)]
        await store.put_many(old)
        items = [PutItem(f"88.1/{i:05d}", (url(1, "new"),), overwrite=i % 4 != 0)
                 for i in range(3000)]
        items.append(PutItem("88.1/00001", (url(1, "again"),), overwrite=False))
        items.append(PutItem("88.1/00003", (url(1, "last"),)))
        results = await store.put_many(items)
        for i in range(3000):
            if i % 2:  # new key: created
                assert results[i] is True, i
            elif i % 4:  # existed, overwrite: replaced
                assert results[i] is False, i
            else:  # existed, no overwrite: refused
                assert isinstance(results[i], HandleAlreadyExists), i
        assert isinstance(results[3000], HandleAlreadyExists)
        assert results[3001] is False
        assert await store.get("88.1/00000") == (url(1, "old"),)
        assert await store.get("88.1/00002") == (url(1, "new"),)
        assert await store.get("88.1/00001") == (url(1, "new"),)
        assert await store.get("88.1/00003") == (url(1, "last"),)
        assert await store.count_handles("88.1") == 3000


async def test_concurrent_bulk_writers_on_overlapping_keys(schema_dir: Path):
    """Two stores (two nodes) writing the same keys at once: no deadlock, every key once."""
    url_ = pg_service.url_for(schema_dir)
    async with PostgresStore(url_, partitions=8) as a, PostgresStore(url_) as b:
        keys = [f"88.1/{i:05d}" for i in range(4000)]
        ra, rb = await asyncio.gather(
            a.put_many([PutItem(k, (url(1, "a"),), overwrite=False) for k in keys]),
            b.put_many([PutItem(k, (url(1, "b"),), overwrite=False) for k in reversed(keys)]),
        )
        rb.reverse()
        for k, x, y in zip(keys, ra, rb, strict=True):
            assert (x is True) != (y is True), k  # exactly one created it
            assert isinstance(x if y is True else y, HandleAlreadyExists)
        assert await a.count_handles() == 4000
