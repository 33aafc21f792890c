"""The Redis tier: shared L2 cache, strict invalidation between nodes, degraded mode."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
from live import ADMIN, PREFIX, SECRET, init_store
from redis_service import PrivateRedis, free_port, private_redis, redis_asyncio, shared_redis

from protocol.codes import RC
from protocol.record_msgpack import encode_record
from protocol.values import HandleValue
from resolver.cache import Resolution
from resolver.config import NodeConfig
from resolver.redis_tier.l2 import _decode
from resolver.server import RunningNode

__all__ = ["private_redis", "shared_redis"]  # fixtures

LEASE = 1.2  # short for quick outage tests, long enough not to flap on a loaded CI
JSON = {"Content-Type": "application/json"}


def url_value(url: str, ttl: int = 86400) -> dict[str, object]:
    return {"index": 1, "type": "URL", "data": {"format": "string", "value": url}, "ttl": ttl}


ADMIN_VALUE = {
    "index": 100, "type": "HS_ADMIN",
    "data": {"format": "admin", "value": {"handle": f"{PREFIX}/ADMIN", "index": 300,
                                          "permissions": "011111110011"}},
}


@dataclasses.dataclass
class Member:
    running: RunningNode
    url: str

    @property
    def node(self):
        return self.running.node


class Cluster:
    """Nodes on loopback sharing one store file and one Redis namespace."""

    def __init__(self, store: Path, redis_url: str, prefix: str) -> None:
        self.store = store
        self.redis_url = redis_url
        self.prefix = prefix
        self.members: list[Member] = []
        self.session = aiohttp.ClientSession()
        login = ADMIN.replace(":", "%3A", 1)
        self.auth = {"Authorization": aiohttp.encode_basic_auth(login, SECRET)}

    async def add(self, **overrides: object) -> Member:
        config = NodeConfig(
            store=str(self.store), port=0, handle_port=None, redis=self.redis_url,
            redis_prefix=self.prefix, redis_lease=LEASE,
            **{"redis_timeout": 0.5, **overrides},  # type: ignore[arg-type]  # loaded CI
        )
        running = RunningNode(config)
        await running.start()
        member = Member(running, f"http://127.0.0.1:{running.port}")
        self.members.append(member)
        return member

    async def close(self) -> None:
        await self.session.close()
        for member in self.members:
            await member.running.stop()

    async def put(self, member: Member, handle: str, values: list[dict[str, object]]) -> int:
        body = orjson.dumps({"values": values})
        async with self.session.put(f"{member.url}/api/handles/{handle}", data=body,
                                    headers={**JSON, **self.auth}) as r:
            return r.status

    async def delete(self, member: Member, handle: str) -> int:
        async with self.session.delete(f"{member.url}/api/handles/{handle}",
                                       headers=self.auth) as r:
            return r.status

    async def get(self, member: Member, handle: str) -> tuple[int, dict]:
        async with self.session.get(f"{member.url}/api/handles/{handle}") as r:
            return r.status, await r.json()


def url_of(body: dict) -> str | None:
    for value in body.get("values", []):
        if value["type"] == "URL":
            return value["data"]["value"]
    return None


@contextlib.asynccontextmanager
async def cluster_on(tmp_path: Path, redis_url: str, prefix: str) -> AsyncIterator[Cluster]:
    store = tmp_path / "shared.db"
    await init_store(store)
    cluster = Cluster(store, redis_url, prefix)
    try:
        yield cluster
    finally:
        await cluster.close()


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- the shared L2 cache ------------------------------------------------------


async def test_second_node_finds_the_record_in_redis(tmp_path, shared_redis):
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        a, b = await cluster.add(), await cluster.add()
        handle = f"{PREFIX}/l2-one"
        assert await cluster.put(a, handle, [url_value("https://one.example", ttl=60)]) == 201
        assert (await cluster.get(a, handle))[0] == 200  # store, then shared
        await wait_for(lambda: a.node.redis.l2.idle)
        status, body = await cluster.get(b, handle)
        assert status == 200 and url_of(body) == "https://one.example"
        assert b.node.redis.l2.hits == 1 and b.node.redis.l2.misses == 0
        client = redis_asyncio.Redis.from_url(url)
        try:
            ttl_ms = await client.pttl(f"{prefix}v:{handle.upper()}")
        finally:
            await client.aclose()
        assert 0 < ttl_ms <= 60_000  # the record's own TTL bounds the shared copy


async def test_negative_answers_are_shared_briefly(tmp_path, shared_redis):
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        a, b = await cluster.add(), await cluster.add(cache_negative_ttl=2.0)
        handle = f"{PREFIX}/absent"
        assert (await cluster.get(b, handle))[0] == 404
        await wait_for(lambda: b.node.redis.l2.idle)
        client = redis_asyncio.Redis.from_url(url)
        try:
            key = f"{prefix}v:{handle.upper()}"
            assert await client.get(key) == b""
            assert 0 < await client.pttl(key) <= 2000
        finally:
            await client.aclose()
        assert (await cluster.get(a, handle))[0] == 404
        assert a.node.redis.l2.hits == 1
        # Creating it clears the shared negative answer at once.
        assert await cluster.put(a, handle, [url_value("https://now.example")]) == 201
        status, body = await cluster.get(b, handle)
        assert status == 200 and url_of(body) == "https://now.example"


async def test_a_reader_cannot_put_back_a_record_deleted_during_its_lookup(tmp_path, shared_redis):
    """The resurrection race, made to happen: the write lands between the reader's
    Redis read and its fill; the fill must not store the old record."""
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        reader, writer = await cluster.add(), await cluster.add()
        handle = f"{PREFIX}/race"
        key = handle.upper()
        assert await cluster.put(writer, handle, [url_value("https://old.example")]) == 201
        old = await reader.node.store.get(key)

        async def slow_store_read() -> Resolution:
            # The reader has read Redis (a miss); now a writer changes the record.
            assert await cluster.put(writer, handle, [url_value("https://new.example")]) == 200
            return RC.SUCCESS, old

        _rc, values = await reader.node.redis.load(key, slow_store_read)
        assert values == old  # the reader answers what it read, concurrent with the write
        await wait_for(lambda: reader.node.redis.l2.idle)
        client = redis_asyncio.Redis.from_url(url)
        try:
            assert await client.get(f"{prefix}v:{key}") is None  # not resurrected
        finally:
            await client.aclose()
        status, body = await cluster.get(reader, handle)
        assert status == 200 and url_of(body) == "https://new.example"


# -- strict invalidation ------------------------------------------------------


async def test_read_your_writes_on_every_node(tmp_path, shared_redis):
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        nodes = [await cluster.add() for _ in range(3)]
        handles = [f"{PREFIX}/ryw-{n}" for n in range(3)]
        for handle in handles:
            assert await cluster.put(nodes[0], handle, [url_value("https://v0.example")]) == 201
        for round_ in range(1, 31):
            handle = handles[round_ % 3]
            writer = nodes[round_ % 3]
            others = [n for n in nodes if n is not writer]
            for n in nodes:  # every cache (in-process and Redis) holds the current record
                await cluster.get(n, handle)
            if round_ % 5 == 0:
                assert await cluster.delete(writer, handle) == 200
                for n in others:
                    status, _ = await cluster.get(n, handle)
                    assert status == 404, f"round {round_}: a deleted record served"
                assert await cluster.put(writer, handle, [url_value("https://back.example")]) == 201
                continue
            new = f"https://v{round_}.example"
            assert await cluster.put(writer, handle, [url_value(new)]) == 200
            for n in others:
                status, body = await cluster.get(n, handle)
                assert status == 200 and url_of(body) == new, f"round {round_}: stale read"
        assert all(n.node.redis.invalidation.invalidations_received > 0 for n in nodes)


async def test_writer_waits_for_a_live_node_until_it_leaves(tmp_path, shared_redis):
    """A node that is live but silent holds the write back until its presence lapses."""
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        a = await cluster.add()
        handle = f"{PREFIX}/silent"
        assert await cluster.put(a, handle, [url_value("https://one.example")]) == 201
        client = redis_asyncio.Redis.from_url(url)
        try:
            now_s, now_us = await client.time()
            lease_end = now_s * 1000 + now_us // 1000 + int(LEASE * 1000)
            await client.zadd(f"{prefix}nodes", {"silent-node": lease_end})
            started = time.monotonic()
            assert await cluster.put(a, handle, [url_value("https://two.example")]) == 200
            waited = time.monotonic() - started
            # A write without a silent peer, as the yardstick.
            started = time.monotonic()
            assert await cluster.put(a, handle, [url_value("https://three.example")]) == 200
            alone = time.monotonic() - started
            assert await client.zscore(f"{prefix}nodes", "silent-node") is None
        finally:
            await client.aclose()
        assert waited > alone
        assert waited >= LEASE / 2  # held until the silent node's presence ran out


# -- degraded mode ------------------------------------------------------------


def up_gauge(member: Member) -> float:
    return member.node.registry.get_sample_value("idnode_redis_up")


async def test_redis_outage_serves_from_the_store_and_recovers(
    tmp_path, private_redis: PrivateRedis
):
    async with cluster_on(tmp_path, private_redis.url, "idnode:") as cluster:
        a, b = await cluster.add(), await cluster.add()
        assert up_gauge(a) == 1 and up_gauge(b) == 1
        handle = f"{PREFIX}/outage"
        assert await cluster.put(a, handle, [url_value("https://before.example")]) == 201
        for n in (a, b):
            assert (await cluster.get(n, handle))[0] == 200
        assert b.node.cache.peek(handle.upper()) is not None

        private_redis.stop()
        await wait_for(lambda: up_gauge(a) == 0 and up_gauge(b) == 0)
        # No cache is trusted now: every node may have missed invalidations.
        assert b.node.cache.peek(handle.upper()) is None
        for n in (a, b):
            status, body = await cluster.get(n, handle)
            assert status == 200 and url_of(body) == "https://before.example"
        # Writes are refused (nothing changes) rather than acknowledged unseen.
        assert await cluster.put(a, handle, [url_value("https://during.example")]) == 503
        status, body = await cluster.get(b, handle)
        assert url_of(body) == "https://before.example"

        private_redis.start()
        await wait_for(lambda: up_gauge(a) == 1 and up_gauge(b) == 1, timeout=20)
        assert await cluster.put(a, handle, [url_value("https://after.example")]) == 200
        status, body = await cluster.get(b, handle)
        assert status == 200 and url_of(body) == "https://after.example"
        assert a.node.registry.get_sample_value("idnode_redis_transitions_total") >= 3


async def test_node_starts_and_serves_without_redis(tmp_path):
    port = free_port()  # nothing listens there
    async with cluster_on(tmp_path, f"redis://127.0.0.1:{port}/0", "idnode:") as cluster:
        a = await cluster.add()
        assert up_gauge(a) == 0
        handle = f"{PREFIX}/ADMIN"
        status, _ = await cluster.get(a, handle)
        assert status == 200
        assert a.node.redis.l2.skipped >= 1


async def test_slow_redis_falls_through_to_the_store(tmp_path, private_redis: PrivateRedis):
    async with cluster_on(tmp_path, private_redis.url, "idnode:") as cluster:
        a = await cluster.add(cache_bytes=0, redis_timeout=0.005)  # every resolve asks Redis
        handle = f"{PREFIX}/ADMIN"
        assert (await cluster.get(a, handle))[0] == 200
        client = redis_asyncio.Redis.from_url(private_redis.url)
        try:
            await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            pause_end = time.monotonic() + 1.5
            status, _ = await cluster.get(a, handle)
            answered = time.monotonic()
        finally:
            await client.aclose()
        assert status == 200
        assert answered < pause_end  # answered from the store while Redis was paused
        assert a.node.redis.l2.errors >= 1


def test_values_roundtrip_through_the_shared_encoding():
    values = (HandleValue(index=1, type="URL", data=b"https://x.example"),)
    assert _decode(encode_record(values)) == (RC.SUCCESS, values)
    assert _decode(b"") == (RC.HANDLE_NOT_FOUND, None)


async def test_homing_a_prefix_reaches_every_node_at_once(tmp_path, shared_redis):
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        a, b = await cluster.add(), await cluster.add()
        assert (await cluster.get(b, "88.300.1/x"))[0] == 400  # not homed: RC 301
        await a.node.home_prefix("88.300.1", [])
        assert "88.300.1" in b.node.homed  # told before home_prefix returned
        assert (await cluster.get(b, "88.300.1/x"))[0] == 404


async def test_concurrent_writers_never_leave_a_stale_read(tmp_path, shared_redis):
    url, prefix = shared_redis
    async with cluster_on(tmp_path, url, prefix) as cluster:
        nodes = [await cluster.add() for _ in range(3)]

        async def writer(w: int) -> None:
            handle = f"{PREFIX}/conc-{w}"
            for n in range(15):
                new = f"https://w{w}-n{n}.example"
                assert await cluster.put(nodes[w], handle, [url_value(new)]) in (200, 201)
                for other in nodes:
                    status, body = await cluster.get(other, handle)
                    assert status == 200 and url_of(body) == new, (w, n)

        await asyncio.gather(*(writer(w) for w in range(3)))


async def test_a_lost_subscription_drops_the_cache_until_resubscribed(
    tmp_path, private_redis: PrivateRedis
):
    async with cluster_on(tmp_path, private_redis.url, "idnode:") as cluster:
        a, b = await cluster.add(), await cluster.add()
        handle = f"{PREFIX}/resub"
        assert await cluster.put(a, handle, [url_value("https://one.example")]) == 201
        assert (await cluster.get(b, handle))[0] == 200
        assert b.node.cache.peek(handle.upper()) is not None
        transitions = b.node.redis.invalidation.transitions
        client = redis_asyncio.Redis.from_url(private_redis.url)
        try:
            # Invalidations published meanwhile would be lost to the killed connections.
            await client.client_kill_filter(_type="pubsub")
        finally:
            await client.aclose()
        await wait_for(lambda: b.node.redis.invalidation.transitions > transitions)
        assert b.node.cache.peek(handle.upper()) is None  # dropped, not served
        await wait_for(lambda: up_gauge(a) == 1 and up_gauge(b) == 1)
        assert await cluster.put(a, handle, [url_value("https://two.example")]) == 200
        status, body = await cluster.get(b, handle)
        assert status == 200 and url_of(body) == "https://two.example"
