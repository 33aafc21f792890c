"""What an identity may do: HS_ADMIN values, as Handle.Net decides it.

- Configured server admins may do everything.
- A handle's own HS_ADMIN values name its admins; a handle without any is
  administered by the admins of its prefix (the HS_ADMIN values of
  ``0.NA/<prefix>``), which is also who may create handles under the prefix.
- An admin reference matches the identity's handle exactly (case-sensitive,
  like the reference server) and its index, or any index when it is 0.
- An admin reference may name an HS_VLIST value instead (an admin group, e.g.
  ``200:0.NA/<prefix>``, pyhandle's default owner): its members, and members
  of groups it lists, hold the reference's permissions. Groups are looked up
  on this node only, and nested at most ``MAX_GROUP_DEPTH`` deep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence

from protocol.codes import RC
from protocol.errors import HandleError
from protocol.identifier import Handle, prefix_handle
from protocol.values import (
    HS_ADMIN,
    HS_VLIST,
    AdminPerm,
    AdminRecord,
    HandleValue,
    ValueReference,
    decode_admin,
    decode_vlist,
)
from resolver.auth import Identity


class PermissionDenied(HandleError):
    rc = RC.INSUFFICIENT_PERMISSIONS


class NotAnAdmin(HandleError):
    rc = RC.INVALID_ADMIN


def admin_records(values: Iterable[HandleValue]) -> list[AdminRecord]:
    admins = []
    for v in values:
        if v.type == HS_ADMIN:
            try:
                admins.append(decode_admin(v.data))
            except HandleError:
                continue  # a corrupt HS_ADMIN grants nothing
    return admins


def matching_perms(identity: Identity, admins: Iterable[AdminRecord]) -> AdminPerm | None:
    """The union of permissions ``identity`` holds through ``admins``; None if none names it."""
    perms: AdminPerm | None = None
    for admin in admins:
        if admin.handle == identity.handle and admin.index in (0, identity.index):
            perms = admin.permissions if perms is None else perms | admin.permissions
    return perms


MAX_GROUP_DEPTH = 3
# handle text -> its record on this node, or None
RecordByHandle = Callable[[str], Awaitable[Sequence[HandleValue] | None]]


async def effective_perms(
    identity: Identity, admins: Sequence[AdminRecord], lookup: RecordByHandle
) -> AdminPerm | None:
    """Like ``matching_perms``, also granting through admin groups (HS_VLIST)."""
    perms = matching_perms(identity, admins)
    for admin in admins:
        if perms is not None and admin.permissions & ~perms == 0:
            continue  # nothing more to gain from this reference
        if await _in_group(identity, ValueReference(admin.handle, admin.index), lookup, set(), 0):
            perms = admin.permissions if perms is None else perms | admin.permissions
    return perms


async def _in_group(
    identity: Identity,
    group: ValueReference,
    lookup: RecordByHandle,
    seen: set[ValueReference],
    depth: int,
) -> bool:
    if depth >= MAX_GROUP_DEPTH or group in seen:
        return False
    seen.add(group)
    record = await lookup(group.handle)
    for value in record or ():
        if value.index != group.index or value.type != HS_VLIST:
            continue
        try:
            members = decode_vlist(value.data)
        except HandleError:
            return False
        for member in members:
            if member.handle == identity.handle and member.index in (0, identity.index):
                return True
        for member in members:
            if await _in_group(identity, member, lookup, seen, depth + 1):
                return True
    return False


async def authorise(
    identity: Identity,
    needed: AdminPerm,
    admins: Sequence[AdminRecord],
    server_admins: frozenset[Identity],
    lookup: RecordByHandle,
) -> None:
    """Raise unless ``identity`` holds every bit of ``needed``, directly or through groups."""
    if identity in server_admins:
        return
    perms = matching_perms(identity, admins)
    if perms is None or needed & ~perms:
        perms = await effective_perms(identity, admins, lookup)
    _check(identity, needed, perms)


def require(
    identity: Identity,
    needed: AdminPerm,
    admins: Sequence[AdminRecord],
    server_admins: frozenset[Identity],
) -> None:
    """Raise unless ``identity`` holds every bit of ``needed`` through ``admins`` directly."""
    if identity in server_admins:
        return
    _check(identity, needed, matching_perms(identity, admins))


def _check(identity: Identity, needed: AdminPerm, perms: AdminPerm | None) -> None:
    if perms is None:
        raise NotAnAdmin(f"{identity.text} is not an administrator here")
    missing = needed & ~perms
    if missing:
        raise PermissionDenied(f"{identity.text} lacks permission {missing!r}")


def perms_for_change(
    old: Sequence[HandleValue], new: Sequence[HandleValue], *, replace: bool
) -> AdminPerm:
    """Permissions needed to turn record ``old`` into ``new``.

    ``replace``: ``new`` is the whole record (values missing from it go);
    otherwise ``new`` values are added to or replace those of equal index.
    """
    by_index = {v.index: v for v in old}
    needed = AdminPerm(0)
    for v in new:
        admin = v.type == HS_ADMIN
        prior = by_index.get(v.index)
        if prior is None:
            needed |= AdminPerm.ADD_ADMIN if admin else AdminPerm.ADD_VALUE
        elif dataclasses.replace(v, timestamp=prior.timestamp) != prior:
            was_admin = prior.type == HS_ADMIN
            needed |= AdminPerm.MODIFY_ADMIN if admin or was_admin else AdminPerm.MODIFY_VALUE
    if replace:
        kept = {v.index for v in new}
        for v in old:
            if v.index not in kept:
                needed |= AdminPerm.REMOVE_ADMIN if v.type == HS_ADMIN else AdminPerm.REMOVE_VALUE
    return needed


def perms_for_removal(old: Sequence[HandleValue], indexes: Iterable[int]) -> AdminPerm:
    wanted = set(indexes)
    needed = AdminPerm(0)
    for v in old:
        if v.index in wanted:
            needed |= AdminPerm.REMOVE_ADMIN if v.type == HS_ADMIN else AdminPerm.REMOVE_VALUE
    return needed


async def may_read_private(
    identity: Identity,
    handle: Handle,
    values: Sequence[HandleValue],
    server_admins: frozenset[Identity],
    lookup: RecordByHandle,
) -> bool:
    """Whether ``identity`` may see the non-public values of ``handle`` (READ_VALUE)."""
    if identity in server_admins:
        return True
    admins = admin_records(values)
    if not admins:
        admins = admin_records(await lookup(prefix_handle(handle.prefix)) or ())
    perms = await effective_perms(identity, admins, lookup)
    return perms is not None and bool(perms & AdminPerm.READ_VALUE)
