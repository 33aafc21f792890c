"""Which Store backend a ``--store`` location names: a file path or a PostgreSQL URL."""

from __future__ import annotations

import re

from registry.sqlite_store import SQLiteStore
from registry.store import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def redact_url(url: str) -> str:
    """The store URL without its password, for messages and logs."""
    return re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def is_url(location: str) -> bool:
    """Any ``scheme://`` location: it has no directory, so nothing lives beside it."""
    return "://" in location


def open_store_at(
    location: str, *, sqlite_synchronous: str = "NORMAL", announces_writes: bool = False
) -> Store:
    """An unopened store: PostgreSQL for ``postgresql://``/``postgres://``, else a SQLite file.

    ``announces_writes``: the caller tells the nodes' caches of its writes
    itself (SQLiteStore; PostgreSQL does not count unannounced writes).
    Raises ValueError for another URL scheme, or when asyncpg is not installed.
    """
    if location.startswith(POSTGRES_SCHEMES):
        try:
            from registry.pg_store import PostgresStore
        except ImportError as exc:
            raise ValueError(
                "a PostgreSQL store needs asyncpg: pip install 'idnode[postgres]'"
            ) from exc
        return PostgresStore(location)
    if is_url(location):
        raise ValueError(
            f"Unsupported store URL {location.split('://')[0]}://...: "
            "give a file path or a postgresql:// URL"
        )
    return SQLiteStore(location, synchronous=sqlite_synchronous, announces_writes=announces_writes)
