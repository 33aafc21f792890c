"""Hot vs cold resolution against one node serving a large store, in one run.

    python -m bench.big_store --store /work/bigstore/ids.db --count 100000000 \\
        --prefixes 88.100.1,88.100.2,88.100.3,88.100.4 --seconds 30

The store (a SQLite file or an LMDB directory) holds the set ``bench.gen_ids``
writes for the same ``--count`` and ``--prefixes``. One node (``idnode serve``)
is started on it and left until it is idle (an LMDB node first maps its
store: ``--lmdb-populate``), then wrk (C, one connection set, Lua picks each
request's identifier):

- **hot**: uniform over ``--hot-set`` identifiers spread over the store, after a
  warm-up pass: every reply comes from the node's cache;
- **cold**: uniform over all ``--count`` identifiers, on the fresh node: with
  100M and a 256 MiB cache, nearly every request is a cache miss and a store
  lookup, and each miss is also kept, so the cache is filling;
- **cold_full**: the same load with another seed once the cache is full (cold
  runs of ``FILL_CHUNK_SECONDS`` until the cache refuses or evicts, at most
  ``--fill-seconds``): the state a node in service stays in. A miss then
  costs less than while the cache fills (3-20 % less node CPU at 100M on
  2026-12-07), so both are reported.

Each cold run has its own seed: a run that replayed an earlier run's
identifiers would find them cached. Last, **hot_after** repeats the hot run
(after another warm-up): ``hot_drift_by_cpu`` (its node CPU per request over
the first hot run's) says how much the machine changed under the run; the
ratios are against the first hot run, and mean little where the drift is far
from 1. ``--rounds N`` then alternates short hot and cold_full slices
(``--round-seconds``) and reports each round's cold/hot and their median: on
a VM whose speed moves by tens of percent within minutes, adjacent slices
share the machine's state, which runs 20 s long and a minute apart do not.

Every request must return 200 (all identifiers exist): a non-2xx count is a
failed run. The node's RSS (VmRSS, and VmHWM, its peak) is read from /proc at
start and after every run. Results go to stdout and
``--output`` as JSON. The machine may be shared: the report says how loaded it
was (load average before and after), which bounds what the absolute rates mean;
the ratio cold/hot is measured within the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench.processes import free_port, group_cpu_seconds, idnode, listening
from bench.wrk_load import require_wrk, run_wrk
from protocol.identifier import parse_prefix

FILL_CHUNK_SECONDS = 10.0
FILL_SEEDS = 10_000  # seeds above the base for the filling runs; cold_full's is past them
ROUND_SEEDS = 20_000  # seeds above the base for the rounds' cold slices


def lua_random_get(prefixes: list[str], count: int, serials: int | None, seed: int) -> str:
    """GET ``/api/handles/<prefix>/E<serial>`` at random: uniform over the whole set
    (``serials`` None) or over ``serials`` identifiers spread evenly over it."""
    share = count // len(prefixes)
    names = ",".join(f'"{p}"' for p in prefixes)
    pick = ("local n = math.random(0, total - 1)" if serials is None
            else f"local n = math.random(0, {serials - 1}) * math.floor(total / {serials})")
    return (
        f"local prefixes = {{{names}}}\nlocal share = {share}\n"
        f"local total = {share * len(prefixes)}\n"
        f"math.randomseed({seed})\n"
        "request = function()\n"
        f"  {pick}\n"
        "  local p = math.floor(n / share)\n"
        '  return wrk.format("GET", string.format("/api/handles/%s/E%010d", prefixes[p + 1],'
        " n - p * share))\nend\n"
    )


def rss(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (its peak), RssAnon (private memory) and RssFile (mapped file
    pages, e.g. the store with --sqlite-mmap: the OS's page cache) in bytes,
    summed over the node's processes (its workers, if several)."""
    fields = dict.fromkeys(("VmRSS", "VmHWM", "RssAnon", "RssFile"), 0)
    for member in group_cpu_seconds(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue  # exited while we looked
        for line in lines:
            name, _, value = line.partition(":")
            if name in fields:
                fields[name] += int(value.split()[0]) * 1024
    return fields


class CacheCounters(NamedTuple):
    hits: float
    misses: float
    refused: float
    evictions: float


def cache_counters(url: str) -> CacheCounters:
    """The node's cache counters, from its /metrics (summed over workers, each
    as of its last snapshot)."""
    with urllib.request.urlopen(f"{url}/metrics") as reply:
        return parse_cache_counters(reply.read().decode())


def parse_cache_counters(text: str) -> CacheCounters:
    """``idnode_cache_{hits,misses,refused,evictions}_total`` from a /metrics text
    (a multi-worker node's are sums already; labelled samples are added up)."""
    found = dict.fromkeys(CacheCounters._fields, 0.0)
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        name = sample.partition("{")[0]
        field = name.removeprefix("idnode_cache_").removesuffix("_total")
        if name == f"idnode_cache_{field}_total" and field in found:
            found[field] += float(value)
    return CacheCounters(**found)


def fill_cache(url: str, cold_script: Callable[[int], Path], args: argparse.Namespace
               ) -> dict[str, Any]:
    """Cold runs, each with a seed of its own, until the cache is full (it refused
    or evicted during the last run) or ``--fill-seconds`` have passed."""
    started = time.monotonic()
    before = last = cache_counters(url)
    full, chunk = False, 0
    while not full and time.monotonic() - started < args.fill_seconds:
        chunk += 1
        run = run_wrk(url, cold_script(args.seed + chunk), seconds=FILL_CHUNK_SECONDS,
                      connections=args.connections, cpu=None)
        if run.non_2xx:
            raise SystemExit("some requests did not return 200: is the store built for this set?")
        now = cache_counters(url)
        full = now.refused + now.evictions > last.refused + last.evictions
        last = now
    return {"seconds": time.monotonic() - started, "full": full,
            "misses": last.misses - before.misses, "refused": last.refused - before.refused,
            "evictions": last.evictions - before.evictions}


def node_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of the node: its process group (started in a session of its own)."""
    return sum(group_cpu_seconds(pid).values()) or None


def wait_until_idle(pid: int, *, limit: float = 300.0) -> float:
    """Seconds until the node used under 2 % of a core over a second (at most ``limit``)."""
    started = time.monotonic()
    last = node_cpu_seconds(pid) or 0.0
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = node_cpu_seconds(pid) or 0.0
        if now - last < 0.02:
            break
        last = now
    return time.monotonic() - started


def cached_share(paths: list[Path]) -> float | None:
    """Share of the store's bytes in the OS page cache (fincore), or None."""
    import shutil
    import subprocess

    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", *map(str, paths)],
                         capture_output=True, text=True, check=False).stdout.split()
    res = sum(int(x) for x in out[0::2])
    size = sum(int(x) for x in out[1::2])
    return res / size if size else None


def store_files(store: Path) -> list[Path]:
    """The files holding the store's data: an LMDB directory's data.mdb, or the
    SQLite file and its WAL."""
    candidates = [store / "data.mdb"] if store.is_dir() else [store, Path(f"{store}-wal")]
    return [p for p in candidates if p.exists()]


def interleaved_rounds(
    rounds: int, *, hot: Callable[[], dict[str, Any]], cold: Callable[[int], dict[str, Any]]
) -> dict[str, Any]:
    """``rounds`` pairs of a hot and a cold slice, hot first in even rounds and
    cold first in odd ones, so a steady drift favours neither. Each round's
    ratio is hot/cold by node CPU per request; the median is the figure to
    quote, the spread says how much the machine moved."""
    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        if i % 2 == 0:
            hot_slice = hot()
            cold_slice = cold(i)
        else:
            cold_slice = cold(i)
            hot_slice = hot()
        hot_cpu = hot_slice["node_cpu_us_per_request"]
        cold_cpu = cold_slice["node_cpu_us_per_request"]
        ratio = hot_cpu / cold_cpu if hot_cpu and cold_cpu else None
        runs.append({"hot": hot_slice, "cold": cold_slice, "cold_over_hot_by_cpu": ratio})
        hits = (cold_slice["cache_hit_ratio"] or 0, hot_slice["cache_hit_ratio"] or 0)
        print(f"round {i + 1}: hot {hot_cpu or 0:.1f}, cold {cold_cpu or 0:.1f} node CPU-us/"
              f"request, cold/hot {ratio or 0:.3f} (cache hits {hits[0]:.1%} cold, "
              f"{hits[1]:.1%} hot)", flush=True)
    ratios = sorted(r["cold_over_hot_by_cpu"] for r in runs if r["cold_over_hot_by_cpu"])
    return {"runs": runs,
            "cold_over_hot_by_cpu_median": statistics.median(ratios) if ratios else None,
            "cold_over_hot_by_cpu_min": ratios[0] if ratios else None,
            "cold_over_hot_by_cpu_max": ratios[-1] if ratios else None}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.big_store", description=__doc__)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefixes", default="88.100.1")
    # Whole seconds, as wrk runs them: requests are counted as rate x seconds.
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--hot-set", type=int, default=1000)
    parser.add_argument("--cache-size", default="256M", help="the node's --cache-size")
    parser.add_argument("--workers", type=int, default=1,
                        help="the node's --workers (CPU and RSS are summed over them)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fill-seconds", type=float, default=300,
                        help="at most this long filling the cache before cold_full")
    parser.add_argument("--sqlite-cache", default=None,
                        help="the node's --sqlite-cache (e.g. 256M); default: the node's (64M)")
    parser.add_argument("--sqlite-mmap", default=None,
                        help="the node's --sqlite-mmap (e.g. 32G); default: the node's (off)")
    parser.add_argument("--sqlite-snapshot", default=None,
                        help="the node's --sqlite-snapshot (seconds; 0 = a read transaction "
                             "per lookup); default: the node's (0.1)")
    parser.add_argument("--lmdb-populate", choices=("on", "off"), default=None,
                        help="the node's --lmdb-populate for an LMDB store; default: the "
                             "node's (on)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="after the runs above, this many rounds of one hot and one "
                             "cold_full slice of --round-seconds each, in alternating order: "
                             "a ratio per round, whose median a drifting machine moves least")
    parser.add_argument("--round-seconds", type=int, default=5,
                        help="the length of each slice of a round (whole seconds)")
    parser.add_argument("--output", type=Path, default=None, help="JSON result file")
    args = parser.parse_args()
    require_wrk()
    prefixes = sorted(parse_prefix(p) for p in args.prefixes.split(",") if p.strip())
    work = Path(tempfile.mkdtemp(prefix="idnode-bigstore-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    files = store_files(args.store)
    result: dict[str, object] = {
        "store": str(args.store), "count": args.count, "prefixes": prefixes,
        "store_bytes": sum(p.stat().st_size for p in files),
        "seconds": args.seconds, "connections": args.connections, "hot_set": args.hot_set,
        "cache_size": args.cache_size, "workers": args.workers,
        "sqlite_mmap": args.sqlite_mmap, "sqlite_cache": args.sqlite_cache,
        "sqlite_snapshot": args.sqlite_snapshot, "lmdb_populate": args.lmdb_populate,
        "cpu_count": os.cpu_count(),
        "load_before": os.getloadavg(), "os_cached_before": cached_share(files),
    }
    argv = idnode("serve", "--store", str(args.store), "--port", str(port),
                  "--no-handle-protocol", "--cache-size", args.cache_size,
                  "--workers", str(args.workers),
                  "--log-level", "WARNING",
                  *(("--sqlite-mmap", args.sqlite_mmap) if args.sqlite_mmap else ()),
                  *(("--sqlite-cache", args.sqlite_cache) if args.sqlite_cache else ()),
                  *(("--sqlite-snapshot", args.sqlite_snapshot) if args.sqlite_snapshot else ()),
                  *((f"--{'' if args.lmdb_populate == 'on' else 'no-'}lmdb-populate",)
                    if args.lmdb_populate else ()))
    with listening(argv, port, work / "node.log") as node:
        with urllib.request.urlopen(f"{url}/api/handles/{prefixes[0]}/E0000000000") as reply:
            assert reply.status == 200
        # What the node does at start (mapping an LMDB store's pages) must not
        # count in the first run's CPU.
        result["settle_seconds"] = wait_until_idle(node.pid)
        result["rss_start"] = rss(node.pid)
        hot_script = work / "hot.lua"
        hot_script.write_text(lua_random_get(prefixes, args.count, args.hot_set, args.seed))

        def cold_script(seed: int) -> Path:
            script = work / f"cold-{seed}.lua"
            script.write_text(lua_random_get(prefixes, args.count, None, seed))
            return script

        def warm_hot_set() -> None:
            """Every hot identifier into the cache (3 passes' worth of requests)."""
            run_wrk(url, hot_script, seconds=max(5.0, args.seconds / 3),
                    connections=args.connections, cpu=None)

        warm_hot_set()

        def run_slice(script: Path, seconds: int) -> dict[str, Any]:
            """One wrk run: its rates and latencies, and the node's CPU and cache over it."""
            t0, cpu0, counters0 = time.time(), node_cpu_seconds(node.pid), cache_counters(url)
            run = run_wrk(url, script, seconds=seconds, connections=args.connections,
                          cpu=None)
            cpu1, counters1 = node_cpu_seconds(node.pid), cache_counters(url)
            requests = run.requests_per_second * seconds
            looked_up = (counters1.hits - counters0.hits) + (counters1.misses - counters0.misses)
            measured: dict[str, Any] = {
                "requests_per_second": run.requests_per_second, "non_2xx": run.non_2xx,
                "socket_errors": run.socket_errors, "latency_p50": run.latency_p50,
                "latency_p99": run.latency_p99, "started": t0,
                # Node CPU per request: what the machine's other load cannot change.
                "node_cpu_us_per_request": (cpu1 - cpu0) / requests * 1e6
                if cpu0 is not None and cpu1 is not None and requests else None,
                "node_cpu_share": (cpu1 - cpu0) / seconds
                if cpu0 is not None and cpu1 is not None else None,
                "cache_hit_ratio": (counters1.hits - counters0.hits) / looked_up
                if looked_up else None,
            }
            return measured

        def measure(name: str, script: Path) -> dict[str, Any]:
            """A run of ``--seconds``, kept in the result as ``name`` and printed."""
            measured = result[name] = run_slice(script, args.seconds)
            memory = rss(node.pid)
            result[f"rss_after_{name}"] = memory
            print(f"{name}: {measured['requests_per_second']:,.0f} req/s, "
                  f"{measured['node_cpu_us_per_request'] or 0:.0f} node CPU-us/request, "
                  f"cache hits {measured['cache_hit_ratio'] or 0:.1%}, "
                  f"p50 {measured['latency_p50']}, "
                  f"p99 {measured['latency_p99']}, non-2xx {measured['non_2xx']}, RSS "
                  f"{memory['VmRSS'] / 2**20:.0f} MiB (anonymous {memory['RssAnon'] / 2**20:.0f})",
                  flush=True)
            return measured

        hot = measure("hot", hot_script)
        colds = {"cold": measure("cold", cold_script(args.seed))}
        fill = result["fill"] = fill_cache(url, cold_script, args)
        if not fill["full"]:
            print(f"the cache was not full after {fill['seconds']:.0f} s of cold runs: "
                  "cold_full measures a cache still filling (raise --fill-seconds)", flush=True)
        colds["cold_full"] = measure("cold_full", cold_script(args.seed + FILL_SEEDS))
        # Hot again, re-warmed (the cold runs may have evicted some of the hot
        # set): how far the machine drifted over the run, which the ratios
        # against the first hot run cannot show.
        warm_hot_set()
        hot_after = measure("hot_after", hot_script)
        slices: list[dict[str, Any]] = []  # the rounds' runs, checked for errors below
        if args.rounds:
            rounds = result["rounds"] = interleaved_rounds(
                args.rounds, hot=lambda: run_slice(hot_script, args.round_seconds),
                cold=lambda i: run_slice(cold_script(args.seed + ROUND_SEEDS + i),
                                         args.round_seconds))
            slices = [s for r in rounds["runs"] for s in (r["hot"], r["cold"])]
    if hot["node_cpu_us_per_request"] and hot_after["node_cpu_us_per_request"]:
        result["hot_drift_by_cpu"] = (hot_after["node_cpu_us_per_request"]
                                      / hot["node_cpu_us_per_request"])
    for name, cold in colds.items():
        result[f"{name}_over_hot"] = cold["requests_per_second"] / hot["requests_per_second"]
        if hot["node_cpu_us_per_request"] and cold["node_cpu_us_per_request"]:
            result[f"{name}_over_hot_by_cpu"] = (hot["node_cpu_us_per_request"]
                                                 / cold["node_cpu_us_per_request"])
    result["load_after"] = os.getloadavg()
    result["os_cached_after"] = cached_share(files)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    if any(r["non_2xx"] for r in (hot, hot_after, *colds.values(), *slices)):
        raise SystemExit("some requests did not return 200: is the store built for this set?")


if __name__ == "__main__":
    main()
