"""Cache coherence: after a write is acknowledged, no cache anywhere serves the old record.

Every write path (``Registrar``, ``Node.home_prefix``) commits to the store,
then awaits ``Coherence.invalidate(keys)`` and only then acknowledges. That
drops the keys from this process's cache and returns only when every peer
tier (``Peers``) has confirmed that each of its live members dropped them too.
A load in flight during the invalidation is answered but not kept
(``ResolutionCache.invalidate``).

Tiers: ``resolver.redis_tier.RedisTier`` for several nodes sharing a Redis.
(The multi-worker node adds a tier for its sibling workers with the same
interface.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from resolver.cache import ResolutionCache


@dataclass(frozen=True, slots=True)
class Change:
    """What a peer must forget: cache ``keys``, or (``homed``) the homed prefixes and
    the whole cache (prefix homing changed, so "not responsible" answers may be wrong)."""

    keys: tuple[str, ...] = ()
    homed: bool = False

    def to_wire(self) -> list[Any]:
        return [list(self.keys), self.homed]

    @classmethod
    def from_wire(cls, payload: Any) -> Change:
        keys, homed = payload
        return cls(tuple(str(k) for k in keys), bool(homed))


# The receive side a tier calls for every change a peer published.
ApplyChange = Callable[[Change], Awaitable[None]]


class Peers(Protocol):
    """A tier of caches that must hear of every write (other nodes, sibling workers)."""

    async def start(self, apply: ApplyChange) -> None:
        """Begin receiving: call ``apply`` for each change a peer publishes, and
        acknowledge it only after ``apply`` returns."""

    async def publish(self, change: Change) -> None:
        """Return only when every live peer has applied ``change`` (or is gone);
        raise HandleError if that cannot be confirmed."""

    async def stop(self) -> None: ...


class Coherence:
    """This process's cache plus its peer tiers; what every write path awaits."""

    def __init__(
        self,
        cache: ResolutionCache,
        reload_homed: Callable[[], Awaitable[None]],
        tiers: Sequence[Peers] = (),
    ) -> None:
        self._cache = cache
        self._reload_homed = reload_homed  # this process's, without telling anyone
        self.tiers = list(tiers)

    async def start(self) -> None:
        for tier in self.tiers:
            await tier.start(self.apply)

    async def stop(self) -> None:
        for tier in self.tiers:
            await tier.stop()

    async def invalidate(self, keys: Collection[str]) -> None:
        """Forget ``keys`` here and in every peer; call after the commit, before the ack."""
        if not keys:
            return
        invalidate = self._cache.invalidate
        for key in keys:
            invalidate(key)
        await self._publish(Change(tuple(keys)))

    async def reload_homed(self) -> None:
        """Homed prefixes changed in the store: reload them here and in every peer."""
        await self._reload_homed()
        await self._publish(Change(homed=True))

    async def apply(self, change: Change) -> None:
        """The receive side: a peer's write."""
        invalidate = self._cache.invalidate
        for key in change.keys:
            invalidate(key)
        if change.homed:
            self._cache.clear()
            await self._reload_homed()

    async def _publish(self, change: Change) -> None:
        if self.tiers:
            await asyncio.gather(*(tier.publish(change) for tier in self.tiers))
