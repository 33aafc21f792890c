"""Bounded LRU of resolved records with coalesced misses and safe invalidation.

Stale-if-error (``stale_window`` > 0, used by the recursive role): an expired
entry is kept (still bounded by the LRU) for ``stale_window`` seconds past
its expiry. If reloading it raises one of the ``stale_on`` exceptions (an
upstream that does not answer), the callers get a copy marked ``stale`` that
lives ``stale_retry`` seconds, so a dead upstream is asked at most that often;
transports mark such replies and ``stale_hits`` counts them.

Admission: while there is room every answer is kept. Once the cache is full,
an answer that would evict another is kept only if its key missed before,
recently (TinyLFU's "doorkeeper": a bounded set of key hashes, cleared when
full). A uniform cold load over many more records than fit, where almost no
record is asked twice before it would be evicted, then stops churning the
cache (an insert, an eviction and a copy of the reply per request, and new
objects for the collector to walk), while a key asked again soon gets in on
its second miss and stays as long as it is used. ``refused`` counts answers
served but not kept.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence, Sized
from typing import TypeVar, cast

from protocol.codes import RC
from protocol.record_msgpack import value_views
from protocol.values import HandleValue, ValueView
from resolver.cache.entry import CacheEntry, exact_bytes, record_size

# What a lookup behind the cache answers: a response code and, on success, the values.
Resolution = tuple[RC, Sequence[HandleValue] | None]
Loader = Callable[[], Awaitable[Resolution]]
T = TypeVar("T", bound=Sized)

# Encodings kept per entry (one per spelling of the handle a reply echoes, etc.).
MAX_ENCODINGS_PER_ENTRY = 8
# The doorkeeper remembers misses of a full cache: at most a quarter as many
# as the cache holds entries (a window short enough that a uniform load over
# many times the cache's records rarely repeats a key in it), at least this.
MIN_DOORKEEPER = 1024


class ResolutionCache:
    def __init__(
        self,
        *,
        max_bytes: int,
        max_ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        stale_window: float = 0.0,
        stale_retry: float = 1.0,
        stale_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.max_bytes = max_bytes
        self.stale_window = stale_window
        self.stale_retry = stale_retry
        self._stale_on = stale_on
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._wall_clock = wall_clock  # absolute value TTLs are Unix times
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[CacheEntry]] = {}  # loading tasks
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.evictions = 0
        self.expirations = 0
        self.stale_hits = 0  # replies served from a stale copy
        self.refused = 0  # answers not kept: the cache was full and the key new
        self._doorkeeper: set[int] = set()  # hashes of keys that missed a full cache
        # Entries are served only before this clock time. Infinite for a lone
        # node; a node sharing a store lends its cache a lease that lasts as
        # long as it is sure to hear of other nodes' writes (resolver.redis_tier).
        self.trusted_until = math.inf

    def __len__(self) -> int:
        return len(self._entries)

    # -- reading -----------------------------------------------------------

    def peek(self, key: str) -> CacheEntry | None:
        """The live entry for ``key`` (counted as a hit), or None. Never awaits."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= self.trusted_until:
            return None
        if entry.expires <= now:
            if entry.stale_until <= now:  # else kept: a fallback if reloading fails
                self._drop(key)
                self.expirations += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if entry.stale:
            self.stale_hits += 1
        return entry

    async def get(self, key: str, load: Loader) -> CacheEntry:
        """The entry for ``key``, calling ``load`` once however many callers miss at once."""
        entry = self.peek(key)
        if entry is not None:
            return entry
        task = self._inflight.get(key)
        if task is None:
            self.misses += 1
            # A task of its own, so a caller that goes away does not cancel
            # the lookup the others are waiting for.
            task = asyncio.ensure_future(self._load(key, load))
            self._inflight[key] = task
        else:
            self.coalesced += 1
        return await asyncio.shield(task)

    def get_now(self, key: str, load: Callable[[], Resolution]) -> CacheEntry | None:
        """``get`` with a loader that answers inline; None if a lookup of ``key`` is
        already in flight (join it with ``get``). Nothing runs between the load
        and the insert, so no write can be invalidated in between."""
        entry = self.peek(key)
        if entry is not None:
            return entry
        if key in self._inflight:
            return None
        self.misses += 1
        try:
            rc, values = load()
        except self._stale_on:
            stale = self._stale_copy(key)
            if stale is None:
                raise
            self._insert(stale)
            return stale
        entry = self._make_entry(key, rc, values)
        if self._admit(entry):
            self._insert(entry)
        return entry

    def loading(self, key: str) -> bool:
        """Whether a lookup of ``key`` is in flight (``get`` joins it)."""
        return key in self._inflight

    def offer(self, key: str, rc: RC, values: Sequence[HandleValue] | None) -> CacheEntry | None:
        """A miss of ``key`` that the caller answered itself, inline (the node's
        direct read, ``Node.read_missed``): the entry made and kept for it, or
        None, making nothing, where ``get_now`` would not keep it either."""
        self.misses += 1
        size = record_size(key, values)
        if not self._admits(key, size):
            return None
        entry = self._make_entry(key, rc, values, size)
        self._insert(entry)
        return entry

    async def _load(self, key: str, load: Loader) -> CacheEntry:
        try:
            rc, values = await load()
        except BaseException as exc:
            mine = self._inflight.get(key) is asyncio.current_task()
            if mine:
                del self._inflight[key]
            stale = self._stale_copy(key) if isinstance(exc, self._stale_on) else None
            if stale is None:
                raise
            if mine:
                self._insert(stale)
            return stale
        entry = self._make_entry(key, rc, values)
        # Invalidated while loading: answer the callers, but do not keep it.
        if self._inflight.get(key) is asyncio.current_task():
            del self._inflight[key]
            if self._admit(entry):
                self._insert(entry)
        return entry

    def encoded(self, entry: CacheEntry, which: object, encode: Callable[[], T]) -> T:
        """``entry``'s encoding ``which``, made once by ``encode`` and charged its ``len()``."""
        body = cast(T | None, entry.encodings.get(which))
        if body is None:
            body = encode()
            if len(entry.encodings) < MAX_ENCODINGS_PER_ENTRY:
                kept = self._entries.get(entry.key) is entry
                if kept and isinstance(body, bytes):
                    body = cast(T, exact_bytes(body))  # only for what the cache keeps
                entry.encodings[which] = body
                entry.size += len(body)
                if kept:
                    self.bytes += len(body)
                    self._evict()
        return body

    # -- writing -----------------------------------------------------------

    def invalidate(self, key: str) -> None:
        """Forget ``key`` here (``resolver.coherence`` calls it in every worker and node)."""
        self._inflight.pop(key, None)
        if key in self._entries:
            self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self._inflight.clear()
        self._doorkeeper.clear()
        self.bytes = 0

    # -- internals ---------------------------------------------------------

    def _make_entry(self, key: str, rc: RC, values: Sequence[HandleValue] | None,
                    size: int | None = None) -> CacheEntry:
        """``size``: ``record_size(key, values)``, where the caller has it already."""
        now = self._clock()
        if values is None:
            ttl = self.negative_ttl
        else:
            ttl = record_ttl(value_views(values), self.max_ttl, self._wall_clock())
        expires = now + ttl
        stale_until = expires + self.stale_window if self.stale_window and ttl else 0.0
        return CacheEntry(key, values, expires, rc,
                          size=record_size(key, values) if size is None else size,
                          stale_until=stale_until)

    def _stale_copy(self, key: str) -> CacheEntry | None:
        """A short-lived copy of ``key``'s expired entry, if still in its stale window."""
        old = self._entries.get(key)
        now = self._clock()
        if old is None or old.stale_until <= now or now >= self.trusted_until:
            return None
        self.stale_hits += 1
        return CacheEntry(key, old.values, min(now + self.stale_retry, old.stale_until), old.rc,
                          size=old.size, stale_until=old.stale_until, stale=True)

    def _admit(self, entry: CacheEntry) -> bool:
        return self._admits(entry.key, entry.size)

    def _admits(self, key: str, size: int) -> bool:
        """Whether to keep a fresh answer: yes while it fits, else on its key's second miss."""
        if self.bytes + size <= self.max_bytes or key in self._entries:
            return True
        doorkeeper = self._doorkeeper
        mark = hash(key)
        if mark in doorkeeper:
            doorkeeper.discard(mark)
            return True
        if len(doorkeeper) >= max(MIN_DOORKEEPER, len(self._entries) // 4):
            doorkeeper.clear()
        doorkeeper.add(mark)
        self.refused += 1
        return False

    def _insert(self, entry: CacheEntry) -> None:
        now = self._clock()
        if entry.expires <= now or now >= self.trusted_until:
            return  # TTL 0, or no lease: never cached
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[entry.key] = entry
        self.bytes += entry.size
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            _, victim = self._entries.popitem(last=False)
            self.bytes -= victim.size
            self.evictions += 1

    def _drop(self, key: str) -> None:
        self.bytes -= self._entries.pop(key).size

    # -- lease (a node sharing its store with others) ----------------------

    def trust_until(self, deadline: float) -> None:
        """Serve entries until ``deadline`` (clock time): this node hears every write till then.

        Lookups started while the cache was not trusted are not kept: a write
        may have been missed while they ran.
        """
        if self._clock() >= self.trusted_until:
            self._inflight.clear()
        self.trusted_until = deadline

    def distrust(self) -> None:
        """Forget everything and serve nothing until ``trust_until`` (writes may be missed)."""
        self.trusted_until = -math.inf
        self.clear()


def record_ttl(values: Sequence[ValueView], max_ttl: float, wall: float) -> float:
    """Seconds a record may be served: its values' smallest TTL (absolute ones
    are Unix times, compared with ``wall``), at most ``max_ttl``, at least 0."""
    ttl = max_ttl
    for v in values:
        ttl = min(ttl, (v.ttl - wall) if v.ttl_absolute else v.ttl)
    return max(ttl, 0.0)
