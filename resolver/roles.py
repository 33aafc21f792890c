"""Resolution chains, one per role, built once at startup.

A stage is ``async def stage(handle, next) -> Resolution``: it answers, or
passes the handle on to ``next``. The cache sits in front of every chain (see
``Node.resolve``); what stands behind it depends on the role:

    secondary:  local store → not responsible (RC 301)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from protocol.codes import RC
from protocol.identifier import PREFIX_NA, Handle
from registry.store import Store
from resolver.cache import Resolution

Lookup = Callable[[Handle], Awaitable[Resolution]]
Stage = Callable[[Handle, Lookup], Awaitable[Resolution]]

ROLES = ("secondary",)


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
            return RC.HANDLE_NOT_FOUND, None
        return RC.SUCCESS, values

    return local_store


def chain_for_role(role: str, *, store: Store, homed: set[str]) -> Lookup:
    if role == "secondary":
        return build_chain([local_store_stage(store, homed)], not_responsible)
    raise ValueError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}")
