"""Which Store backend a ``--store`` location names: a SQLite file, an LMDB
directory (``*.lmdb``) or a PostgreSQL URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from registry.sqlite_store import SQLiteStore
from registry.store import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
LMDB_SUFFIX = ".lmdb"


def is_lmdb(location: str) -> bool:
    """A path ending ``.lmdb``, or a directory holding an LMDB environment."""
    path = Path(location)
    return location.endswith(LMDB_SUFFIX) or (path / "data.mdb").is_file()


# The SQLiteStore options LMDBStore shares (the write queue's); the rest tune SQLite.
_LMDB_OPTIONS = ("max_batch", "bulk_chunk", "max_pending", "busy_when_full")


def redact_url(url: str) -> str:
    """The store URL without its password, for messages and logs."""
    return re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", url)


def is_url(location: str) -> bool:
    """Any ``scheme://`` location: it has no directory, so nothing lives beside it."""
    return "://" in location


def open_store_at(
    location: str,
    *,
    sqlite_synchronous: str = "NORMAL",
    announces_writes: bool = False,
    lmdb_populate: bool = False,
    **sqlite_options: Any,
) -> Store:
    """An unopened store: PostgreSQL for ``postgresql://``/``postgres://``, LMDB for a
    ``*.lmdb`` directory (``is_lmdb``), else a SQLite file.

    ``announces_writes``: the opener tells every cache of its own writes (a
    node), so the store does not count them as unannounced. ``lmdb_populate``:
    an LMDB store maps its pages at open (``LMDBStore``'s ``populate``).
    ``sqlite_options`` go to ``SQLiteStore`` (write queue bound, mmap...);
    LMDB takes the write queue's (``_LMDB_OPTIONS``) and ignores the rest;
    they mean nothing to PostgreSQL.
    Raises ValueError for another URL scheme, or when asyncpg is not installed.
    """
    if location.startswith(POSTGRES_SCHEMES):
        try:
            from registry.pg_store import PostgresStore
        except ImportError as exc:
            raise ValueError(
                "a PostgreSQL store needs asyncpg: pip install 'idnode[postgres]'"
            ) from exc
        return PostgresStore(location, announces_writes=announces_writes)
    if is_url(location):
        raise ValueError(
            f"Unsupported store URL {location.split('://')[0]}://...: "
            "give a file path or a postgresql:// URL"
        )
    if is_lmdb(location):
        from registry.lmdb_store import LMDBStore

        queue_options = {name: sqlite_options[name] for name in _LMDB_OPTIONS
                         if name in sqlite_options}
        return LMDBStore(location, synchronous=sqlite_synchronous,
                         announces_writes=announces_writes, populate=lmdb_populate,
                         **queue_options)
    return SQLiteStore(location, synchronous=sqlite_synchronous,
                       announces_writes=announces_writes, **sqlite_options)
