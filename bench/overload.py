"""Overload: measure a node's capacity, offer it twice that, watch it shed and recover.

    python -m bench.overload                      # 50k preloaded, 60 s at 2x capacity
    python -m bench.overload --seconds 10 --preload 5000 --json out.json

All load is open loop (bench/open_loop: requests sent when due, pipelined on
keep-alive connections, latency timed from the due time). The workload
reaches the store: uniform GETs of the preloaded identifiers against a node
whose cache holds ~1 MiB, every ``--write-every``-th request a PUT of a new
handle (the writer queue). The node runs one worker process pinned to one
core, the generator on another. Steps:

1. capacity: a node with shedding off (``--shed-lag 0``) is offered 1.5x a
   closed-loop estimate (wrk, 2 s); what it completes per second is its
   capacity (the excess queues, it is not refused);
2. unloaded: a fresh node with shedding on (``--shed-lag``) at a modest rate
   (``--unloaded-rate``, default a tenth of capacity) → p50/p99;
3. overload: that node offered ``--factor`` (2.0) x capacity for ``--seconds``,
   then at once the modest rate again (recovery); its RSS is read from /proc
   every second.

Reported: offered rate; admitted (any reply but 503) rate and p50/p99, and
admitted p99 over unloaded p99 (the target is at most 5x); shed (503) rate and
p99; errors (no reply, or a 5xx other than 503); RSS at the start and end of
the overload and its peak; recovery: p99 and 503s in the first second after
the load drops, and over the whole recovery phase.
Numbers from a shared machine are noisy: note the load average printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.open_loop import (
    FAILED,
    Phase,
    Recorded,
    drive,
    get_requests,
    request_bytes,
    run_loop,
)
from bench.preload import prepare_store
from bench.processes import cpu_layout, cpu_seconds, free_port, idnode, listening, pinned
from bench.workload import handle_path, identifier
from bench.wrk_load import lua_rotate_get, run_wrk

PUT_BODY = b'{"values":[{"index":1,"type":"URL","data":"https://example.com/overload"}]}'
ESTIMATE_SECONDS = 2.0
BUSY = 503


@dataclass(frozen=True)
class Window:
    """Requests due in [start, end) seconds of a run."""

    requests: int
    offered_per_second: float
    admitted: int
    admitted_per_second: float
    admitted_p50_ms: float | None
    admitted_p99_ms: float | None
    shed: int
    shed_per_second: float
    shed_p99_ms: float | None
    errors: int  # no reply, or a 5xx other than 503
    statuses: dict[str, int]


def window(recorded: Recorded, start: float, end: float) -> Window:
    admitted: list[float] = []
    shed: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    for due, latency, status in zip(recorded.due, recorded.latency, recorded.status, strict=True):
        if not start <= due < end:
            continue
        key = "none" if status == FAILED else str(status)
        statuses[key] = statuses.get(key, 0) + 1
        if status == BUSY:
            shed.append(latency)
        elif status == FAILED or status >= 500:
            errors += 1
        else:
            admitted.append(latency)
    seconds = end - start
    count = len(admitted) + len(shed) + errors
    return Window(
        count, round(count / seconds, 1), len(admitted), round(len(admitted) / seconds, 1),
        _ms(admitted, 50), _ms(admitted, 99), len(shed), round(len(shed) / seconds, 1),
        _ms(shed, 99), errors, dict(sorted(statuses.items())),
    )


def completed_per_second(recorded: Recorded, start: float, end: float) -> float:
    """Replies (other than failures) that arrived in [start, end), per second."""
    done = sum(1 for due, latency, status in zip(recorded.due, recorded.latency, recorded.status,
                                                 strict=True)
               if status != FAILED and start <= due + latency < end)
    return done / (end - start)


def _ms(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values.sort()
    return round(1000 * values[min(len(values) - 1, int(len(values) * p / 100))], 3)


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def sample_rss(pid: int, samples: list[int]) -> None:
    """Append the node's RSS once a second until cancelled."""
    while True:
        rss = rss_bytes(pid)
        if rss is not None:
            samples.append(rss)
        await asyncio.sleep(1.0)


class Workload:
    """Request ``n``: a GET of a preloaded identifier (seeded uniform draw), or every
    ``write_every``-th a PUT of a new handle named after ``tag`` and ``n``."""

    def __init__(self, host: str, preload: int, write_every: int, authorization: str,
                 seed: int) -> None:
        paths = [handle_path(identifier("88.100.1", n)) for n in range(preload)]
        self._gets = get_requests(host, paths)
        rng = random.Random(seed)
        self._order = [rng.randrange(len(self._gets)) for _ in range(1 << 16)]
        self._host = host
        self._write_every = write_every
        self._auth = {"Authorization": authorization, "Content-Type": "application/json"}
        self.tag = "x"

    def __call__(self, n: int) -> bytes:
        if self._write_every and n % self._write_every == self._write_every - 1:
            path = handle_path(f"88.100.1/OVL-{self.tag}-{n}")
            return request_bytes("PUT", path, self._host, self._auth, PUT_BODY)
        return self._gets[(self._order[n & 0xFFFF] + (n >> 16)) % len(self._gets)]


def _node_argv(store: Path, port: int, shed_lag: float, extra: list[str],
               cpu: int | None) -> list[str]:
    return pinned(cpu, idnode(
        "serve", "--store", str(store), "--port", str(port), "--no-handle-protocol",
        "--cache-size", "1M", "--log-level", "WARNING",
        "--workers", "1",  # one event loop: its RSS and its shedding
        "--shed-lag", repr(shed_lag), *extra))


async def _load(port: int, phases: list[Phase], source: Callable[[int], bytes],
                connections: int) -> Recorded:
    return await drive("127.0.0.1", port, phases, source, connections=connections)


def measure_capacity(args: argparse.Namespace, store: Path, workload: Workload, work: Path,
                     cpu: int | None) -> dict[str, object]:
    port = free_port()
    with listening(_node_argv(store, port, 0.0, args.node_arg, cpu), port,
                   work / "capacity-node.log"):
        estimate = closed_loop_estimate(port, args.preload, work)
        offered = args.capacity_offer * estimate
        workload.tag = "cap"
        recorded = run_loop(_load(port, [Phase(args.capacity_seconds, offered)], workload,
                              args.connections))
    # Completions while the node is saturated (its queue only grows): skip the first second.
    capacity = completed_per_second(recorded, 1.0, args.capacity_seconds)
    return {"closed_loop_estimate_per_second": round(estimate, 1),
            "offered_per_second": round(offered, 1),
            "completed_per_second": round(capacity, 1),
            "window": window(recorded, 0, args.capacity_seconds).__dict__}


def closed_loop_estimate(port: int, preload: int, work: Path) -> float:
    """wrk's closed-loop req/s over a few seconds (16 connections): a starting point."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the closed-loop estimate: apt-get install wrk")
    script = work / "estimate.lua"
    paths = [handle_path(identifier("88.100.1", n)) for n in range(0, preload, max(1, preload
                                                                                 // 5000))]
    script.write_text(lua_rotate_get(paths))
    result = run_wrk(f"http://127.0.0.1:{port}", script, seconds=ESTIMATE_SECONDS,
                     connections=16, cpu=None)
    return result.requests_per_second


def measure_overload(args: argparse.Namespace, store: Path, workload: Workload, work: Path,
                     cpu: int | None, capacity: float) -> dict[str, object]:
    port = free_port()
    modest = args.unloaded_rate or capacity / 10
    offered = args.factor * capacity
    with listening(_node_argv(store, port, args.shed_lag, args.node_arg, cpu), port,
                   work / "overload-node.log") as proc:
        workload.tag = "unl"
        unloaded = run_loop(_load(port, [Phase(args.unloaded_seconds, modest)], workload,
                              args.connections))
        workload.tag = "ovl"
        rss: list[int] = []
        cpu_before = cpu_seconds(proc.pid)
        load_before = os.getloadavg()
        recorded = run_loop(_with_rss(proc.pid, rss, _load(
            port, [Phase(args.seconds, offered), Phase(args.recovery_seconds, modest)],
            workload, args.connections)))
        cpu_after = cpu_seconds(proc.pid)
        rss_after = rss_bytes(proc.pid)
    base = window(unloaded, 0, args.unloaded_seconds)
    load = window(recorded, 0, args.seconds)
    end = args.seconds
    ratio = (round(load.admitted_p99_ms / base.admitted_p99_ms, 2)
             if load.admitted_p99_ms and base.admitted_p99_ms else None)
    node_cpu = (round((cpu_after - cpu_before) / (args.seconds + args.recovery_seconds), 3)
                if cpu_before is not None and cpu_after is not None else None)
    return {
        "unloaded": base.__dict__,
        "overload": {**load.__dict__, "target_per_second": round(offered, 1),
                     "admitted_p99_over_unloaded_p99": ratio,
                     "generator_late_ticks": recorded.late_sends,
                     "generator_max_backlog_per_connection": recorded.max_backlog,
                     "node_cpu_share": node_cpu},
        "recovery_first_second": window(recorded, end, end + 1).__dict__,
        "recovery": window(recorded, end, end + args.recovery_seconds).__dict__,
        "rss_mib": {"start": _mib(rss[0] if rss else None), "peak": _mib(max(rss, default=None)),
                    "end": _mib(rss[-1] if rss else None), "after_recovery": _mib(rss_after),
                    "samples": len(rss)},
        "timeline": timeline(recorded, end + args.recovery_seconds),
        "load_average": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


async def _with_rss(pid: int, samples: list[int], load: Coroutine[Any, Any, Recorded]
                    ) -> Recorded:
    sampler = asyncio.ensure_future(sample_rss(pid, samples))
    try:
        return await load
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def timeline(recorded: Recorded, seconds: float) -> list[dict[str, object]]:
    """Per second of due time: requests, 503s, errors and admitted p99 (ms)."""
    return [
        {"second": s, "requests": w.requests, "shed": w.shed, "errors": w.errors,
         "admitted_p99_ms": w.admitted_p99_ms}
        for s in range(int(seconds))
        for w in (window(recorded, s, s + 1),)
    ]


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def report(result: dict[str, object]) -> str:
    """The figures the issue asks for, one line each."""
    cap, ovl = result["capacity"], result["overload"]
    assert isinstance(cap, dict) and isinstance(ovl, dict)
    load, base = ovl["overload"], ovl["unloaded"]
    first, rss = ovl["recovery_first_second"], ovl["rss_mib"]
    return "\n".join([
        f"capacity            {cap['completed_per_second']:,.0f} req/s completed "
        + (f"(offered {cap['offered_per_second']:,.0f}/s, shedding off)" if "given" not in cap
           else "(given)"),
        f"unloaded            {base['offered_per_second']:,.0f} req/s: "
        f"p50 {base['admitted_p50_ms']} ms, p99 {base['admitted_p99_ms']} ms",
        f"overload offered    {load['offered_per_second']:,.0f} req/s "
        f"({load['offered_per_second'] / cap['completed_per_second']:.2f}x capacity) "
        f"for {result['parameters']['seconds']:g} s",  # type: ignore[index]
        f"  admitted          {load['admitted_per_second']:,.0f} req/s: "
        f"p50 {load['admitted_p50_ms']} ms, p99 {load['admitted_p99_ms']} ms "
        f"= {load['admitted_p99_over_unloaded_p99']}x unloaded p99",
        f"  shed (503 RC 3)   {load['shed_per_second']:,.0f} req/s: p99 {load['shed_p99_ms']} ms",
        f"  errors            {load['errors']}; node CPU {load['node_cpu_share']} of a core",
        f"  node RSS          {rss['start']} -> {rss['end']} MiB (peak {rss['peak']})",
        f"recovery, 1st s     {first['requests']} requests: p99 {first['admitted_p99_ms']} ms, "
        f"{first['shed']} shed, {first['errors']} errors",
        f"load average        {ovl['load_average']} before, {ovl['load_average_after']} after",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preload", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="overload duration")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--shed-lag", type=float, default=0.002,
                        help="the node's --shed-lag during the unloaded and overload steps")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--capacity", type=float, default=0,
                        help="skip step 1 and take this as the capacity (req/s)")
    parser.add_argument("--capacity-seconds", type=float, default=6.0)
    parser.add_argument("--capacity-offer", type=float, default=1.5,
                        help="capacity step: offered load / closed-loop estimate")
    parser.add_argument("--unloaded-rate", type=float, default=0,
                        help="req/s of the unloaded and recovery steps (0: capacity / 10)")
    parser.add_argument("--unloaded-seconds", type=float, default=5.0)
    parser.add_argument("--recovery-seconds", type=float, default=5.0)
    parser.add_argument("--write-every", type=int, default=0,
                        help="every Nth request a PUT (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra idnode serve flag, e.g. --node-arg=--max-inflight=64")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    node_cpu, load_cpus = cpu_layout()
    if load_cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in load_cpus.split("-")})
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="idnode-overload-") as tmp:
        work = Path(tmp)
        store = prepare_store(work, args.preload)
        authorization = _basic_auth("300%3A88.100.1/ADMIN", store.secret)
        workload = Workload("127.0.0.1", args.preload, args.write_every, authorization,
                            args.seed)
        capacity: dict[str, object] = {"completed_per_second": args.capacity, "given": True}
        if not args.capacity:
            capacity = measure_capacity(args, store.path, workload, work, node_cpu)
        print(f"capacity: {capacity['completed_per_second']:,.0f} req/s", flush=True)
        overload = measure_overload(args, store.path, workload, work, node_cpu,
                                    float(capacity["completed_per_second"]))  # type: ignore[arg-type]
        log_tail = (work / "overload-node.log").read_text(errors="replace")[-2000:]
    result = {"parameters": vars(args), "started": started, "capacity": capacity,
              "overload": overload, "node_log_tail": log_tail,
              "git": _git_head()}
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _basic_auth(login: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()


def _git_head() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    return None


if __name__ == "__main__":
    raise SystemExit(main())
