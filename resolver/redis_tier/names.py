"""Key and channel names under one namespace, and the Lua scripts that use them.

Every name starts with the namespace (``--redis-prefix``), so several
deployments, or test runs, can share one Redis. The scripts touch several keys
at once, so the tier needs a single Redis (or a Sentinel-managed primary), not
Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

# Writer: mark every key's generation new and delete its shared value, then
# publish the invalidation and answer which nodes were live at that instant
# (Redis time): those are the nodes the writer waits for.
#   KEYS: presence, value keys..., generation keys...
#   ARGV: generation token, generation TTL ms, channel, message
INVALIDATE = """
local n = (#KEYS - 1) / 2
for i = 1, n do
  redis.call('DEL', KEYS[1 + i])
  redis.call('SET', KEYS[1 + n + i], ARGV[1], 'PX', ARGV[2])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# Reader: store a value loaded from the store only if no write happened since
# the reader read the key's generation ('' = none), so a slow reader cannot put
# back the record a writer has just deleted.
#   KEYS: value key, generation key   ARGV: generation seen, value, TTL ms
FILL = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# Node: I am live (and will hear every invalidation) for the next lease.
#   KEYS: presence   ARGV: node id, lease ms
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return now
"""

# Writer waiting for acknowledgements: which nodes are still live.
#   KEYS: presence
LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


@dataclass(frozen=True, slots=True)
class Names:
    prefix: str

    def value(self, key: str) -> str:
        return f"{self.prefix}v:{key}"

    def generation(self, key: str) -> str:
        return f"{self.prefix}g:{key}"

    @property
    def presence(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def invalidations(self) -> str:
        return f"{self.prefix}invalidate"

    def acks(self, node_id: str) -> str:
        return f"{self.prefix}ack:{node_id}"
