"""The cache's lease: what a node sharing its store may serve from memory."""

import asyncio

from test_cache import FakeClock, make_cache, record

from protocol.codes import RC


async def test_entries_are_served_only_under_the_lease():
    clock = FakeClock()
    cache = make_cache(clock)
    cache.trust_until(clock.now + 3)

    async def load():
        return RC.SUCCESS, record()

    entry = await cache.get("K", load)
    assert cache.peek("K") is entry
    clock.now += 3  # lease over: nothing is served, nothing new is kept
    assert cache.peek("K") is None
    await cache.get("J", load)
    clock.now -= 1  # (pretend the lease was renewed; J was loaded without one)
    assert cache.peek("J") is None
    cache.distrust()
    assert len(cache) == 0 and cache.peek("K") is None


async def test_lookups_started_without_a_lease_are_not_kept_once_it_is_granted():
    clock = FakeClock()
    cache = make_cache(clock)
    cache.distrust()
    release = asyncio.Event()

    async def load():
        await release.wait()
        return RC.SUCCESS, record()

    task = asyncio.create_task(cache.get("K", load))
    await asyncio.sleep(0)
    cache.trust_until(clock.now + 3)  # this lookup may have missed an invalidation
    release.set()
    await task
    assert cache.peek("K") is None
    await cache.get("K", load)
    assert cache.peek("K") is not None
