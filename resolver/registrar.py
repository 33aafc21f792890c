"""The write path shared by every API: authorise, stamp, seal secrets, store, invalidate.

Every method returns only after the store has committed the change and the
cache has forgotten the old record, so a client that reads after its write
was acknowledged sees it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol.codes import RC
from protocol.errors import HandleAlreadyExists, HandleError, HandleNotFound, NotResponsible
from protocol.identifier import Handle, prefix_handle
from protocol.values import (
    HS_SECKEY,
    SECRET_PERMS,
    AdminPerm,
    AdminRecord,
    HandleValue,
    check_record,
)
from registry.credentials import hash_secret
from resolver.auth import Identity
from resolver.authz import admin_records, authorise, perms_for_change, perms_for_removal

if TYPE_CHECKING:
    from resolver.node import Node


class Registrar:
    def __init__(self, node: Node, clock: Callable[[], float] = time.time) -> None:
        self._node = node
        self._clock = clock

    # -- operations --------------------------------------------------------

    async def put_record(
        self, identity: Identity, handle: Handle, values: Sequence[HandleValue], *, overwrite: bool
    ) -> bool:
        """Create the handle, or replace its whole record when ``overwrite``. True if created."""
        self._check_served(handle)
        values = self._prepare(values)
        store = self._node.store
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
                    self._node.cache.invalidate(handle.key)
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
            self._node.cache.invalidate(handle.key)
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
        created = await self._node.store.add_values(handle.key, values, overwrite=overwrite)
        self._node.cache.invalidate(handle.key)
        return created

    async def remove_values(
        self, identity: Identity, handle: Handle, indexes: Sequence[int]
    ) -> None:
        self._check_served(handle)
        old = await self._existing(handle)
        await self._require(identity, handle, perms_for_removal(old, indexes), old)
        await self._node.store.remove_values(handle.key, indexes)
        self._node.cache.invalidate(handle.key)

    async def delete(self, identity: Identity, handle: Handle) -> None:
        self._check_served(handle)
        old = await self._existing(handle)
        await self._require(identity, handle, AdminPerm.DELETE_HANDLE, old)
        await self._node.store.delete(handle.key)
        self._node.cache.invalidate(handle.key)

    # -- helpers -----------------------------------------------------------

    def _check_served(self, handle: Handle) -> None:
        prefix = handle.suffix if handle.is_prefix_handle else handle.prefix
        if not self._node.serves(prefix):
            raise NotResponsible()

    async def _existing(self, handle: Handle) -> tuple[HandleValue, ...]:
        old = await self._node.store.get(handle.key)
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
                    v, data=hash_secret(v.data), permissions=v.permissions & SECRET_PERMS
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
        await authorise(identity, needed, admins, self._node.server_admins, self._node.record_of)

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
        return admin_records(await self._node.record_of(prefix_handle(handle.prefix)) or ())


