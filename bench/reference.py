"""idnode against the reference Handle.Net 9.3.1 server: cached resolution per core.

    python -m bench.reference [--preload 10000] [--seconds 5] [--repetitions 3] [--warmup 10]

Both servers hold the same HOT_SET records (idnode: preloaded store, every
preload/HOT_SET-th identifier; reference: the same handles and string values
written into its BDB-JE store by tests/interop/SeedStore.java, HS_ADMIN at 100
in both) and run in the same invocation, both pinned to core 0; every load
generator runs on core 1. Only the server under measurement runs: the other is
SIGSTOPped, so it takes nothing from core 0 meanwhile.

Warm-up: idnode resolves the hot set once over HTTP and UDP (its cache); the
reference gets ``--warmup`` seconds of each load (its JIT and BDB-JE cache). Then,
per repetition, every transport is measured on both servers, in the order
idnode→reference on odd repetitions and reference→idnode on even ones (ABBA):

- UDP: bench.binary_load, a window of ``--window`` RESOLUTION datagrams in flight;
- TCP: bench.binary_load, one request per connection (as Handle clients do),
  ``--connections-tcp`` at once;
- HTTP: wrk -t1 -c``--connections-http`` GET /api/handles/{handle} over the hot set,
  plain HTTP on both (the reference's HTTP interface set ``http_only``).

Server CPU is user+system of the server process (all threads; the JVM's GC and
JIT threads included) from /proc/<pid>/stat around each timed loop; the
generator's cost is not in it. The ratio reported is idnode/reference, for
requests per second and requests per server-CPU-second, min/median/max over the
repetitions. Results: bench/results/<timestamp>-reference/ (summary.json, report.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.binary import bottleneck, handle_port_from_log, measure_binary, measure_http, wait_quiet
from bench.binary_load import tcp_load, udp_load
from bench.core import HOT_SET, LOAD_CPU, SERVER_CPU, warm
from bench.preload import PREFIX, SECRET, prepare_store
from bench.processes import free_port, free_udp_tcp_port, idnode, listening, pinned
from bench.reference_server import missing_reason, prepare
from bench.workload import identifier, record
from bench.wrk_load import lua_rotate_get, require_wrk
from protocol.values import HS_ADMIN

SERVERS = ("idnode", "reference")
TRANSPORTS = ("udp", "tcp", "http")


def hot_records(preload: int, seed: int = 1) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The hot set's handles and their non-admin values as (handle, type, text) triples,
    exactly as bench.preload wrote them into idnode's store (same generator, same seed)."""
    step = max(1, preload // HOT_SET)
    rng = random.Random(seed)
    hot: list[str] = []
    triples: list[tuple[str, str, str]] = []
    for n in range(preload):
        values = record(PREFIX, n, rng)  # drawn for every n: the rng sequence must match
        if n % step == 0:
            handle = identifier(PREFIX, n)
            hot.append(handle)
            triples += [(handle, v.type, bytes(v.data).decode()) for v in values
                        if v.type != HS_ADMIN]
    return hot, triples


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP a server for the block, so it takes no CPU while the other is measured."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    return x / y if x is not None and y else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preload", type=int, default=10_000,
                        help="identifiers in idnode's store (the hot set is HOT_SET of them)")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=10,
                        help="seconds of each load against each server before measuring (JIT)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--window", type=int, default=64, help="UDP requests in flight")
    parser.add_argument("--udp-processes", type=int, default=1)
    parser.add_argument("--connections-http", type=int, default=32)
    parser.add_argument("--connections-tcp", type=int, default=16)
    parser.add_argument("--quiet-wait", type=float, default=0,
                        help="before each run wait up to this many seconds for both cores to "
                             "be idle (a shared machine); 0 = do not wait")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason:
        print(f"bench.reference: {reason}", file=sys.stderr)
        return 2
    transports = [t for t in args.transports.split(",") if t]
    if not set(transports) <= set(TRANSPORTS):
        parser.error(f"--transports: choose from {', '.join(TRANSPORTS)}")
    if "http" in transports:
        require_wrk()

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = args.output / f"{stamp}-reference"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="idnode-reference-"))

    print(f"preloading {args.preload:,} identifiers into idnode ...", flush=True)
    store = prepare_store(work, args.preload)
    hot, triples = hot_records(args.preload)
    handles_file = work / "hot.txt"
    handles_file.write_text("\n".join(hot) + "\n")
    script = work / "hot.lua"
    script.write_text(lua_rotate_get([f"/api/handles/{h}" for h in hot]))
    print(f"seeding the reference server with the {len(hot):,} hot records ...", flush=True)
    ref = prepare(work / "reference", free_udp_tcp_port(), free_port(), PREFIX, SECRET, triples)

    http_port = free_port()
    node_log = out_dir / "idnode.log"
    node_argv = pinned(SERVER_CPU, idnode("serve", "--store", str(store.path), "--port",
                                          str(http_port), "--handle-port", "0",
                                          "--cache-size", "1G"))
    summary: dict[str, Any] = {
        "benchmark": "reference", "started": stamp, "preload": args.preload,
        "hot_set": len(hot), "seconds": args.seconds, "repetitions": args.repetitions,
        "warmup": args.warmup, "transports": transports, "window": args.window,
        "udp_processes": args.udp_processes, "connections_http": args.connections_http,
        "connections_tcp": args.connections_tcp, "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "python": platform.python_version(), "platform": platform.platform(),
        "repetition_results": [],
    }
    with listening(node_argv, http_port, node_log) as node:
        node_port = handle_port_from_log(node_log)
        ref_proc = ref.start(SERVER_CPU)
        try:
            pids = {"idnode": node.pid, "reference": ref_proc.pid}
            urls = {"idnode": f"http://127.0.0.1:{http_port}",
                    "reference": f"http://127.0.0.1:{ref.http_port}"}
            ports = {"idnode": node_port, "reference": ref.port}
            asyncio.run(warm(urls["idnode"], hot))
            for name in SERVERS:
                check = udp_load("127.0.0.1", ports[name], hot, count=len(hot), window=8,
                                 seconds=60)
                if check.rc != {"1": len(hot)}:
                    raise RuntimeError(f"{name} over UDP: {check.rc}, {check.timeouts} timeouts")
                tcp = tcp_load("127.0.0.1", ports[name], hot[:50], seconds=1, connections=4)
                if set(tcp.rc) != {"1"} or tcp.mismatched:
                    raise RuntimeError(f"{name} over TCP: {tcp.rc}")

            def run(name: str, transport: str, seconds: float) -> dict[str, Any]:
                other = SERVERS[1 - SERVERS.index(name)]
                if transport == "http":
                    seconds = max(1, round(seconds))  # wrk's -d takes whole seconds
                a = argparse.Namespace(**{**vars(args), "seconds": seconds})
                with paused(pids[other]):
                    if transport == "http":
                        return measure_http(urls[name], script, pids[name], a)
                    return measure_binary(transport, ports[name], handles_file, pids[name], a)

            for name in SERVERS:
                for transport in transports:
                    seconds = args.warmup if name == "reference" else min(args.warmup, 2)
                    m = run(name, transport, seconds)
                    print(f"warm-up {name} {transport}: {m['requests_per_second']:,.0f}/s",
                          flush=True)
            for rep in range(args.repetitions):
                order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
                results: dict[str, dict[str, Any]] = {}
                for transport in transports:
                    for name in order:
                        waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                        m = run(name, transport, args.seconds)
                        m.pop("runs", None)
                        results[f"{name}-{transport}"] = {**m, "waited_for_quiet": waited}
                        print(f"rep {rep + 1} {name:9} {transport.upper():4} "
                              f"{m['requests_per_second']:>9,.0f}/s "
                              f"{_num(m['requests_per_server_cpu_second']):>9} per server-CPU-s "
                              f"(server {_pct(m['server_utilisation'])}, generator "
                              f"{_pct(m['generator_utilisation'])})", flush=True)
                summary["repetition_results"].append(results)
        finally:
            ref.stop()
        if node.poll() is not None:
            raise RuntimeError("idnode exited during the run")

    reps = summary["repetition_results"]
    summary["ratios"] = {
        t: {label: spread([x for r in reps
                           if (x := ratio(r[f"idnode-{t}"], r[f"reference-{t}"], key))])
            for label, key in (("throughput", "requests_per_second"),
                               ("per_server_cpu_second", "requests_per_server_cpu_second"))}
        for t in transports
    }
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    report = render(summary)
    (out_dir / "report.md").write_text(report)
    print()
    print(report)
    print(f"results in {out_dir}")
    return 0


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _fmt_spread(x: dict[str, float] | None) -> str:
    return "–" if not x else f"{x['min']:.2f} / {x['median']:.2f} / {x['max']:.2f}"


LABELS = {"udp": "UDP", "tcp": "TCP (1 request/connection)", "http": "HTTP GET /api/handles"}


def render(s: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in s["load_average"])
    lines = [
        "# idnode vs reference Handle.Net 9.3.1: cached resolution", "",
        f"{s['hot_set']:,} records on both servers (idnode: {s['preload']:,} preloaded, cache "
        f"warmed; reference: BDB-JE store, {s['warmup']:g} s of each load first for the JIT). "
        f"{s['repetitions']} repetitions of {s['seconds']:g} s per transport and server, ABBA "
        f"order. Servers pinned to core {s['server_cpu']} (the idle one SIGSTOPped), load to "
        f"core {s['load_cpu']}. Load average at start: {load}.", "",
        "## Per repetition", "",
        "| rep | transport | server | req/s | server CPU | generator CPU | bottleneck "
        "| req per server-CPU-s | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, rep in enumerate(s["repetition_results"], 1):
        for t in s["transports"]:
            for name in SERVERS:
                m = rep[f"{name}-{t}"]
                errs = (f"non-2xx {m['non_2xx']}, socket {m['socket_errors']}" if t == "http"
                        else f"{m['rc']}; timeouts {m['timeouts']}, errors {m['errors']}")
                lines.append(
                    f"| {i} | {t.upper()} | {name} | {_num(m['requests_per_second'])} | "
                    f"{_pct(m['server_utilisation'])} | {_pct(m['generator_utilisation'])} | "
                    f"{bottleneck(m)} | {_num(m['requests_per_server_cpu_second'])} | {errs} |")
    lines += ["", "## idnode / reference (min / median / max over the repetitions)", "",
              "| transport | throughput | per server-CPU-second |", "|---|---|---|"]
    for t, r in s["ratios"].items():
        lines.append(f"| {LABELS[t]} | {_fmt_spread(r['throughput'])} | "
                     f"{_fmt_spread(r['per_server_cpu_second'])} |")
    lines += ["", "Throughput ratios hold only where the server, not the generator, was the "
              "bottleneck (see the table); requests per server-CPU-second does not depend on "
              "that. The reference server's CPU includes its JVM's GC and JIT threads."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
