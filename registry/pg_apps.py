"""PostgreSQL tables and operations for prefix applications and reported statistics.

The counterpart of ``registry.sqlite_apps``: small, rarely written tables
(schema migration 2), each operation one call on a connection that
``PostgresStore`` runs as a shielded write. Approval runs in one transaction,
so a crash never leaves a half-allocated prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from protocol.record_msgpack import encode_record
from registry.store import (
    Account,
    Application,
    ApplicationConflict,
    ApplicationNotFound,
    PrefixTaken,
    PutItem,
    StatsCount,
)

# Migration 2. One pending application per applicant (partial unique index);
# an allocated prefix belongs to one application (UNIQUE, NULLs allowed).
V2_STATEMENTS: Final = (
    "CREATE TABLE applications("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"  # never reused
    ' applicant text COLLATE "C" NOT NULL, enterprise text NOT NULL,'
    " requested_prefix text, detail text NOT NULL, created_at bigint NOT NULL,"
    " state text NOT NULL, decided_by text, decided_at bigint, reason text,"
    ' prefix text COLLATE "C" UNIQUE)',
    "CREATE UNIQUE INDEX applications_one_pending ON applications(applicant)"
    " WHERE state = 'pending'",
    'CREATE TABLE stats_reports(node text COLLATE "C" NOT NULL,'
    ' report_id text COLLATE "C" NOT NULL, received_at bigint NOT NULL,'
    " PRIMARY KEY(node, report_id))",
    'CREATE TABLE stats_counts(node text COLLATE "C" NOT NULL, prefix text COLLATE "C" NOT NULL,'
    " interval_start bigint NOT NULL, interval_seconds bigint NOT NULL,"
    " registrations bigint NOT NULL, resolutions bigint NOT NULL,"
    " PRIMARY KEY(node, prefix, interval_start))",
)

_COLUMNS: Final = (
    "id, applicant, enterprise, requested_prefix, detail, created_at, state,"
    " decided_by, decided_at, reason, prefix"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM applications WHERE id = $1"


def _application(row: Sequence[Any]) -> Application:
    return Application(
        id=int(row[0]), applicant=row[1], enterprise=row[2], requested_prefix=row[3],
        detail=row[4], created_at=int(row[5]), state=row[6], decided_by=row[7],
        decided_at=None if row[8] is None else int(row[8]), reason=row[9], prefix=row[10],
    )


async def add_application(conn: asyncpg.Connection, app: Application) -> Application:
    try:
        row = await conn.fetchrow(
            "INSERT INTO applications(applicant, enterprise, requested_prefix, detail,"
            f" created_at, state) VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING {_COLUMNS}",
            app.applicant, app.enterprise, app.requested_prefix, app.detail, app.created_at,
        )
    except asyncpg.UniqueViolationError:
        raise ApplicationConflict(
            f"Account {app.applicant} has an application pending already"
        ) from None
    return _application(row)


async def get_application(conn: asyncpg.Connection, application_id: int) -> Application | None:
    row = await conn.fetchrow(_SELECT, application_id)
    return None if row is None else _application(row)


async def list_applications(
    conn: asyncpg.Connection, state: str | None, applicant: str | None
) -> list[Application]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM applications WHERE ($1::text IS NULL OR state = $1)"
        " AND ($2::text IS NULL OR applicant = $2) ORDER BY id",
        state, applicant,
    )
    return [_application(row) for row in rows]


async def _lock_pending(conn: asyncpg.Connection, application_id: int) -> None:
    state = await conn.fetchval(
        "SELECT state FROM applications WHERE id = $1 FOR UPDATE", application_id
    )
    if state is None:
        raise ApplicationNotFound(f"No application {application_id}")
    if state != "pending":
        raise ApplicationConflict(f"Application {application_id} is {state} already")


async def _decide(conn: asyncpg.Connection, decided: Application) -> Application:
    row = await conn.fetchrow(
        "UPDATE applications SET state = $1, decided_by = $2, decided_at = $3, reason = $4,"
        f" prefix = $5 WHERE id = $6 AND state = 'pending' RETURNING {_COLUMNS}",
        decided.state, decided.decided_by, decided.decided_at, decided.reason, decided.prefix,
        decided.id,
    )
    return _application(row)


async def approve_application(
    conn: asyncpg.Connection, decided: Application, records: Sequence[PutItem], account: Account
) -> Application:
    prefix = (decided.prefix or "").upper()
    if not prefix:
        raise ValueError("an approval needs the allocated prefix")
    blobs = [(item.key, encode_record(item.values)) for item in records]
    async with conn.transaction():
        await _lock_pending(conn, decided.id)
        # ON CONFLICT DO NOTHING, not a check then insert: two approvals of the
        # same prefix at once cannot both pass.
        homed = await conn.execute(
            "INSERT INTO prefixes(prefix) VALUES ($1) ON CONFLICT DO NOTHING", prefix
        )
        allocated = await conn.fetchval("SELECT 1 FROM applications WHERE prefix = $1", prefix)
        if homed.endswith(" 0") or allocated:
            raise PrefixTaken(f"Prefix {prefix} is taken already")
        for key, blob in blobs:
            status = await conn.execute(
                "INSERT INTO handles(key, record) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                key, blob,
            )
            if status.endswith(" 0"):
                raise PrefixTaken(f"Handle {key} exists already")
        await conn.execute(
            "INSERT INTO accounts(username, prefix, role, secret_hash, generation)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO UPDATE SET"
            " prefix = excluded.prefix, role = excluded.role,"
            " secret_hash = excluded.secret_hash, generation = excluded.generation",
            account.username, account.prefix, account.role, account.secret_hash,
            account.generation,
        )
        try:
            return await _decide(conn, decided)
        except asyncpg.UniqueViolationError:  # another application got the prefix meanwhile
            raise PrefixTaken(f"Prefix {prefix} is taken already") from None


async def reject_application(conn: asyncpg.Connection, decided: Application) -> Application:
    async with conn.transaction():
        await _lock_pending(conn, decided.id)
        return await _decide(conn, decided)


async def add_stats_report(
    conn: asyncpg.Connection, node: str, report_id: str, received_at: int,
    counts: Sequence[StatsCount],
) -> bool:
    async with conn.transaction():
        status = await conn.execute(
            "INSERT INTO stats_reports(node, report_id, received_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            node, report_id, received_at,
        )
        if status.endswith(" 0"):
            return False
        await conn.executemany(
            "INSERT INTO stats_counts AS s(node, prefix, interval_start, interval_seconds,"
            " registrations, resolutions) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (node, prefix, interval_start) DO UPDATE SET"
            " interval_seconds = greatest(s.interval_seconds, excluded.interval_seconds),"
            " registrations = s.registrations + excluded.registrations,"
            " resolutions = s.resolutions + excluded.resolutions",
            [(node, c.prefix, c.interval_start, c.interval_seconds, c.registrations,
              c.resolutions) for c in counts],
        )
    return True


async def stats_counts(
    conn: asyncpg.Connection, node: str | None, prefix: str | None, since: int | None
) -> list[StatsCount]:
    rows = await conn.fetch(
        "SELECT node, prefix, interval_start, interval_seconds, registrations, resolutions"
        " FROM stats_counts WHERE ($1::text IS NULL OR node = $1)"
        " AND ($2::text IS NULL OR prefix = $2) AND ($3::bigint IS NULL OR interval_start >= $3)"
        " ORDER BY node, prefix, interval_start",
        node, prefix, since,
    )
    return [StatsCount(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]
