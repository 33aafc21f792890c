"""The Store backends the conformance suite runs against.

To add one (PostgreSQL), append a :class:`Backend` to ``BACKENDS``: ``make``
returns an unopened store whose data lives at a place derived from the given
directory, so calling it again with the same directory reopens the same data
(for PostgreSQL: a schema or database named after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.sqlite_store import SQLiteStore
from registry.store import Store


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[Path], Store]
    # Transactions committed so far, for backends that group-commit; None if
    # the backend cannot tell (the group-commit assertion is then skipped).
    commits: Callable[[Store], int] | None = None


def _sqlite(directory: Path) -> Store:
    return SQLiteStore(directory / "store.sqlite")


def _sqlite_commits(store: Store) -> int:
    assert isinstance(store, SQLiteStore)
    return store.commits


BACKENDS: list[Backend] = [
    Backend("sqlite", _sqlite, _sqlite_commits),
]
