"""The write path shared by every API: authorise, stamp, seal secrets, store, invalidate.

Every method returns only after the store has committed the change and every
cache (this process's, sibling workers', other nodes': ``resolver.coherence``)
has forgotten the old record, so a client that reads after its write was
acknowledged sees it, through any worker. Batches invalidate in one message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from protocol.codes import RC
from protocol.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    NotResponsible,
    ValuesNotFound,
)
from protocol.identifier import Handle, prefix_handle
from protocol.record_msgpack import EncodedRecord
from protocol.values import (
    HS_SECKEY,
    SECRET_PERMS,
    AdminPerm,
    AdminRecord,
    HandleValue,
    check_record,
)
from registry.store import PutItem, PutResult, Store
from resolver.auth import Identity, PrefixAccount, Principal
from resolver.authz import (
    PermissionDenied,
    RecordByHandle,
    admin_records,
    authorise,
    perms_for_change,
    perms_for_removal,
)
from resolver.cache.entry import usage_prefix
from resolver.quotas import IdentifierQuotaExceeded, QuotaBook

TEMPLATE_INDEX = 1001  # a value here names the record's metadata template (SNMS)

# (handle, values) -> raises HandleError unless they fit their metadata template;
# called only for records with a value at TEMPLATE_INDEX
TemplateCheck = Callable[[Handle, Sequence[HandleValue]], Awaitable[None]]


class Registrar:
    def __init__(
        self,
        *,
        store: Store,
        invalidate: Callable[[Collection[str]], Awaitable[None]],
        serves: Callable[[Handle], bool],
        record_of: RecordByHandle,
        server_admins: frozenset[Identity],
        seal: Callable[[bytes], bytes],
        clock: Callable[[], float] = time.time,
        quotas: QuotaBook | None = None,
        check_template: TemplateCheck | None = None,
        check_writable: Callable[[], None] | None = None,
        registrations: dict[str, int] | None = None,
    ) -> None:
        self._store = store
        self._invalidate = invalidate  # keys -> dropped from every cache (Coherence)
        self._serves = serves  # handle -> may it be written here?
        self._record_of = record_of  # cached reads, for credentials and admin lists
        self._server_admins = server_admins
        self._seal = seal  # HS_SECKEY data -> its stored (hashed and sealed) form
        self._clock = clock
        self._quotas = quotas if quotas else None  # per-prefix limits (resolver.quotas)
        # Records naming a metadata template (index 1001) are checked against it;
        # SNMS accounts' writes were checked by the SNMS API already.
        self._check_template = check_template
        # Raises (before anything is written) when a write could not be made
        # visible everywhere, e.g. other nodes' caches are out of reach.
        self._check_writable = check_writable or _always_writable
        # Handles created, per prefix, for usage statistics (resolver.stats).
        self._registrations = registrations if registrations is not None else {}

    def timestamp(self) -> int:
        """The time writes made now are stamped with. Values decoded with it already
        are stored as they are (the API layers decode batches so): no rebuild."""
        return int(self._clock())

    # -- operations --------------------------------------------------------

    async def put_record(
        self, identity: Principal, handle: Handle, values: Sequence[HandleValue], *, overwrite: bool
    ) -> bool:
        """Create the handle, or replace its whole record when ``overwrite``. True if created."""
        self._check_writable()
        self._check_served(handle)
        await self._charge(identity, handle)
        values = self._prepare(values)
        await self._templated(identity, handle, values)
        store = self._store
        # Registering a new handle is the common case: when the identity may
        # add handles, try the create first. It costs no read, and a read on
        # the loop thread is slow right after commits (SQLite drops the
        # reader's page cache whenever another connection has written).
        may_create = await self._allowed(identity, handle, AdminPerm.ADD_HANDLE)
        for _attempt in range(3):
            reserved = await self._reserve_for_create(handle, overwrite) if may_create else None
            if reserved is not None:
                try:
                    await store.create(handle.key, values)
                except BaseException as exc:
                    await self._release(reserved)
                    if not isinstance(exc, HandleAlreadyExists):
                        raise
                    if not overwrite:
                        # The reference answers 101 with no message (the
                        # store's names the key in its stored spelling).
                        raise HandleAlreadyExists() from None
                else:
                    await self._invalidate((handle.key,))
                    self._count_created(handle.key)
                    return True
            old = await store.get(handle.key)
            if old is None:
                if not may_create:  # raises the reason
                    await self._require(identity, handle, AdminPerm.ADD_HANDLE, None)
                continue  # deleted meanwhile: create it
            if not overwrite:
                raise HandleAlreadyExists()
            await self._require(identity, handle, perms_for_change(old, values, replace=True), old)
            await store.put(handle.key, values)
            await self._invalidate((handle.key,))
            return False
        raise HandleError("The handle changed too often to write it; try again", RC.ERROR)

    async def add_values(
        self, identity: Principal, handle: Handle, values: Sequence[HandleValue], *, overwrite: bool
    ) -> bool:
        """Add or replace these values. True if any index was new."""
        self._check_writable()
        self._check_served(handle)
        await self._charge(identity, handle)
        values = self._prepare(values)
        old = await self._existing(handle)
        await self._require(identity, handle, perms_for_change(old, values, replace=False), old)
        await self._templated(identity, handle, _overlay(old, values))
        created = await self._store.add_values(handle.key, values, overwrite=overwrite)
        await self._invalidate((handle.key,))
        return created

    async def modify_values(
        self, identity: Principal, handle: Handle, values: Sequence[HandleValue]
    ) -> None:
        """Replace values whose indexes all exist already (ValuesNotFound otherwise)."""
        self._check_writable()
        self._check_served(handle)
        await self._charge(identity, handle)
        values = self._prepare(values)
        old = await self._existing(handle)
        present = {v.index for v in old}
        missing = [v.index for v in values if v.index not in present]
        if missing:
            raise ValuesNotFound(f"No value at index {missing[0]}")
        await self._require(identity, handle, perms_for_change(old, values, replace=False), old)
        await self._templated(identity, handle, _overlay(old, values))
        await self._store.add_values(handle.key, values, overwrite=True)
        await self._invalidate((handle.key,))

    async def remove_values(
        self, identity: Principal, handle: Handle, indexes: Sequence[int]
    ) -> None:
        self._check_writable()
        self._check_served(handle)
        await self._charge(identity, handle)
        old = await self._existing(handle)
        await self._require(identity, handle, perms_for_removal(old, indexes), old)
        gone = set(indexes)
        await self._templated(identity, handle, [v for v in old if v.index not in gone])
        await self._store.remove_values(handle.key, indexes)
        await self._invalidate((handle.key,))

    async def delete(self, identity: Principal, handle: Handle) -> None:
        self._check_writable()
        self._check_served(handle)
        await self._charge(identity, handle)
        old = await self._existing(handle)
        await self._require(identity, handle, AdminPerm.DELETE_HANDLE, old)
        counter = await self._before_delete(handle)
        await self._store.delete(handle.key)
        await self._invalidate((handle.key,))
        await self._deleted(counter)

    # -- batches -----------------------------------------------------------

    async def put_many(
        self,
        identity: Principal,
        items: Sequence[tuple[Handle, Sequence[HandleValue]]],
        *,
        mode: str,
    ) -> list[PutResult]:
        """Write a batch through ``Store.put_many``: one result per item, each all or nothing.

        ``mode`` is ``create`` (HandleAlreadyExists for a taken handle),
        ``update`` (HandleNotFound for a missing one; the record is replaced
        whole) or ``put`` (create or replace). Authorisation is decided once per
        prefix for creates (and per record for replacing one with its own
        HS_ADMIN); an item that fails it, or validation, fails alone. Every
        written key is dropped from the cache before this returns.
        """
        if mode not in ("create", "update", "put"):
            raise ValueError(f"unknown batch mode {mode!r}")
        self._check_writable()
        results: list[PutResult | None] = [None] * len(items)
        decided: dict[str, HandleError | None] = {}  # prefix -> why it may not write there
        pending: list[int] = []
        prepared: list[Sequence[HandleValue]] = []
        for first in {h.prefix.upper(): h for h, _ in items}.values():
            # One request per prefix; over quota: nothing written.
            await self._charge(identity, first)
        # Decided once per batch, not per item: the stamp, and whether records
        # naming a template (index 1001) are checked here.
        now = int(self._clock())
        check_template = (
            None if isinstance(identity, PrefixAccount) else self._check_template
        )
        for i, (handle, values) in enumerate(items):
            try:
                prefix = handle.prefix.upper()
                if prefix not in decided:
                    self._check_served(handle)
                    decided[prefix] = await self._denial(identity, handle, AdminPerm.ADD_HANDLE)
                elif handle.is_prefix_handle:
                    self._check_served(handle)  # 0.NA/<p> is served if <p> is
                # else: served, as the first item of its prefix was
                ready = self._prepare(values, now)
                if check_template is not None and _names_template(ready):
                    await check_template(handle, ready)
                prepared.append(ready)
            except HandleError as exc:
                results[i] = exc
                prepared.append([])
                continue
            pending.append(i)
        writes: list[int] = []
        put_items: list[PutItem] = []
        may_be_new: list[Handle] = []
        create_first: set[int] = set()
        for i in pending:
            handle = items[i][0]
            values = prepared[i]
            denial = decided[handle.prefix.upper()]
            if mode == "put" and denial is None and self._quotas is None:
                # May add handles here: try the create, which needs no read (new
                # handles are the common case); one that exists is read and
                # replaced in a second round, as the record's admins allow.
                # (With quotas, a create reserves an identifier: read first, so
                # replacements are not counted against the limit.)
                create_first.add(i)
                writes.append(i)
                put_items.append(PutItem(handle.key, values, overwrite=False))
                may_be_new.append(handle)
                continue
            old = None
            try:
                if mode != "create":
                    old = await self._store.get(handle.key)
                    if old is None and mode == "update":
                        raise HandleNotFound()
                    if old is not None and not isinstance(identity, PrefixAccount):
                        needed = perms_for_change(old, values, replace=True)
                        await self._require(identity, handle, needed, old)
                        denial = None  # the record's own admins decided
                if denial is not None:
                    raise denial
            except HandleError as exc:
                results[i] = exc
                continue
            writes.append(i)
            put_items.append(PutItem(handle.key, values, overwrite=mode != "create"))
            if old is None:
                may_be_new.append(handle)
        if not put_items:
            return self._finished(results)
        existing: list[int] = []
        for i, result in zip(writes, await self._write(put_items, may_be_new), strict=True):
            if isinstance(result, HandleAlreadyExists):
                if i in create_first:
                    existing.append(i)
                    continue
                result = HandleAlreadyExists()  # the reference's bare 101
            results[i] = result
        if existing:
            await self._replace_existing(identity, items, prepared, existing, results)
        return self._finished(results)

    async def _replace_existing(
        self,
        identity: Principal,
        items: Sequence[tuple[Handle, Sequence[HandleValue]]],
        prepared: list[Sequence[HandleValue]],
        existing: list[int],
        results: list[PutResult | None],
    ) -> None:
        """put_many's second round: replace the records its creates found taken."""
        writes: list[int] = []
        put_items: list[PutItem] = []
        for i in existing:
            handle, values = items[i][0], prepared[i]
            try:
                old = await self._store.get(handle.key)
                if old is None:  # deleted since: not reserved against a quota, so no retry
                    raise HandleError(
                        "The handle changed too often to write it; try again", RC.ERROR
                    )
                if not isinstance(identity, PrefixAccount):
                    needed = perms_for_change(old, values, replace=True)
                    await self._require(identity, handle, needed, old)
            except HandleError as exc:
                results[i] = exc
                continue
            writes.append(i)
            put_items.append(PutItem(handle.key, values, overwrite=True))
        if put_items:
            for i, result in zip(writes, await self._write(put_items, []), strict=True):
                results[i] = result

    async def _write(self, put_items: list[PutItem], may_be_new: list[Handle]) -> list[PutResult]:
        """Store the items, drop their keys from the cache, settle quota reservations."""
        # Refuses the whole batch (nothing written) if it could pass a quota.
        reserved = await self._reserve(may_be_new)
        try:
            written = await self._store.put_many(put_items)
        except BaseException:
            await self._release(reserved)
            # A failed batch may still have committed some chunks.
            await self._invalidate([item.key for item in put_items])
            raise
        await self._invalidate([item.key for item in put_items])
        if any(reserved):
            made = {item.key for item, r in zip(put_items, written, strict=True) if r is True}
            await self._release([
                name for h, name in zip(may_be_new, reserved, strict=True) if h.key not in made
            ])
        for item, result in zip(put_items, written, strict=True):
            if result is True:
                self._count_created(item.key)
        return written

    @staticmethod
    def _finished(results: list[PutResult | None]) -> list[PutResult]:
        return [r if r is not None else HandleError("not written", RC.ERROR) for r in results]

    async def delete_many(
        self, identity: Principal, handles: Sequence[Handle]
    ) -> list[HandleError | None]:
        """Delete each handle (None = deleted, or why that one was left alone)."""
        self._check_writable()
        results: list[HandleError | None] = [None] * len(handles)
        decided: dict[str, HandleError | None] = {}

        for first in {h.prefix.upper(): h for h in handles}.values():
            await self._charge(identity, first)  # one request per prefix of the batch

        async def one(i: int, handle: Handle) -> None:
            try:
                self._check_served(handle)
                if isinstance(identity, PrefixAccount):
                    prefix = handle.prefix.upper()
                    if prefix not in decided:
                        decided[prefix] = await self._denial(
                            identity, handle, AdminPerm.DELETE_HANDLE
                        )
                    denial = decided[prefix]
                    if denial is not None:
                        raise denial
                else:
                    old = await self._existing(handle)
                    await self._require(identity, handle, AdminPerm.DELETE_HANDLE, old)
                counter = await self._before_delete(handle)
                await self._store.delete(handle.key)
                await self._deleted(counter)
            except HandleError as exc:
                results[i] = exc

        # Concurrent: the store's writer commits them in a few transactions.
        try:
            await asyncio.gather(*(one(i, h) for i, h in enumerate(handles)))
        finally:
            await self._invalidate([h.key for h in handles])  # one message for the batch
        return results

    def _count_created(self, key: str) -> None:
        prefix = usage_prefix(key)
        self._registrations[prefix] = self._registrations.get(prefix, 0) + 1

    async def _templated(
        self, identity: Principal, handle: Handle, values: Sequence[HandleValue]
    ) -> None:
        if self._check_template is not None and not isinstance(identity, PrefixAccount):
            await self._check_template(handle, values)

    # -- quotas -------------------------------------------------------------

    async def _charge(self, identity: Principal, handle: Handle) -> None:
        """Count a Handle API request against its prefix's daily quota.

        SNMS accounts are charged per call by the SNMS API itself."""
        if self._quotas is not None and not isinstance(identity, PrefixAccount):
            prefix = handle.suffix if handle.is_prefix_handle else handle.prefix
            await self._quotas.charge_request(prefix)

    async def _reserve(self, handles: Sequence[Handle]) -> list[str | None]:
        if self._quotas is None or not handles:
            return []
        return await self._quotas.reserve_identifiers(
            h.suffix if h.is_prefix_handle else h.prefix for h in handles
        )

    async def _reserve_for_create(self, handle: Handle, overwrite: bool) -> list[str | None] | None:
        """Reserve the identifier a create would add; None if the quota is full but
        ``overwrite`` may still replace the existing record (the caller reads it)."""
        try:
            return await self._reserve([handle])
        except IdentifierQuotaExceeded:
            if not overwrite or await self._store.get(handle.key) is None:
                raise
            return None

    async def _release(self, reserved: Sequence[str | None]) -> None:
        if self._quotas is not None and reserved:
            await self._quotas.release(reserved)

    async def _before_delete(self, handle: Handle) -> str | None:
        if self._quotas is None:
            return None
        return await self._quotas.before_delete(handle.prefix)

    async def _deleted(self, counter: str | None) -> None:
        if self._quotas is not None:
            await self._quotas.deleted(counter)

    # -- helpers -----------------------------------------------------------

    def _check_served(self, handle: Handle) -> None:
        if not self._serves(handle):
            raise NotResponsible()

    async def _existing(self, handle: Handle) -> tuple[HandleValue, ...]:
        old = await self._store.get(handle.key)
        if old is None:
            raise HandleNotFound()
        return old

    def _prepare(
        self, values: Sequence[HandleValue], now: int | None = None
    ) -> Sequence[HandleValue]:
        """Validate, stamp with the server's time (``now`` or the clock's), and hash
        secrets before they are stored."""
        if now is None:
            now = int(self._clock())
        if type(values) is EncodedRecord and values.timestamp == now:
            return values  # checked, stamped and free of secrets when it was built
        check_record(values)
        prepared = []
        for v in values:
            if v.timestamp == now and v.type != HS_SECKEY:
                prepared.append(v)  # stamped already (immutable: shared as is)
                continue
            if v.type == HS_SECKEY:
                # Never public, and never stored as given.
                v = dataclasses.replace(
                    v, data=self._seal(v.data), permissions=v.permissions & SECRET_PERMS
                )
            # The constructor, not dataclasses.replace: ~10x faster, and a
            # 2000-record batch stamps some 6000 values.
            prepared.append(
                HandleValue(
                    index=v.index, type=v.type, data=v.data, ttl=v.ttl,
                    ttl_absolute=v.ttl_absolute, timestamp=now, permissions=v.permissions,
                    references=v.references,
                )
            )
        return prepared

    async def _require(
        self,
        identity: Principal,
        handle: Handle,
        needed: AdminPerm,
        record: Sequence[HandleValue] | None,
    ) -> None:
        if not needed:
            return
        if isinstance(identity, PrefixAccount):
            prefix = handle.suffix if handle.is_prefix_handle else handle.prefix
            if handle.is_prefix_handle or not identity.covers(prefix):
                raise PermissionDenied(f"{identity.username} may not write under {prefix}")
            return
        admins = admin_records(record or ())
        if not admins:
            admins = await self._prefix_admins(handle)
        await authorise(identity, needed, admins, self._server_admins, self._record_of)

    async def _allowed(self, identity: Principal, handle: Handle, needed: AdminPerm) -> bool:
        """Whether ``identity`` may do ``needed`` as an admin of the prefix (for creates)."""
        return await self._denial(identity, handle, needed) is None

    async def _denial(
        self, identity: Principal, handle: Handle, needed: AdminPerm
    ) -> HandleError | None:
        """Why ``identity`` may not do ``needed`` as an admin of the prefix; None if it may."""
        try:
            await self._require(identity, handle, needed, None)
        except HandleError as exc:
            return exc
        return None

    async def _prefix_admins(self, handle: Handle) -> list[AdminRecord]:
        if handle.is_prefix_handle:
            return []  # prefix records are the server admins' (or their own HS_ADMIN's)
        return admin_records(await self._record_of(prefix_handle(handle.prefix)) or ())




def _names_template(values: Sequence[HandleValue]) -> bool:
    """Whether the record has a value at TEMPLATE_INDEX (without decoding an EncodedRecord)."""
    if type(values) is EncodedRecord:
        return TEMPLATE_INDEX in values.indexes
    return any(v.index == TEMPLATE_INDEX for v in values)


def _overlay(old: Sequence[HandleValue], new: Sequence[HandleValue]) -> list[HandleValue]:
    """The record ``old`` becomes once ``new`` adds or replaces its indexes."""
    replaced = {v.index for v in new}
    return [v for v in old if v.index not in replaced] + list(new)


def _always_writable() -> None:
    pass
