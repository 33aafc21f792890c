"""The Store backends the conformance suite runs against.

To add one, append a :class:`Backend` to ``BACKENDS``: ``make`` returns an
unopened store whose data lives at a place derived from the given directory,
so calling it again with the same directory reopens the same data (for
PostgreSQL: a schema named after it, dropped by ``cleanup`` after the test).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pg_service

from registry.lmdb_store import LMDBStore
from registry.sqlite_store import SQLiteStore
from registry.store import Store


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[Path], Store]
    # Transactions committed so far, for backends that group-commit; None if
    # the backend cannot tell (the group-commit assertion is then skipped).
    commits: Callable[[Store], int] | None = None
    # Skips (or, with IDNODE_REQUIRE_SERVICES=1, fails) the test if the
    # backend's server is absent.
    require: Callable[[], Awaitable[None]] | None = None
    # Removes what ``make`` left behind for this directory.
    cleanup: Callable[[Path], Awaitable[None]] | None = None


def _sqlite(directory: Path) -> Store:
    return SQLiteStore(directory / "store.sqlite")


def _sqlite_held_snapshot(directory: Path) -> Store:
    # What a node runs (resolver.config.sqlite_read_snapshot), with a snapshot
    # that only the store's own commits renew within a test.
    return SQLiteStore(directory / "store.sqlite", read_snapshot_seconds=3600)


def _sqlite_commits(store: Store) -> int:
    assert isinstance(store, SQLiteStore)
    return store.commits


def _lmdb(directory: Path) -> Store:
    return LMDBStore(directory / "store.lmdb")


def _lmdb_commits(store: Store) -> int:
    assert isinstance(store, LMDBStore)
    return store.commits


def _postgres(directory: Path) -> Store:
    from registry.pg_store import PostgresStore

    # 8 partitions, not 64: the same code paths, and schema set-up per test
    # stays well under a second on a busy shared server.
    return PostgresStore(pg_service.url_for(directory), max_size=4, partitions=8)


BACKENDS: list[Backend] = [
    Backend("sqlite", _sqlite, _sqlite_commits),
    Backend("sqlite-snapshot", _sqlite_held_snapshot, _sqlite_commits),
    Backend("lmdb", _lmdb, _lmdb_commits),
    Backend("postgresql", _postgres, require=pg_service.require_postgres,
            cleanup=pg_service.drop_schema),
]
