"""Binary Handle protocol against HTTP: cached resolves per second and per server-CPU-second.

    python -m bench.binary [--preload 100000] [--seconds 5] [--repetitions 3] [--window 64]

Starts one node (embedded store, N preloaded identifiers, 1 GB cache) pinned to
core 0; every load generator runs pinned to core 1. A hot set of HOT_SET
identifiers is resolved once over HTTP and once over UDP, so every measured
request is a cache hit (UDP: the stored reply packet, patched). Then, per
repetition and in alternating order, the same hot set is resolved for
``--seconds`` each:

- HTTP: wrk -t1 -c32 with a Lua script rotating over the hot set (as bench.core);
- UDP: bench.binary_load, a window of ``--window`` datagrams in flight
  (``--udp-processes`` generator processes, each with its own socket);
- TCP: bench.binary_load, one request per connection, ``--connections`` at once;
- UDP floor (unless ``--no-floor``): the same UDP load against ``bench.binary_load
  floor``, a bare uvloop responder on the server core sending the node's own
  reply bytes: the least any Python UDP server pays per datagram, so floor/HTTP
  bounds what UDP/HTTP can reach with this design.

Every run also records the server's CPU (/proc/<pid>/stat, all threads) and
the generator's (its own os.times() over the timed loop for binary_load, the
RUSAGE_CHILDREN delta for wrk). Throughput ratios UDP/HTTP and TCP/HTTP hold
only while the server, not the generator, is the bottleneck; requests per
server-CPU-second does not depend on that, so its ratio is the per-core figure.
Results go to bench/results/<timestamp>-binary/ (summary.json, report.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.binary_load import (
    core_busy,
    core_ticks,
    process_cpu,
    process_times,
    resolution_request,
    udp_load,
)
from bench.core import HOT_SET, LOAD_CPU, SERVER_CPU, warm
from bench.preload import PREFIX, prepare_store
from bench.processes import ROOT, child_env, free_port, idnode, listening, pinned, spawn, stop
from bench.workload import identifier
from bench.wrk_load import lua_rotate_get, require_wrk, run_wrk

TARGET_UDP_RATIO = 3.0
SATURATED = 0.90  # a core busier than this is taken as the bottleneck
QUIET = 0.15  # before a run, wait for both cores to be less busy than this
_HANDLE_PORT = re.compile(r"Handle protocol on udp\+tcp port (\d+)")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CoreLoad:
    """How busy the server's and the generator's cores were over a block, whoever
    ran there (busy minus our own processes is other people's load on the
    machine), and the server's kernel share of its CPU."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CoreLoad:
        self._t0 = core_ticks()
        self._server0 = process_times(self.server_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.busy = core_busy(self._t0, core_ticks())
        server1 = process_times(self.server_pid)
        self.system_share = None
        if server1 is not None and self._server0 is not None:
            user = server1[0] - self._server0[0]
            system = server1[1] - self._server0[1]
            self.system_share = system / (user + system) if user + system else None

    def fill(self, m: dict[str, Any]) -> dict[str, Any]:
        m["server_core_busy"] = self.busy.get(SERVER_CPU)
        m["load_core_busy"] = self.busy.get(LOAD_CPU)
        m["server_system_share"] = self.system_share
        rate = m.get("requests_per_server_cpu_second")
        m["server_us_per_request"] = 1e6 / rate if rate else None
        return m


def handle_port_from_log(log: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _HANDLE_PORT.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"the node did not report its Handle port:\n{log.read_text()[-2000:]}")


# --- one measurement per transport ---------------------------------------------------


def start_floor(node_port: int, handle: str, work: Path, out_dir: Path
                ) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A bare UDP responder on the server core answering the node's own reply bytes
    for ``handle`` (bench.binary_load floor): the least a Python UDP server pays."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(resolution_request(handle, 1), ("127.0.0.1", node_port))
        (work / "floor-reply.bin").write_bytes(s.recv(65536))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        floor_port = s.getsockname()[1]
    handles = work / "floor-handle.txt"
    handles.write_text(handle + "\n")  # the one handle its reply echoes
    proc = spawn(pinned(SERVER_CPU, [sys.executable, "-m", "bench.binary_load", "floor",
                                     "--port", str(floor_port),
                                     "--reply", str(work / "floor-reply.bin")]),
                 out_dir / "floor.log")
    deadline = time.monotonic() + 15
    try:
        while udp_load("127.0.0.1", floor_port, [handle], count=1, window=1, seconds=0.5,
                       timeout=0.2).replies != 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the UDP floor server did not start")
    except BaseException:
        stop(proc)
        raise
    return proc, floor_port, handles


def measure_http(url: str, script: Path, server_pid: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    cpu0, server0, t0 = children_cpu(), process_cpu(server_pid), time.perf_counter()
    with CoreLoad(server_pid) as cores:
        r = run_wrk(url, script, seconds=args.seconds, connections=args.connections_http,
                    cpu=LOAD_CPU)
    wall = time.perf_counter() - t0
    server1 = process_cpu(server_pid)
    generator = children_cpu() - cpu0
    server = server1 - server0 if server1 is not None and server0 is not None else None
    requests = r.requests_per_second * args.seconds
    return cores.fill({
        "requests_per_second": r.requests_per_second,
        "requests": requests,
        "non_2xx": r.non_2xx, "socket_errors": r.socket_errors,
        "latency": {"p50": r.latency_p50, "p99": r.latency_p99},
        # wrk's process lives a little longer than its -d: utilisation over its wall time.
        "generator_cpu_seconds": generator, "generator_utilisation": generator / wall,
        "server_cpu_seconds": server,
        "server_utilisation": server / wall if server is not None else None,
        "requests_per_server_cpu_second": requests / server if server else None,
    })


def run_generators(argv: list[str], processes: int) -> list[dict[str, Any]]:
    """``processes`` copies of a bench.binary_load command, at once, on the load core."""
    procs = []
    for i in range(processes):
        cmd = pinned(LOAD_CPU, [*argv, "--first-request-id", str(1 + i * (1 << 28))])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=child_env()))
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode:
            raise RuntimeError(f"{p.args!r} failed with status {p.returncode}")
        outs.append(json.loads(out))
    return outs


def measure_binary(transport: str, port: int, handles_file: Path, server_pid: int,
                   args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.binary_load", transport, "--port", str(port),
            "--handles", str(handles_file), "--seconds", str(args.seconds), "--json",
            "--server-pid", str(server_pid)]
    if transport == "udp":
        argv += ["--window", str(args.window)]
        processes = args.udp_processes
    else:
        argv += ["--connections", str(args.connections_tcp)]
        processes = 1
    # The server's CPU is read around the whole batch: generator start-up (imports)
    # happens while the server idles, so it costs the server nothing.
    server0 = process_cpu(server_pid)
    with CoreLoad(server_pid) as cores:
        runs = run_generators(argv, processes)
    server1 = process_cpu(server_pid)
    server = server1 - server0 if server1 is not None and server0 is not None else None
    wall = max(r["seconds"] for r in runs)
    replies = sum(r["replies"] for r in runs)
    rcs: dict[str, int] = {}
    for r in runs:
        for code, n in r["rc"].items():
            rcs[code] = rcs.get(code, 0) + n
    generator = sum(r["cpu_seconds"] for r in runs)
    # One generator read the server's CPU and /proc/stat around its timed loop
    # alone: use that. Several overlap only roughly: use the readings around them all.
    loop_server = runs[0]["server_cpu_seconds"] if processes == 1 else server
    if processes == 1:
        cores.busy = {int(k): v for k, v in runs[0]["core_busy"].items()}
    return cores.fill({
        "requests_per_second": sum(r["requests_per_second"] for r in runs),
        "requests": replies,
        "rc": rcs,
        "sent": sum(r["sent"] for r in runs),
        "timeouts": sum(r["timeouts"] for r in runs),
        "late": sum(r["late"] for r in runs),
        "stray": sum(r["stray"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "verified": sum(r["verified"] for r in runs),
        "mismatched": sum(r["mismatched"] for r in runs),
        "latency": runs[0]["latency"],
        "generator_processes": processes,
        "generator_cpu_seconds": generator,
        "generator_utilisation": generator / wall,
        "server_cpu_seconds": loop_server,
        "server_utilisation": loop_server / wall if loop_server is not None else None,
        "requests_per_server_cpu_second": replies / loop_server if loop_server else None,
        "runs": runs,
    })


# --- the run ---------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bottleneck(m: dict[str, Any]) -> str:
    gen, srv = m["generator_utilisation"], m.get("server_utilisation")
    if srv is None:
        return "unknown"
    if srv >= SATURATED and gen >= SATURATED:
        return "both"
    if srv >= SATURATED:
        return "server"
    if gen >= SATURATED:
        return "generator"
    if (m.get("load_core_busy") or 0) >= SATURATED:
        return "generator core shared with other load"
    if (m.get("server_core_busy") or 0) >= SATURATED:
        return "server core shared with other load"
    return "neither (latency-bound)"


def wait_quiet(max_seconds: float, threshold: float = QUIET) -> float:
    """Wait (up to ``max_seconds``) for a second in which both cores are idle but for
    ``threshold``: on a shared machine, start each run when nobody else is busy.
    Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        before = core_ticks()
        time.sleep(1.0)
        busy = core_busy(before, core_ticks())
        if max(busy.get(SERVER_CPU, 0), busy.get(LOAD_CPU, 0)) < threshold:
            return time.monotonic() - t0
        if time.monotonic() - t0 > max_seconds:
            return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--window", type=int, default=64, help="UDP requests in flight")
    parser.add_argument("--udp-processes", type=int, default=1,
                        help="UDP generator processes (all on the load core)")
    parser.add_argument("--connections-http", type=int, default=32, help="wrk connections")
    parser.add_argument("--connections-tcp", type=int, default=64,
                        help="binary TCP connections at once")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="before each run, wait up to this many seconds for both cores "
                             "to be idle (a shared machine); 0 = do not wait")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the bare UDP responder (the floor) runs")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    require_wrk()

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = args.output / f"{stamp}-binary"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="idnode-binary-"))

    print(f"preloading {args.preload:,} identifiers ...", flush=True)
    preloaded = prepare_store(work, args.preload)
    hot = [identifier(PREFIX, n) for n in range(0, args.preload, max(1, args.preload // HOT_SET))]
    handles_file = work / "hot.txt"
    handles_file.write_text("\n".join(hot) + "\n")
    script = work / "hot.lua"
    script.write_text(lua_rotate_get([f"/api/handles/{h}" for h in hot]))

    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    log = out_dir / "node.log"
    node_argv = pinned(SERVER_CPU, idnode("serve", "--store", str(preloaded.path),
                                          "--port", str(http_port), "--handle-port", "0",
                                          "--cache-size", "1G", "--workers", "1"))
    summary: dict[str, Any] = {
        "benchmark": "binary", "started": stamp, "preload": args.preload, "hot_set": len(hot),
        "seconds": args.seconds, "repetitions": args.repetitions, "window": args.window,
        "udp_processes": args.udp_processes, "connections_http": args.connections_http,
        "connections_tcp": args.connections_tcp, "quiet_wait": args.quiet_wait,
        "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "import_seconds": preloaded.import_seconds, "repetition_results": [],
    }
    with listening(node_argv, http_port, log) as node:
        port = handle_port_from_log(log)
        pid = node.pid  # taskset execs the node: same pid
        asyncio.run(warm(url, hot))
        warmed = udp_load("127.0.0.1", port, hot, count=len(hot), window=8, seconds=30)
        if warmed.rc != {"1": len(hot)}:
            raise RuntimeError(f"warming over UDP: {warmed.rc}, {warmed.timeouts} timeouts")
        print(f"node pid {pid}: HTTP {http_port}, Handle {port}; hot set of {len(hot)} "
              "warmed over HTTP and UDP", flush=True)
        floor = start_floor(port, hot[0], work, out_dir) if args.floor else None
        measures: dict[str, Callable[[], dict[str, Any]]] = {
            "http": lambda: measure_http(url, script, pid, args),
            "udp": lambda: measure_binary("udp", port, handles_file, pid, args),
            "tcp": lambda: measure_binary("tcp", port, handles_file, pid, args),
        }
        if floor is not None:
            proc, floor_port, floor_handles = floor
            measures["floor"] = lambda: measure_binary("udp", floor_port, floor_handles,
                                                       proc.pid, args)
        try:
            short = argparse.Namespace(**{**vars(args), "seconds": 1})
            run_wrk(url, script, seconds=1, connections=args.connections_http, cpu=LOAD_CPU)
            measure_binary("udp", port, handles_file, pid, short)
            measure_binary("tcp", port, handles_file, pid, short)
            for rep in range(args.repetitions):
                order = list(measures)
                if rep % 2:
                    order.reverse()
                results = {}
                for name in order:
                    waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                    results[name] = {**measures[name](), "waited_for_quiet": waited}
                summary["repetition_results"].append(results)
                print(f"rep {rep + 1}: " + ", ".join(
                    f"{name.upper()} {m['requests_per_second']:,.0f}/s "
                    f"({_num(m['requests_per_server_cpu_second'])} per server-CPU-s)"
                    for name, m in results.items()), flush=True)
        finally:
            if floor is not None:
                stop(floor[0])
        if node.poll() is not None:
            raise RuntimeError("the node exited during the run")

    summary["ratios"] = {
        f"{a}/http": {
            "throughput": spread([x for r in summary["repetition_results"]
                                  if (x := ratio(r[a], r["http"], "requests_per_second"))]),
            "per_server_cpu_second": spread(
                [x for r in summary["repetition_results"]
                 if (x := ratio(r[a], r["http"], "requests_per_server_cpu_second"))]),
        }
        for a in ("udp", "tcp", "floor") if all(a in r for r in summary["repetition_results"])
    }
    if args.floor:
        summary["ratios"]["udp/floor"] = {
            name: spread([x for r in summary["repetition_results"]
                          if (x := ratio(r["udp"], r["floor"], key))])
            for name, key in (("throughput", "requests_per_second"),
                              ("per_server_cpu_second", "requests_per_server_cpu_second"))
        }
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    report = render(summary)
    (out_dir / "report.md").write_text(report)
    print()
    print(report)
    print(f"results in {out_dir}")
    return 0


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    return x / y if x is not None and y else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _us(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1e3:.2f}"


LABELS = {"http": "HTTP", "udp": "UDP", "tcp": "TCP", "floor": "UDP floor"}


def _fmt_spread(x: dict[str, float] | None) -> str:
    return "–" if not x else f"{x['min']:.2f} / {x['median']:.2f} / {x['max']:.2f}"


def render(s: dict[str, Any]) -> str:
    reps = s["repetition_results"]
    names = [n for n in LABELS if all(n in r for r in reps)]
    lines = [
        "# idnode binary Handle protocol benchmark", "",
        f"{s['preload']:,} identifiers preloaded; a hot set of {s['hot_set']:,}, all cached "
        f"(resolved once over HTTP and once over UDP first); {s['repetitions']} repetitions of "
        f"{s['seconds']:g} s per target, order reversed every other repetition. "
        f"Node pinned to core {s['server_cpu']}, every load generator to core {s['load_cpu']} "
        f"({s['cpu_count']} cores; Python {s['python']})."
        + (f" The machine is shared: before each run the bench waited (up to "
           f"{s['quiet_wait']:g} s) for a second with both cores under {QUIET:.0%} busy."
           if s.get("quiet_wait") else ""), "",
        f"- **HTTP**: wrk -t1 -c{s['connections_http']}, GET /api/handles/<h> rotating over the "
        "hot set (the node's pre-encoded reply path).",
        f"- **UDP**: bench.binary_load, {s['udp_processes']} process(es), a window of "
        f"{s['window']} RESOLUTION datagrams (PUBL) in flight, prebuilt packets with the "
        "requestId patched in; lost datagrams time out after 1 s. The node answers from the "
        "stored reply packet.",
        f"- **TCP**: bench.binary_load, {s['connections_tcp']} asyncio (uvloop) connections at "
        "once, one request per connection (connect, write, read to EOF, close).",
    ]
    if "floor" in names:
        lines.append(
            "- **UDP floor**: not the node: `bench.binary_load floor`, a bare uvloop UDP "
            "server on the same core answering every datagram with the node's own reply "
            "packet (ids patched; no lookup, decode or metrics), loaded like UDP. What any "
            "Python UDP server on uvloop pays per datagram; floor/HTTP is the most UDP/HTTP "
            "can reach with this design (one datagram per receive and per send).")
    lines += [
        "",
        "**How CPU is accounted.** Server CPU is user+system time of the server process "
        "(all threads) from /proc/<pid>/stat, read just before and after each timed loop. "
        "The load generator runs on the other core and is not charged to the server; its own "
        "CPU is os.times() over its timed loop (binary_load) or the RUSAGE_CHILDREN delta over "
        "the wrk process. Utilisation = CPU seconds / wall seconds of that core. A generator "
        "near 100 % with the server below it means the generator, not the server, limited "
        "the rate; requests per server-CPU-second does not depend on who limited it, so its "
        "ratio is the per-core comparison. \"Cores busy\" is each core's busy share from "
        "/proc/stat whoever ran there (server core / generator core): well above the server's "
        "and the generator's own figures means other load shared the machine during that run. "
        "The kernel share is the server's system time over its CPU time (syscalls, loopback "
        "delivery).",
        "",
        "## Per repetition", "",
        "| rep | target | req/s | server CPU | generator CPU | cores busy (any process) "
        "| bottleneck | req per server-CPU-s | server µs/req (kernel share) | p50 ms | p99 ms "
        "| RCs / errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, rep in enumerate(reps, 1):
        for name in names:
            m = rep[name]
            if name == "http":
                errs = f"non-2xx {m['non_2xx']}, socket errors {m['socket_errors']}"
            else:
                errs = (f"{m['rc']}; timeouts {m['timeouts']}, errors {m['errors']}, "
                        f"wrong {m['mismatched']}/{m['verified']} checked")
            lines.append(
                f"| {i} | {LABELS[name]} | {_num(m['requests_per_second'])} | "
                f"{_pct(m['server_utilisation'])} | {_pct(m['generator_utilisation'])} | "
                f"{_pct(m.get('server_core_busy'))} / {_pct(m.get('load_core_busy'))} | "
                f"{bottleneck(m)} | {_num(m['requests_per_server_cpu_second'])} | "
                f"{_us(m.get('server_us_per_request'))} ({_pct(m.get('server_system_share'))}) | "
                f"{_ms(m['latency'].get('p50'))} | {_ms(m['latency'].get('p99'))} | {errs} |")
    pairs = [(a, "http") for a in ("udp", "tcp", "floor") if a in names]
    if "floor" in names:
        pairs.append(("udp", "floor"))
    header = " | ".join(f"{LABELS[a]}/{LABELS[b]} req/s | {LABELS[a]}/{LABELS[b]} per "
                        "server-CPU-s" for a, b in pairs)
    lines += ["", "## Ratios per repetition", "", f"| rep | {header} |",
              "|---|" + "---|" * (2 * len(pairs))]
    for i, rep in enumerate(reps, 1):
        cells = [ratio(rep[a], rep[b], key) for a, b in pairs
                 for key in ("requests_per_second", "requests_per_server_cpu_second")]
        lines.append(f"| {i} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells)
                     + " |")
    lines += ["", "## Ratios over the repetitions (min / median / max)", "",
              "| ratio | throughput | per server-CPU-second |", "|---|---|---|"]
    for name, r in s["ratios"].items():
        a, b = name.split("/")
        lines.append(f"| {LABELS[a]}/{LABELS[b]} | {_fmt_spread(r['throughput'])} | "
                     f"{_fmt_spread(r['per_server_cpu_second'])} |")
    per_cpu = s["ratios"]["udp/http"]["per_server_cpu_second"]
    through = s["ratios"]["udp/http"]["throughput"]
    lines += ["", "## Verdict", ""]
    if per_cpu:
        met = per_cpu["median"] >= TARGET_UDP_RATIO
        lines.append(
            f"Target: UDP ≥ {TARGET_UDP_RATIO:g}× HTTP per core. Median UDP/HTTP per "
            f"server-CPU-second {per_cpu['median']:.2f} (min {per_cpu['min']:.2f}, max "
            f"{per_cpu['max']:.2f}): **{'met' if met else 'not met'}**."
            + (f" Throughput ratio median {through['median']:.2f}." if through else ""))
    floor = s["ratios"].get("floor/http", {}).get("per_server_cpu_second")
    share = s["ratios"].get("udp/floor", {}).get("per_server_cpu_second")
    if floor and share:
        lines.append(
            f"The floor (a bare uvloop UDP responder) reaches {floor['median']:.2f}× HTTP per "
            f"server-CPU-second; the node's UDP path runs at {share['median']:.0%} of the "
            f"floor's rate per CPU-second. To reach {TARGET_UDP_RATIO:g}× HTTP the node would "
            f"need {TARGET_UDP_RATIO / floor['median']:.0%} of the floor.")
    unquiet = [f"rep {i} {LABELS[name]}" for i, r in enumerate(reps, 1)
               for name, m in r.items()
               if s.get("quiet_wait") and m.get("waited_for_quiet", 0) >= s["quiet_wait"]]
    if unquiet:
        lines.append(f"{len(unquiet)} run(s) started without a quiet second after waiting "
                     f"{s['quiet_wait']:g} s (other people's load): {', '.join(unquiet)}.")
    others = [m.get("server_core_busy", 0) - (m.get("server_utilisation") or 0)
              for r in reps for m in r.values() if m.get("server_core_busy") is not None]
    if others and max(others) > 0.1:
        lines.append(f"Other processes took up to {max(others):.0%} of the server core during "
                     "some runs (see \"cores busy\"): absolute rates of those runs are low; "
                     "requests per server-CPU-second is much less affected.")
    for name in ("udp", "tcp", "floor"):
        if name in names:
            limits = sorted({bottleneck(r[name]) for r in reps})
            lines.append(f"{LABELS[name]} runs were limited by: {', '.join(limits)}.")
    if any(bottleneck(r["udp"]) in ("generator", "both") for r in reps):
        lines.append("Where the UDP generator saturated its core, the UDP throughput ratio "
                     "understates UDP; the per-server-CPU-second ratio does not.")
    lines.append("TCP opens one connection per request (the protocol's rule): accept, "
                 "connection setup and teardown dominate the server's cost per request, "
                 "not the resolve itself; the generator pays the same on its side.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
