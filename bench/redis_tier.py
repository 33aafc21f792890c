"""Redis tier benchmark: what the shared cache costs and saves, as ratios measured in one run.

    python -m bench.redis_tier [--redis redis://127.0.0.1:6379/0] [--preload 20000]
                               [--seconds 5] [--repetitions 3] [--redis-timeout S]

Four nodes on one preloaded store, each pinned to core 0 in turn, wrk on core 1
(Redis itself runs wherever the OS puts it):

- ``inproc``: in-process cache hits, no Redis;  ``inproc+redis``: the same with
  ``--redis`` (the hot path must not get slower: ratio ≈ 1);
- ``l2``: ``--cache-size 0`` with ``--redis``: every request an in-process
  miss answered by Redis;  ``store``: ``--cache-size 0`` without Redis: every
  request a store read. Reported: ``l2/store``.

Each pair alternates (ABBA) over the repetitions; one ratio per repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from pathlib import Path

import redis

from bench.core import fetch, warm
from bench.preload import PREFIX, prepare_store
from bench.processes import free_port, idnode, listening, pinned
from bench.workload import identifier
from bench.wrk_load import WrkResult, lua_rotate_get, require_wrk, run_wrk

SERVER_CPU, LOAD_CPU = 0, 1
HOT_SET = 1000


async def l2_counters(url: str) -> str:
    """The node's own L2 counters (hits, misses, errors, skipped), if it has Redis."""
    _, body = await fetch("GET", f"{url}/metrics")
    counts = {}
    for line in body.decode().splitlines():
        if line.startswith("idnode_redis_l2_") and "_total " in line:
            name, value = line.split()
            counts[name.removeprefix("idnode_redis_l2_").removesuffix("_total")] = float(value)
    return "".join(f" {k} {v:,.0f}" for k, v in counts.items()) if counts else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-timeout", type=float, default=None,
                        help="the nodes' --redis-timeout (default: the node's own)")
    parser.add_argument("--preload", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    require_wrk()
    work = Path(tempfile.mkdtemp(prefix="idnode-bench-redis-"))
    store = prepare_store(work, args.preload).path
    namespace = f"idnode-bench:{uuid.uuid4().hex[:8]}:"
    hot = [identifier(PREFIX, n) for n in range(0, args.preload, max(1, args.preload // HOT_SET))]
    script = work / "hot.lua"
    script.write_text(lua_rotate_get([f"/api/handles/{h}" for h in hot]))
    redis_flags = ["--redis", args.redis, "--redis-prefix", namespace]
    if args.redis_timeout is not None:
        redis_flags += ["--redis-timeout", str(args.redis_timeout)]
    configs = {
        "inproc": ["--cache-size", "1G"],
        "inproc+redis": ["--cache-size", "1G", *redis_flags],
        "l2": ["--cache-size", "0", *redis_flags],
        "store": ["--cache-size", "0"],
    }
    results: dict[str, list[WrkResult]] = {name: [] for name in configs}
    try:
        for pair in (("inproc", "inproc+redis"), ("l2", "store")):
            for rep in range(args.repetitions):
                for name in (pair if rep % 2 == 0 else pair[::-1]):
                    port = free_port()
                    argv = idnode("serve", "--store", str(store), "--port", str(port),
                                  "--no-handle-protocol", "--log-level", "WARNING",
                                  *configs[name])
                    with listening(pinned(SERVER_CPU, argv), port, work / f"{name}.log"):
                        url = f"http://127.0.0.1:{port}"
                        asyncio.run(warm(url, hot))  # in-process cache, or Redis, filled
                        run_wrk(url, script, seconds=1, connections=args.connections,
                                cpu=LOAD_CPU)
                        result = run_wrk(url, script, seconds=args.seconds,
                                         connections=args.connections, cpu=LOAD_CPU)
                        l2 = asyncio.run(l2_counters(url))
                    results[name].append(result)
                    print(f"  {name} rep {rep + 1}: {result.requests_per_second:,.0f}/s "
                          f"p50 {1000 * (result.latency_p50 or 0):.2f} ms "
                          f"p99 {1000 * (result.latency_p99 or 0):.2f} ms "
                          f"non-2xx {result.non_2xx}{l2}", flush=True)
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    print()
    print("| ratio | min | median | max |")
    print("|---|---|---|---|")
    for a, b in (("inproc+redis", "inproc"), ("l2", "store")):
        ratios = [x.requests_per_second / y.requests_per_second
                  for x, y in zip(results[a], results[b], strict=True)]
        print(f"| {a} / {b} req/s | {min(ratios):.3f} | {statistics.median(ratios):.3f} | "
              f"{max(ratios):.3f} |")
    for name, runs in results.items():
        rates = [r.requests_per_second for r in runs]
        p50 = statistics.median(1000 * (r.latency_p50 or 0) for r in runs)
        print(f"{name}: median {statistics.median(rates):,.0f} req/s, p50 {p50:.2f} ms")


if __name__ == "__main__":
    main()
