"""LMDB tables beside the handles: SNMS accounts and templates, prefix applications,
reported statistics, usage counters.

Small, rarely written tables, each a named database of the store's
environment. Values are msgpack arrays. The ``w_*`` functions run in the
writer thread inside the batch's transaction (a nested transaction per
operation, so raising undoes just that operation); the readers take any
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

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

# Named databases: the handles, then the tables of this module.
HANDLES: Final = b"handles"
META: Final = b"meta"  # schema_version, unannounced_writes, next_application_id
PREFIXES: Final = b"prefixes"  # homed prefix (upper-cased) -> b""
ACCOUNTS: Final = b"accounts"  # username -> [prefix, role, secret_hash, generation]
TEMPLATES: Final = b"templates"  # prefix \0 version -> document
APPLICATIONS: Final = b"applications"  # id (8 bytes, big-endian: id order) -> fields
PENDING_BY_APPLICANT: Final = b"app_pending"  # applicant -> id, while pending
APPLICATION_BY_PREFIX: Final = b"app_prefix"  # allocated prefix -> id
STATS_REPORTS: Final = b"stats_reports"  # [node, report_id] -> received_at
STATS_COUNTS: Final = b"stats_counts"  # [node, prefix, interval_start] -> [secs, reg, res]
USAGE: Final = b"usage"  # counter name -> value
ALL_DATABASES: Final = (
    HANDLES, META, PREFIXES, ACCOUNTS, TEMPLATES, APPLICATIONS, PENDING_BY_APPLICANT,
    APPLICATION_BY_PREFIX, STATS_REPORTS, STATS_COUNTS, USAGE,
)


@dataclass(frozen=True, slots=True)
class Tables:
    """The environment's named database handles, opened once."""

    handles: Any
    meta: Any
    prefixes: Any
    accounts: Any
    templates: Any
    applications: Any
    pending_by_applicant: Any
    application_by_prefix: Any
    stats_reports: Any
    stats_counts: Any
    usage: Any


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


def counter_bytes(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def counter_value(blob: bytes | None) -> int:
    return 0 if blob is None else int.from_bytes(blob, "big", signed=True)


# -- accounts and templates ---------------------------------------------------------


def read_account(txn: lmdb.Transaction, t: Tables, username: str) -> Account | None:
    blob = txn.get(username.encode(), db=t.accounts)
    if blob is None:
        return None
    prefix, role, secret_hash, generation = unpack(blob)
    return Account(username, prefix, role, bytes(secret_hash), int(generation))


def w_put_account(txn: lmdb.Transaction, t: Tables, account: Account) -> None:
    row = [account.prefix, account.role, account.secret_hash, account.generation]
    txn.put(account.username.encode(), pack(row), db=t.accounts)


def template_key(prefix: str, version: str) -> bytes:
    # A prefix has no NUL (protocol.identifier), so the pair splits back unambiguously.
    return f"{prefix.upper()}\0{version}".encode()


# -- prefix applications ------------------------------------------------------------

_FIELDS: Final = ("applicant", "enterprise", "requested_prefix", "detail", "created_at",
                  "state", "decided_by", "decided_at", "reason", "prefix")


def _app_key(application_id: int) -> bytes:
    return application_id.to_bytes(8, "big")


def _app_blob(app: Application) -> bytes:
    return pack([getattr(app, name) for name in _FIELDS])


def _app_from(key: bytes, blob: bytes) -> Application:
    return Application(int.from_bytes(key, "big"), **dict(zip(_FIELDS, unpack(blob), strict=True)))


def read_application(txn: lmdb.Transaction, t: Tables, application_id: int) -> Application | None:
    if not 0 < application_id < 1 << 63:
        return None
    key = _app_key(application_id)
    blob = txn.get(key, db=t.applications)
    return None if blob is None else _app_from(key, blob)


def list_applications(
    txn: lmdb.Transaction, t: Tables, state: str | None, applicant: str | None
) -> list[Application]:
    apps = (_app_from(key, blob) for key, blob in txn.cursor(db=t.applications))
    return [app for app in apps
            if (state is None or app.state == state)
            and (applicant is None or app.applicant == applicant)]


def w_add_application(txn: lmdb.Transaction, t: Tables, app: Application) -> Application:
    applicant = app.applicant.encode()
    if txn.get(applicant, db=t.pending_by_applicant) is not None:
        raise ApplicationConflict(f"Account {app.applicant} has an application pending already")
    # Ids are never reused, even after deletes (as SQLite's AUTOINCREMENT).
    new_id = counter_value(txn.get(b"next_application_id", db=t.meta)) + 1
    txn.put(b"next_application_id", counter_bytes(new_id), db=t.meta)
    stored = Application(new_id, app.applicant, app.enterprise, app.requested_prefix,
                         app.detail, app.created_at)  # pending, undecided
    txn.put(_app_key(new_id), _app_blob(stored), db=t.applications)
    txn.put(applicant, _app_key(new_id), db=t.pending_by_applicant)
    return stored


def _pending(txn: lmdb.Transaction, t: Tables, application_id: int) -> Application:
    app = read_application(txn, t, application_id)
    if app is None:
        raise ApplicationNotFound(f"No application {application_id}")
    if app.state != "pending":
        raise ApplicationConflict(f"Application {application_id} is {app.state} already")
    return app


def _decide(txn: lmdb.Transaction, t: Tables, pending: Application,
            decided: Application) -> Application:
    stored = Application(pending.id, pending.applicant, pending.enterprise,
                         pending.requested_prefix, pending.detail, pending.created_at,
                         decided.state, decided.decided_by, decided.decided_at, decided.reason,
                         decided.prefix)
    txn.put(_app_key(stored.id), _app_blob(stored), db=t.applications)
    txn.delete(pending.applicant.encode(), db=t.pending_by_applicant)
    if stored.prefix is not None:
        txn.put(stored.prefix.encode(), _app_key(stored.id), db=t.application_by_prefix)
    return stored


def w_approve_application(
    txn: lmdb.Transaction, t: Tables, decided: Application, records: Sequence[PutItem],
    account: Account,
) -> Application:
    pending = _pending(txn, t, decided.id)
    prefix = (decided.prefix or "").upper()
    if not prefix:
        raise ValueError("an approval needs the allocated prefix")
    key = prefix.encode()
    if (txn.get(key, db=t.prefixes) is not None
            or txn.get(key, db=t.application_by_prefix) is not None):
        raise PrefixTaken(f"Prefix {prefix} is taken already")
    txn.put(key, b"", db=t.prefixes)
    for item in records:
        if not txn.put(item.key.encode(), encode_record(item.values), overwrite=False,
                       db=t.handles):
            raise PrefixTaken(f"Handle {item.key} exists already")
    w_put_account(txn, t, account)
    return _decide(txn, t, pending, decided)


def w_reject_application(txn: lmdb.Transaction, t: Tables, decided: Application) -> Application:
    return _decide(txn, t, _pending(txn, t, decided.id), decided)


# -- statistics reported by other nodes -----------------------------------------------


def w_add_stats_report(
    txn: lmdb.Transaction, t: Tables, node: str, report_id: str, received_at: int,
    counts: Sequence[StatsCount],
) -> bool:
    if not txn.put(pack([node, report_id]), pack(received_at), overwrite=False,
                   db=t.stats_reports):
        return False
    for c in counts:
        key = pack([node, c.prefix, c.interval_start])
        old = txn.get(key, db=t.stats_counts)
        seconds, registrations, resolutions = (0, 0, 0) if old is None else unpack(old)
        row = [max(seconds, c.interval_seconds), registrations + c.registrations,
               resolutions + c.resolutions]
        txn.put(key, pack(row), db=t.stats_counts)
    return True


def stats_counts(
    txn: lmdb.Transaction, t: Tables, node: str | None, prefix: str | None, since: int | None
) -> list[StatsCount]:
    out = []
    for key, blob in txn.cursor(db=t.stats_counts):
        row_node, row_prefix, start = unpack(key)
        if ((node is None or row_node == node) and (prefix is None or row_prefix == prefix)
                and (since is None or start >= since)):
            seconds, registrations, resolutions = unpack(blob)
            out.append(StatsCount(row_node, row_prefix, start, seconds, registrations,
                                  resolutions))
    out.sort(key=lambda c: (c.node, c.prefix, c.interval_start))
    return out


# -- usage counters --------------------------------------------------------------------


def w_seed_usage(txn: lmdb.Transaction, t: Tables, counter: str, value: int) -> int:
    key = counter.encode()
    old = txn.get(key, db=t.usage)
    if old is not None:
        return counter_value(old)
    txn.put(key, counter_bytes(value), db=t.usage)
    return value


def w_add_usage(
    txn: lmdb.Transaction, t: Tables, counter: str, delta: int, limit: int | None
) -> int | None:
    key = counter.encode()
    value = counter_value(txn.get(key, db=t.usage)) + delta
    if limit is not None and value > limit:
        return None
    txn.put(key, counter_bytes(value), db=t.usage)
    return value
