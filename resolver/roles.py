"""Resolution chains, one per role, built once at startup.

A stage reads records and answers, or passes the handle on to the next stage
(``Reads`` below says how it reads). The cache sits in front of every chain (see
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

from collections.abc import Awaitable, Callable, Generator, Sequence

from protocol.codes import RC
from protocol.identifier import PREFIX_NA, Handle, parent_prefixes, prefix_handle
from protocol.values import HS_SITE_PREFIX
from registry.store import RecordView, Store
from resolver.cache import Resolution

Lookup = Callable[[Handle], Awaitable[Resolution]]
LookupNow = Callable[[Handle], Resolution]
# A stage of a store-backed role, written once for both kinds of store: a
# generator that yields each key it reads, is sent that key's record, and
# returns its answer, or None to pass the handle on to the next stage. The
# node runs the chain inline on a store that reads without waiting (SQLite:
# no coroutine or task per lookup), or awaiting each read (PostgreSQL).
Reads = Generator[str, RecordView | None, Resolution | None]
Stage = Callable[[Handle], Reads]

ROLES = ("secondary", "top-level", "recursive")
# The value type of a parent prefix record that refers derived prefixes elsewhere
# (HS_SERV.PREFIX, a service handle for them, is not supported).
PREFIX_REFERRAL_TYPES = frozenset({HS_SITE_PREFIX})
NOT_RESPONSIBLE: Resolution = (RC.SERVER_NOT_RESP, None)


def run_now(stages: Sequence[Stage], handle: Handle, get: Callable[[str], RecordView | None]
            ) -> Resolution:
    """The chain's answer, reading through ``get`` inline."""
    for stage in stages:
        reads = stage(handle)
        try:
            key = next(reads)
            while True:
                key = reads.send(get(key))
        except StopIteration as done:
            if done.value is not None:
                return done.value  # type: ignore[no-any-return]
    return NOT_RESPONSIBLE


async def run_awaiting(stages: Sequence[Stage], handle: Handle, store: Store) -> Resolution:
    """The chain's answer, awaiting each read of ``store``."""
    for stage in stages:
        reads = stage(handle)
        try:
            key = next(reads)
            while True:
                key = reads.send(await store.get(key))
        except StopIteration as done:
            if done.value is not None:
                return done.value  # type: ignore[no-any-return]
    return NOT_RESPONSIBLE


def local_store_stage(homed: set[str]) -> Stage:
    """Answers handles under the prefixes homed here (and their ``0.NA/`` records)."""

    def local_store(handle: Handle) -> Reads:
        prefix = handle.prefix_key
        if prefix == PREFIX_NA:
            prefix = handle.suffix.upper()
        if prefix not in homed:
            return None
        values = yield handle.key
        if values is None:
            if handle.prefix_key == PREFIX_NA:
                # Homed without a record (``prefix add`` without --admin): the
                # prefix exists, with no values (RC 200), so a resolver that
                # was referred here knows this node serves it.
                return RC.SUCCESS, ()
            return RC.HANDLE_NOT_FOUND, None
        return RC.SUCCESS, values

    return local_store


def prefix_records(handle: Handle) -> Reads:
    """The top-level's ``0.NA/<prefix>`` records, with referrals for derived prefixes.

    ``0.NA/88.118.5`` not held here: the longest parent held (``0.NA/88.118``)
    decides. Its HS_SITE.PREFIX values make the answer RC 303 (prefix
    referral) carrying them, as Handle.Net's global service does; a parent
    without them, or no parent at all, makes it RC 100.
    """
    if handle.prefix_key != PREFIX_NA:
        return None
    values = yield handle.key
    if values is not None:
        return RC.SUCCESS, values
    for parent in parent_prefixes(handle.suffix)[1:]:
        parent_values = yield prefix_handle(parent)
        if parent_values is None:
            continue
        referral = tuple(v for v in parent_values
                         if v.type.upper() in PREFIX_REFERRAL_TYPES and v.public_read)
        if referral:
            return RC.PREFIX_REFERRAL, referral
        break
    return RC.HANDLE_NOT_FOUND, None


def chain_for_role(
    role: str, *, store: Store, homed: set[str], forward: Lookup | None = None
) -> tuple[Lookup, LookupNow | None]:
    """The role's chain, awaiting, and inline where the store reads inline (else None);
    ``forward`` is the recursive role's upstream stage."""
    if role == "recursive":
        if forward is None:
            raise ValueError("The recursive role needs an upstream (--top-level)")
        return forward, None
    if role == "secondary":
        stages: tuple[Stage, ...] = (local_store_stage(homed),)
    elif role == "top-level":
        stages = (prefix_records, local_store_stage(homed))
    else:
        raise ValueError(f"Unknown role {role!r}; expected one of {', '.join(ROLES)}")

    async def lookup(handle: Handle) -> Resolution:
        return await run_awaiting(stages, handle, store)

    get = store.inline_reader()
    if get is None:
        return lookup, None
    return lookup, lambda handle: run_now(stages, handle, get)
