"""SQLiteStore specifics: acknowledged writes survive kill -9, group commit,
schema versioning, error mapping, and reads that never wait for writes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from protocol.codes import RC
from protocol.errors import HandleAlreadyExists
from protocol.values import HandleValue
from registry.sqlite_store import SQLiteStore
from registry.store import IncompatibleSchema, PutItem, StoreBusy, StoreError

REPO = Path(__file__).resolve().parents[1]

# The child writes with many concurrent tasks through every write path and
# prints each key once its write has returned, i.e. been acknowledged.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from protocol.values import HandleValue
    from registry.sqlite_store import SQLiteStore
    from registry.store import PutItem

    def record(key):
        return (HandleValue(1, "URL", ("https://e.com/" + key).encode() * 3, timestamp=7),
                HandleValue(100, "HS_ADMIN", key.encode()))

    def ack(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    async def main(path, synchronous):
        store = SQLiteStore(path, synchronous=synchronous)
        await store.open()

        async def putter(w):
            for i in range(10**9):
                key = f"88.1/P{w}-{i}"
                assert await store.put(key, record(key)) is True
                ack(key)

        async def batcher(w):
            for i in range(10**9):
                keys = [f"88.1/B{w}-{i}-{j}" for j in range(50)]
                results = await store.put_many([PutItem(k, record(k)) for k in keys])
                assert results == [True] * 50, results
                for k in keys:
                    ack(k)

        async def adder(w):  # read-modify-write inside the writer transaction
            key = f"88.1/A{w}"
            await store.create(key, ())
            for i in range(1, 10**9):
                await store.add_values(key, [HandleValue(i, "URL", b"%d" % i)])
                ack(f"{key}#{i}")

        await asyncio.gather(
            *(putter(w) for w in range(40)),
            *(batcher(w) for w in range(4)),
            *(adder(w) for w in range(4)),
        )

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def record(key: str) -> tuple[HandleValue, ...]:
    return (
        HandleValue(1, "URL", ("https://e.com/" + key).encode() * 3, timestamp=7),
        HandleValue(100, "HS_ADMIN", key.encode()),
    )


@pytest.mark.slow
@pytest.mark.parametrize(("synchronous", "kill_after"), [("NORMAL", 3000), ("FULL", 1500)])
async def test_acknowledged_writes_survive_sigkill(
    tmp_path: Path, synchronous: str, kill_after: int
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "store.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(db),
        synchronous,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[str] = []
    try:
        async with asyncio.timeout(60):
            while len(acked) < kill_after:
                raw = await proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"child died: {(await proc.stderr.read()).decode()}")
                acked.append(raw.decode().rstrip("\n"))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-run: writes are in flight
        rest = await proc.stdout.read()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Lines the child flushed before it died count too; a torn last line does not.
    acked += rest.decode().split("\n")[:-1]
    assert (tmp_path / "store.sqlite-wal").exists()  # no clean close happened

    added: dict[str, int] = {}
    async with SQLiteStore(db) as store:
        for line in acked:
            key, _, index = line.partition("#")
            if index:
                added[key] = max(added.get(key, 0), int(index))
            else:
                assert await store.get(key) == record(key), f"acknowledged {key} lost"
        assert added, "the read-modify-write path was not exercised"
        for key, last in added.items():
            values = await store.get(key)
            assert values is not None
            present = {v.index: v.data for v in values}
            for i in range(1, last + 1):
                assert present.get(i) == b"%d" % i, f"acknowledged {key}#{i} lost"
        assert await store.count_handles("88.1") >= len(acked) - sum(added.values())


# -- group commit --------------------------------------------------------------------


async def test_one_wakeup_per_batch_and_batches_are_bounded(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite", max_batch=10) as store:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        try:
            before = store.commits
            await asyncio.gather(*(store.put(f"88.1/{i}", ()) for i in range(200)))
            commits = store.commits - before
        finally:
            del loop.call_soon_threadsafe  # type: ignore[method-assign]
        assert commits >= 200 // 10  # no batch above max_batch
        assert wakeups == commits  # every caller of a batch resolved by one call


async def test_backpressure_bounds_the_queue(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite", max_pending=3) as store:
        results = await asyncio.gather(*(store.put(f"88.1/{i}", ()) for i in range(100)))
        assert results == [True] * 100
        assert store.commits >= 100 // 3
        assert await store.count_handles() == 100


# -- concurrency with other connections ------------------------------------------------


async def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    async with SQLiteStore(path, busy_timeout=0.3) as store:
        await store.put("88.1/A", record("88.1/A"))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            other.execute("DELETE FROM handles")
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await store.get("88.1/A") == record("88.1/A")  # last committed state
            assert await store.count_handles() == 1
            assert loop.time() - start < 0.2
            with pytest.raises(StoreBusy) as info:  # our writer gave up after busy_timeout
                await store.put("88.1/B", ())
            assert info.value.rc == RC.SERVER_TOO_BUSY
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await store.put("88.1/B", ()) is True
        assert await store.get("88.1/B") == ()


# -- schema ------------------------------------------------------------------------------


async def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    async with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (4,)
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'handles'").fetchone()
        assert ddl.endswith("WITHOUT ROWID")  # one B-tree per lookup (see the store)
    finally:
        conn.close()


async def test_a_store_with_the_earlier_rowid_table_reads_and_writes_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rowid.sqlite"
    async with SQLiteStore(path) as store:
        await store.put("88.1/KEEP", (HandleValue(1, "URL", b"k"),))
    conn = sqlite3.connect(path, isolation_level=None)  # as stores made before 12-07 are
    conn.execute("ALTER TABLE handles RENAME TO new_layout")
    conn.execute("CREATE TABLE handles(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
                 " record BLOB NOT NULL)")
    conn.execute("INSERT INTO handles(key, record) SELECT key, record FROM new_layout")
    conn.execute("DROP TABLE new_layout")
    conn.close()
    async with SQLiteStore(path) as store:
        assert await store.get("88.1/KEEP") == (HandleValue(1, "URL", b"k"),)
        assert store.read_now("88.1/KEEP") == (HandleValue(1, "URL", b"k"),)
        await store.put_many([PutItem(f"88.1/{i:04d}", ()) for i in range(600)])
        assert await store.put("88.1/KEEP", ()) is False  # replaced, not added
        assert await store.count_handles("88.1") == 601
        assert await store.list_handles("88.1", offset=600) == ["88.1/KEEP"]
        await store.delete("88.1/0000")
        keys = [key async for key, _ in store.iter_records("88.1")]
        assert keys[:2] == ["88.1/0001", "88.1/0002"] and len(keys) == 600


async def test_migrates_a_v1_store_in_place(tmp_path: Path) -> None:
    """A store written by the v1 schema (no SNMS tables) opens, keeps its data, becomes v3."""
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for ddl in (
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        "CREATE TABLE handles(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
        " record BLOB NOT NULL)",
        "CREATE TABLE prefixes(prefix TEXT PRIMARY KEY) WITHOUT ROWID",
    ):
        conn.execute(ddl)
    conn.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    conn.execute("INSERT INTO prefixes VALUES ('88.1')")
    conn.close()
    async with SQLiteStore(path) as store:
        await store.put("88.1/A", (HandleValue(1, "URL", b"x"),))
        assert await store.homed_prefixes() == ["88.1"]
        assert await store.put_template("88.1", "1.0", "{}") is True
        assert await store.get_template("88.1", "1.0") == "{}"
    async with SQLiteStore(path) as store:  # reopening a migrated store is a no-op
        assert await store.get_template("88.1", "1.0") == "{}"
        assert (await store.get("88.1/A")) is not None
        assert await store.list_applications() == []  # v3 tables
        assert await store.stats_counts() == []
        assert await store.add_usage("c", 1) == 1  # v4 table
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (4,)
    finally:
        conn.close()


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    async with SQLiteStore(path) as store:
        await store.put("88.1/A", ())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(IncompatibleSchema, match="schema version 99, newer"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.get("88.1/A")


async def test_refuses_a_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers(id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(IncompatibleSchema, match="not an idnode store"):
        await SQLiteStore(path).open()


async def test_corrupt_record_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    async with SQLiteStore(path) as store:
        await store.put("88.1/BAD", ())
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("UPDATE handles SET record = x'c1c1' WHERE key = '88.1/BAD'")
        conn.close()
        with pytest.raises(StoreError, match="corrupt") as info:
            await store.get("88.1/BAD")
        assert info.value.rc == RC.ERROR  # our fault, not the client's protocol error
        results = await asyncio.gather(
            store.add_values("88.1/BAD", [HandleValue(1, "URL")]),
            store.put("88.1/GOOD", ()),
            return_exceptions=True,
        )
        assert isinstance(results[0], StoreError)
        assert results[1] is True
        with pytest.raises(StoreError, match="corrupt"):
            _ = [item async for item in store.iter_records()]


async def test_put_many_bulk_path_equals_single_puts(tmp_path: Path) -> None:
    # The executemany/multi-row path must agree with put() item by item,
    # including across its 250-row statements and chunk boundaries.
    async with SQLiteStore(tmp_path / "s.sqlite", bulk_chunk=700) as store:
        await store.put_many([PutItem(f"88.1/{i:05d}", ()) for i in range(0, 3000, 3)])
        items = [
            PutItem(f"88.1/{i:05d}", record(str(i)), overwrite=i % 2 == 0) for i in range(3000)
        ]
        results = await store.put_many(items)
        for i, result in enumerate(results):
            existed = i % 3 == 0
            if not existed:
                assert result is True
            elif i % 2 == 0:
                assert result is False
            else:
                assert isinstance(result, HandleAlreadyExists)
            expected = () if existed and i % 2 else record(str(i))
            assert await store.get(f"88.1/{i:05d}") == expected


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        SQLiteStore("x.sqlite", synchronous="OFF")
    with pytest.raises(ValueError):
        SQLiteStore(":memory:")
    with pytest.raises(ValueError):
        SQLiteStore("x.sqlite", max_batch=0)


async def test_open_twice_is_refused(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(StoreError):
            await store.open()


async def test_lookup_cache_is_the_lookup_connections_own(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite", cache_mb=8, lookup_cache_mb=40) as store:
        assert store._lookups is not None
        assert store._lookups.conn.execute("PRAGMA cache_size").fetchone() == (-40 * 1024,)
        writer = store._connect(query_only=False)  # as the writer and scan threads are
        try:
            assert writer.execute("PRAGMA cache_size").fetchone() == (-8 * 1024,)
        finally:
            writer.close()


def test_serve_takes_a_sqlite_cache_size() -> None:
    from resolver.cli import build_parser

    args = build_parser().parse_args(["serve", "--sqlite-cache", "256M"])
    assert args.sqlite_cache == 256 << 20
    assert build_parser().parse_args(["serve"]).sqlite_cache == 64 << 20
