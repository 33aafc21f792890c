"""The shared L2 cache: records in Redis behind every node's in-process cache.

A read is one ``MGET`` of the key's value and generation, given a few
milliseconds (``--redis-timeout``): past that the lookup goes to the store and
the read finishes in the background, so a slow Redis never makes resolution
slower than the store. Repeated failures open a breaker that skips Redis for a
growing while. What the store answers is stored back with the ``FILL`` script,
only if the generation is unchanged (see ``resolver.redis_tier``).

Values: the record's msgpack encoding (``protocol.record_msgpack``), or empty
for "not found" (kept ``--cache-negative-ttl`` seconds). A record lives at most
as long as the smallest TTL of its values and the node's ``--cache-max-ttl``.
Other answers (not responsible here) depend on the node and are never shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from protocol.codes import RC
from protocol.errors import HandleError
from protocol.record_msgpack import decode_record, encode_record
from resolver.cache import Resolution, record_ttl
from resolver.redis_tier.names import FILL, Names

log = logging.getLogger(__name__)

# A write's generation outlives any reader that saw the one before it: a
# reader whose store lookup took longer than half of this does not fill.
GENERATION_TTL = 10.0
BREAKER_FAILURES = 5  # consecutive failed reads that open the breaker
BREAKER_MIN_OPEN = 0.2
BREAKER_MAX_OPEN = 5.0

StoreLookup = Callable[[], Awaitable[Resolution]]


class SharedCache:
    def __init__(
        self,
        client: Redis,
        names: Names,
        *,
        timeout: float,
        max_ttl: float,
        negative_ttl: float,
        max_pending: int,
        usable: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._names = names
        self._timeout = timeout
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._max_pending = max_pending  # reads and fills in flight (= connections)
        self._usable = usable  # the link is up
        self._clock = clock
        self._wall_clock = wall_clock
        self._fill = client.register_script(FILL)
        self._pending = 0
        self._failures = 0
        self._open_until = 0.0
        self._open_for = BREAKER_MIN_OPEN
        self.hits = 0
        self.misses = 0
        self.errors = 0  # failed or late reads, failed fills, undecodable values
        self.skipped = 0  # lookups that went straight to the store (link down, breaker open)

    async def warm(self, connections: int) -> None:
        """Open connections now: a first read on a new one (connect + handshake)
        would miss the read timeout."""
        with contextlib.suppress(RedisError, OSError):
            await asyncio.gather(*(self._client.ping() for _ in range(connections)))

    async def load(self, key: str, from_store: StoreLookup) -> Resolution:
        """``key``'s record from Redis, else from the store (then shared)."""
        if (
            self._pending >= self._max_pending
            or self._clock() < self._open_until
            or not self._usable()
        ):
            self.skipped += 1
            return await from_store()
        started = self._clock()
        read = asyncio.ensure_future(
            self._client.mget(self._names.value(key), self._names.generation(key))
        )
        self._track(read)
        done, _ = await asyncio.wait((read,), timeout=self._timeout)
        generation: bytes | None = None
        if done and read.exception() is None:
            value, generation = read.result()  # type: ignore[assignment]  # bytes
            self._succeeded()
            if value is not None:
                try:
                    resolution = _decode(value)  # type: ignore[arg-type]
                except HandleError:
                    self.errors += 1
                else:
                    self.hits += 1
                    return resolution
            self.misses += 1
        else:
            if not done:
                self.errors += 1  # late (a failed read is counted when it finishes)
            self._failed()
        resolution = await from_store()
        if done and read.exception() is None and self._clock() - started < GENERATION_TTL / 2:
            self._share(key, generation or b"", resolution)
        return resolution

    def _share(self, key: str, generation: bytes, resolution: Resolution) -> None:
        if self._pending >= self._max_pending:
            return
        rc, values = resolution
        if rc == RC.HANDLE_NOT_FOUND:
            data, ttl = b"", self._negative_ttl
        elif rc == RC.SUCCESS and values is not None:
            ttl = record_ttl(values, self._max_ttl, self._wall_clock())
            try:
                data = encode_record(values)
            except HandleError:
                return
        else:
            return
        ttl_ms = int(ttl * 1000)
        if ttl_ms <= 0:
            return
        names = self._names
        fill = asyncio.ensure_future(self._fill(
            keys=[names.value(key), names.generation(key)], args=[generation, data, ttl_ms]
        ))
        self._track(fill)

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._pending += 1
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._pending -= 1
        if task.cancelled():
            return
        exc = task.exception()  # retrieved, so never "exception was never retrieved"
        if exc is not None:
            self.errors += 1
            if not isinstance(exc, RedisError | OSError | asyncio.TimeoutError):
                log.error("Unexpected error from Redis", exc_info=exc)

    def _succeeded(self) -> None:
        self._failures = 0
        self._open_for = BREAKER_MIN_OPEN

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= BREAKER_FAILURES:
            self._open_until = self._clock() + self._open_for
            log.warning("Redis reads failing; going to the store for %.1f s", self._open_for)
            self._open_for = min(self._open_for * 2, BREAKER_MAX_OPEN)
            self._failures = 0


def _decode(data: bytes) -> Resolution:
    if not data:
        return RC.HANDLE_NOT_FOUND, None
    return RC.SUCCESS, decode_record(data)
