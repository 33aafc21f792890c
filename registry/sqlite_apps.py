"""SQLite tables and writer-thread operations for prefix applications and reported statistics.

Kept out of ``sqlite_store`` (handles) because they are small, rarely
written tables: the writer functions here run inside the store's group
commit like every other write, one SAVEPOINT each, so raising undoes them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

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

# Schema v3. One pending application per applicant (partial unique index);
# an allocated prefix belongs to one application (UNIQUE, NULLs allowed).
V3_TABLES: Final = (
    "CREATE TABLE applications("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # ids never reused, even after deletes
    " applicant TEXT NOT NULL, enterprise TEXT NOT NULL, requested_prefix TEXT,"
    " detail TEXT NOT NULL, created_at INTEGER NOT NULL, state TEXT NOT NULL,"
    " decided_by TEXT, decided_at INTEGER, reason TEXT, prefix TEXT UNIQUE)",
    "CREATE UNIQUE INDEX applications_one_pending ON applications(applicant)"
    " WHERE state = 'pending'",
    "CREATE TABLE stats_reports(node TEXT NOT NULL, report_id TEXT NOT NULL,"
    " received_at INTEGER NOT NULL, PRIMARY KEY(node, report_id)) WITHOUT ROWID",
    "CREATE TABLE stats_counts(node TEXT NOT NULL, prefix TEXT NOT NULL,"
    " interval_start INTEGER NOT NULL, interval_seconds INTEGER NOT NULL,"
    " registrations INTEGER NOT NULL, resolutions INTEGER NOT NULL,"
    " PRIMARY KEY(node, prefix, interval_start)) WITHOUT ROWID",
)

_COLUMNS: Final = (
    "id, applicant, enterprise, requested_prefix, detail, created_at, state,"
    " decided_by, decided_at, reason, prefix"
)
SELECT_APPLICATION: Final = f"SELECT {_COLUMNS} FROM applications WHERE id = ?"


def application_from_row(row: Sequence[Any]) -> Application:
    return Application(
        id=int(row[0]), applicant=row[1], enterprise=row[2], requested_prefix=row[3],
        detail=row[4], created_at=int(row[5]), state=row[6], decided_by=row[7],
        decided_at=None if row[8] is None else int(row[8]), reason=row[9], prefix=row[10],
    )


def list_applications_query(
    state: str | None, applicant: str | None
) -> tuple[str, tuple[Any, ...]]:
    where, params = [], []
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if applicant is not None:
        where.append("applicant = ?")
        params.append(applicant)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_COLUMNS} FROM applications{clause} ORDER BY id", tuple(params)


def w_add_application(conn: sqlite3.Connection, app: Application) -> Application:
    try:
        cursor = conn.execute(
            "INSERT INTO applications(applicant, enterprise, requested_prefix, detail,"
            " created_at, state) VALUES (?, ?, ?, ?, ?, 'pending')",
            (app.applicant, app.enterprise, app.requested_prefix, app.detail, app.created_at),
        )
    except sqlite3.IntegrityError:
        raise ApplicationConflict(
            f"Account {app.applicant} has an application pending already"
        ) from None
    row = conn.execute(SELECT_APPLICATION, (cursor.lastrowid,)).fetchone()
    return application_from_row(row)


def _pending(conn: sqlite3.Connection, application_id: int) -> None:
    row = conn.execute("SELECT state FROM applications WHERE id = ?", (application_id,)).fetchone()
    if row is None:
        raise ApplicationNotFound(f"No application {application_id}")
    if row[0] != "pending":
        raise ApplicationConflict(f"Application {application_id} is {row[0]} already")


def _decide(conn: sqlite3.Connection, decided: Application) -> Application:
    conn.execute(
        "UPDATE applications SET state = ?, decided_by = ?, decided_at = ?, reason = ?,"
        " prefix = ? WHERE id = ? AND state = 'pending'",
        (decided.state, decided.decided_by, decided.decided_at, decided.reason, decided.prefix,
         decided.id),
    )
    return application_from_row(conn.execute(SELECT_APPLICATION, (decided.id,)).fetchone())


def w_approve_application(
    conn: sqlite3.Connection, decided: Application, records: Sequence[PutItem], account: Account
) -> Application:
    _pending(conn, decided.id)
    prefix = (decided.prefix or "").upper()
    if not prefix:
        raise ValueError("an approval needs the allocated prefix")
    taken = conn.execute("SELECT 1 FROM prefixes WHERE prefix = ?", (prefix,)).fetchone()
    allocated = conn.execute(
        "SELECT id FROM applications WHERE prefix = ?", (prefix,)
    ).fetchone()
    if taken or allocated:
        raise PrefixTaken(f"Prefix {prefix} is taken already")
    conn.execute("INSERT INTO prefixes(prefix) VALUES (?)", (prefix,))
    for item in records:
        inserted = conn.execute(
            "INSERT INTO handles(key, record) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
            (item.key, encode_record(item.values)),
        ).rowcount
        if not inserted:
            raise PrefixTaken(f"Handle {item.key} exists already")
    conn.execute(
        "INSERT INTO accounts(username, prefix, role, secret_hash, generation)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(username) DO UPDATE SET"
        " prefix = excluded.prefix, role = excluded.role,"
        " secret_hash = excluded.secret_hash, generation = excluded.generation",
        (account.username, account.prefix, account.role, account.secret_hash,
         account.generation),
    )
    return _decide(conn, decided)


def w_reject_application(conn: sqlite3.Connection, decided: Application) -> Application:
    _pending(conn, decided.id)
    return _decide(conn, decided)


def w_add_stats_report(
    conn: sqlite3.Connection, node: str, report_id: str, received_at: int,
    counts: Sequence[StatsCount],
) -> bool:
    seen = conn.execute(
        "INSERT INTO stats_reports(node, report_id, received_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (node, report_id, received_at),
    ).rowcount
    if not seen:
        return False
    conn.executemany(
        "INSERT INTO stats_counts(node, prefix, interval_start, interval_seconds,"
        " registrations, resolutions) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(node, prefix, interval_start) DO UPDATE SET"
        " interval_seconds = max(interval_seconds, excluded.interval_seconds),"
        " registrations = registrations + excluded.registrations,"
        " resolutions = resolutions + excluded.resolutions",
        [(node, c.prefix, c.interval_start, c.interval_seconds, c.registrations,
          c.resolutions) for c in counts],
    )
    return True


def stats_query(
    node: str | None, prefix: str | None, since: int | None
) -> tuple[str, tuple[Any, ...]]:
    where, params = [], []
    for column, op, value in (("node", "=", node), ("prefix", "=", prefix),
                              ("interval_start", ">=", since)):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = (
        "SELECT node, prefix, interval_start, interval_seconds, registrations, resolutions"
        f" FROM stats_counts{clause} ORDER BY node, prefix, interval_start"
    )
    return sql, tuple(params)


def stats_from_row(row: Sequence[Any]) -> StatsCount:
    return StatsCount(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]))
