"""Offline administration of a store: init, prefixes, bulk import and export."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import orjson

from protocol import rest_json, snms
from protocol.errors import HandleError
from protocol.identifier import parse_handle, parse_prefix, prefix_handle
from protocol.values import (
    HS_ADMIN,
    HS_SECKEY,
    HS_VLIST,
    SECRET_PERMS,
    AdminPerm,
    AdminRecord,
    HandleValue,
    ValueReference,
    check_record,
    encode_admin,
    encode_vlist,
)
from registry.credentials import SecretSealer, generate_secret, load_master_key
from registry.sqlite_store import SQLiteStore
from registry.store import Account, PutItem, Store
from resolver.applications import PREFIXLESS_ROLES, ApplicationDesk, application_json
from resolver.auth import Identity

ADMIN_INDEX = 300
HS_ADMIN_INDEX = 100
# Handle.Net's convention: 0.NA/<prefix> holds the prefix's admin group at 200,
# which clients such as pyhandle name as the default owner of new handles.
ADMIN_GROUP_INDEX = 200


class CommandError(Exception):
    """A command that cannot do what it was asked; the CLI prints it and exits 2."""


@asynccontextmanager
async def opened(path: str) -> AsyncIterator[Store]:
    if "://" in path:
        raise CommandError(f"Unsupported store URL {path!r}: give a file path")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def admin_value(admin_handle: str, admin_index: int = ADMIN_INDEX) -> HandleValue:
    data = encode_admin(AdminRecord(admin_handle, admin_index))
    return HandleValue(HS_ADMIN_INDEX, HS_ADMIN, data)


def prefix_record(admin_handle: str, admin_index: int) -> list[HandleValue]:
    """``0.NA/<prefix>``: its admin, and the admin group (HS_VLIST) naming the same identity."""
    group = encode_vlist([ValueReference(admin_handle, admin_index)])
    return [
        admin_value(admin_handle, admin_index),
        HandleValue(ADMIN_GROUP_INDEX, HS_VLIST, group),
    ]


async def init(store_path: str, prefix_text: str, secret: str | None, if_new: bool) -> int:
    """Create the store, home the prefix, and create ``<PREFIX>/ADMIN`` able to log in."""
    try:
        prefix = parse_prefix(prefix_text)
    except HandleError as exc:
        raise CommandError(exc.message) from None
    admin_handle = f"{prefix}/ADMIN"
    async with opened(store_path) as store:
        if prefix in await store.homed_prefixes():
            if if_new:
                return 0
            raise CommandError(f"prefix {prefix} is already homed in {store_path}")
        generated = secret is None
        secret = secret or generate_secret()
        await store.home_prefix(prefix)
        await store.put(prefix_handle(prefix), prefix_record(admin_handle, ADMIN_INDEX))
        await store.put(
            parse_handle(admin_handle).key,
            [
                admin_value(admin_handle),
                HandleValue(ADMIN_INDEX, HS_SECKEY, sealer_for(store_path).seal(secret.encode()),
                            permissions=SECRET_PERMS),
            ],
        )
    print(f"Initialised {store_path}: prefix {prefix} is homed here.")
    print(f"Admin identity: {ADMIN_INDEX}:{admin_handle}")
    if generated:
        print(f"Admin secret:   {secret}   (shown once; it is stored hashed)")
    return 0


async def prefix_add(store_path: str, prefix_text: str, admin: str | None) -> int:
    try:
        prefix = parse_prefix(prefix_text)
        identity = Identity.parse(admin) if admin else None
    except HandleError as exc:
        raise CommandError(exc.message) from None
    async with opened(store_path) as store:
        new = await store.home_prefix(prefix)
        if identity is not None:
            await store.put(prefix_handle(prefix), prefix_record(identity.handle, identity.index))
    print(f"{prefix} {'homed' if new else 'was already homed'}")
    return 0


# What a secondary may do to its own 0.NA/<prefix> record at the top-level:
# write its site values, never its admins, never delete the record.
DELEGATE_PERMS = (AdminPerm.ADD_VALUE | AdminPerm.MODIFY_VALUE | AdminPerm.REMOVE_VALUE
                  | AdminPerm.READ_VALUE)


async def delegate(store_path: str, prefix_text: str, secret: str | None) -> int:
    """At a top-level: register the secondary that will serve ``prefix``.

    ``0.NA/<prefix>`` gets an HS_ADMIN letting ``300:0.NA/<prefix>`` write its
    values (the secondary's HS_SITE, resolver.homing) and that identity's
    HS_SECKEY; values already there stay (a record made by ``reporter add``
    gets the admin, and the new secret serves statistics reports too).
    """
    try:
        prefix = parse_prefix(prefix_text)
    except HandleError as exc:
        raise CommandError(exc.message) from None
    identity = prefix_handle(prefix)
    generated = secret is None
    secret = secret or generate_secret()
    values = [
        HandleValue(HS_ADMIN_INDEX, HS_ADMIN,
                    encode_admin(AdminRecord(identity, ADMIN_INDEX, DELEGATE_PERMS))),
        HandleValue(ADMIN_INDEX, HS_SECKEY, sealer_for(store_path).seal(secret.encode()),
                    permissions=SECRET_PERMS),
    ]
    async with opened(store_path) as store:
        if await store.get(identity) is None:
            await store.put(identity, values)
        else:
            await store.add_values(identity, values, overwrite=True)
    print(f"Delegated {prefix}: the secondary serving it homes (and reports statistics) with")
    print(f"  --home-auth {ADMIN_INDEX}:{identity}   (also its --stats-identity)")
    if generated:
        print(f"  --home-secret {secret}   (shown once; it is stored hashed)")
    return 0


async def prefix_list(store_path: str) -> int:
    async with opened(store_path) as store:
        for prefix in await store.homed_prefixes():
            print(prefix)
    return 0


ACCOUNT_ROLES = ("enterprise", "readonly", *sorted(PREFIXLESS_ROLES))


async def account_add(
    store_path: str, username: str, prefix_text: str | None, password: str | None, role: str
) -> int:
    """Create or reset an SNMS application identity; a reset revokes its earlier tokens.

    Stored: sha256hex(password), hashed and sealed under the master key
    (``SecretSealer``): ``/identity/token/v1`` logins need sha256hex(password)
    itself, so it is kept recoverable, like an HS_SECKEY. Applicants, auditors
    and node admins have no prefix (an approved application gives an applicant one).
    """
    prefixless = role in PREFIXLESS_ROLES
    if prefixless and prefix_text:
        raise CommandError(f"a {role} account has no prefix: leave out --prefix")
    if not prefixless and not prefix_text:
        raise CommandError(f"a {role} account needs --prefix")
    try:
        prefix = "" if prefixless else parse_prefix(prefix_text or "")
    except HandleError as exc:
        raise CommandError(exc.message) from None
    if not username or len(username) > snms.MAX_USERNAME:
        raise CommandError(f"username must be 1 to {snms.MAX_USERNAME} characters")
    if role not in ACCOUNT_ROLES:
        raise CommandError(f"role must be one of {', '.join(ACCOUNT_ROLES)}")
    generated = password is None
    password = password or generate_secret()
    if len(password) > snms.MAX_PASSWORD:
        raise CommandError(f"password must be at most {snms.MAX_PASSWORD} characters")
    sealed = sealer_for(store_path).seal(snms.sha256_hex(password).encode())
    async with opened(store_path) as store:
        old = await store.get_account(username)
        generation = 0 if old is None else old.generation + 1
        await store.put_account(Account(username, prefix, role, sealed, generation))
        homed = prefix in await store.homed_prefixes()
    scope = f" for prefix {prefix}" if prefix else ""
    print(f"Account {username} ({role}){scope} {'reset' if old else 'created'}.")
    if prefix and not homed:
        print(f"Warning: prefix {prefix} is not homed in {store_path} (idnode prefix add)")
    if generated:
        print(f"Password: {password}   (shown once; it is stored hashed)")
    return 0


async def account_revoke(store_path: str, username: str) -> int:
    """End every token issued to ``username`` so far (its password stays)."""
    async with opened(store_path) as store:
        old = await store.get_account(username)
        if old is None:
            raise CommandError(f"no account {username!r}")
        await store.put_account(dataclasses.replace(old, generation=old.generation + 1))
    print(f"Tokens of {username} revoked.")
    return 0


async def application_list(store_path: str, state: str | None, as_json: bool) -> int:
    async with opened(store_path) as store:
        apps = await store.list_applications(state=state)
    if as_json:
        print(orjson.dumps([application_json(a) for a in apps],
                           option=orjson.OPT_INDENT_2).decode())
        return 0
    for a in apps:
        decided = f" by {a.decided_by}" if a.decided_by else ""
        granted = f" -> {a.prefix}" if a.prefix else ""
        wanted = f" (asks {a.requested_prefix})" if a.requested_prefix else ""
        reason = f": {a.reason}" if a.reason else ""
        print(f"{a.id}\t{a.state}{decided}{granted}\t{a.applicant}\t{a.enterprise}{wanted}"
              f"{reason}")
    return 0


async def application_decide(
    store_path: str, application_id: int, *, approve: bool, parent: str | None, by: str,
    reason: str | None,
) -> int:
    """Decide offline (the running node homes an approved prefix within seconds)."""
    async with opened(store_path) as store:
        desk = ApplicationDesk(store, parent=parent, seal=sealer_for(store_path).seal)
        try:
            if approve:
                app = await desk.approve(application_id, by, reason)
            else:
                app = await desk.reject(application_id, by, reason or "")
        except HandleError as exc:
            raise CommandError(exc.message or f"failed (rc {int(exc.rc)})") from None
    if approve:
        print(f"Application {app.id} approved: prefix {app.prefix} homed, admin "
              f"{ADMIN_INDEX}:{app.prefix}/ADMIN; {app.applicant} collects the secret with "
              f"POST /api/admin/applications/{app.id}/credentials")
    else:
        print(f"Application {app.id} rejected: {app.reason}")
    return 0


async def reporter_add(store_path: str, prefix_text: str, secret: str | None) -> int:
    """Let the node serving ``prefix`` report usage statistics here (a top-level node):
    an HS_SECKEY at 300 of ``0.NA/<prefix>``, added to that record or creating it."""
    try:
        prefix = parse_prefix(prefix_text)
    except HandleError as exc:
        raise CommandError(exc.message) from None
    generated = secret is None
    secret = secret or generate_secret()
    value = HandleValue(ADMIN_INDEX, HS_SECKEY, sealer_for(store_path).seal(secret.encode()),
                        permissions=SECRET_PERMS)
    key = prefix_handle(prefix)
    async with opened(store_path) as store:
        if await store.get(key) is None:
            await store.put(key, [value])
        else:
            await store.add_values(key, [value], overwrite=True)
    print(f"Node {prefix} reports as {ADMIN_INDEX}:{key} "
          f"(its --stats-identity; a running node sees this at once).")
    if generated:
        print(f"Secret: {secret}   (shown once; give it to that node as IDNODE_STATS_SECRET)")
    return 0


def sealer_for(store_path: str) -> SecretSealer:
    """The sealer of the node that will serve ``store_path`` (creates its master key)."""
    return SecretSealer(load_master_key(store_path))


def parse_jsonl_line(line: bytes, seal: Callable[[bytes], bytes]) -> PutItem:
    """One export line: ``{"handle": "...", "values": [...]}`` (Handle REST value JSON)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("handle"), str):
        raise CommandError('each line needs {"handle": ..., "values": [...]}')
    handle = parse_handle(obj["handle"])
    values = [rest_json.decode_value_object(v) for v in obj.get("values") or []]
    check_record(values)
    return PutItem(handle.key, [_sealed(v, seal) if v.type == HS_SECKEY else v for v in values])


def _sealed(value: HandleValue, seal: Callable[[bytes], bytes]) -> HandleValue:
    return dataclasses.replace(
        value, data=seal(value.data), permissions=value.permissions & SECRET_PERMS
    )


async def import_jsonl(store_path: str, file: str, batch: int) -> int:
    source: IO[bytes] = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    imported = 0
    seal = sealer_for(store_path).seal
    async with opened(store_path) as store:
        homed = set(await store.homed_prefixes())
        pending: list[PutItem] = []
        with source:
            for number, line in enumerate(source, 1):
                if not line.strip():
                    continue
                try:
                    item = parse_jsonl_line(line, seal)
                except (CommandError, HandleError) as exc:
                    message = exc.message if isinstance(exc, HandleError) else exc
                    raise CommandError(f"{file}:{number}: {message}") from None
                prefix = item.key.partition("/")[0]
                if prefix not in homed:
                    raise CommandError(f"{file}:{number}: prefix {prefix} is not homed here")
                pending.append(item)
                if len(pending) >= batch:
                    imported += await _flush(store, pending)
            imported += await _flush(store, pending)
    print(f"imported {imported} handles", file=sys.stderr)
    return 0


async def _flush(store: Store, pending: list[PutItem]) -> int:
    if not pending:
        return 0
    results = await store.put_many(pending)
    for item, result in zip(pending, results, strict=True):
        if isinstance(result, HandleError):
            raise CommandError(f"{item.key}: {result.message or result.rc!r}")
    count = len(pending)
    pending.clear()
    return count


async def export_jsonl(store_path: str, prefix: str | None, output: str) -> int:
    sink: IO[bytes] = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    with sink:
        async with opened(store_path) as store:
            async for key, values in store.iter_records(parse_prefix(prefix) if prefix else None):
                line = {"handle": key, "values": [rest_json.value_to_json(v) for v in values]}
                sink.write(orjson.dumps(line) + b"\n")
    return 0
