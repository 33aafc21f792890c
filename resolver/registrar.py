"""The write path shared by every API: authorise, stamp, seal secrets, store, invalidate.

Every method returns only after the store has committed the change and the
cache has forgotten the old record, so a client that reads after its write
was acknowledged sees it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from protocol.codes import RC
from protocol.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    NotResponsible,
    ValuesNotFound,
)
from protocol.identifier import Handle, prefix_handle
from protocol.values import (
    HS_SECKEY,
    SECRET_PERMS,
    AdminPerm,
    AdminRecord,
    HandleValue,
    check_record,
)
from registry.store import Store
from resolver.auth import Identity
from resolver.authz import (
    RecordByHandle,
    admin_records,
    authorise,
    perms_for_change,
    perms_for_removal,
)
from resolver.cache import ResolutionCache


class Registrar:
    def __init__(
        self,
        *,
        store: Store,
        cache: ResolutionCache,
        serves: Callable[[str], bool],
        record_of: RecordByHandle,
        server_admins: frozenset[Identity],
        seal: Callable[[bytes], bytes],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._serves = serves  # prefix -> homed here?
        self._record_of = record_of  # cached reads, for credentials and admin lists
        self._server_admins = server_admins
        self._seal = seal  # HS_SECKEY data -> its stored (hashed and sealed) form
        self._clock = clock

    # -- operations --------------------------------------------------------

    async def put_record(
        self, identity: Identity, handle: Handle, values: Sequence[HandleValue], *, overwrite: bool
    ) -> bool:
        """Create the handle, or replace its whole record when ``overwrite``. True if created."""
        self._check_served(handle)
        values = self._prepare(values)
        store = self._store
        # Registering a new handle is the common case: when the identity may
        # add handles, try the create first. It costs no read, and a read on
        # the loop thread is slow right after commits (SQLite drops the
        # reader's page cache whenever another connection has written).
        may_create = await self._allowed(identity, handle, AdminPerm.ADD_HANDLE)
        for _attempt in range(3):
            if may_create:
                try:
                    await store.create(handle.key, values)
                except HandleAlreadyExists:
                    if not overwrite:
                        # The reference answers 101 with no message (the
                        # store's names the key in its stored spelling).
                        raise HandleAlreadyExists() from None
                else:
                    self._cache.invalidate(handle.key)
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
            self._cache.invalidate(handle.key)
            return False
        raise HandleError("The handle changed too often to write it; try again", RC.ERROR)

    async def add_values(
        self, identity: Identity, handle: Handle, values: Sequence[HandleValue], *, overwrite: bool
    ) -> bool:
        """Add or replace these values. True if any index was new."""
        self._check_served(handle)
        values = self._prepare(values)
        old = await self._existing(handle)
        await self._require(identity, handle, perms_for_change(old, values, replace=False), old)
        created = await self._store.add_values(handle.key, values, overwrite=overwrite)
        self._cache.invalidate(handle.key)
        return created

    async def modify_values(
        self, identity: Identity, handle: Handle, values: Sequence[HandleValue]
    ) -> None:
        """Replace values whose indexes all exist already (ValuesNotFound otherwise)."""
        self._check_served(handle)
        values = self._prepare(values)
        old = await self._existing(handle)
        present = {v.index for v in old}
        missing = [v.index for v in values if v.index not in present]
        if missing:
            raise ValuesNotFound(f"No value at index {missing[0]}")
        await self._require(identity, handle, perms_for_change(old, values, replace=False), old)
        await self._store.add_values(handle.key, values, overwrite=True)
        self._cache.invalidate(handle.key)

    async def remove_values(
        self, identity: Identity, handle: Handle, indexes: Sequence[int]
    ) -> None:
        self._check_served(handle)
        old = await self._existing(handle)
        await self._require(identity, handle, perms_for_removal(old, indexes), old)
        await self._store.remove_values(handle.key, indexes)
        self._cache.invalidate(handle.key)

    async def delete(self, identity: Identity, handle: Handle) -> None:
        self._check_served(handle)
        old = await self._existing(handle)
        await self._require(identity, handle, AdminPerm.DELETE_HANDLE, old)
        await self._store.delete(handle.key)
        self._cache.invalidate(handle.key)

    # -- helpers -----------------------------------------------------------

    def _check_served(self, handle: Handle) -> None:
        prefix = handle.suffix if handle.is_prefix_handle else handle.prefix
        if not self._serves(prefix):
            raise NotResponsible()

    async def _existing(self, handle: Handle) -> tuple[HandleValue, ...]:
        old = await self._store.get(handle.key)
        if old is None:
            raise HandleNotFound()
        return old

    def _prepare(self, values: Sequence[HandleValue]) -> list[HandleValue]:
        """Validate, stamp with the server's time, and hash secrets before they are stored."""
        check_record(values)
        now = int(self._clock())
        prepared = []
        for v in values:
            if v.type == HS_SECKEY:
                # Never public, and never stored as given.
                v = dataclasses.replace(
                    v, data=self._seal(v.data), permissions=v.permissions & SECRET_PERMS
                )
            prepared.append(dataclasses.replace(v, timestamp=now))
        return prepared

    async def _require(
        self,
        identity: Identity,
        handle: Handle,
        needed: AdminPerm,
        record: Sequence[HandleValue] | None,
    ) -> None:
        if not needed:
            return
        admins = admin_records(record or ())
        if not admins:
            admins = await self._prefix_admins(handle)
        await authorise(identity, needed, admins, self._server_admins, self._record_of)

    async def _allowed(self, identity: Identity, handle: Handle, needed: AdminPerm) -> bool:
        """Whether ``identity`` may do ``needed`` as an admin of the prefix (for creates)."""
        try:
            await self._require(identity, handle, needed, None)
        except HandleError:
            return False
        return True

    async def _prefix_admins(self, handle: Handle) -> list[AdminRecord]:
        if handle.is_prefix_handle:
            return []  # prefix records are the server admins' (or their own HS_ADMIN's)
        return admin_records(await self._record_of(prefix_handle(handle.prefix)) or ())


