"""Overload: measure a node's capacity, drive it at twice that, watch it shed and recover.

    python -m bench.overload                      # 50k preloaded, 60 s at 2x capacity
    python -m bench.overload --seconds 10 --preload 5000 --json out.json

The load reaches the store: GETs of preloaded identifiers, uniform, against a
node whose cache holds ~1 MiB (almost every GET is a store lookup), with every
``--write-every``-th request a PUT of a new handle (the writer queue). Steps:

1. unloaded: a probe alone (open loop, ``--probe-rate`` requests/s) → p50/p99;
2. capacity: wrk, closed loop, ``--capacity-connections`` → successful req/s;
3. overload: wrk offering 2x that (``--overload-connections`` connections, each
   pausing so that together they offer twice the capacity) for ``--seconds``,
   while the probe keeps measuring; the node's RSS is sampled every second;
4. recovery: the probe alone again, right after the load stops.

The node runs one worker process (``--workers 1``): what is measured is one
event loop's shedding, and its RSS. The probe's latency is end to end (kernel
and event-loop queueing included), which a node-side timer cannot see;
"admitted" means answered other than 503.
Numbers from a shared machine are noisy: read them as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.preload import prepare_store
from bench.processes import free_port, idnode, listening
from bench.workload import handle_path, identifier
from bench.wrk_load import WrkResult, parse_wrk, wrk_argv

PUT_BODY = '{"values":[{"index":1,"type":"URL","data":"https://example.com/overload"}]}'


@dataclass
class ProbeStats:
    sent: int = 0
    admitted: int = 0
    shed: int = 0  # 503
    other: dict[str, int] = field(default_factory=dict)  # anything else (errors, other codes)
    admitted_latencies: list[float] = field(default_factory=list)
    shed_latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent, "admitted": self.admitted, "shed": self.shed,
            "other": self.other,
            "admitted_p50_ms": _pct(self.admitted_latencies, 50),
            "admitted_p99_ms": _pct(self.admitted_latencies, 99),
            "shed_p99_ms": _pct(self.shed_latencies, 99),
        }


def _pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, len(ordered) * p // 100)], 3)


async def probe(base: str, paths: list[str], rate: float, seconds: float,
                rng: random.Random) -> ProbeStats:
    """GET random paths at a fixed rate (open loop): each request timed on its own."""
    stats = ProbeStats()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(path: str) -> None:
            start = time.perf_counter()
            try:
                async with session.get(base + path) as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
                stats.other[key] = stats.other.get(key, 0) + 1
                return
            elapsed = time.perf_counter() - start
            if status == 503:
                stats.shed += 1
                stats.shed_latencies.append(elapsed)
            elif status < 500:
                stats.admitted += 1
                stats.admitted_latencies.append(elapsed)
            else:
                stats.other[str(status)] = stats.other.get(str(status), 0) + 1

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stats.sent += 1
            tasks.append(asyncio.ensure_future(one(rng.choice(paths))))
        await asyncio.gather(*tasks)
    return stats


def lua_mix(paths: list[str], authorization: str, write_every: int, delay_ms: float,
            tag: str) -> str:
    items = ",".join(f'"{p}"' for p in paths)
    body = PUT_BODY.replace('"', '\\"')
    return (
        f"local paths = {{{items}}}\nlocal n = 0\nmath.randomseed(1)\n"
        f'local headers = {{["Content-Type"] = "application/json", '
        f'["Authorization"] = "{authorization}"}}\n'
        "request = function()\n  n = n + 1\n"
        f"  if {write_every} > 0 and n % {write_every} == 0 then\n"
        f'    return wrk.format("PUT", "/api/handles/88.100.1/OVL-{tag}-" .. n, headers, '
        f'"{body}")\n  end\n'
        '  return wrk.format("GET", paths[math.random(#paths)])\nend\n'
        + (f"delay = function() return {delay_ms:.3f} end\n" if delay_ms > 0 else "")
    )


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def run_wrk_async(argv: list[str]) -> WrkResult:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {err.decode()}")
    return parse_wrk(out.decode())


async def sample_rss(pid: int, until: asyncio.Event, samples: list[int]) -> None:
    while not until.is_set():
        rss = rss_bytes(pid)
        if rss is not None:
            samples.append(rss)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(until.wait(), 1.0)


async def measure(args: argparse.Namespace, base: str, pid: int, work: Path,
                  secret: str) -> dict[str, object]:
    rng = random.Random(args.seed)
    paths = [handle_path(identifier("88.100.1", n)) for n in range(args.preload)]
    lua_paths = rng.sample(paths, min(len(paths), 20_000))
    authorization = aiohttp.encode_basic_auth("300%3A88.100.1/ADMIN", secret)
    result: dict[str, object] = {"parameters": vars(args)}

    unloaded = await probe(base, paths, args.probe_rate, args.probe_seconds, rng)
    result["unloaded"] = unloaded.summary()
    print("unloaded:", result["unloaded"], flush=True)

    script = work / "capacity.lua"
    script.write_text(lua_mix(lua_paths, authorization, args.write_every, 0, "cap"))
    capacity = await run_wrk_async(wrk_argv(base, script, seconds=args.capacity_seconds,
                                            connections=args.capacity_connections, cpu=None))
    capacity_ok = capacity.requests_per_second * (1 - _fraction(capacity, args.capacity_seconds))
    result["capacity"] = {**asdict(capacity), "successful_per_second": capacity_ok}
    print(f"capacity: {capacity_ok:,.0f} successful req/s "
          f"({capacity.requests_per_second:,.0f}/s answered)", flush=True)

    target = 2 * capacity_ok
    delay_ms = 1000 * args.overload_connections / target
    script = work / "overload.lua"
    script.write_text(lua_mix(lua_paths, authorization, args.write_every, delay_ms, "ovl"))
    rss: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_rss(pid, stop, rss))
    rss_start = rss_bytes(pid)
    load = asyncio.ensure_future(run_wrk_async(wrk_argv(
        base, script, seconds=args.seconds, connections=args.overload_connections, cpu=None)))
    await asyncio.sleep(min(2.0, args.seconds / 10))  # let the load build up
    loaded = await probe(base, paths, args.probe_rate, args.seconds - 4, rng)
    overload = await load
    stop.set()
    await sampler
    rss_end_of_load = rss_bytes(pid)
    recovery_start = time.perf_counter()
    recovered = await probe(base, paths, args.probe_rate, args.probe_seconds, rng)
    shed_fraction = overload.non_2xx / max(1, overload.requests_per_second * args.seconds)
    result["overload"] = {
        "target_per_second": target, "offered_per_second": overload.requests_per_second,
        "wrk": asdict(overload), "shed_fraction": round(shed_fraction, 4),
        "probe": loaded.summary(),
    }
    result["recovery"] = {**recovered.summary(),
                          "seconds_after_load": round(time.perf_counter() - recovery_start, 2)}
    result["rss_mib"] = {
        "start": _mib(rss_start), "peak": _mib(max(rss) if rss else None),
        "end_of_load": _mib(rss_end_of_load), "after_recovery": _mib(rss_bytes(pid)),
    }
    unloaded_p99 = unloaded.summary()["admitted_p99_ms"]
    loaded_p99 = loaded.summary()["admitted_p99_ms"]
    if isinstance(unloaded_p99, float) and isinstance(loaded_p99, float) and unloaded_p99:
        result["admitted_p99_over_unloaded_p99"] = round(loaded_p99 / unloaded_p99, 2)
    return result


def _fraction(result: WrkResult, seconds: float) -> float:
    total = result.requests_per_second * seconds
    return result.non_2xx / total if total else 0.0


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preload", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="overload duration")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--capacity-connections", type=int, default=16)
    parser.add_argument("--overload-connections", type=int, default=256)
    parser.add_argument("--write-every", type=int, default=0,
                        help="every Nth request a PUT (0: none)")
    parser.add_argument("--probe-rate", type=float, default=50.0)
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra idnode serve flag, e.g. --node-arg=--shed-lag=0.02")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idnode-overload-") as tmp:
        work = Path(tmp)
        store = prepare_store(work, args.preload)
        port = free_port()
        serve = idnode("serve", "--store", str(store.path), "--port", str(port),
                       "--no-handle-protocol", "--cache-size", "1M", "--log-level", "WARNING",
                       "--workers", "1",  # one event loop: its RSS and its shedding
                       *args.node_arg)
        with listening(serve, port, work / "node.log") as proc:
            result = asyncio.run(measure(args, f"http://127.0.0.1:{port}", proc.pid, work,
                                         store.secret))
        result["node_log_tail"] = (work / "node.log").read_text(errors="replace")[-2000:]
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
