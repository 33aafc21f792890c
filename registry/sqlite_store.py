"""Embedded SQLite backend of the Store contract.

Threads and connections::

    event loop thread ── get(), read_now()            lookup connection (held snapshot)
                     ── accounts, prefixes, ...       read connection
                     ── list/count/iter_records() ──▶ scan threads, one connection each
                     ── every write ──▶ queue ──▶ writer thread, the only writer connection

The database runs in WAL mode, so readers never wait for the writer and see
the last committed state (point lookups: as of a snapshot that every commit
of this store, and ``refresh_reads``, renews; ``registry.sqlite_snapshot``).
Writes are group-committed: the writer takes whatever is queued (up to
``max_batch`` operations) into one transaction, each operation inside its own
SAVEPOINT so a failing one (HandleAlreadyExists, ...)
does not undo the others, COMMITs, and only then resolves the callers'
futures, with one ``call_soon_threadsafe`` per batch. Read-modify-write
operations (add_values, remove_values) run inside that transaction and are
therefore atomic. Measured (2-core VM): 200 concurrent put() calls commit in
one transaction, 2000 in three, and 100 tasks doing 50 puts each in 50; a
lone put takes ~220 us round trip, concurrent puts run at 15-30k/s.

Durability (``synchronous``): with ``NORMAL`` a COMMIT has written the WAL
frames to the OS before it returns, so an acknowledged write survives
``kill -9`` of this process but not a power loss or kernel crash. ``FULL``
also fsyncs the WAL on every commit, so it survives power loss; group commit
pays that fsync (~0.3 ms here) once per batch rather than once per write, so
a lone put goes from ~220 to ~370 us while concurrent throughput is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from protocol.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
)
from protocol.record_msgpack import encode_record
from protocol.values import HandleValue
from registry import sqlite_apps
from registry.embedded_store import EmbeddedStore, decode_stored
from registry.record_edits import merge_values, without_indexes
from registry.sqlite_snapshot import ReadSnapshot
from registry.store import (
    Account,
    Application,
    IncompatibleSchema,
    PutItem,
    PutResult,
    Record,
    StatsCount,
    StoreBusy,
    StoreClosed,
    StoreError,
)
from registry.write_queue import Outcome, WriteOp, WriteQueue, settle_one

SCHEMA_VERSION: Final = 4

# The handles table: one msgpack blob per handle (a record is always read and
# written whole), keyed by the handle in a WITHOUT ROWID table: one B-tree.
#
# Until 2026-12-07 it was a rowid table with the key in a UNIQUE index, chosen
# on 200k records (HS_ADMIN + URL + EMAIL, 153-byte record, 28-byte key, WAL,
# 64 MB cache, 10k rows per transaction; ranges are run-to-run spread):
#
#                           B/id  insert   insert   lookup   count   OFFSET
#                                 random   sorted            prefix  100k
#   rowid table, key in a    237  67-73k/s 140-197k 10.5 us  11 ms   5 ms
#     UNIQUE index
#   key PRIMARY KEY,         222  44-50k/s 195-259k  9.1 us  32 ms  16 ms
#     WITHOUT ROWID (now)
#
# What changed the choice is the store that must stay in memory: the 100M
# store of bench.gen_ids records was 23.8 GB as a rowid table, more than the
# page cache of a 24 GiB machine, so uniform lookups waited on the disk; as
# WITHOUT ROWID it is 21.5 GB (215 B/id), every lookup walks one B-tree, and
# imports run faster (1M: 160k vs 128k/s). Measured through the node, REST
# batch registration got faster too (51.7-52.5k vs 43.7-46.9k ids/s), so the
# slower random inserts of the table above do not show there; prefix
# count/OFFSET scans stay slower. Interior pages hold whole rows here: 5.3%
# of the file (1.1 GB at 100M), not ~1%. Stores made before keep their rowid
# table; every statement here reads and writes both, so nothing needs
# migrating (export and import into a new store converts one).
# Schema v2 adds the SNMS API's tables (accounts, metadata templates).
_V2_TABLES: Final = (
    "CREATE TABLE accounts(username TEXT PRIMARY KEY, prefix TEXT NOT NULL,"
    " role TEXT NOT NULL, secret_hash BLOB NOT NULL, generation INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE templates(prefix TEXT NOT NULL, version TEXT NOT NULL,"
    " document TEXT NOT NULL, PRIMARY KEY(prefix, version)) WITHOUT ROWID",
)
_SCHEMA: Final = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE handles("
    " key TEXT NOT NULL PRIMARY KEY,"  # BINARY collation: UTF-8 byte order
    " record BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE prefixes(prefix TEXT PRIMARY KEY) WITHOUT ROWID",
    *_V2_TABLES,
    *sqlite_apps.V3_TABLES,
    *sqlite_apps.V4_TABLES,
)

_GET: Final = "SELECT record FROM handles WHERE key = ?"
_INSERT: Final = "INSERT INTO handles(key, record) VALUES (?, ?) ON CONFLICT(key) DO NOTHING"
_UPDATE: Final = "UPDATE handles SET record = ? WHERE key = ?"
_UPSERT: Final = (
    "INSERT INTO handles(key, record) VALUES (?, ?)"
    " ON CONFLICT(key) DO UPDATE SET record = excluded.record"
)

# Bulk upserts go _MULTI_ROWS rows per statement: half the cost of executemany
# (1.6 vs 3.0 us/row measured) and one GIL release per statement instead of
# per row, so a busy event loop thread cannot stall the writer row by row.
# 500 parameters stay under SQLite's oldest limit of 999.
_MULTI_ROWS: Final = 250
_UPSERT_MULTI: Final = (
    "INSERT INTO handles(key, record) VALUES "
    + ",".join(["(?, ?)"] * _MULTI_ROWS)
    + " ON CONFLICT(key) DO UPDATE SET record = excluded.record"
)

# Nodes poll this counter to notice writes of processes that do not tell
# their caches (resolver.coherence): one row, bumped once per transaction.
_COUNT_UNANNOUNCED: Final = (
    "INSERT INTO meta(key, value) VALUES ('unannounced_writes', 1)"
    " ON CONFLICT(key) DO UPDATE SET value = value + 1"
)
_UNANNOUNCED: Final = "SELECT value FROM meta WHERE key = 'unannounced_writes'"

_SYNCHRONOUS: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
_SCAN_PAGE: Final = 500  # rows per iter_records page
_READER_CACHE_KIB: Final = 2048  # accounts, templates, prefixes: small and few
_IN_LIMIT: Final = 500  # keys per "key IN (...)" existence probe


def _map_sqlite_error(exc: sqlite3.Error) -> HandleError:
    """The one place sqlite3 errors become the protocol's errors."""
    name = getattr(exc, "sqlite_errorname", "")
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return HandleAlreadyExists(f"Handle already exists ({exc})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreBusy(f"Database is busy: {exc}")
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"Disk full: {exc}")
    return StoreError(f"Database error {name or type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _map_sqlite_error(exc) from exc


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Keys strictly under ``prefix/``: '0' is the character after '/'."""
    return prefix + "/", prefix + "0"


class _TransactionLost(Exception):
    """SQLite rolled back the whole transaction itself (I/O error, disk full...)."""

    def __init__(self, cause: sqlite3.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SQLiteStore(EmbeddedStore):
    """Store in one SQLite file (plus its -wal and -shm files).

    ``synchronous``: ``"NORMAL"`` (default) makes every acknowledged write
    survive a crash or ``kill -9`` of the process; ``"FULL"`` also survives a
    power loss or kernel crash, for one fsync per group commit (~0.3 ms here).
    A transaction holds at most ``max_batch`` operations or ``bulk_chunk``
    put_many items (put_many is split into chunks of that size);
    ``max_pending`` bounds queued operations, beyond which writers wait
    (backpressure) instead of growing the queue, or, with ``busy_when_full``
    (a serving node), fail at once with ``StoreBusy`` (RC 3) so the caller sheds
    load instead of waiting behind the queue. ``cache_mb`` and ``mmap_mb``
    are per connection (``lookup_cache_mb``, if given, for the one ``get``
    and ``read_now`` use); ``scan_threads`` run list/count/iter_records.
    ``read_snapshot_seconds``: if positive, ``get`` and ``read_now`` read from
    a snapshot held up to that long (``registry.sqlite_snapshot``): renewed
    after every commit of this store and by ``refresh_reads``, so writes of
    other processes show only after the caller was told of them.
    ``announces_writes``: the caller tells every cache of its writes itself
    (a node does, through ``resolver.coherence``); otherwise each write
    transaction also bumps the ``unannounced_writes`` counter that nodes poll.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_batch: int = 1000,
        bulk_chunk: int = 10_000,
        max_pending: int = 10_000,
        cache_mb: int = 64,
        lookup_cache_mb: int | None = None,
        mmap_mb: int = 0,
        busy_timeout: float = 5.0,
        scan_threads: int = 2,
        busy_when_full: bool = False,
        announces_writes: bool = False,
        read_snapshot_seconds: float = 0.0,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if scan_threads < 1:
            raise ValueError("scan_threads must be positive")
        if not read_snapshot_seconds >= 0:
            raise ValueError("read_snapshot_seconds must be 0 or more")
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SQLiteStore needs a file path (WAL does not work in memory)")
        super().__init__(path, max_batch=max_batch, bulk_chunk=bulk_chunk,
                         max_pending=max_pending, busy_when_full=busy_when_full)
        self.synchronous = synchronous
        self._cache_kib = cache_mb * 1024
        # The lookup connection's own: resolves read through it alone.
        self._lookup_cache_kib = (cache_mb if lookup_cache_mb is None else lookup_cache_mb) * 1024
        self._mmap_bytes = mmap_mb * 1024 * 1024
        self._busy_ms = int(busy_timeout * 1000)
        self._scan_threads = scan_threads
        self._announces_writes = announces_writes
        self._read_snapshot_seconds = read_snapshot_seconds

        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._reader: sqlite3.Connection | None = None
        self._lookups: ReadSnapshot | None = None
        self._scan_pool: ThreadPoolExecutor | None = None
        self._scan_local = threading.local()
        self._scan_conns: list[sqlite3.Connection] = []
        self._scan_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise StoreClosed(f"SQLiteStore({self.path}) cannot be opened twice")
        loop = asyncio.get_running_loop()
        writes = self._start_writes(loop)
        ready: asyncio.Future[None] = loop.create_future()
        self._writer_done = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main,
            args=(ready,),
            name=f"sqlite-writer:{self.path.name}",
            daemon=True,  # acknowledged writes are committed already; don't block exit
        )
        self._writer.start()
        try:
            await ready  # schema created or checked by the writer
            with _mapped_errors():
                # WAL readers are only ever busy during another process's
                # recovery; never block the event loop long for that.
                busy_ms = min(self._busy_ms, 100)
                self._reader = self._connect(query_only=True, busy_ms=busy_ms,
                                             cache_kib=_READER_CACHE_KIB)
                self._lookups = ReadSnapshot(
                    self._connect(query_only=True, busy_ms=busy_ms,
                                  cache_kib=self._lookup_cache_kib),
                    loop, self._read_snapshot_seconds,
                )
        except BaseException:
            self._state = "closing"
            writes.stop()
            await asyncio.shield(self._writer_done)
            self._state = "closed"
            raise
        self._scan_pool = ThreadPoolExecutor(
            max_workers=self._scan_threads, thread_name_prefix=f"sqlite-scan:{self.path.name}"
        )
        self._state = "open"

    async def close(self) -> None:
        """Finish every queued write, stop the writer, release the files."""
        if self._state != "open":
            return
        self._state = "closing"  # new reads and writes are refused from here on
        # Readers go first so the writer's connection is the last one: closing
        # it checkpoints and removes the WAL, in its thread, not on the loop.
        if self._scan_pool is not None:
            await asyncio.to_thread(self._scan_pool.shutdown, wait=True)
        for conn in self._scan_conns:
            conn.close()
        self._scan_conns.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lookups is not None:
            self._lookups.close()
            self._lookups = None
        assert self._writes is not None
        self._writes.stop()  # behind every write already queued
        assert self._writer_done is not None and self._writer is not None
        await asyncio.shield(self._writer_done)
        await asyncio.to_thread(self._writer.join)
        self._state = "closed"

    def _connect(
        self, *, query_only: bool, check_same_thread: bool = True, busy_ms: int | None = None,
        cache_kib: int | None = None,
    ) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,  # we issue BEGIN/COMMIT; reads are autocommit snapshots
            check_same_thread=check_same_thread,
            cached_statements=64,
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms if busy_ms is None else busy_ms}")
        conn.execute(f"PRAGMA cache_size = -{self._cache_kib if cache_kib is None else cache_kib}")
        # In WAL mode any commit empties the other connections' page caches,
        # so under writes the reader re-reads pages from the OS cache. mmap
        # would save those copies but measured no gain within noise (get
        # median 18-46 us either way) and turns I/O errors into SIGBUS: off
        # by default.
        if self._mmap_bytes:
            conn.execute(f"PRAGMA mmap_size = {self._mmap_bytes}")
        if query_only:
            conn.execute("PRAGMA query_only = 1")
        return conn

    # -- reads -----------------------------------------------------------------

    # get() runs on the event loop thread with its own read connection.
    # Measured on 200k records (2-core VM, spread of 4 runs): lookup + decode
    # inline has a median of 18-36 us, through run_in_executor to a thread
    # with its own connection 100-170 us; under a concurrent write load
    # (~600 commits/s) 25-46 us vs 270-550 us (p99 0.1-0.4 ms vs 1.3-3.5 ms);
    # 64 concurrent readers get 30-50k/s inline vs 6-11k/s with the hop. The
    # hop costs more than the work, so reads stay inline; the cost is that a
    # page missing from the OS cache blocks the loop for one disk read.
    # (get and read_now: EmbeddedStore.)
    def _read_blob(self, key: str) -> bytes | None:
        if self._state != "open":
            self._check_open()
        lookups = self._lookups
        assert lookups is not None
        try:  # not _mapped_errors(): a generator context manager costs ~1 us here
            if not lookups.current:
                lookups.begin()
            row = lookups.conn.execute(_GET, (key,)).fetchone()
        except sqlite3.Error as exc:
            lookups.expire()  # whatever state the transaction is in, start anew
            raise _map_sqlite_error(exc) from exc
        return None if row is None else row[0]  # type: ignore[no-any-return]

    def refresh_reads(self) -> None:
        if self._lookups is not None:
            self._lookups.expire()

    async def unannounced_writes(self) -> int | None:
        self._check_open()
        assert self._reader is not None
        with _mapped_errors():
            row = self._reader.execute(_UNANNOUNCED).fetchone()
        return 0 if row is None else int(row[0])

    async def homed_prefixes(self) -> list[str]:
        self._check_open()
        assert self._reader is not None
        with _mapped_errors():
            rows = self._reader.execute("SELECT prefix FROM prefixes ORDER BY prefix").fetchall()
        return [prefix for (prefix,) in rows]

    async def list_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        if limit == 0:
            self._check_open()
            return []
        lo, hi = _prefix_range(prefix)
        sql = "SELECT key FROM handles WHERE key >= ? AND key < ? ORDER BY key LIMIT ? OFFSET ?"
        rows = await self._scan(sql, (lo, hi, -1 if limit is None else limit, offset))
        return [key for (key,) in rows]

    async def count_handles(self, prefix: str | None = None) -> int:
        if prefix is None:
            rows = await self._scan("SELECT count(*) FROM handles", ())
        else:
            sql = "SELECT count(*) FROM handles WHERE key >= ? AND key < ?"
            rows = await self._scan(sql, _prefix_range(prefix))
        return int(rows[0][0])

    async def iter_records(self, prefix: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Pages of ``_SCAN_PAGE`` records by key, each page its own snapshot.

        No read transaction is held across pages, so a long export never pins
        the WAL; a record written meanwhile shows up iff its key is still ahead.
        """
        lo, hi = _prefix_range(prefix) if prefix is not None else ("", None)
        upper = "" if hi is None else " AND key < ?"
        page = f"SELECT key, record FROM handles WHERE key {{}} ?{upper} ORDER BY key LIMIT ?"
        tail = () if hi is None else (hi,)
        rows = await self._scan(page.format(">="), (lo, *tail, _SCAN_PAGE))
        while True:
            for key, blob in rows:
                yield key, decode_stored(key, blob)
            if len(rows) < _SCAN_PAGE:
                return
            rows = await self._scan(page.format(">"), (rows[-1][0], *tail, _SCAN_PAGE))

    async def _scan(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run a (possibly long) query on a scan thread, off the event loop."""
        self._check_open()
        assert self._loop is not None and self._scan_pool is not None
        return await self._loop.run_in_executor(self._scan_pool, self._scan_sync, sql, params)

    def _scan_sync(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        conn: sqlite3.Connection | None = getattr(self._scan_local, "conn", None)
        with _mapped_errors():
            if conn is None:
                conn = self._connect(query_only=True, check_same_thread=False)
                self._scan_local.conn = conn
                with self._scan_lock:
                    self._scan_conns.append(conn)
            return conn.execute(sql, params).fetchall()

    # -- writes: the caller's side ---------------------------------------------

    # Single writes encode on the caller's side, so a value that cannot be
    # stored fails before it is queued. put_many encodes in the writer
    # thread instead: a 10k-item chunk is ~30 ms of CPU, which must not run
    # on the event loop, and encoding on the loop while the writer runs SQL
    # was no faster (the two threads contend for the GIL; measured 80k/s vs
    # 90-110k/s for the same import).

    async def create(self, key: str, values: Sequence[HandleValue]) -> None:
        blob = encode_record(values)
        await self._write(lambda conn: _w_create(conn, key, blob))

    async def put(self, key: str, values: Sequence[HandleValue]) -> bool:
        blob = encode_record(values)
        return bool(await self._write(lambda conn: _w_put(conn, key, blob)))

    async def add_values(
        self, key: str, values: Sequence[HandleValue], *, overwrite: bool = True
    ) -> bool:
        encode_record(values)  # fail early on an unstorable value, as put() does
        return bool(await self._write(lambda conn: _w_add_values(conn, key, values, overwrite)))

    async def remove_values(self, key: str, indexes: Sequence[int]) -> None:
        await self._write(lambda conn: _w_remove_values(conn, key, indexes))

    async def delete(self, key: str) -> None:
        await self._write(lambda conn: _w_delete(conn, key))

    def _put_many_op(
        self, chunk: Sequence[PutItem]
    ) -> Callable[[sqlite3.Connection], list[PutResult]]:
        """The bulk path (``EmbeddedStore.put_many`` chunks it): no per-item
        SAVEPOINT, see ``_w_put_many``.

        Measured with 200k three-value records into an empty store: 75-110k
        records/s in key order (an import of an export), 32-48k/s in random
        key order, where every 10k-row transaction dirties most index pages.
        About 40% of the time is encode_record (~3 us/record); the SQLite
        part alone does ~300k rows/s in key order.
        """
        return lambda conn: _w_put_many(conn, _encode_items(chunk))

    async def load_records(self, records: Sequence[tuple[str, bytes]]) -> None:
        """One writer operation, so one transaction however large the batch:
        the multi-row upsert of ``put_many`` without its existence probe or
        encoding (the bytes are stored as given). All or nothing."""
        rows = records if isinstance(records, list) else list(records)
        if rows:
            await self._write(lambda conn: _upsert_rows(conn, rows), len(rows))

    async def home_prefix(self, prefix: str) -> bool:
        sql = "INSERT INTO prefixes(prefix) VALUES (?) ON CONFLICT DO NOTHING"
        return bool(await self._write(lambda conn: conn.execute(sql, (prefix.upper(),)).rowcount))

    async def unhome_prefix(self, prefix: str) -> bool:
        sql = "DELETE FROM prefixes WHERE prefix = ?"
        return bool(await self._write(lambda conn: conn.execute(sql, (prefix.upper(),)).rowcount))

    # -- SNMS accounts and templates --------------------------------------------

    async def get_account(self, username: str) -> Account | None:
        self._check_open()
        assert self._reader is not None
        sql = "SELECT prefix, role, secret_hash, generation FROM accounts WHERE username = ?"
        with _mapped_errors():
            row = self._reader.execute(sql, (username,)).fetchone()
        if row is None:
            return None
        return Account(username, row[0], row[1], bytes(row[2]), int(row[3]))

    async def put_account(self, account: Account) -> None:
        sql = (
            "INSERT INTO accounts(username, prefix, role, secret_hash, generation)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(username) DO UPDATE SET"
            " prefix = excluded.prefix, role = excluded.role,"
            " secret_hash = excluded.secret_hash, generation = excluded.generation"
        )
        row = (account.username, account.prefix, account.role, account.secret_hash,
               account.generation)
        await self._write(lambda conn: conn.execute(sql, row))

    async def get_template(self, prefix: str, version: str) -> str | None:
        self._check_open()
        assert self._reader is not None
        sql = "SELECT document FROM templates WHERE prefix = ? AND version = ?"
        with _mapped_errors():
            row = self._reader.execute(sql, (prefix.upper(), version)).fetchone()
        return None if row is None else str(row[0])

    async def put_template(self, prefix: str, version: str, document: str) -> bool:
        key = (prefix.upper(), version)

        def write(conn: sqlite3.Connection) -> bool:
            sql = "UPDATE templates SET document = ? WHERE prefix = ? AND version = ?"
            if conn.execute(sql, (document, *key)).rowcount:
                return False
            sql = "INSERT INTO templates(prefix, version, document) VALUES (?, ?, ?)"
            conn.execute(sql, (*key, document))
            return True

        return bool(await self._write(write))

    async def delete_template(self, prefix: str, version: str) -> bool:
        sql = "DELETE FROM templates WHERE prefix = ? AND version = ?"
        key = (prefix.upper(), version)
        return bool(await self._write(lambda conn: conn.execute(sql, key).rowcount))

    # -- prefix applications and reported statistics -----------------------------

    async def add_application(self, application: Application) -> Application:
        app: Application = await self._write(
            lambda conn: sqlite_apps.w_add_application(conn, application)
        )
        return app

    async def get_application(self, application_id: int) -> Application | None:
        self._check_open()
        assert self._reader is not None
        with _mapped_errors():
            row = self._reader.execute(
                sqlite_apps.SELECT_APPLICATION, (application_id,)
            ).fetchone()
        return None if row is None else sqlite_apps.application_from_row(row)

    async def list_applications(
        self, *, state: str | None = None, applicant: str | None = None
    ) -> list[Application]:
        rows = await self._scan(*sqlite_apps.list_applications_query(state, applicant))
        return [sqlite_apps.application_from_row(row) for row in rows]

    async def approve_application(
        self, decided: Application, records: Sequence[PutItem], account: Account
    ) -> Application:
        for item in records:
            encode_record(item.values)  # fail before queueing, as put() does
        app: Application = await self._write(
            lambda conn: sqlite_apps.w_approve_application(conn, decided, records, account)
        )
        return app

    async def reject_application(self, decided: Application) -> Application:
        app: Application = await self._write(
            lambda conn: sqlite_apps.w_reject_application(conn, decided)
        )
        return app

    async def add_stats_report(
        self, node: str, report_id: str, received_at: int, counts: Sequence[StatsCount]
    ) -> bool:
        return bool(await self._write(
            lambda conn: sqlite_apps.w_add_stats_report(conn, node, report_id, received_at, counts)
        ))

    async def stats_counts(
        self, *, node: str | None = None, prefix: str | None = None, since: int | None = None
    ) -> list[StatsCount]:
        rows = await self._scan(*sqlite_apps.stats_query(node, prefix, since))
        return [sqlite_apps.stats_from_row(row) for row in rows]

    # -- usage counters (resolver.quotas) ---------------------------------------

    async def seed_usage(self, counter: str, value: int) -> int:
        return int(await self._write(lambda conn: sqlite_apps.w_seed_usage(conn, counter, value)))

    async def add_usage(self, counter: str, delta: int, *, limit: int | None = None) -> int | None:
        result: int | None = await self._write(
            lambda conn: sqlite_apps.w_add_usage(conn, counter, delta, limit)
        )
        return result

    # -- writes: the writer thread -----------------------------------------------

    def _writer_main(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None and self._writer_done is not None
        assert self._writes is not None
        loop, done, writes = self._loop, self._writer_done, self._writes
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect(query_only=False)
            self._init_schema(conn)
        except BaseException as exc:  # handed to open(), which raises it
            if conn is not None:
                conn.close()
            error = _map_sqlite_error(exc) if isinstance(exc, sqlite3.Error) else exc
            loop.call_soon_threadsafe(settle_one, ready, error)
            loop.call_soon_threadsafe(settle_one, done, None)
            return
        loop.call_soon_threadsafe(settle_one, ready, None)
        try:
            self._writer_loop(conn, writes)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA optimize")
            conn.close()  # the last connection out checkpoints and removes the WAL
            writes.refuse_leftovers()  # queued after close() began
            loop.call_soon_threadsafe(settle_one, done, None)

    def _writer_loop(self, conn: sqlite3.Connection, writes: WriteQueue) -> None:
        while (batch := writes.next_batch()) is not None:
            try:
                outcomes = self._run_batch(conn, batch)
            except Exception as exc:  # a bug: fail this batch, keep the writer alive
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                outcomes = [(op.future, None, exc) for op in batch]
            if self._lookups is not None:
                self._lookups.expire()  # before any writer hears back: it reads its writes
            writes.settle(outcomes)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[WriteOp]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = op.fn(conn)
                except sqlite3.Error as exc:
                    if not conn.in_transaction:
                        raise _TransactionLost(exc) from exc
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((op.future, None, _map_sqlite_error(exc)))
                except Exception as exc:  # HandleError, or a bug: it goes to that caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((op.future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((op.future, result, None))
            if not self._announces_writes:
                conn.execute(_COUNT_UNANNOUNCED)  # once per transaction, not per write
            conn.execute("COMMIT")
        except (sqlite3.Error, _TransactionLost) as exc:
            # Nothing of this batch is committed: every caller gets the error.
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            cause = exc.cause if isinstance(exc, _TransactionLost) else exc
            error = _map_sqlite_error(cause)
            return [(op.future, None, error) for op in batch]
        self.commits += 1
        self.committed_ops += len(batch)
        return outcomes

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot use WAL mode (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # After a big import, shrink the WAL back instead of keeping its peak size.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                for ddl in _SCHEMA:
                    conn.execute(ddl)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            elif "meta" not in tables:
                raise IncompatibleSchema(f"{self.path} is not an idnode store (no meta table)")
            else:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = row[0] if row else None
                if not isinstance(version, int):
                    raise IncompatibleSchema(f"{self.path} has no valid schema_version")
                if version > SCHEMA_VERSION:
                    raise IncompatibleSchema(
                        f"{self.path} has schema version {version}, newer than the "
                        f"{SCHEMA_VERSION} this idnode supports: upgrade idnode to open it"
                    )
                # In place: v1 -> v2 adds the SNMS tables, v2 -> v3 applications
                # and reported statistics, v3 -> v4 usage counters.
                missing = (
                    (_V2_TABLES if version < 2 else ())
                    + (sqlite_apps.V3_TABLES if version < 3 else ())
                    + (sqlite_apps.V4_TABLES if version < 4 else ())
                )
                if missing:
                    for ddl in missing:
                        conn.execute(ddl)
                    conn.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# -- operations, run by the writer inside its transaction ---------------------------
# Each runs inside a SAVEPOINT, so raising undoes just this operation.


def _read_record(conn: sqlite3.Connection, key: str) -> Record:
    row = conn.execute(_GET, (key,)).fetchone()
    if row is None:
        raise HandleNotFound(f"Handle {key} not found")
    return decode_stored(key, row[0])


def _w_create(conn: sqlite3.Connection, key: str, blob: bytes) -> None:
    if conn.execute(_INSERT, (key, blob)).rowcount == 0:
        raise HandleAlreadyExists(f"Handle {key} already exists")


def _w_put(conn: sqlite3.Connection, key: str, blob: bytes) -> bool:
    """Create or replace; True if created. One write statement either way."""
    if conn.execute(_INSERT, (key, blob)).rowcount:
        return True
    conn.execute(_UPDATE, (blob, key))
    return False


def _w_add_values(
    conn: sqlite3.Connection, key: str, values: Sequence[HandleValue], overwrite: bool
) -> bool:
    merged, any_new = merge_values(key, _read_record(conn, key), values, overwrite)
    conn.execute(_UPDATE, (encode_record(merged), key))
    return any_new


def _w_remove_values(conn: sqlite3.Connection, key: str, indexes: Sequence[int]) -> None:
    remaining = without_indexes(key, _read_record(conn, key), indexes)
    conn.execute(_UPDATE, (encode_record(remaining), key))


def _w_delete(conn: sqlite3.Connection, key: str) -> None:
    if conn.execute("DELETE FROM handles WHERE key = ?", (key,)).rowcount == 0:
        raise HandleNotFound(f"Handle {key} not found")


# One put_many item after encoding: its key, record bytes and overwrite flag,
# or the error (InvalidValue) that rules it out.
_Encoded = tuple[str, bytes, bool] | HandleError


def _encode_items(items: Sequence[PutItem]) -> list[_Encoded]:
    out: list[_Encoded] = []
    for item in items:
        try:
            out.append((item.key, encode_record(item.values), item.overwrite))
        except HandleError as exc:
            out.append(exc)
    return out


def _w_put_many(conn: sqlite3.Connection, items: list[_Encoded]) -> list[PutResult]:
    """Results are decided up front from one existence probe per ``_IN_LIMIT``
    keys (this is the only writer, so they stay true inside the transaction),
    then every accepted row goes in with one ``executemany`` upsert: no
    per-item SAVEPOINT or Python round trip. Each row is a single statement,
    which SQLite makes atomic; if the executemany fails half-way, the chunk is
    redone item by item so only the failing items fail."""
    keys = list({item[0]: None for item in items if not isinstance(item, HandleError)})
    existing: set[str] = set()
    for i in range(0, len(keys), _IN_LIMIT):
        part = keys[i : i + _IN_LIMIT]
        sql = f"SELECT key FROM handles WHERE key IN ({','.join('?' * len(part))})"
        existing.update(key for (key,) in conn.execute(sql, part))
    results: list[PutResult] = []
    rows: list[tuple[str, bytes]] = []
    for item in items:
        if isinstance(item, HandleError):
            results.append(item)
            continue
        key, blob, overwrite = item
        if key not in existing:
            existing.add(key)  # a later item with this key replaces it
            results.append(True)
        elif overwrite:
            results.append(False)
        else:
            results.append(HandleAlreadyExists(f"Handle {key} already exists"))
            continue
        rows.append((key, blob))
    conn.execute("SAVEPOINT bulk")
    try:
        _upsert_rows(conn, rows)
    except sqlite3.Error:
        if not conn.in_transaction:
            raise
        conn.execute("ROLLBACK TO bulk")
        results = _put_items_one_by_one(conn, items)
    conn.execute("RELEASE bulk")
    return results


def _upsert_rows(conn: sqlite3.Connection, rows: list[tuple[str, bytes]]) -> None:
    """In order: a key repeated in ``rows`` ends with its last record."""
    full = len(rows) - len(rows) % _MULTI_ROWS
    for i in range(0, full, _MULTI_ROWS):
        conn.execute(_UPSERT_MULTI, [x for row in rows[i : i + _MULTI_ROWS] for x in row])
    if full < len(rows):
        conn.executemany(_UPSERT, rows[full:])


def _put_items_one_by_one(conn: sqlite3.Connection, items: list[_Encoded]) -> list[PutResult]:
    results: list[PutResult] = []
    for item in items:
        if isinstance(item, HandleError):
            results.append(item)
            continue
        key, blob, overwrite = item
        try:
            if overwrite:
                results.append(_w_put(conn, key, blob))
            elif conn.execute(_INSERT, (key, blob)).rowcount:
                results.append(True)
            else:
                results.append(HandleAlreadyExists(f"Handle {key} already exists"))
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise
            results.append(_map_sqlite_error(exc))
    return results
