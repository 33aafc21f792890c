"""What the conformance suite cannot say about the LMDB backend: how it picks a
location, its schema checks, bulk loads in and out of order, a full map, and
the counter of unannounced writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lmdb
import pytest

from protocol.record_msgpack import encode_record
from protocol.values import HandleValue
from registry import lmdb_map
from registry.backends import open_store_at
from registry.lmdb_store import LMDBStore
from registry.sqlite_store import SQLiteStore
from registry.store import Account, IncompatibleSchema, PutItem, StoreError


def record(n: int) -> bytes:
    return encode_record([HandleValue(1, "URL", b"https://example.com/%d" % n)])


def test_a_path_ending_lmdb_or_holding_an_environment_opens_lmdb(tmp_path: Path):
    assert isinstance(open_store_at(str(tmp_path / "a.lmdb")), LMDBStore)
    assert isinstance(open_store_at(str(tmp_path / "a.db")), SQLiteStore)
    lmdb.open(str(tmp_path / "plain")).close()  # a directory with data.mdb
    store = open_store_at(str(tmp_path / "plain"), max_pending=7, mmap_mb=64,
                          read_snapshot_seconds=0.1)  # SQLite's tuning is ignored
    assert isinstance(store, LMDBStore)
    assert store._max_pending == 7


async def test_unannounced_writes_count_transactions_of_tools_only(tmp_path: Path):
    path = tmp_path / "s.lmdb"
    async with LMDBStore(path) as tool:  # idnode import, prefix add, ...
        assert await tool.unannounced_writes() == 0
        await tool.put("88.1/A", [HandleValue(1, "URL", b"a")])
        await tool.home_prefix("88.1")
        assert await tool.unannounced_writes() == 2
    async with LMDBStore(path, announces_writes=True) as node:
        await node.put("88.1/B", [HandleValue(1, "URL", b"b")])
        assert await node.unannounced_writes() == 2


async def test_refuses_a_newer_schema_and_an_environment_it_did_not_make(tmp_path: Path):
    path = tmp_path / "s.lmdb"
    async with LMDBStore(path):
        pass
    env = lmdb.open(str(path), max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", (99).to_bytes(8, "big"), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(IncompatibleSchema, match="newer"):
        await LMDBStore(path).open()

    other = tmp_path / "other"
    env = lmdb.open(str(other), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v", db=env.open_db(b"something", txn=txn))
    env.close()
    with pytest.raises(IncompatibleSchema, match="not an idnode store"):
        await LMDBStore(other).open()


async def test_opening_an_environment_twice_in_one_process_is_a_clear_error(tmp_path: Path):
    async with LMDBStore(tmp_path / "s.lmdb"):
        with pytest.raises(StoreError, match="already open"):
            await LMDBStore(tmp_path / "s.lmdb").open()


async def test_bulk_loads_in_order_past_the_end_and_out_of_order_store_the_same(
    tmp_path: Path,
):
    async with LMDBStore(tmp_path / "s.lmdb") as store:
        # Past the end of the store, sorted: the append path.
        await store.load_records([(f"88.1/{n:05d}", record(n)) for n in range(0, 2000, 2)])
        # Before the last key, and unsorted with a repeated key (the last wins).
        await store.load_records(
            [(f"88.1/{n:05d}", record(n)) for n in range(1999, 0, -2)]
            + [("88.1/00000", record(7))]
        )
        assert await store.count_handles("88.1") == 2000
        keys = [key async for key, _ in store.iter_records("88.1")]
        assert keys == [f"88.1/{n:05d}" for n in range(2000)]
        assert await store.get("88.1/01999") == (HandleValue(1, "URL", b"https://example.com/1999"),)
        assert await store.get("88.1/00000") == (HandleValue(1, "URL", b"https://example.com/7"),)
        assert await store.list_handles("88.1", offset=1998) == ["88.1/01998", "88.1/01999"]


async def test_a_full_map_fails_the_write_and_keeps_what_was_stored(tmp_path: Path):
    async with LMDBStore(tmp_path / "s.lmdb", map_size=1 << 20) as store:
        await store.put("88.1/kept", [HandleValue(1, "URL", b"kept")])
        big = [PutItem(f"88.1/{n:06d}", [HandleValue(1, "URL", b"x" * 200)])
               for n in range(20_000)]  # ~5 MB: more than the 1 MiB map
        with pytest.raises(StoreError, match="full"):
            await store.put_many(big)
        assert await store.get("88.1/kept") == (HandleValue(1, "URL", b"kept"),)
        assert await store.count_handles() == 1  # the failed chunk left nothing
        await store.put("88.1/after", [HandleValue(1, "URL", b"after")])  # still writable
    async with LMDBStore(tmp_path / "s.lmdb", map_size=1 << 20) as store:
        assert await store.list_handles("88.1") == ["88.1/after", "88.1/kept"]


async def test_a_key_too_long_for_lmdb_fails_alone(tmp_path: Path):
    async with LMDBStore(tmp_path / "s.lmdb") as store:
        too_long = Account("u" * 600, "88.1", "user", b"hash")  # LMDB keys end at 511 bytes
        results = await asyncio.gather(
            store.put_account(too_long), store.put("88.1/A", [HandleValue(1, "URL", b"a")]),
            return_exceptions=True,
        )
        assert isinstance(results[0], StoreError) and "too large" in results[0].message
        assert results[1] is True
        assert await store.get_account("u" * 600) is None


def mapped_bytes(data_file: Path) -> int:
    """Rss of this process's mapping of ``data_file`` (from /proc/self/smaps)."""
    wanted, inside, total = str(data_file.resolve()), False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(maxsplit=1)[0] and not line.endswith(" kB"):
            inside = line.endswith(wanted)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_populate_maps_every_page_of_the_data_file(tmp_path: Path):
    env = lmdb.open(str(tmp_path / "e"), map_size=64 << 20)
    with env.begin(write=True) as txn:
        for n in range(20_000):
            txn.put(b"%08d" % n, b"x" * 400)
    data = tmp_path / "e" / "data.mdb"
    assert lmdb_map.mapping_of(data) is not None
    assert lmdb_map.populate(data)
    assert mapped_bytes(data) >= data.stat().st_size
    env.close()
    assert lmdb_map.mapping_of(data) is None
    assert not lmdb_map.populate(data)  # nothing mapped: nothing to do


async def test_a_store_opened_to_populate_serves_while_it_maps(tmp_path: Path):
    async with LMDBStore(tmp_path / "s.lmdb") as store:
        await store.load_records([(f"88.1/{n:05d}", record(n)) for n in range(5000)])
    assert lmdb_map.worth_populating(tmp_path / "s.lmdb" / "data.mdb")
    async with LMDBStore(tmp_path / "s.lmdb", populate=True) as store:
        assert await store.get("88.1/04999") == (
            HandleValue(1, "URL", b"https://example.com/4999"),)
        for _ in range(200):  # the background thread maps the file
            if mapped_bytes(tmp_path / "s.lmdb" / "data.mdb") >= (
                    tmp_path / "s.lmdb" / "data.mdb").stat().st_size:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the map was not populated")
