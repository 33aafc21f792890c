"""PostgreSQL schema of the Store and its versioned migrations.

Every migration is a list of DDL statements; ``migrate`` applies the missing
ones in one transaction under an advisory lock, so several nodes starting at
once against one database do not race (the others wait, then find the schema
current). ``schema_version`` has one row per applied migration. To change the
schema, append a ``Migration`` (never edit an applied one) and, for a new
small table, add its methods to ``PostgresStore`` next to the accounts ones.

Why this layout (checked with EXPLAIN in tests/test_pg_store.py; timings
from a shared 2-core VM at load ~11, so only roughly: a get 270-300 us
median, one loopback round trip, 10-12x SQLite's in-process ~25 us; a
100-key page at OFFSET up to 90k of a 100k-key prefix ~80 ms; count of
that prefix ~50 ms):

* ``handles`` keeps one row per handle: the key (``COLLATE "C"``, so keys sort
  in byte order as in SQLite and ``key >= 'P/' AND key < 'P0'`` is exactly
  the handles under prefix P) and the record as one msgpack ``bytea``
  (``protocol.record_msgpack``), read and written whole. No other column,
  no other index: ~40 bytes of tuple and index overhead per handle.
* It is hash-partitioned on the key into ``PARTITIONS`` (64) tables, fixed
  at creation (changing it means rewriting the table). The hash of the full
  key spreads every prefix evenly, even the few enterprise prefixes that hold
  most identifiers, so at 10^9 handles (~200 GB) each partition is ~3 GB and
  vacuum, index builds and checkpoints work on one at a time. A get is one
  primary-key probe in one partition (pruned at plan time). A prefix listing
  is a Merge Append of one index range scan per partition: 64 short probes,
  already sorted, so LIMIT/OFFSET pages stay index-only range scans.
  Partitioning by a hash of the prefix would make listings one scan but put
  a whole large prefix into one partition, which is what partitioning must
  avoid. 64 keeps that per-listing fan-out small while 1-10 GB partitions
  stay manageable; more partitions cost planning time on every statement.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

import asyncpg

from registry import pg_apps

PARTITIONS: Final = 64
# Two-int advisory lock key: this constant plus the hash of the schema name,
# so stores in different schemas of one database migrate independently.
_LOCK_CLASS: Final = 0x1D0DE


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _v1_statements(partitions: int) -> tuple[str, ...]:
    handles = (
        'CREATE TABLE handles(key text COLLATE "C" PRIMARY KEY, record bytea NOT NULL)'
        " PARTITION BY HASH (key)",
        *(
            f"CREATE TABLE handles_p{i:03d} PARTITION OF handles"
            f" FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
            for i in range(partitions)
        ),
    )
    return (
        *handles,
        'CREATE TABLE prefixes(prefix text COLLATE "C" PRIMARY KEY)',
        'CREATE TABLE accounts(username text COLLATE "C" PRIMARY KEY, prefix text NOT NULL,'
        " role text NOT NULL, secret_hash bytea NOT NULL, generation bigint NOT NULL)",
        'CREATE TABLE templates(prefix text COLLATE "C" NOT NULL,'
        ' version text COLLATE "C" NOT NULL, document text NOT NULL,'
        " PRIMARY KEY(prefix, version))",
    )


def migrations(partitions: int = PARTITIONS) -> tuple[Migration, ...]:
    """Every migration in order; ``partitions`` only matters for a new store."""
    return (
        Migration(1, "handles (hash-partitioned), prefixes, accounts, templates",
                  _v1_statements(partitions)),
        Migration(2, "prefix applications, reported statistics", pg_apps.V2_STATEMENTS),
    )


SCHEMA_VERSION: Final = migrations()[-1].version


class SchemaError(Exception):
    """The database holds something else, or a newer idnode's schema."""


async def current_version(conn: asyncpg.Connection) -> int | None:
    """The schema version, None for an empty schema; raises SchemaError for a foreign one."""
    tables = {
        row[0]
        for row in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    if "schema_version" not in tables:
        if tables & {"handles", "prefixes"}:
            raise SchemaError("schema has idnode-like tables but no schema_version table")
        return None
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    if not isinstance(version, int):
        raise SchemaError("schema_version table is empty")
    return version


async def migrate(conn: asyncpg.Connection, *, partitions: int = PARTITIONS) -> list[int]:
    """Bring the connection's current schema up to ``SCHEMA_VERSION``; the versions applied.

    Creates the schema named first in ``search_path`` when it does not exist yet.
    Raises SchemaError for a newer or foreign schema (and changes nothing).
    """
    await _ensure_schema(conn)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", _LOCK_CLASS
        )
        version = await current_version(conn)
        steps = migrations(partitions)
        newest = steps[-1].version
        if version is not None and version > newest:
            raise SchemaError(
                f"schema version {version} is newer than the {newest} this idnode supports: "
                "upgrade idnode to open it"
            )
        if version is None:
            await conn.execute(
                "CREATE TABLE schema_version(version integer PRIMARY KEY,"
                " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = 0
        applied: list[int] = []
        for step in steps:
            if step.version <= version:
                continue
            # One round trip for the whole step (the simple query protocol).
            await conn.execute(";\n".join(step.statements))
            await conn.execute(
                "INSERT INTO schema_version(version, description) VALUES ($1, $2)",
                step.version, step.description,
            )
            applied.append(step.version)
    return applied


async def _ensure_schema(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT current_schema()") is not None:
        return
    # search_path names no existing schema: create the first one it names.
    path = await conn.fetchval("SHOW search_path")
    first = str(path).split(",")[0].strip().strip('"')
    if not first or first == "$user":
        raise SchemaError(f"search_path {path!r} names no schema to create the store in")
    # Another node may create it at the same moment.
    with contextlib.suppress(asyncpg.UniqueViolationError):
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(first)}")
    if await conn.fetchval("SELECT current_schema()") is None:
        raise SchemaError(f"cannot use schema {first!r} (search_path {path!r})")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
