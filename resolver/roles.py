"""Resolution chains, one per role, built once at startup.

A stage is ``async def stage(handle, next) -> Resolution``: it answers, or
passes the handle on to ``next``. The cache sits in front of every chain (see
``Node.resolve``); what stands behind it depends on the role:

    top-level:  prefix records (``0.NA/*``, referral to the parent's
                HS_SITE.PREFIX for a derived prefix, RC 303) → local store →
                not responsible (RC 301)
    secondary:  local store → not responsible (RC 301)
    recursive:  ask the sites serving the prefix (``resolver.recursive``)

A stage answering a referral returns its code (302/303) with the referral's
values (HS_SITE / HS_SITE.PREFIX); transports send them as Handle does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from protocol.codes import RC
from protocol.identifier import PREFIX_NA, Handle, parent_prefixes, prefix_handle
from protocol.values import HS_SITE_PREFIX
from registry.store import Store
from resolver.cache import Resolution

Lookup = Callable[[Handle], Awaitable[Resolution]]
Stage = Callable[[Handle, Lookup], Awaitable[Resolution]]

ROLES = ("secondary", "top-level", "recursive")
# The value type of a parent prefix record that refers derived prefixes elsewhere
# (HS_SERV.PREFIX, a service handle for them, is not supported).
PREFIX_REFERRAL_TYPES = frozenset({HS_SITE_PREFIX})


def build_chain(stages: Sequence[Stage], last: Lookup) -> Lookup:
    lookup = last
    for stage in reversed(stages):
        lookup = _bind(stage, lookup)
    return lookup


def _bind(stage: Stage, next_lookup: Lookup) -> Lookup:
    async def lookup(handle: Handle) -> Resolution:
        return await stage(handle, next_lookup)

    return lookup


async def not_responsible(handle: Handle) -> Resolution:
    return RC.SERVER_NOT_RESP, None


def local_store_stage(store: Store, homed: set[str]) -> Stage:
    """Answers handles under the prefixes homed here (and their ``0.NA/`` records)."""

    async def local_store(handle: Handle, next: Lookup) -> Resolution:
        prefix = handle.prefix_key
        if prefix == PREFIX_NA:
            prefix = handle.suffix.upper()
        if prefix not in homed:
            return await next(handle)
        values = await store.get(handle.key)
        if values is None:
            if handle.prefix_key == PREFIX_NA:
                # Homed without a record (``prefix add`` without --admin): the
                # prefix exists, with no values (RC 200), so a resolver that
                # was referred here knows this node serves it.
                return RC.SUCCESS, ()
            return RC.HANDLE_NOT_FOUND, None
        return RC.SUCCESS, values

    return local_store


def prefix_records_stage(store: Store) -> Stage:
    """The top-level's ``0.NA/<prefix>`` records, with referrals for derived prefixes.

    ``0.NA/88.118.5`` not held here: the longest parent held (``0.NA/88.118``)
    decides. Its HS_SITE.PREFIX values make the answer RC 303 (prefix
    referral) carrying them, as Handle.Net's global service does; a parent
    without them, or no parent at all, makes it RC 100.
    """

    async def prefix_records(handle: Handle, next: Lookup) -> Resolution:
        if handle.prefix_key != PREFIX_NA:
            return await next(handle)
        values = await store.get(handle.key)
        if values is not None:
            return RC.SUCCESS, values
        for parent in parent_prefixes(handle.suffix)[1:]:
            parent_values = await store.get(prefix_handle(parent))
            if parent_values is None:
                continue
            referral = tuple(v for v in parent_values
                             if v.type.upper() in PREFIX_REFERRAL_TYPES and v.public_read)
            if referral:
                return RC.PREFIX_REFERRAL, referral
            break
        return RC.HANDLE_NOT_FOUND, None

    return prefix_records


def chain_for_role(
    role: str, *, store: Store, homed: set[str], forward: Lookup | None = None
) -> Lookup:
    """The role's chain; ``forward`` is the recursive role's upstream stage."""
    if role == "secondary":
        return build_chain([local_store_stage(store, homed)], not_responsible)
    if role == "top-level":
        return build_chain(
            [prefix_records_stage(store), local_store_stage(store, homed)], not_responsible
        )
    if role == "recursive":
        if forward is None:
            raise ValueError("The recursive role needs an upstream (--top-level)")
        return forward
    raise ValueError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}")
