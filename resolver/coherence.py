"""What the write path asks of caches before it acknowledges a write.

``Registrar`` calls ``check_writable()`` before it changes the store, and
awaits ``invalidate(keys)`` after the store committed and before it answers:
when that returns, no cache this node knows of serves the old records.
``LocalCoherence`` covers a lone node; ``resolver.redis_tier.RedisTier`` covers
every node sharing a Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from resolver.cache import ResolutionCache


class Coherence(Protocol):
    def check_writable(self) -> None:
        """Raise a HandleError if a write made now could not be made visible everywhere."""

    async def invalidate(self, keys: Sequence[str]) -> None:
        """Return once every cache has dropped ``keys``; raise HandleError if unsure."""


class LocalCoherence:
    def __init__(self, cache: ResolutionCache) -> None:
        self._cache = cache

    def check_writable(self) -> None:
        pass

    async def invalidate(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._cache.invalidate(key)
