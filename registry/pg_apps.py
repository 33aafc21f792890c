"""PostgreSQL statements: prefix applications, reported statistics, write and usage counters.

Kept out of ``pg_store`` (handles) as ``sqlite_apps`` is out of
``sqlite_store``: small, rarely written tables. Each ``w_*`` function runs
on one pooled connection inside ``PostgresStore._write``; the ones that
change several rows open their own transaction, so raising undoes them.
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

# Schema migration 2. One pending application per applicant (partial unique
# index); an allocated prefix belongs to one application (UNIQUE, NULLs
# allowed). ``meta`` holds the unannounced-writes counter nodes poll.
V2_STATEMENTS: Final = (
    "CREATE TABLE applications("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"  # never reused
    ' applicant text COLLATE "C" NOT NULL, enterprise text NOT NULL,'
    ' requested_prefix text COLLATE "C", detail text NOT NULL, created_at bigint NOT NULL,'
    ' state text NOT NULL, decided_by text, decided_at bigint, reason text,'
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
    'CREATE TABLE meta(key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL)',
    "INSERT INTO meta(key, value) VALUES ('unannounced_writes', 0)",
)

# Bumped in the writer's own transaction, so a node that sees the new value
# also sees the write (bumping after commit could be lost to a crash; before
# it, a node could drop its cache and refill it with the old record).
COUNT_UNANNOUNCED: Final = "UPDATE meta SET value = value + 1 WHERE key = 'unannounced_writes'"
UNANNOUNCED: Final = "SELECT value FROM meta WHERE key = 'unannounced_writes'"

_COLUMNS: Final = (
    "id, applicant, enterprise, requested_prefix, detail, created_at, state,"
    " decided_by, decided_at, reason, prefix"
)
SELECT_APPLICATION: Final = f"SELECT {_COLUMNS} FROM applications WHERE id = $1"


def application_from_row(row: Sequence[Any]) -> Application:
    return Application(
        id=int(row[0]), applicant=row[1], enterprise=row[2], requested_prefix=row[3],
        detail=row[4], created_at=int(row[5]), state=row[6], decided_by=row[7],
        decided_at=None if row[8] is None else int(row[8]), reason=row[9], prefix=row[10],
    )


def _where(conditions: Sequence[tuple[str, str, Any]]) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for column, op, value in conditions:
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} ${len(params)}")
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def list_applications_query(
    state: str | None, applicant: str | None
) -> tuple[str, list[Any]]:
    clause, params = _where((("state", "=", state), ("applicant", "=", applicant)))
    return f"SELECT {_COLUMNS} FROM applications{clause} ORDER BY id", params


async def w_add_application(conn: asyncpg.Connection, app: Application) -> Application:
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
    return application_from_row(row)


async def _lock_pending(conn: asyncpg.Connection, application_id: int) -> None:
    """Raise unless the application is pending; lock it until the transaction ends."""
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
    return application_from_row(row)


async def w_approve_application(
    conn: asyncpg.Connection, decided: Application, records: Sequence[PutItem], account: Account
) -> Application:
    prefix = (decided.prefix or "").upper()
    if not prefix:
        raise ValueError("an approval needs the allocated prefix")
    keys = [item.key for item in records]
    blobs = [encode_record(item.values) for item in records]  # unstorable: fail before sending
    taken = PrefixTaken(f"Prefix {prefix} is taken already")
    async with conn.transaction():
        await _lock_pending(conn, decided.id)
        if await conn.fetchval(
            "SELECT EXISTS (SELECT FROM prefixes WHERE prefix = $1)"
            " OR EXISTS (SELECT FROM applications WHERE prefix = $1)", prefix,
        ):
            raise taken
        # Another approval of the same prefix may commit between the check and
        # here: the unique constraints catch it, and it is the same refusal.
        status = await conn.execute(
            "INSERT INTO prefixes(prefix) VALUES ($1) ON CONFLICT DO NOTHING", prefix
        )
        if status.endswith(" 0"):
            raise taken
        if keys:
            created = await conn.fetch(
                "INSERT INTO handles(key, record) SELECT * FROM unnest($1::text[], $2::bytea[])"
                " ON CONFLICT (key) DO NOTHING RETURNING key", keys, blobs,
            )
            if len(created) != len(keys):
                existing = sorted(set(keys) - {row[0] for row in created}) or keys[:1]
                raise PrefixTaken(f"Handle {existing[0]} exists already")
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
        except asyncpg.UniqueViolationError:
            raise taken from None


async def w_reject_application(conn: asyncpg.Connection, decided: Application) -> Application:
    async with conn.transaction():
        await _lock_pending(conn, decided.id)
        try:
            return await _decide(conn, decided)
        except asyncpg.UniqueViolationError:  # a rejection that names an allocated prefix
            raise PrefixTaken(f"Prefix {decided.prefix} is taken already") from None


async def w_add_stats_report(
    conn: asyncpg.Connection, node: str, report_id: str, received_at: int,
    counts: Sequence[StatsCount],
) -> bool:
    async with conn.transaction():
        status = await conn.execute(
            "INSERT INTO stats_reports(node, report_id, received_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING", node, report_id, received_at,
        )
        if status.endswith(" 0"):
            return False
        if counts:
            # Rows of one key folded first: ON CONFLICT cannot touch a row twice
            # in one statement. Sorted, so concurrent reports lock rows in one order.
            folded: dict[tuple[str, int], list[int]] = {}
            for c in counts:
                row = folded.setdefault((c.prefix, c.interval_start), [0, 0, 0])
                row[0] = max(row[0], c.interval_seconds)
                row[1] += c.registrations
                row[2] += c.resolutions
            keys = sorted(folded)
            await conn.execute(
                "INSERT INTO stats_counts(node, prefix, interval_start, interval_seconds,"
                " registrations, resolutions)"
                " SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[],"
                " $5::bigint[], $6::bigint[])"
                " ON CONFLICT (node, prefix, interval_start) DO UPDATE SET"
                " interval_seconds = greatest(stats_counts.interval_seconds,"
                " excluded.interval_seconds),"
                " registrations = stats_counts.registrations + excluded.registrations,"
                " resolutions = stats_counts.resolutions + excluded.resolutions",
                node, [k[0] for k in keys], [k[1] for k in keys],
                [folded[k][0] for k in keys], [folded[k][1] for k in keys],
                [folded[k][2] for k in keys],
            )
    return True


def stats_query(
    node: str | None, prefix: str | None, since: int | None
) -> tuple[str, list[Any]]:
    clause, params = _where((("node", "=", node), ("prefix", "=", prefix),
                             ("interval_start", ">=", since)))
    sql = (
        "SELECT node, prefix, interval_start, interval_seconds, registrations, resolutions"
        f" FROM stats_counts{clause} ORDER BY node, prefix, interval_start"
    )
    return sql, params


def stats_from_row(row: Sequence[Any]) -> StatsCount:
    return StatsCount(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]))


# -- usage counters (migration 3) -------------------------------------------------------

V3_STATEMENTS: Final = (
    'CREATE TABLE usage_counters(name text COLLATE "C" PRIMARY KEY, value bigint NOT NULL)',
)
SEED_USAGE: Final = (
    "INSERT INTO usage_counters(name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    " RETURNING value"
)
USAGE: Final = "SELECT value FROM usage_counters WHERE name = $1"
# One statement, atomic under the row lock ON CONFLICT takes: no row back
# (None) when the sum would pass the limit, and then nothing changed.
# Committed without waiting for its WAL flush (set_config(..., true) lasts
# for the statement's own transaction): a get's cost instead of a put's. The WAL is
# flushed in order, so the durable write a reservation precedes (a create)
# makes the reservation durable too; a crash of the database server can
# only lose counts of requests made in its last ~0.6 s (3 x wal_writer_delay).
ADD_USAGE: Final = (
    "WITH fast AS (SELECT set_config('synchronous_commit', 'off', true))"
    " INSERT INTO usage_counters(name, value) SELECT $1, $2 FROM fast"
    " WHERE $3::bigint IS NULL OR $2 <= $3"
    " ON CONFLICT (name) DO UPDATE SET value = usage_counters.value + excluded.value"
    " WHERE $3::bigint IS NULL OR usage_counters.value + excluded.value <= $3"
    " RETURNING value"
)


async def w_seed_usage(conn: asyncpg.Connection, counter: str, value: int) -> int:
    stored = await conn.fetchval(SEED_USAGE, counter, value)
    if stored is None:
        # Another writer's row: read it in a new statement, whose snapshot
        # sees that writer's commit (the INSERT's own snapshot may not).
        stored = await conn.fetchval(USAGE, counter)
    return int(stored)
