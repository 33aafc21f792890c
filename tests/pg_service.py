"""The test PostgreSQL server: a private schema per test, skip or fail when it is absent.

Other engineers run tests against the same server at the same time, so every
store lives in its own schema ``idnode_test_<hash>`` of database ``test``
(selected through ``search_path``), dropped after the test. Without the
server, tests skip with the reason, unless ``IDNODE_REQUIRE_SERVICES=1``
(CI), where its absence fails them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("IDNODE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


_checked: list[str | None] = []  # the one probe's answer, once known


async def postgres_unavailable() -> str | None:
    """Why the test server cannot be used, or None (probed once per session)."""
    if not _checked:
        _checked.append(await _probe())
    return _checked[0]


async def _probe() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install idnode[postgres])"
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {type(exc).__name__}: {exc}"
    return None


async def require_postgres() -> None:
    reason = await postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("IDNODE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (IDNODE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def schema_for(directory: Path) -> str:
    """One schema per test directory: the same directory reopens the same data."""
    return "idnode_test_" + hashlib.sha256(str(directory).encode()).hexdigest()[:16]


def url_for(directory: Path) -> str:
    """The store URL of ``directory``'s schema (search_path as a URL server setting)."""
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}search_path={urllib.parse.quote(schema_for(directory))}"


async def drop_schema(directory: Path) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema_for(directory)}" CASCADE')
    finally:
        await conn.close()
