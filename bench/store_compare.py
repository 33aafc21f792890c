"""Store backends side by side, in one run: bulk put_many rate and get latency.

    python -m bench.store_compare [--count 200000] [--batch 10000] [--rounds 2]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Each round loads ``count`` benchmark records (bench.workload, five values,
random key order) into a fresh SQLite store, a fresh LMDB environment and a
fresh PostgreSQL schema (``idnode_bench_<random>``, dropped afterwards),
rotating which goes first,
then times ``gets`` single lookups one at a time (latency) and with 64
concurrent readers (throughput). Numbers are reported with the ratio to
SQLite measured in the same round: on a shared machine only the ratios mean
much. Uses the Store contract (registry/), nothing private.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.workload import identifier, record
from registry.backends import open_store_at
from registry.store import PutItem, Store

PREFIX = "88.100.1"


@dataclass
class Result:
    backend: str
    load_ids_per_s: float
    get_median_us: float
    get_p99_us: float
    concurrent_gets_per_s: float


def items(count: int, seed: int) -> list[PutItem]:
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)  # a live node registers in no particular key order
    return [PutItem(identifier(PREFIX, n), record(PREFIX, n, rng)) for n in order]


async def measure(name: str, store: Store, batch: list[PutItem], size: int, gets: int) -> Result:
    await store.open()
    try:
        start = time.perf_counter()
        for i in range(0, len(batch), size):
            results = await store.put_many(batch[i : i + size])
            assert all(r is True for r in results), "bench keys must be new"
        load = len(batch) / (time.perf_counter() - start)

        rng = random.Random(7)
        keys = [rng.choice(batch).key for _ in range(gets)]
        latencies = []
        for key in keys:
            t = time.perf_counter()
            assert await store.get(key) is not None
            latencies.append(time.perf_counter() - t)
        latencies.sort()

        async def reader(part: list[str]) -> None:
            for key in part:
                await store.get(key)

        start = time.perf_counter()
        await asyncio.gather(*(reader(keys[i::64]) for i in range(64)))
        concurrent = gets / (time.perf_counter() - start)
    finally:
        await store.close()
    return Result(name, load, statistics.median(latencies) * 1e6,
                  latencies[int(len(latencies) * 0.99)] * 1e6, concurrent)


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    batch = items(args.count, seed=1)
    sep = "&" if "?" in args.postgres else "?"
    print(f"{args.count} records in batches of {args.batch}, {args.gets} gets; "
          "shared noisy machine: compare the ratios, not the absolute numbers")
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            schema = f"idnode_bench_{uuid.uuid4().hex[:12]}"
            # As a node opens them: its writes are announced, not counted.
            stores = {
                "sqlite": open_store_at(str(Path(tmp) / "bench.db"), announces_writes=True),
                "lmdb": open_store_at(str(Path(tmp) / "bench.lmdb"), announces_writes=True),
                "postgresql": open_store_at(f"{args.postgres}{sep}search_path={schema}",
                                            announces_writes=True),
            }
            names = list(stores)
            shift = round_ % len(names)
            order = names[shift:] + names[:shift]
            results = {}
            try:
                for name in order:
                    results[name] = await measure(name, stores[name], batch, args.batch,
                                                  args.gets)
            finally:
                await drop_schema(args.postgres, schema)
        base = results["sqlite"]
        print(f"round {round_ + 1} (first: {order[0]})")
        for r in results.values():
            print(f"  {r.backend:10s} load {r.load_ids_per_s:9.0f} ids/s "
                  f"(x{r.load_ids_per_s / base.load_ids_per_s:.2f})  "
                  f"get median {r.get_median_us:6.0f} us p99 {r.get_p99_us:6.0f} us "
                  f"(x{r.get_median_us / base.get_median_us:.2f})  "
                  f"64 readers {r.concurrent_gets_per_s:7.0f} gets/s "
                  f"(x{r.concurrent_gets_per_s / base.concurrent_gets_per_s:.2f})")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--gets", type=int, default=5_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
