"""The Redis tier: a shared L2 cache, and invalidations every node obeys.

    in-process cache (per node) → Redis (shared, msgpack records) → store

**Guarantee.** Once a write is acknowledged by any node, no node sharing the
store and Redis (same ``--redis`` URL and ``--redis-prefix``) answers with the
record as it was before: not from its in-process cache, not from Redis.

**How.** After the store commits, the writer (``Coherence.invalidate``, then
this tier's ``publish``):

1. drops the keys from its own cache (lookups in flight are not kept);
2. runs one script: a new random *generation* per key, its shared value
   deleted, the invalidation published, and the nodes then live listed;
3. waits until each of those nodes acknowledged (after dropping the keys and
   the lookups in flight) or left the live set, and only then answers.

A node serves its in-process cache only under a lease renewed by heartbeats
that travel the subscription itself (see ``invalidation``): it stops serving
before writers stop waiting for it, and on any doubt (lost connection, redis-py
resubscribing by itself, acknowledgements stuck) it drops the whole cache and
serves from Redis and the store until a fresh heartbeat.

**The resurrection race.** A reader that loaded the old record from the store
before a commit could store it into Redis after the writer deleted it. Readers
fetch the key's generation with the value (one ``MGET``) and store what the
store answered only through a script that checks the generation is unchanged,
so any write in between voids the fill. Chosen over a tombstone (a fixed
window a slow reader can outlast, and a tombstone read per miss anyway) and
over WATCH/MULTI (a connection held per miss, several round trips): it costs
nothing extra on the read and one small key per write, kept
``GENERATION_TTL`` seconds; a reader slower than half of that does not fill.

**Limits.**

- Writes need Redis. While a node cannot reach it, it refuses writes
  (RC 7 / HTTP 503) before touching the store; reads go on from the store.
  (A writer cut off from Redis cannot tell whether other nodes, still
  connected, hold the old record in memory or in Redis: acknowledging would
  break the guarantee under a partial partition.)
  If Redis fails in the middle of a write, the change is stored but the
  client gets RC 3 / HTTP 503 (not acknowledged); the node clears the keys in
  Redis when it is back.
- A writer waits for a node that stopped answering until its presence lapses
  (``--redis-lease``, 3 s by default). A node left out that way (an event
  loop stalled past its lease) serves nothing from its cache until it has
  read the invalidations queued on its subscription and renewed its lease.
- Offline writes (``idnode import``, ``prefix add``) are not announced: the
  shared copy may show the old record up to its TTL, as the in-process one does.
- An L2 hit enters the in-process cache with the record's full TTL, not the
  time left in Redis: TTLs bound staleness of nothing here (invalidation does),
  only memory.
- Time: leases are measured on each node's monotonic clock and presence on
  Redis's clock; a step of Redis's wall clock forward by more than the lease
  margin could let a writer stop waiting too soon.
- One Redis (or a Sentinel-managed primary): the scripts touch several keys,
  which Redis Cluster would refuse across slots. A failover that loses acknowledged
  writes to Redis (asynchronous replication) can lose invalidations too.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from resolver.cache import Resolution, ResolutionCache
from resolver.coherence import ApplyChange, Change
from resolver.metrics import GaugeCollector
from resolver.redis_tier.invalidation import RedisInvalidation
from resolver.redis_tier.l2 import CONNECTIONS, SharedCache, StoreLookup
from resolver.redis_tier.names import Names

WARM_CONNECTIONS = 4
START_WAIT = 2.0  # seconds a starting node waits for Redis before serving without it


class RedisTier:
    """A ``resolver.coherence.Peers`` tier (every node sharing the Redis namespace),
    plus the shared L2 cache (``load``) and the write gate (``check_writable``)."""

    def __init__(
        self,
        url: str,
        cache: ResolutionCache,
        *,
        prefix: str,
        timeout: float,
        lease: float,
        max_ttl: float,
        negative_ttl: float,
    ) -> None:
        names = Names(prefix)
        # No retries inside redis-py: the tier decides what a failure means
        # (a pub/sub connection renewed behind its back could have lost messages).
        connect_timeout = max(lease / 4, 0.1)
        self._l2_client = Redis.from_url(
            url, max_connections=CONNECTIONS, socket_timeout=1.0,
            socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
        )
        self._control_client = Redis.from_url(
            url, max_connections=16, socket_timeout=lease / 4,
            socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
        )
        self.invalidation = RedisInvalidation(
            self._control_client, names, cache, lease=lease, heartbeat=lease / 6
        )
        self.l2 = SharedCache(
            self._l2_client, names, timeout=timeout, max_ttl=max_ttl,
            negative_ttl=negative_ttl, usable=lambda: self.invalidation.up,
        )

    async def start(self, apply: ApplyChange) -> None:
        await self.invalidation.start(apply, wait=START_WAIT)
        if self.invalidation.up:
            await self.l2.warm(WARM_CONNECTIONS)

    async def stop(self) -> None:
        await self.invalidation.stop()
        await self._l2_client.aclose()
        await self._control_client.aclose()

    async def load(self, key: str, from_store: StoreLookup) -> Resolution:
        return await self.l2.load(key, from_store)

    def check_writable(self) -> None:
        self.invalidation.check_writable()

    async def publish(self, change: Change) -> None:
        await self.invalidation.publish(change)

    def metrics(self) -> GaugeCollector:
        l2, link = self.l2, self.invalidation
        return GaugeCollector({
            "idnode_redis_up": ("gauge", "1 while Redis is reachable and invalidations flow",
                                lambda: int(link.up)),
            "idnode_redis_transitions": ("counter", "Redis link up/down transitions",
                                         lambda: link.transitions),
            "idnode_redis_l2_hits": ("counter", "Records found in Redis", lambda: l2.hits),
            "idnode_redis_l2_misses": ("counter", "Redis lookups that went on to the store",
                                       lambda: l2.misses),
            "idnode_redis_l2_errors": ("counter", "Failed or late Redis reads and fills",
                                       lambda: l2.errors),
            "idnode_redis_l2_skipped": ("counter",
                                        "Lookups that skipped Redis (down, breaker open, busy)",
                                        lambda: l2.skipped),
            "idnode_redis_invalidations_sent": ("counter", "Writes broadcast to other nodes",
                                                lambda: link.invalidations_sent),
            "idnode_redis_invalidations_received": ("counter",
                                                    "Other nodes' writes dropped from the cache",
                                                    lambda: link.invalidations_received),
        })
