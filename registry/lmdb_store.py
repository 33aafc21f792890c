"""Embedded LMDB backend of the Store contract, for large stores on one machine.

An LMDB environment is one B+tree file (``data.mdb``, plus ``lock.mdb``) in
a directory, mapped into memory. A lookup reads the mapped pages in place:
no SQL, no page copies into a private cache, no per-transaction file locks
(a read transaction is a slot in the shared lock file). That is what a
uniform lookup over a store larger than any cache pays for, and why this
backend exists beside SQLite (bench/README.md: cold/hot ratios at 100M).

Threads::

    event loop thread ── get(), read_now(), accounts, prefixes ...   inline read txns
                     ── list/count/iter_records() ──▶ scan threads, a read txn per call
                     ── every write ──▶ WriteQueue ──▶ writer thread, one write txn per batch

Writes are group-committed as in ``sqlite_store``: one write transaction per
batch, a nested transaction per operation so a failing one (HandleAlreadyExists,
...) does not undo the others. Worker processes of one node open the same
environment; LMDB serialises their write transactions with a lock in
``lock.mdb`` (robust: a writer killed mid-transaction releases it) and every
read transaction begun after a commit sees it, so ``refresh_reads`` has
nothing to do.

Durability (``synchronous``): a commit writes the changed pages to the file
before it returns, so an acknowledged write survives ``kill -9`` in any
mode. ``NORMAL`` (default) also fsyncs the data pages but not the meta page
on every commit: a power loss may undo the last transaction, never corrupts
the file. ``FULL`` fsyncs both.

Memory: the map is sized by ``map_size`` (virtual; the file grows as
written). Mapped pages that were read count in the process's VmRSS as
RssFile: that is the OS page cache, shared by every worker, not private
memory (RssAnon stays small).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

import lmdb

from protocol.errors import HandleAlreadyExists, HandleError, HandleNotFound
from protocol.record_msgpack import encode_record
from protocol.values import HandleValue
from registry import lmdb_apps, lmdb_map
from registry.embedded_store import EmbeddedStore, decode_stored
from registry.lmdb_apps import Tables, counter_bytes, counter_value
from registry.record_edits import merge_values, without_indexes
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
from registry.write_queue import Outcome, WriteOp, settle_one

SCHEMA_VERSION: Final = 1
DEFAULT_MAP_SIZE: Final = 1 << 40  # 1 TiB of address space: ~5 billion gen_ids records

_SYNCHRONOUS: Final = frozenset({"NORMAL", "FULL"})
_SCAN_PAGE: Final = 500  # records per iter_records page
_MAX_READERS: Final = 1024  # read transactions open at once, over every process

T = TypeVar("T")
log = logging.getLogger(__name__)


def _map_lmdb_error(exc: lmdb.Error) -> HandleError:
    """The one place LMDB's errors become the protocol's."""
    if isinstance(exc, lmdb.MapFullError):
        return StoreError(f"Store is full: its map size is reached ({exc})")
    if isinstance(exc, lmdb.ReadersFullError):
        return StoreBusy(f"Too many concurrent readers: {exc}")
    if isinstance(exc, lmdb.BadValsizeError):
        return StoreError(f"Key or value too large for the store: {exc}")
    return StoreError(f"Store error {type(exc).__name__}: {exc}")


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """Keys strictly under ``prefix/``: '0' is the byte after '/'."""
    return (prefix + "/").encode(), (prefix + "0").encode()


def _keys_in_range(cursor: lmdb.Cursor, lo: bytes, hi: bytes | None) -> Iterator[bytes]:
    """Keys from ``lo`` (inclusive) to ``hi`` (exclusive; None: to the end), in order."""
    if not cursor.set_range(lo):
        return
    for key in cursor.iternext(keys=True, values=False):
        if hi is not None and key >= hi:
            return
        yield key


class _BatchLost(Exception):
    """LMDB failed the whole write transaction (map full, I/O error)."""

    def __init__(self, cause: lmdb.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


class LMDBStore(EmbeddedStore):
    """Store in one LMDB environment: a directory holding ``data.mdb`` and ``lock.mdb``.

    ``synchronous``: ``"NORMAL"`` or ``"FULL"`` (module docstring).
    ``max_batch``, ``bulk_chunk``, ``max_pending`` and ``busy_when_full``
    bound the write queue and its transactions as for ``SQLiteStore``.
    ``map_size``: the most the file may grow to, in bytes. ``populate``: map
    every page of the file at open, in a background thread, if it fits in
    the available memory (``registry.lmdb_map.worth_populating``).
    ``announces_writes``: the caller tells every cache of its writes itself (a
    node does); otherwise each write transaction bumps the
    ``unannounced_writes`` counter nodes poll.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_batch: int = 1000,
        bulk_chunk: int = 10_000,
        max_pending: int = 10_000,
        busy_when_full: bool = False,
        announces_writes: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        scan_threads: int = 2,
        populate: bool = False,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)} for LMDB")
        if min(scan_threads, map_size) < 1:
            raise ValueError("scan_threads and map_size must be positive")
        super().__init__(path, max_batch=max_batch, bulk_chunk=bulk_chunk,
                         max_pending=max_pending, busy_when_full=busy_when_full)
        self.synchronous = synchronous
        self._announces_writes = announces_writes
        self._map_size = map_size
        self._scan_threads = scan_threads
        self._populate = populate

        self._env: lmdb.Environment | None = None
        self._tables: Tables | None = None
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._scan_pool: ThreadPoolExecutor | None = None
        self._populating: threading.Thread | None = None

        self.schema_version = SCHEMA_VERSION  # what ``idnode migrate`` reports

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise StoreClosed(f"LMDBStore({self.path}) cannot be opened twice")
        loop = asyncio.get_running_loop()
        try:
            # Opening waits for the write lock when another process holds it
            # (a worker committing a batch): off the loop.
            self._env, self._tables = await asyncio.to_thread(self._open_environment)
        except lmdb.Error as exc:
            raise _map_lmdb_error(exc) from exc
        self._start_writes(loop)
        self._writer_done = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main, name=f"lmdb-writer:{self.path.name}",
            daemon=True,  # acknowledged writes are committed already; don't block exit
        )
        self._scan_pool = ThreadPoolExecutor(
            max_workers=self._scan_threads, thread_name_prefix=f"lmdb-scan:{self.path.name}"
        )
        self._writer.start()
        self._state = "open"
        data_file = self.path / "data.mdb"
        if self._populate and lmdb_map.worth_populating(data_file):
            self._populating = threading.Thread(
                target=_populate_map, args=(data_file,), daemon=True,
                name=f"lmdb-populate:{self.path.name}")
            self._populating.start()

    def warming(self) -> bool:
        # Mapping 20 GB takes 1.8 s on an idle node but 121 s under a cold
        # load (2026-12-07), which meanwhile runs at a quarter of its rate.
        return self._populating is not None and self._populating.is_alive()

    def _open_environment(self) -> tuple[lmdb.Environment, Tables]:
        env = lmdb.open(
            str(self.path), map_size=self._map_size, subdir=True,
            max_dbs=len(lmdb_apps.ALL_DATABASES) + 1, max_readers=_MAX_READERS,
            sync=True, metasync=self.synchronous == "FULL",
            # A uniform lookup wants its one page, not the OS's readahead
            # around it, which fills the page cache with pages nobody asked for.
            readahead=False,
        )
        try:
            env.reader_check()  # free the read slots of processes that died
            with env.begin(write=True) as txn:
                names = {key for key, _ in txn.cursor()}  # the main DB lists named DBs
                if names and lmdb_apps.META not in names:
                    raise IncompatibleSchema(f"{self.path} is not an idnode store (no meta)")
                dbs = {name: env.open_db(name, txn=txn) for name in lmdb_apps.ALL_DATABASES}
                meta = dbs[lmdb_apps.META]
                version = txn.get(b"schema_version", db=meta)
                if version is None:
                    txn.put(b"schema_version", counter_bytes(SCHEMA_VERSION), db=meta)
                elif counter_value(version) > SCHEMA_VERSION:
                    raise IncompatibleSchema(
                        f"{self.path} has schema version {counter_value(version)}, newer than "
                        f"the {SCHEMA_VERSION} this idnode supports: upgrade idnode to open it"
                    )
        except BaseException:
            env.close()
            raise
        tables = Tables(*(dbs[name] for name in lmdb_apps.ALL_DATABASES))
        return env, tables

    async def close(self) -> None:
        """Finish every queued write, stop the writer, release the files."""
        if self._state != "open":
            return
        self._state = "closing"  # new reads and writes are refused from here on
        assert self._writes is not None and self._writer_done is not None
        assert self._writer is not None and self._env is not None
        self._writes.stop()  # behind every write already queued
        await asyncio.shield(self._writer_done)
        await asyncio.to_thread(self._writer.join)
        if self._scan_pool is not None:
            await asyncio.to_thread(self._scan_pool.shutdown, wait=True)
        self._env.close()
        self._state = "closed"

    # -- reads -----------------------------------------------------------------

    # Lookups run inline on the event loop thread, a read transaction each:
    # begin + abort cost 0.4 us over a bare get (py-lmdb keeps a spare
    # transaction to reuse), and a transaction held across lookups would pin
    # old pages and need renewing after every write, as SQLite's snapshot does.
    # (get and read_now: EmbeddedStore.)

    def _read_blob(self, key: str) -> bytes | None:
        if self._state != "open":
            self._check_open()
        assert self._env is not None and self._tables is not None
        try:
            txn = self._env.begin(db=self._tables.handles)
            try:
                return txn.get(key.encode())  # type: ignore[no-any-return]
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise _map_lmdb_error(exc) from exc

    def _read(self, fn: Callable[[lmdb.Transaction, Tables], T]) -> T:
        """A short read of the small tables, inline, in its own transaction."""
        self._check_open()
        assert self._env is not None and self._tables is not None
        try:
            with self._env.begin() as txn:
                return fn(txn, self._tables)
        except lmdb.Error as exc:
            raise _map_lmdb_error(exc) from exc

    async def _scan(self, fn: Callable[[lmdb.Transaction, Tables], T]) -> T:
        """A read that may walk many keys: on a scan thread, in its own transaction."""
        self._check_open()
        assert self._loop is not None and self._scan_pool is not None
        env, tables = self._env, self._tables
        assert env is not None and tables is not None

        def run() -> T:
            try:
                with env.begin() as txn:
                    return fn(txn, tables)
            except lmdb.Error as exc:
                raise _map_lmdb_error(exc) from exc

        return await self._loop.run_in_executor(self._scan_pool, run)

    async def unannounced_writes(self) -> int | None:
        return self._read(lambda txn, t: counter_value(txn.get(b"unannounced_writes", db=t.meta)))

    async def homed_prefixes(self) -> list[str]:
        return self._read(lambda txn, t: [key.decode() for key in
                                          txn.cursor(db=t.prefixes).iternext(values=False)])

    async def list_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        lo, hi = _prefix_range(prefix)

        def page(txn: lmdb.Transaction, t: Tables) -> list[str]:
            out: list[str] = []
            if limit == 0:
                return out
            for n, key in enumerate(_keys_in_range(txn.cursor(db=t.handles), lo, hi)):
                if n >= offset:
                    out.append(key.decode())
                    if limit is not None and len(out) >= limit:
                        break
            return out

        return await self._scan(page)

    async def count_handles(self, prefix: str | None = None) -> int:
        if prefix is None:
            return await self._scan(lambda txn, t: int(txn.stat(t.handles)["entries"]))
        lo, hi = _prefix_range(prefix)
        return await self._scan(
            lambda txn, t: sum(1 for _ in _keys_in_range(txn.cursor(db=t.handles), lo, hi))
        )

    async def iter_records(self, prefix: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Pages of ``_SCAN_PAGE`` records by key, each page its own read transaction,
        so a long export never keeps old pages from being reused."""
        lo, hi = _prefix_range(prefix) if prefix is not None else (b"", None)

        def page_from(start: bytes, after: bool) -> Callable[[lmdb.Transaction, Tables],
                                                             list[tuple[bytes, bytes]]]:
            def read(txn: lmdb.Transaction, t: Tables) -> list[tuple[bytes, bytes]]:
                cursor = txn.cursor(db=t.handles)
                rows: list[tuple[bytes, bytes]] = []
                for key in _keys_in_range(cursor, start, hi):
                    if after and key == start:
                        continue
                    rows.append((key, cursor.value()))
                    if len(rows) >= _SCAN_PAGE:
                        break
                return rows
            return read

        rows = await self._scan(page_from(lo, False))
        while True:
            for key, blob in rows:
                text = key.decode()
                yield text, decode_stored(text, blob)
            if len(rows) < _SCAN_PAGE:
                return
            rows = await self._scan(page_from(rows[-1][0], True))

    # -- writes: the caller's side ---------------------------------------------

    async def create(self, key: str, values: Sequence[HandleValue]) -> None:
        blob = encode_record(values)
        await self._write(lambda txn, t: _w_create(txn, t, key.encode(), blob))

    async def put(self, key: str, values: Sequence[HandleValue]) -> bool:
        blob = encode_record(values)
        return bool(await self._write(
            lambda txn, t: txn.replace(key.encode(), blob, db=t.handles) is None
        ))

    async def add_values(
        self, key: str, values: Sequence[HandleValue], *, overwrite: bool = True
    ) -> bool:
        encode_record(values)  # fail early on an unstorable value, as put() does
        return bool(await self._write(
            lambda txn, t: _w_add_values(txn, t, key, values, overwrite)
        ))

    async def remove_values(self, key: str, indexes: Sequence[int]) -> None:
        await self._write(lambda txn, t: _w_remove_values(txn, t, key, indexes))

    async def delete(self, key: str) -> None:
        await self._write(lambda txn, t: _w_delete(txn, t, key))

    def _put_many_op(
        self, chunk: Sequence[PutItem]
    ) -> Callable[[lmdb.Transaction, Tables], list[PutResult]]:
        return lambda txn, t: _w_put_many(txn, t, chunk)

    async def load_records(self, records: Sequence[tuple[str, bytes]]) -> None:
        """One writer operation, so one transaction: the bytes stored as given. All or nothing."""
        rows = [(key.encode(), blob) for key, blob in records]
        if rows:
            await self._write(lambda txn, t: _w_load(txn, t, rows), len(rows))

    async def home_prefix(self, prefix: str) -> bool:
        key = prefix.upper().encode()
        return bool(await self._write(
            lambda txn, t: txn.put(key, b"", overwrite=False, db=t.prefixes)
        ))

    async def unhome_prefix(self, prefix: str) -> bool:
        key = prefix.upper().encode()
        return bool(await self._write(lambda txn, t: txn.delete(key, db=t.prefixes)))

    # -- SNMS accounts and templates --------------------------------------------

    async def get_account(self, username: str) -> Account | None:
        return self._read(lambda txn, t: lmdb_apps.read_account(txn, t, username))

    async def put_account(self, account: Account) -> None:
        await self._write(lambda txn, t: lmdb_apps.w_put_account(txn, t, account))

    async def get_template(self, prefix: str, version: str) -> str | None:
        key = lmdb_apps.template_key(prefix, version)
        blob = self._read(lambda txn, t: txn.get(key, db=t.templates))
        return None if blob is None else bytes(blob).decode()

    async def put_template(self, prefix: str, version: str, document: str) -> bool:
        key = lmdb_apps.template_key(prefix, version)
        return bool(await self._write(
            lambda txn, t: txn.replace(key, document.encode(), db=t.templates) is None
        ))

    async def delete_template(self, prefix: str, version: str) -> bool:
        key = lmdb_apps.template_key(prefix, version)
        return bool(await self._write(lambda txn, t: txn.delete(key, db=t.templates)))

    # -- prefix applications and reported statistics -----------------------------

    async def add_application(self, application: Application) -> Application:
        app: Application = await self._write(
            lambda txn, t: lmdb_apps.w_add_application(txn, t, application)
        )
        return app

    async def get_application(self, application_id: int) -> Application | None:
        return self._read(lambda txn, t: lmdb_apps.read_application(txn, t, application_id))

    async def list_applications(
        self, *, state: str | None = None, applicant: str | None = None
    ) -> list[Application]:
        return await self._scan(
            lambda txn, t: lmdb_apps.list_applications(txn, t, state, applicant)
        )

    async def approve_application(
        self, decided: Application, records: Sequence[PutItem], account: Account
    ) -> Application:
        for item in records:
            encode_record(item.values)  # fail before queueing, as put() does
        app: Application = await self._write(
            lambda txn, t: lmdb_apps.w_approve_application(txn, t, decided, records, account)
        )
        return app

    async def reject_application(self, decided: Application) -> Application:
        app: Application = await self._write(
            lambda txn, t: lmdb_apps.w_reject_application(txn, t, decided)
        )
        return app

    async def add_stats_report(
        self, node: str, report_id: str, received_at: int, counts: Sequence[StatsCount]
    ) -> bool:
        return bool(await self._write(
            lambda txn, t: lmdb_apps.w_add_stats_report(txn, t, node, report_id, received_at,
                                                        counts)
        ))

    async def stats_counts(
        self, *, node: str | None = None, prefix: str | None = None, since: int | None = None
    ) -> list[StatsCount]:
        return await self._scan(lambda txn, t: lmdb_apps.stats_counts(txn, t, node, prefix,
                                                                       since))

    # -- usage counters (resolver.quotas) ---------------------------------------

    async def seed_usage(self, counter: str, value: int) -> int:
        return int(await self._write(
            lambda txn, t: lmdb_apps.w_seed_usage(txn, t, counter, value)
        ))

    async def add_usage(self, counter: str, delta: int, *, limit: int | None = None) -> int | None:
        result: int | None = await self._write(
            lambda txn, t: lmdb_apps.w_add_usage(txn, t, counter, delta, limit)
        )
        return result

    # -- writes: the writer thread -----------------------------------------------

    def _writer_main(self) -> None:
        assert self._loop is not None and self._writer_done is not None
        assert self._writes is not None
        writes = self._writes
        try:
            while (batch := writes.next_batch()) is not None:
                try:
                    outcomes = self._run_batch(batch)
                except Exception as exc:  # a bug: fail this batch, keep the writer alive
                    outcomes = [(op.future, None, exc) for op in batch]
                writes.settle(outcomes)
        finally:
            writes.refuse_leftovers()  # queued after close() began
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(settle_one, self._writer_done, None)

    def _run_batch(self, batch: list[WriteOp]) -> list[Outcome]:
        env, tables = self._env, self._tables
        assert env is not None and tables is not None
        outcomes: list[Outcome] = []
        txn = env.begin(write=True)
        try:
            for op in batch:
                nested = env.begin(write=True, parent=txn)
                try:
                    result = op.fn(nested, tables)
                except lmdb.BadValsizeError as exc:  # refused before anything changed
                    nested.abort()
                    outcomes.append((op.future, None, _map_lmdb_error(exc)))
                except lmdb.Error as exc:  # map full, I/O: the transaction is lost
                    nested.abort()
                    raise _BatchLost(exc) from exc
                except Exception as exc:  # HandleError, or a bug: it goes to that caller
                    nested.abort()
                    outcomes.append((op.future, None, exc))
                else:
                    nested.commit()
                    outcomes.append((op.future, result, None))
            if not self._announces_writes:
                count = counter_value(txn.get(b"unannounced_writes", db=tables.meta))
                txn.put(b"unannounced_writes", counter_bytes(count + 1), db=tables.meta)
            txn.commit()
        except (lmdb.Error, _BatchLost) as exc:
            # Nothing of this batch is committed: every caller gets the error.
            with contextlib.suppress(lmdb.Error):
                txn.abort()
            error = _map_lmdb_error(exc.cause if isinstance(exc, _BatchLost) else exc)
            return [(op.future, None, error) for op in batch]
        except BaseException:
            with contextlib.suppress(lmdb.Error):
                txn.abort()
            raise
        self.commits += 1
        self.committed_ops += len(batch)
        return outcomes


def _populate_map(data_file: Path) -> None:
    # A daemon thread: close() does not wait for it. If the map goes away
    # meanwhile, the call fails (ENOMEM) and nothing else happens.
    started = time.perf_counter()
    if lmdb_map.populate(data_file):
        log.info("mapped all of %s in %.1f s", data_file, time.perf_counter() - started)


# -- operations, run by the writer inside a nested transaction ----------------------


def _read_record(txn: lmdb.Transaction, t: Tables, key: str) -> Record:
    blob = txn.get(key.encode(), db=t.handles)
    if blob is None:
        raise HandleNotFound(f"Handle {key} not found")
    return decode_stored(key, blob)


def _w_create(txn: lmdb.Transaction, t: Tables, key: bytes, blob: bytes) -> None:
    if not txn.put(key, blob, overwrite=False, db=t.handles):
        raise HandleAlreadyExists(f"Handle {key.decode()} already exists")


def _w_add_values(txn: lmdb.Transaction, t: Tables, key: str, values: Sequence[HandleValue],
                  overwrite: bool) -> bool:
    merged, any_new = merge_values(key, _read_record(txn, t, key), values, overwrite)
    txn.put(key.encode(), encode_record(merged), db=t.handles)
    return any_new


def _w_remove_values(txn: lmdb.Transaction, t: Tables, key: str, indexes: Sequence[int]) -> None:
    remaining = without_indexes(key, _read_record(txn, t, key), indexes)
    txn.put(key.encode(), encode_record(remaining), db=t.handles)


def _w_delete(txn: lmdb.Transaction, t: Tables, key: str) -> None:
    if not txn.delete(key.encode(), db=t.handles):
        raise HandleNotFound(f"Handle {key} not found")


def _w_put_many(txn: lmdb.Transaction, t: Tables, items: Sequence[PutItem]) -> list[PutResult]:
    """Encoded here, in the writer thread: a 10k chunk is ~30 ms of CPU that must
    not run on the event loop (see SQLiteStore.put_many)."""
    results: list[PutResult] = []
    handles = t.handles
    for item in items:
        try:
            blob = encode_record(item.values)
        except HandleError as exc:
            results.append(exc)
            continue
        key = item.key.encode()
        if item.overwrite:
            results.append(txn.replace(key, blob, db=handles) is None)
        elif txn.put(key, blob, overwrite=False, db=handles):
            results.append(True)
        else:
            results.append(HandleAlreadyExists(f"Handle {item.key} already exists"))
    return results


def _w_load(txn: lmdb.Transaction, t: Tables, rows: list[tuple[bytes, bytes]]) -> None:
    """Sorted rows past the last key go in with MDB_APPEND: pages are filled
    whole instead of split in half (a smaller file, a faster import)."""
    cursor = txn.cursor(db=t.handles)
    ascending = all(a[0] < b[0] for a, b in itertools.pairwise(rows))
    append = ascending and (not cursor.last() or cursor.key() < rows[0][0])
    consumed, _added = cursor.putmulti(rows, append=append)
    if consumed != len(rows):
        raise StoreError(f"Bulk load stopped after {consumed} of {len(rows)} records")
