"""The cache's byte bound holds in real memory: what it charges is what it keeps.

``--cache-size`` bounds the bytes the cache is charged for; if an entry held
much more than it is charged (as a 300-byte orjson reply pinning a 4 KiB
allocation once did), the node's RSS would outgrow the bound several times over.
"""

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Sequence

import pytest

from protocol.codes import RC
from protocol.record_msgpack import StoredRecord, encode_record
from protocol.values import HandleValue
from resolver.cache import ResolutionCache
from resolver.rest_api import cached_reply

ENTRIES = 5000


def realistic_record(n: int) -> tuple[HandleValue, ...]:
    return (
        HandleValue(100, "HS_ADMIN", b"\x0f\xf2\x00\x00\x00\x0e88.100.1/ADMIN\x00\x00\x01\x2c"),
        HandleValue(1, "URL", f"https://example.com/products/{n:09d}".encode()),
        HandleValue(2, "EMAIL", b"quality@example.com"),
        HandleValue(2000, "name", f"Bearing assembly lot {n}".encode()),
    )


def as_read(n: int) -> StoredRecord:
    """The record as a SQLite store reads it for a resolve."""
    return StoredRecord(encode_record(realistic_record(n)))


async def fill(cache: ResolutionCache, record: Callable[[int], Sequence[HandleValue]]) -> None:
    for n in range(ENTRIES):
        values = record(n)

        async def load(values: Sequence[HandleValue] = values):
            return RC.SUCCESS, values

        key = f"88.100.1/PRODUCT-2024-{n:09d}"
        entry = await cache.get(key, load)
        cached_reply(cache, entry, key)  # the REST reply, as a resolve keeps it


@pytest.mark.parametrize("record", [realistic_record, as_read], ids=["values", "stored"])
def test_memory_held_is_what_the_cache_is_charged(record):
    cache = ResolutionCache(max_bytes=1 << 40, max_ttl=86400, negative_ttl=5)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(fill(cache, record))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == ENTRIES
    ratio = held / cache.bytes
    # Loose on purpose (interpreter versions differ by tens of bytes per
    # object), tight enough to catch an entry pinning several times its charge.
    per_entry = f"held {held / ENTRIES:.0f} B/entry, charged {cache.bytes / ENTRIES:.0f}"
    assert 0.6 < ratio < 1.4, per_entry
