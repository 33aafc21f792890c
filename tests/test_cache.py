import asyncio

import pytest

from protocol.codes import RC
from protocol.values import HandleValue
from resolver.cache import ResolutionCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(clock, **kw):
    opts = dict(max_bytes=1 << 20, max_ttl=3600, negative_ttl=5, clock=clock,
                wall_clock=lambda: 2_000_000_000.0)
    opts.update(kw)
    return ResolutionCache(**opts)


def record(ttl=86400, data=b"x"):
    return (HandleValue(1, "URL", data, ttl=ttl),)


async def test_hit_after_miss_and_ttl_expiry():
    clock = FakeClock()
    cache = make_cache(clock)
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        return RC.SUCCESS, record(ttl=60)

    await cache.get("K", load)
    await cache.get("K", load)
    assert calls == 1 and cache.hits == 1
    clock.now += 61  # value TTL, not the cache's cap, bounds the entry
    await cache.get("K", load)
    assert calls == 2


async def test_absolute_ttl_bounds_entry():
    clock = FakeClock()
    cache = make_cache(clock)
    v = (HandleValue(1, "URL", b"x", ttl=2_000_000_010, ttl_absolute=True),)

    async def load():
        return RC.SUCCESS, v

    entry = await cache.get("K", load)
    assert entry.expires == pytest.approx(clock.now + 10)


async def test_negative_entries_use_negative_ttl():
    clock = FakeClock()
    cache = make_cache(clock, negative_ttl=2)

    async def load():
        return RC.HANDLE_NOT_FOUND, None

    entry = await cache.get("K", load)
    assert entry.values is None and entry.rc == RC.HANDLE_NOT_FOUND
    assert cache.peek("K") is not None
    clock.now += 3
    assert cache.peek("K") is None


async def test_concurrent_misses_coalesce():
    cache = make_cache(FakeClock())
    gate = asyncio.Event()
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        await gate.wait()
        return RC.SUCCESS, record()

    tasks = [asyncio.create_task(cache.get("K", load)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    entries = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(e is entries[0] for e in entries)
    assert cache.coalesced == 49


async def test_cancelled_caller_does_not_cancel_shared_load():
    cache = make_cache(FakeClock())
    gate = asyncio.Event()

    async def load():
        await gate.wait()
        return RC.SUCCESS, record()

    first = asyncio.create_task(cache.get("K", load))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get("K", load))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    entry = await second
    assert entry.values == record()


async def test_invalidation_during_load_is_not_cached():
    """A reader that raced a writer must not put the old record back."""
    cache = make_cache(FakeClock())
    gate = asyncio.Event()

    async def stale_load():
        await gate.wait()
        return RC.SUCCESS, record(data=b"old")

    reader = asyncio.create_task(cache.get("K", stale_load))
    await asyncio.sleep(0)
    cache.invalidate("K")  # the write committed meanwhile
    gate.set()
    assert (await reader).values == record(data=b"old")
    assert cache.peek("K") is None

    async def fresh_load():
        return RC.SUCCESS, record(data=b"new")

    assert (await cache.get("K", fresh_load)).values == record(data=b"new")


async def test_byte_bound_evicts_least_recently_used():
    cache = make_cache(FakeClock(), max_bytes=3000)

    def loader(n):
        async def load():
            return RC.SUCCESS, record(data=b"x" * 500)
        return load

    for n in range(10):
        await cache.get(f"K{n}", loader(n))
        await cache.get(f"K{n}", loader(n))  # a full cache admits a key on its second miss
        cache.peek("K0")  # keep K0 hot
    assert cache.bytes <= 3000
    assert cache.evictions > 0
    assert cache.peek("K0") is not None
    assert cache.peek("K1") is None
    assert cache.peek("K9") is not None


async def test_full_cache_admits_a_key_on_its_second_miss():
    cache = make_cache(FakeClock(), max_bytes=3500)  # three entries of ~1,080 B
    loads = []

    def loader(key):
        async def load():
            loads.append(key)
            return RC.SUCCESS, record(data=b"x" * 500)
        return load

    for n in range(3):  # room for these
        await cache.get(f"K{n}", loader(f"K{n}"))
    assert cache.refused == 0 and len(cache) == 3
    kept = set(cache._entries)

    # Full: a new key is answered, but kept only when it misses again soon.
    first = await cache.get("NEW", loader("NEW"))
    assert first.values == record(data=b"x" * 500)
    assert cache.refused == 1 and cache.peek("NEW") is None
    assert set(cache._entries) == kept and cache.evictions == 0
    await cache.get("NEW", loader("NEW"))
    assert cache.peek("NEW") is not None
    assert cache.evictions == 1 and cache.peek("K0") is None  # the least recently used
    assert loads.count("NEW") == 2

    # A one-off key never displaces anything, however many pass by.
    for n in range(5000):
        await cache.get(f"ONCE{n}", loader(f"ONCE{n}"))
    assert cache.peek("NEW") is not None and cache.evictions == 1
    assert cache.refused == 1 + 5000
    assert len(cache._doorkeeper) <= 1024  # bounded: cleared when full


def test_sync_loads_are_admitted_like_async_ones():
    cache = make_cache(FakeClock(), max_bytes=3500)
    for n in range(3):
        cache.get_now(f"K{n}", lambda: (RC.SUCCESS, record(data=b"x" * 500)))
    entry = cache.get_now("NEW", lambda: (RC.SUCCESS, record(data=b"y" * 500)))
    assert entry is not None and entry.values == record(data=b"y" * 500)
    assert cache.peek("NEW") is None and cache.refused == 1
    # Its reply is made for this caller, but not charged to the cache.
    before = cache.bytes
    assert cache.encoded(entry, "spelling", lambda: b"body") == b"body"
    assert cache.bytes == before
    cache.get_now("NEW", lambda: (RC.SUCCESS, record(data=b"y" * 500)))
    assert cache.peek("NEW") is not None


async def test_encodings_are_made_once_and_charged():
    cache = make_cache(FakeClock())

    async def load():
        return RC.SUCCESS, record()

    entry = await cache.get("K", load)
    before = cache.bytes
    made = []

    def encode():
        made.append(1)
        return b"y" * 100

    assert cache.encoded(entry, "k", encode) == b"y" * 100
    assert cache.encoded(entry, "k", encode) == b"y" * 100
    assert len(made) == 1
    assert cache.bytes == before + 100



class UpstreamDown(Exception):
    pass


async def test_stale_if_error_serves_a_marked_copy_within_the_window():
    clock = FakeClock()
    cache = make_cache(clock, stale_window=100, stale_retry=1, stale_on=(UpstreamDown,))
    up = True
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        if not up:
            raise UpstreamDown()
        return RC.SUCCESS, record(ttl=10)

    fresh = await cache.get("K", load)
    assert not fresh.stale
    up = False
    clock.now += 11
    stale = await cache.get("K", load)
    assert stale.stale and stale.values == fresh.values and calls == 2
    assert cache.stale_hits == 1
    # The copy lives stale_retry: no upstream request until then.
    await cache.get("K", load)
    assert calls == 2 and cache.stale_hits == 2
    clock.now += 1.5
    await cache.get("K", load)
    assert calls == 3
    # The upstream is back: a fresh, unmarked entry replaces the copy.
    up = True
    clock.now += 1.5
    again = await cache.get("K", load)
    assert not again.stale and calls == 4


async def test_stale_window_ends_and_other_errors_are_not_masked():
    clock = FakeClock()
    cache = make_cache(clock, stale_window=5, stale_on=(UpstreamDown,))
    failure: Exception | None = None

    async def load():
        if failure is not None:
            raise failure
        return RC.SUCCESS, record(ttl=10)

    await cache.get("K", load)
    clock.now += 11
    failure = ValueError("a bug, not an outage")
    with pytest.raises(ValueError):
        await cache.get("K", load)
    failure = UpstreamDown()
    clock.now += 5  # 16 s: past expiry (10) + window (5)
    with pytest.raises(UpstreamDown):
        await cache.get("K", load)


async def test_without_a_stale_window_expired_entries_are_dropped():
    clock = FakeClock()
    cache = make_cache(clock, stale_on=(UpstreamDown,))

    async def load():
        return RC.SUCCESS, record(ttl=10)

    await cache.get("K", load)
    clock.now += 11
    assert cache.peek("K") is None and len(cache) == 0
