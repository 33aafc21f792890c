"""PostgreSQL backend of the Store contract (asyncpg), for nodes that share one database.

Schema and migrations: ``registry.pg_schema``. Every statement runs on a
connection of one asyncpg pool; PostgreSQL itself serialises writers (row
locks) and groups concurrent commits into one WAL flush, so there is no
writer task here. Connections are opened with ``synchronous_commit = on``
whatever the server's default: a write is acknowledged only once its commit
is flushed to the WAL, so it survives ``kill -9`` of the node and of the
database server.

Writes run as their own tasks, shielded from the caller: a cancelled caller
(client gone) does not cancel a write that may already be committed, and
``close()`` waits for every write already accepted. Every asyncpg or socket
error becomes the contract's error in ``_map_error`` and nowhere else.

put_many: chunks of ``bulk_chunk`` items, one transaction each. A chunk's
items are folded per key in Python (what the key ends up holding if it is new,
and if it exists), loaded with COPY into a temporary staging table (or sent
as arrays when small), then one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING RETURNING key`` creates the new keys; the keys that existed are
updated from arrays in one ``UPDATE ... FROM unnest(...)``. Rows go in key
order, so concurrent bulk writers lock rows in the same order and cannot
deadlock each other.

load_records (``idnode import``): the already encoded records of a batch are
COPYed into the same staging table and created or replaced by one ``INSERT
... SELECT ... ON CONFLICT DO UPDATE``, one transaction per batch.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import asyncpg

from protocol.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    MalformedMessage,
)
from protocol.record_msgpack import decode_record, encode_record
from protocol.values import HandleValue
from registry import pg_apps, pg_schema
from registry.backends import POSTGRES_SCHEMES, redact_url
from registry.record_edits import merge_values, without_indexes
from registry.store import (
    Account,
    Application,
    IncompatibleSchema,
    PutItem,
    PutResult,
    Record,
    StatsCount,
    Store,
    StoreBusy,
    StoreClosed,
    StoreError,
)

T = TypeVar("T")

_GET: Final = "SELECT record FROM handles WHERE key = $1"
_CREATE: Final = "INSERT INTO handles(key, record) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
# Create or replace in one round trip, telling which happened. (RETURNING
# xmax = 0, the usual trick, is refused on a partitioned table.) Both false
# means another writer inserted the key between the two steps: run it again.
_PUT: Final = (
    "WITH updated AS (UPDATE handles SET record = $2 WHERE key = $1 RETURNING 1),"
    " inserted AS (INSERT INTO handles(key, record) SELECT $1, $2"
    "  WHERE NOT EXISTS (SELECT FROM updated) ON CONFLICT (key) DO NOTHING RETURNING 1)"
    " SELECT EXISTS (SELECT FROM updated), EXISTS (SELECT FROM inserted)"
)
_LOCKED_GET: Final = "SELECT record FROM handles WHERE key = $1 FOR UPDATE"
_UPDATE: Final = "UPDATE handles SET record = $2 WHERE key = $1"
_DELETE: Final = "DELETE FROM handles WHERE key = $1"

# put_many: a chunk's rows, staged, then inserted where new.
_STAGING: Final = (
    'CREATE TEMPORARY TABLE idnode_staging(key text COLLATE "C" NOT NULL, record bytea NOT NULL)'
    " ON COMMIT DROP"
)
_INSERT_STAGED: Final = (
    "INSERT INTO handles(key, record) SELECT key, record FROM idnode_staging ORDER BY key"
    " ON CONFLICT (key) DO NOTHING RETURNING key"
)
_INSERT_ARRAYS: Final = (
    "INSERT INTO handles(key, record) SELECT * FROM unnest($1::text[], $2::bytea[])"
    " ON CONFLICT (key) DO NOTHING RETURNING key"
)
_UPDATE_ARRAYS: Final = (
    "UPDATE handles h SET record = u.record FROM unnest($1::text[], $2::bytea[]) AS u(key, record)"
    " WHERE h.key = u.key RETURNING h.key"
)
# load_records: staged rows create or replace, in key order (one lock order).
_UPSERT_STAGED: Final = (
    "INSERT INTO handles(key, record) SELECT key, record FROM idnode_staging ORDER BY key"
    " ON CONFLICT (key) DO UPDATE SET record = excluded.record"
)
_COPY_FROM: Final = 1000  # rows per chunk from which COPY beats arrays (see put_many)
_RACE_ROUNDS: Final = 10  # retries when other writers keep inserting/deleting the same keys
_SCAN_PAGE: Final = 500  # rows per iter_records page

# SQLSTATEs that mean "try again later" (rc 3) rather than a broken store:
# connection problems (08), serialization failure / deadlock (40), lock not
# available, too many connections, query cancelled (statement timeout), and
# the server shutting down or starting up (57P0x).
_BUSY_STATES: Final = re.compile(r"^(08|40|55P03|53300|57014|57P0)")


def _map_error(exc: BaseException, closed: bool = False) -> HandleError:
    """The one place asyncpg and socket errors become the contract's errors."""
    if isinstance(exc, HandleError):
        return exc
    if closed:
        return StoreClosed("Store closed")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return HandleAlreadyExists(f"Handle already exists ({exc})")
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if _BUSY_STATES.match(state):
            return StoreBusy(f"PostgreSQL is busy or unreachable ({state}): {exc}")
        if state == "53100":
            return StoreError(f"PostgreSQL disk full: {exc}")
        return StoreError(f"PostgreSQL error {state or type(exc).__name__}: {exc}")
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError
                  | asyncpg.InternalClientError):
        # Connection refused or lost, timeouts, a connection broken mid-query
        # (asyncpg reports some of those as an internal protocol state error).
        return StoreBusy(f"PostgreSQL unreachable: {type(exc).__name__}: {exc}")
    return StoreError(f"PostgreSQL client error {type(exc).__name__}: {exc}")


def _breaks_connection(exc: BaseException) -> bool:
    """True when the connection may be unusable after ``exc`` (lost, timed out, confused)."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "").startswith(("08", "57P"))
    return True


_DB_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _decode_stored(key: str, blob: bytes) -> Record:
    try:
        return decode_record(blob)
    except MalformedMessage as exc:
        raise StoreError(f"Stored record of {key!r} is corrupt: {exc.message}") from exc


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Keys strictly under ``prefix/``: '0' is the character after '/' (COLLATE "C")."""
    return prefix + "/", prefix + "0"


@dataclass(slots=True)
class _KeyPlan:
    """Every item of one chunk with one key, folded: what to write in either case."""

    items: list[int]  # positions in the chunk, in order
    if_new: bytes  # the record the key ends with if it did not exist
    if_present: bytes | None  # ... if it existed (None: nothing replaces it)


class PostgresStore(Store):
    """Store in a PostgreSQL database: ``postgresql://user@host:5432/db[?search_path=schema]``.

    Unknown URL query parameters are server settings (asyncpg), so
    ``?search_path=idnode`` keeps the store in its own schema, created on
    first open. ``server_settings`` adds more. ``min_size``/``max_size``
    bound the pool; ``command_timeout`` (seconds) bounds one statement, after
    which the call fails with StoreBusy. ``partitions`` applies only when the
    schema is created. ``announces_writes``: the caller tells every cache of
    its writes itself (a node); otherwise (``idnode import``, other offline
    tools) each write's transaction also bumps the ``unannounced_writes``
    counter that nodes poll (``resolver.coherence``).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 60.0,
        bulk_chunk: int = 10_000,
        partitions: int = pg_schema.PARTITIONS,
        server_settings: dict[str, str] | None = None,
        announces_writes: bool = False,
    ) -> None:
        if not url.startswith(POSTGRES_SCHEMES):
            raise ValueError(f"not a PostgreSQL URL: {redact_url(url)!r}")
        if min(min_size, max_size, bulk_chunk, partitions) < 1 or min_size > max_size:
            raise ValueError("pool sizes, bulk_chunk and partitions must be positive")
        self.url = url
        self.bulk_chunk = bulk_chunk
        self.partitions = partitions
        self.applied_migrations: list[int] = []  # by open(), for `idnode migrate`
        self.schema_version = pg_schema.SCHEMA_VERSION
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = command_timeout
        self._settings = {
            "application_name": "idnode",
            **(server_settings or {}),
            "synchronous_commit": "on",  # acknowledged = flushed to the WAL
        }
        self._fast_release = True
        self._announces_writes = announces_writes
        self._state = "new"  # new → open → closing → closed
        self._pool: asyncpg.Pool | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise StoreClosed(f"{self!r} cannot be opened twice")
        self._state = "opening"
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._timeout,
                server_settings=self._settings,
                reset=self._reset_session if self._fast_release else None,
            )
        except _DB_ERRORS as exc:
            self._state = "closed"
            error = _map_error(exc)
            error.message = f"cannot connect to {redact_url(self.url)}: {error.message}"
            raise error from exc
        except BaseException:
            self._state = "closed"
            raise
        try:
            async with pool.acquire() as conn:
                self.applied_migrations = await pg_schema.migrate(
                    conn, partitions=self.partitions
                )
        except BaseException as exc:
            self._state = "closed"
            pool.terminate()
            if isinstance(exc, pg_schema.SchemaError):
                raise IncompatibleSchema(f"{redact_url(self.url)}: {exc}") from exc
            if isinstance(exc, _DB_ERRORS):
                raise _map_error(exc) from exc
            raise
        self._pool = pool
        self._state = "open"

    async def close(self) -> None:
        """Finish every write already accepted, then close the pool."""
        if self._state != "open":
            return
        self._state = "closing"  # new calls are refused from here on
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        assert self._pool is not None
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self._timeout)
        except (TimeoutError, *_DB_ERRORS):
            self._pool.terminate()
        self._state = "closed"

    @staticmethod
    async def _reset_session(conn: asyncpg.Connection) -> None:
        """Released connections keep their session as is.

        asyncpg's default reset runs ``RESET ALL; CLOSE ALL; UNLISTEN *;
        pg_advisory_unlock_all()`` on every release: a second round trip per
        get. Nothing here leaves session state behind (no SET, LISTEN, cursor,
        session lock; the staging table drops at commit), and asyncpg still
        rolls back a transaction left open, so there is nothing to reset.
        """

    def _check_open(self) -> asyncpg.Pool:
        if self._state != "open" or self._pool is None:
            raise StoreClosed(f"{self!r} is not open ({self._state})")
        return self._pool

    # -- plumbing --------------------------------------------------------------

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        return await self._on_connection(self._check_open(), fn, writing=False)

    async def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection as its own task, shielded from the caller."""
        pool = self._check_open()
        if not self._announces_writes:
            fn = _counted_unannounced(fn)
        task = asyncio.ensure_future(self._on_connection(pool, fn, writing=True))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _on_connection(
        self, pool: asyncpg.Pool, fn: Callable[[asyncpg.Connection], Awaitable[T]],
        *, writing: bool,
    ) -> T:
        # A read that finds its pooled connection dead (server restarted, backend
        # terminated) is tried again, each broken connection being replaced, so
        # it succeeds even when every pooled one was dead; a write is not
        # retried, as it may have committed before the connection broke.
        attempts = 1 if writing else self._max_size + 1
        while True:
            attempts -= 1
            try:
                async with pool.acquire() as conn:
                    try:
                        return await fn(conn)
                    except _DB_ERRORS as exc:
                        if _breaks_connection(exc):
                            conn.terminate()  # the pool replaces it instead of reusing it
                        raise
            except _DB_ERRORS as exc:
                if attempts and _breaks_connection(exc) and self._state == "open":
                    continue
                # Reads are refused from close() on; accepted writes run until the pool closes.
                closed = self._state == "closed" if writing else self._state != "open"
                raise _map_error(exc, closed=closed) from exc

    # -- reads -----------------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        blob = await self._read(lambda conn: conn.fetchval(_GET, key))
        return None if blob is None else _decode_stored(key, blob)

    async def list_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None
    ) -> list[str]:
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        lo, hi = _prefix_range(prefix)
        sql = "SELECT key FROM handles WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3 OFFSET $4"
        rows = await self._read(lambda conn: conn.fetch(sql, lo, hi, limit, offset))
        return [row[0] for row in rows]

    async def count_handles(self, prefix: str | None = None) -> int:
        if prefix is None:
            count = await self._read(lambda conn: conn.fetchval("SELECT count(*) FROM handles"))
        else:
            sql = "SELECT count(*) FROM handles WHERE key >= $1 AND key < $2"
            count = await self._read(lambda conn: conn.fetchval(sql, *_prefix_range(prefix)))
        return int(count)

    async def iter_records(self, prefix: str | None = None) -> AsyncIterator[tuple[str, Record]]:
        """Pages of ``_SCAN_PAGE`` records in key order, each its own statement.

        No transaction is held across pages, so a long export never holds
        back vacuum; a record written meanwhile shows up iff its key is ahead.
        """
        lo, hi = _prefix_range(prefix) if prefix is not None else ("", None)
        upper = "" if hi is None else " AND key < $3"
        page = f"SELECT key, record FROM handles WHERE key {{}} $1{upper} ORDER BY key LIMIT $2"
        tail = () if hi is None else (hi,)
        first, after = page.format(">="), page.format(">")
        rows = await self._read(lambda conn: conn.fetch(first, lo, _SCAN_PAGE, *tail))
        while True:
            for key, blob in rows:
                yield key, _decode_stored(key, blob)
            if len(rows) < _SCAN_PAGE:
                return
            last: str = rows[-1][0]

            def next_page(conn: asyncpg.Connection, k: str = last) -> Awaitable[list[Any]]:
                return conn.fetch(after, k, _SCAN_PAGE, *tail)  # type: ignore[no-any-return]

            rows = await self._read(next_page)

    # -- single writes ---------------------------------------------------------
    # Records are encoded on the caller's side, so a value that cannot be
    # stored fails before anything is sent.

    async def create(self, key: str, values: Sequence[HandleValue]) -> None:
        blob = encode_record(values)
        status = await self._write(lambda conn: conn.execute(_CREATE, key, blob))
        if status.endswith(" 0"):
            raise HandleAlreadyExists(f"Handle {key} already exists")

    async def put(self, key: str, values: Sequence[HandleValue]) -> bool:
        blob = encode_record(values)

        async def write(conn: asyncpg.Connection) -> bool:
            for _ in range(_RACE_ROUNDS):
                updated, inserted = await conn.fetchrow(_PUT, key, blob)
                if updated or inserted:
                    return bool(inserted)
            raise StoreBusy(f"Handle {key} keeps changing under concurrent writers")

        return await self._write(write)

    async def add_values(
        self, key: str, values: Sequence[HandleValue], *, overwrite: bool = True
    ) -> bool:
        encode_record(values)  # fail early on an unstorable value, as put() does

        async def write(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                merged, any_new = merge_values(
                    key, await _locked_record(conn, key), values, overwrite
                )
                await conn.execute(_UPDATE, key, encode_record(merged))
            return any_new

        return await self._write(write)

    async def remove_values(self, key: str, indexes: Sequence[int]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                remaining = without_indexes(key, await _locked_record(conn, key), indexes)
                await conn.execute(_UPDATE, key, encode_record(remaining))

        await self._write(write)

    async def delete(self, key: str) -> None:
        status = await self._write(lambda conn: conn.execute(_DELETE, key))
        if status.endswith(" 0"):
            raise HandleNotFound(f"Handle {key} not found")

    # -- bulk writes -------------------------------------------------------------

    async def put_many(self, items: Sequence[PutItem]) -> list[PutResult]:
        """Chunks of ``bulk_chunk`` items, applied in order, one transaction each.

        Results per item as in SQLite; an item that fails (unstorable value,
        HandleAlreadyExists) changes nothing. If a chunk fails as a whole
        (connection lost) the call raises, and earlier chunks stay applied.
        Chunks of ``_COPY_FROM`` rows or more are loaded with COPY into a
        staging table; smaller ones go as two arrays in the INSERT itself.
        """
        self._check_open()
        seq = items if isinstance(items, list | tuple) else list(items)
        results: list[PutResult] = []
        for start in range(0, len(seq), self.bulk_chunk):
            chunk = seq[start : start + self.bulk_chunk]
            # Encoding is ~3 us per record: off the event loop for big chunks.
            if len(chunk) >= _COPY_FROM:
                encoded = await asyncio.to_thread(_encode_chunk, chunk)
            else:
                encoded = _encode_chunk(chunk)
            results.extend(await self._write(functools.partial(_put_chunk, encoded=encoded)))
        return results

    async def load_records(self, records: Sequence[tuple[str, bytes]]) -> None:
        """One transaction per call, however large: the records are COPYed
        into a temporary staging table and one ``INSERT ... SELECT ... ON
        CONFLICT DO UPDATE`` creates or replaces them, bytes as given. A key
        repeated in ``records`` keeps its last record (one statement may not
        touch a row twice). All or nothing."""
        self._check_open()
        latest = dict(records)  # the last record of each key
        if latest:
            await self._write(functools.partial(_load_staged, rows=latest))

    # -- prefixes served by this node ---------------------------------------------

    async def home_prefix(self, prefix: str) -> bool:
        sql = "INSERT INTO prefixes(prefix) VALUES ($1) ON CONFLICT DO NOTHING"
        status = await self._write(lambda conn: conn.execute(sql, prefix.upper()))
        return not status.endswith(" 0")

    async def unhome_prefix(self, prefix: str) -> bool:
        sql = "DELETE FROM prefixes WHERE prefix = $1"
        status = await self._write(lambda conn: conn.execute(sql, prefix.upper()))
        return not status.endswith(" 0")

    async def homed_prefixes(self) -> list[str]:
        sql = "SELECT prefix FROM prefixes ORDER BY prefix"
        return [row[0] for row in await self._read(lambda conn: conn.fetch(sql))]

    # -- SNMS accounts and templates ------------------------------------------------
    # Small tables: one statement per method. A new table goes into a new
    # pg_schema migration and gets its methods here.

    async def get_account(self, username: str) -> Account | None:
        sql = "SELECT prefix, role, secret_hash, generation FROM accounts WHERE username = $1"
        row = await self._read(lambda conn: conn.fetchrow(sql, username))
        if row is None:
            return None
        return Account(username, row[0], row[1], bytes(row[2]), int(row[3]))

    async def put_account(self, account: Account) -> None:
        sql = (
            "INSERT INTO accounts(username, prefix, role, secret_hash, generation)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO UPDATE SET"
            " prefix = excluded.prefix, role = excluded.role,"
            " secret_hash = excluded.secret_hash, generation = excluded.generation"
        )
        row = (account.username, account.prefix, account.role, account.secret_hash,
               account.generation)
        await self._write(lambda conn: conn.execute(sql, *row))

    async def get_template(self, prefix: str, version: str) -> str | None:
        sql = "SELECT document FROM templates WHERE prefix = $1 AND version = $2"
        document = await self._read(lambda conn: conn.fetchval(sql, prefix.upper(), version))
        return None if document is None else str(document)

    async def put_template(self, prefix: str, version: str, document: str) -> bool:
        sql = (
            "WITH updated AS (UPDATE templates SET document = $3"
            "  WHERE prefix = $1 AND version = $2 RETURNING 1),"
            " inserted AS (INSERT INTO templates(prefix, version, document) SELECT $1, $2, $3"
            "  WHERE NOT EXISTS (SELECT FROM updated) ON CONFLICT DO NOTHING RETURNING 1)"
            " SELECT EXISTS (SELECT FROM updated), EXISTS (SELECT FROM inserted)"
        )

        async def write(conn: asyncpg.Connection) -> bool:
            for _ in range(_RACE_ROUNDS):
                updated, inserted = await conn.fetchrow(sql, prefix.upper(), version, document)
                if updated or inserted:
                    return bool(inserted)
            raise StoreBusy(f"Template {prefix} {version} keeps changing under concurrent writers")

        return await self._write(write)

    async def delete_template(self, prefix: str, version: str) -> bool:
        sql = "DELETE FROM templates WHERE prefix = $1 AND version = $2"
        status = await self._write(lambda conn: conn.execute(sql, prefix.upper(), version))
        return not status.endswith(" 0")

    # -- prefix applications (registry.pg_apps) -------------------------------------------

    async def add_application(self, application: Application) -> Application:
        return await self._write(lambda conn: pg_apps.w_add_application(conn, application))

    async def get_application(self, application_id: int) -> Application | None:
        row = await self._read(
            lambda conn: conn.fetchrow(pg_apps.SELECT_APPLICATION, application_id)
        )
        return None if row is None else pg_apps.application_from_row(row)

    async def list_applications(
        self, *, state: str | None = None, applicant: str | None = None
    ) -> list[Application]:
        sql, params = pg_apps.list_applications_query(state, applicant)
        rows = await self._read(lambda conn: conn.fetch(sql, *params))
        return [pg_apps.application_from_row(row) for row in rows]

    async def approve_application(
        self, decided: Application, records: Sequence[PutItem], account: Account
    ) -> Application:
        return await self._write(
            lambda conn: pg_apps.w_approve_application(conn, decided, records, account)
        )

    async def reject_application(self, decided: Application) -> Application:
        return await self._write(lambda conn: pg_apps.w_reject_application(conn, decided))

    # -- reported statistics ----------------------------------------------------------

    async def add_stats_report(
        self, node: str, report_id: str, received_at: int, counts: Sequence[StatsCount]
    ) -> bool:
        return await self._write(
            lambda conn: pg_apps.w_add_stats_report(conn, node, report_id, received_at, counts)
        )

    async def stats_counts(
        self, *, node: str | None = None, prefix: str | None = None, since: int | None = None
    ) -> list[StatsCount]:
        sql, params = pg_apps.stats_query(node, prefix, since)
        rows = await self._read(lambda conn: conn.fetch(sql, *params))
        return [pg_apps.stats_from_row(row) for row in rows]

    # -- usage counters (resolver.quotas) ----------------------------------------------

    async def seed_usage(self, counter: str, value: int) -> int:
        return await self._write(lambda conn: pg_apps.w_seed_usage(conn, counter, value))

    async def add_usage(self, counter: str, delta: int, *, limit: int | None = None) -> int | None:
        value = await self._write(
            lambda conn: conn.fetchval(pg_apps.ADD_USAGE, counter, delta, limit)
        )
        return None if value is None else int(value)

    # -- coherence backstop ----------------------------------------------------------

    async def unannounced_writes(self) -> int | None:
        value = await self._read(lambda conn: conn.fetchval(pg_apps.UNANNOUNCED))
        return 0 if value is None else int(value)


def _counted_unannounced(
    fn: Callable[[asyncpg.Connection], Awaitable[T]],
) -> Callable[[asyncpg.Connection], Awaitable[T]]:
    """``fn`` and a bump of the unannounced-writes counter, in one transaction."""

    async def counted(conn: asyncpg.Connection) -> T:
        async with conn.transaction():  # fn's own transaction nests as a savepoint
            result = await fn(conn)
            await conn.execute(pg_apps.COUNT_UNANNOUNCED)
        return result

    return counted


async def _locked_record(conn: asyncpg.Connection, key: str) -> Record:
    blob = await conn.fetchval(_LOCKED_GET, key)
    if blob is None:
        raise HandleNotFound(f"Handle {key} not found")
    return _decode_stored(key, blob)


async def _load_staged(conn: asyncpg.Connection, *, rows: dict[str, bytes]) -> None:
    async with conn.transaction():
        await conn.execute(_STAGING)
        await conn.copy_records_to_table(
            "idnode_staging", records=rows.items(), columns=("key", "record")
        )
        await conn.execute(_UPSERT_STAGED)


# -- put_many internals ---------------------------------------------------------------

# One chunk after encoding: per item its key, record bytes and overwrite flag,
# or the error (InvalidValue) that rules it out.
_Encoded = tuple[str, bytes, bool] | HandleError


def _encode_chunk(items: Sequence[PutItem]) -> list[_Encoded]:
    out: list[_Encoded] = []
    for item in items:
        try:
            out.append((item.key, encode_record(item.values), item.overwrite))
        except HandleError as exc:
            out.append(exc)
    return out


def _plan(encoded: list[_Encoded]) -> dict[str, _KeyPlan]:
    """Fold the items of each key, in order, into the two possible outcomes.

    If the key is new, its first item creates it, later overwriting items
    replace that, later non-overwriting ones fail. If it exists, overwriting
    items replace it and the others fail.
    """
    plans: dict[str, _KeyPlan] = {}
    for position, item in enumerate(encoded):
        if isinstance(item, HandleError):
            continue
        key, blob, overwrite = item
        plan = plans.get(key)
        if plan is None:
            plans[key] = _KeyPlan([position], blob, blob if overwrite else None)
            continue
        plan.items.append(position)
        if overwrite:
            plan.if_new = blob
            plan.if_present = blob
    return plans


def _results(
    encoded: list[_Encoded], plans: dict[str, _KeyPlan], created: set[str]
) -> list[PutResult]:
    # Errors from encoding stay in place; every other position is set below.
    results: list[PutResult] = [
        item if isinstance(item, HandleError) else False for item in encoded
    ]
    for key, plan in plans.items():
        existed = key not in created
        for n, position in enumerate(plan.items):
            item = encoded[position]
            assert not isinstance(item, HandleError)
            if n == 0 and not existed:
                results[position] = True
            elif item[2]:  # overwrite
                results[position] = False
            else:
                results[position] = HandleAlreadyExists(f"Handle {key} already exists")
    return results


async def _put_chunk(
    conn: asyncpg.Connection, *, encoded: list[_Encoded]
) -> list[PutResult]:
    plans = _plan(encoded)
    if not plans:
        return _results(encoded, plans, set())
    keys = sorted(plans)  # one lock order for every writer: no deadlocks between them
    created: set[str] = set()
    async with conn.transaction():
        pending = keys
        for _ in range(_RACE_ROUNDS):
            # 1. Create what is new.
            new_records = [plans[k].if_new for k in pending]
            if pending is keys and len(keys) >= _COPY_FROM:
                await conn.execute(_STAGING)
                await conn.copy_records_to_table(
                    "idnode_staging", records=zip(keys, new_records, strict=True),
                    columns=("key", "record"),
                )
                inserted = await conn.fetch(_INSERT_STAGED)
            else:
                inserted = await conn.fetch(_INSERT_ARRAYS, pending, new_records)
            created.update(row[0] for row in inserted)
            # 2. Replace what existed (if an item of it overwrites).
            existing = [k for k in pending if k not in created and plans[k].if_present is not None]
            if not existing:
                break
            records = [plans[k].if_present for k in existing]
            updated = {row[0] for row in await conn.fetch(_UPDATE_ARRAYS, existing, records)}
            # 3. A key deleted by another writer between 1 and 2: create it again.
            pending = [k for k in existing if k not in updated]
            if not pending:
                break
        else:
            raise StoreBusy("put_many: keys keep changing under concurrent writers")
    return _results(encoded, plans, created)
