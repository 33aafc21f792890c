"""The shared L2 cache: records in Redis behind every node's in-process cache.

Reads are batched: the lookups that miss the in-process cache during one turn
of the event loop share one ``MGET`` of their keys' values and generations
(one command, one connection, one round trip however many there are). Each
lookup waits for its answer at most ``--redis-timeout`` (a few ms); past that
it goes to the store, and the read finishes unheeded, so a slow Redis never
makes resolution slower than the store. Slow or failing batches in a row open
a breaker that skips Redis for a growing while. What the store answers is
stored back with the ``FILL`` script, only if the generation is unchanged
(see ``resolver.redis_tier``).

Values: the record's msgpack encoding (``protocol.record_msgpack``), or empty
for "not found" (kept ``--cache-negative-ttl`` seconds). A record lives at most
as long as the smallest TTL of its values and the node's ``--cache-max-ttl``.
Other answers (not responsible here) depend on the node and are never shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
BREAKER_FAILURES = 5  # slow or failed batches in a row that open the breaker
BREAKER_MIN_OPEN = 0.2
BREAKER_MAX_OPEN = 5.0
MAX_BATCHES = 8  # read batches in flight; beyond, lookups go to the store
MAX_FILLS = 32  # fills in flight; beyond, answers are not shared
CONNECTIONS = MAX_BATCHES + MAX_FILLS

StoreLookup = Callable[[], Awaitable[Resolution]]
# A lookup's share of a batch: (value, generation), or None if the batch failed.
Slot = asyncio.Future[tuple[bytes | None, bytes | None] | None]


class SharedCache:
    def __init__(
        self,
        client: Redis,
        names: Names,
        *,
        timeout: float,
        max_ttl: float,
        negative_ttl: float,
        usable: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._names = names
        self._timeout = timeout
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._usable = usable  # the link is up
        self._clock = clock
        self._wall_clock = wall_clock
        self._fill = client.register_script(FILL)
        self._batch: list[tuple[str, Slot]] = []  # lookups of this loop turn
        self._batches = 0  # in flight
        self._fills = 0  # in flight
        self._failures = 0
        self._open_until = 0.0
        self._open_for = BREAKER_MIN_OPEN
        self.hits = 0
        self.misses = 0
        self.errors = 0  # failed or late reads, failed fills, undecodable values
        self.skipped = 0  # lookups that went straight to the store (link down, breaker open)

    @property
    def idle(self) -> bool:
        """Nothing in flight (for tests and shutdown)."""
        return not (self._batch or self._batches or self._fills)

    async def warm(self, connections: int) -> None:
        """Open connections now: a first read on a new one (connect + handshake)
        would miss the read timeout."""
        with contextlib.suppress(RedisError, OSError):
            await asyncio.gather(*(self._client.ping() for _ in range(connections)))

    async def load(self, key: str, from_store: StoreLookup) -> Resolution:
        """``key``'s record from Redis, else from the store (then shared)."""
        if (
            self._batches >= MAX_BATCHES
            or self._clock() < self._open_until
            or not self._usable()
        ):
            self.skipped += 1
            return await from_store()
        started = self._clock()
        slot: Slot = asyncio.get_running_loop().create_future()
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._send_batch)
        self._batch.append((key, slot))
        done, _ = await asyncio.wait((slot,), timeout=self._timeout)
        answer = slot.result() if done else None
        if not done:
            self.errors += 1  # late: the batch finishes unheeded
        if answer is not None:
            value = answer[0]
            if value is not None:
                try:
                    resolution = _decode(value)
                except HandleError:
                    self.errors += 1
                else:
                    self.hits += 1
                    return resolution
            self.misses += 1
        resolution = await from_store()
        if answer is not None and self._clock() - started < GENERATION_TTL / 2:
            self._share(key, answer[1] or b"", resolution)
        return resolution

    # -- reads -------------------------------------------------------------

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        names: list[str] = []
        for key, _ in batch:
            names += (self._names.value(key), self._names.generation(key))
        self._batches += 1
        read = asyncio.ensure_future(self._client.mget(names))
        read.add_done_callback(functools.partial(self._batch_done, batch, self._clock()))

    def _batch_done(
        self, batch: list[tuple[str, Slot]], sent: float, read: asyncio.Future[Any]
    ) -> None:
        self._batches -= 1
        failed = read.cancelled() or read.exception() is not None
        if failed:
            self.errors += 1
            exc = None if read.cancelled() else read.exception()
            if exc is not None and not isinstance(exc, RedisError | OSError | TimeoutError):
                log.error("Unexpected error from Redis", exc_info=exc)
            for _, slot in batch:
                if not slot.done():
                    slot.set_result(None)
        else:
            values = read.result()
            for i, (_, slot) in enumerate(batch):
                if not slot.done():
                    slot.set_result((values[2 * i], values[2 * i + 1]))
        if failed or self._clock() - sent > self._timeout:
            self._failed()
        else:
            self._failures = 0
            self._open_for = BREAKER_MIN_OPEN

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= BREAKER_FAILURES:
            self._open_until = self._clock() + self._open_for
            log.warning("Redis reads slow or failing; going to the store for %.1f s",
                        self._open_for)
            self._open_for = min(self._open_for * 2, BREAKER_MAX_OPEN)
            self._failures = 0

    # -- fills -------------------------------------------------------------

    def _share(self, key: str, generation: bytes, resolution: Resolution) -> None:
        if self._fills >= MAX_FILLS:
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
        self._fills += 1
        fill = asyncio.ensure_future(self._fill(
            keys=[names.value(key), names.generation(key)], args=[generation, data, ttl_ms]
        ))
        fill.add_done_callback(self._fill_done)

    def _fill_done(self, fill: asyncio.Future[Any]) -> None:
        self._fills -= 1
        if fill.cancelled():
            return
        exc = fill.exception()  # retrieved, so never "exception was never retrieved"
        if exc is not None:
            self.errors += 1
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                log.error("Unexpected error from Redis", exc_info=exc)


def _decode(data: bytes) -> Resolution:
    if not data:
        return RC.HANDLE_NOT_FOUND, None
    return RC.SUCCESS, decode_record(data)
