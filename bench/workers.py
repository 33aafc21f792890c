"""Resolve throughput of one node with N worker processes against 1 worker, in one run.

    python -m bench.workers [--workers 2] [--preload 20000] [--seconds 5] [--repetitions 3]

Both nodes serve the same preloaded store; the load is wrk (one thread)
cycling over a hot set of cached identifiers, alternating between the nodes
(ABBA) after a warm-up that fills every worker's cache.

On a machine with few cores the load generator competes with the workers,
so each run reports, beside wall throughput, the CPU seconds the node used
(supervisor and workers: its whole process group, from /proc) and wrk used
(rusage), and requests per server-CPU-second. Cores (taskset): the 1-worker
node on core 0 and wrk on the last core, as ``bench.core`` does; the N-worker
node on all cores, sharing the last one with wrk. Wall-throughput ratios then
understate what N workers give once the load comes from elsewhere;
requests per server-CPU-second shows whether a worker does as much per core
as a lone process, and ``rps_per_cpu_s * cores`` bounds the node's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.preload import PREFIX, SECRET, prepare_store
from bench.processes import free_port, group_cpu_seconds, idnode, listening, pinned
from bench.workload import identifier
from bench.wrk_load import lua_rotate_get, require_wrk, run_wrk

HOT_SET = 1000
WRITES = 300  # sequential PUTs per node and repetition, for the write path's latency


def _wrk_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(url: str, pgid: int, script: Path, args: argparse.Namespace,
            load_cpu: int | None) -> dict[str, Any]:
    node_before = sum(group_cpu_seconds(pgid).values())
    wrk_before = _wrk_cpu()
    started = time.monotonic()
    result = run_wrk(url, script, seconds=args.seconds, connections=args.connections,
                     cpu=load_cpu)
    wall = time.monotonic() - started
    node_cpu = sum(group_cpu_seconds(pgid).values()) - node_before
    wrk_cpu = _wrk_cpu() - wrk_before
    requests = result.requests_per_second * args.seconds
    return {
        "rps": result.requests_per_second,
        "node_cpu_s": node_cpu, "wrk_cpu_s": wrk_cpu, "wall_s": wall,
        "node_cores_busy": node_cpu / wall,
        "rps_per_node_cpu_s": requests / node_cpu if node_cpu else None,
        "non_2xx": result.non_2xx, "socket_errors": result.socket_errors,
        "p50_s": result.latency_p50, "p99_s": result.latency_p99,
    }


async def write_latencies(url: str, tag: str) -> list[float]:
    """Sequential PUTs of new handles: each waits for every sibling's acknowledgement."""
    auth = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    body = json.dumps({"values": [{"index": 1, "type": "URL",
                                   "data": {"format": "string", "value": "https://example.com/w"}}]})
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    seconds = []
    async with aiohttp.ClientSession() as session:
        for n in range(WRITES):
            start = time.perf_counter()
            async with session.put(f"{url}/api/handles/{PREFIX}/W-{tag}-{n}", data=body,
                                   headers=headers) as reply:
                await reply.read()
                if reply.status != 201:
                    raise RuntimeError(f"PUT answered {reply.status}")
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--preload", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    require_wrk()
    cores = os.cpu_count() or 1
    single_cpu, load_cpu, multi_cpus = (0, cores - 1, f"0-{cores - 1}") if cores > 1 else (
        None, None, None)

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = args.output / f"{stamp}-workers"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="idnode-bench-"))
    print(f"preloading {args.preload:,} identifiers ...", flush=True)
    store = prepare_store(work, args.preload).path
    hot = [identifier(PREFIX, n) for n in range(0, args.preload, max(1, args.preload // HOT_SET))]
    script = work / "hot.lua"
    script.write_text(lua_rotate_get([f"/api/handles/{h}" for h in hot]))

    def serve(workers: int, port: int, cpus: int | str | None) -> list[str]:
        return pinned(cpus, idnode("serve", "--store", str(store), "--port", str(port),
                                   "--handle-port", "0", "--cache-size", "1G",
                                   "--workers", str(workers), "--log-level", "WARNING"))

    one_port, many_port = free_port(), free_port()
    targets = {"1 worker": f"http://127.0.0.1:{one_port}",
               f"{args.workers} workers": f"http://127.0.0.1:{many_port}"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    writes: dict[str, list[float]] = {name: [] for name in targets}  # median PUT seconds
    with listening(serve(1, one_port, single_cpu), one_port, out_dir / "node-1.log") as one, \
            listening(serve(args.workers, many_port, multi_cpus), many_port,
                      out_dir / "node-n.log") as many:
        time.sleep(2)  # every worker up (the port answers once the first is)
        pgids = {"1 worker": one.pid, f"{args.workers} workers": many.pid}
        for url in targets.values():  # warm-up: fills each worker's cache
            run_wrk(url, script, seconds=2, connections=args.connections, cpu=load_cpu)
        for rep in range(args.repetitions):
            order = list(targets)
            if rep % 2:
                order.reverse()
            for name in order:
                run = one_run(targets[name], pgids[name], script, args, load_cpu)
                runs[name].append(run)
                print(f"  rep {rep + 1} {name}: {run['rps']:,.0f} req/s, node "
                      f"{run['node_cores_busy']:.2f} cores, "
                      f"{run['rps_per_node_cpu_s']:,.0f} req per node-CPU-s, "
                      f"wrk {run['wrk_cpu_s'] / run['wall_s']:.2f} cores", flush=True)
        for rep in range(args.repetitions):
            order = list(targets)
            if rep % 2:
                order.reverse()
            for name in order:
                latencies = asyncio.run(write_latencies(targets[name], f"{rep}-{name[0]}"))
                median = statistics.median(latencies)
                writes[name].append(median)
                print(f"  rep {rep + 1} {name}: sequential PUT median {median * 1e3:.2f} ms",
                      flush=True)

    one_name, many_name = list(targets)
    wall = [m["rps"] / o["rps"] for o, m in zip(runs[one_name], runs[many_name], strict=True)]
    per_cpu = [m["rps_per_node_cpu_s"] / o["rps_per_node_cpu_s"]
               for o, m in zip(runs[one_name], runs[many_name], strict=True)]
    summary = {
        "benchmark": "workers", "started": stamp, "workers": args.workers, "cores": cores,
        "pinning": {"1 worker": single_cpu, "N workers": multi_cpus, "wrk": load_cpu},
        "preload": args.preload, "hot_set": len(hot), "seconds": args.seconds,
        "connections": args.connections, "runs": runs,
        "wall_ratio_median": statistics.median(wall), "wall_ratios": wall,
        "per_cpu_ratio_median": statistics.median(per_cpu), "per_cpu_ratios": per_cpu,
        "put_median_seconds": writes,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{many_name} / 1 worker: wall throughput x{statistics.median(wall):.2f} "
          f"(min {min(wall):.2f}, max {max(wall):.2f}); requests per node-CPU-second "
          f"x{statistics.median(per_cpu):.2f}", flush=True)
    print(f"sequential PUT median: 1 worker {statistics.median(writes[one_name]) * 1e3:.2f} ms, "
          f"{many_name} {statistics.median(writes[many_name]) * 1e3:.2f} ms "
          "(the difference is the wait for the siblings' acknowledgement)", flush=True)
    print(f"results: {out_dir}", flush=True)


if __name__ == "__main__":
    main()
