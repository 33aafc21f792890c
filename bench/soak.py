"""Soak: a long mixed run at a fixed share of capacity, watching for drift.

    python -m bench.soak [--minutes 30] [--load 0.8] [--preload 100000]

Starts a node (embedded store, N preloaded identifiers, pinned to core 0) and
drives it with wrk (core 1) with one mix: resolves of preloaded identifiers
with Zipf popularity, a share of 404s, and a share of registrations of new
handles. First it measures capacity (the mix with no pause, ``--probe``
seconds); then it runs the mix for ``--minutes`` in one-minute segments paced
to ``--load`` x capacity (wrk's per-request ``delay()``, re-tuned after each
segment from the rate it got). Per segment it records the rate, statuses
(200, 201, 404, 503 shed, anything else), p50/p99 and the node's RSS. At the
end every handle the run tried to register is resolved: each one acknowledged
(201) must be there, and nothing that was not acknowledged may be.

Reported (report.md and summary.json under bench/results/<stamp>-soak/):
throughput per minute and its spread, RSS start/end/max, error counts by
kind, the write check. Absolute rates depend on the machine; the verdicts are
relative (steadiness, RSS growth, errors other than shed load, lost writes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.preload import PREFIX, SECRET, prepare_store
from bench.processes import free_port, idnode, listening, pinned
from bench.workload import identifier, put_bodies, zipf_sampler
from bench.wrk_load import require_wrk

SERVER_CPU, LOAD_CPU = 0, 1
PATHS_IN_SCRIPT = 20_000  # the request mix is drawn once, then rotated
SEGMENT_SECONDS = 60
CHECK_ATTEMPTS = 8
_COUNTS = re.compile(r"^SOAK (\w+) (\d+)$", re.M)
_PCT = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def mix_script(args: argparse.Namespace, segment: str, delay_ms: float) -> str:
    """wrk Lua: the mix as a rotated table of GET paths, with PUTs of new handles.

    Statuses are counted in ``response()``; PUTs are the only requests that get
    201, so the 201 count is the number of acknowledged registrations. Each PUT
    names ``SOAK-<segment>-<n>`` with n counting up from 1, so the handles a
    segment tried are known afterwards from its PUT count.
    """
    rng = random.Random(f"{args.seed}-{segment}")
    sampler = zipf_sampler(args.preload, args.zipf_s)
    kinds = []
    for _ in range(PATHS_IN_SCRIPT):
        draw = rng.random()
        if draw < args.write_ratio:
            kinds.append("P")
        elif draw < args.write_ratio + args.missing_ratio:
            kinds.append(f"/api/handles/{PREFIX}/MISSING-{rng.randrange(10**9):09d}")
        else:
            kinds.append(f"/api/handles/{identifier(PREFIX, sampler.sample(rng))}")
    table = ",".join(f'"{k}"' for k in kinds)
    body = put_bodies(PREFIX)[0].decode().replace("\\", "\\\\").replace('"', '\\"')
    auth = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    return f"""
local mix = {{{table}}}
local i = 0
puts = 0  -- globals: done() reads them with thread:get()
counts = {{}}
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "{auth}"}}
local body = "{body}"
local threads = {{}}
setup = function(thread) table.insert(threads, thread) end
request = function()
  i = i % #mix + 1
  local what = mix[i]
  if what == "P" then
    puts = puts + 1
    return wrk.format("PUT", "/api/handles/{PREFIX}/SOAK-{segment}-" .. puts, headers, body)
  end
  return wrk.format("GET", what)
end
response = function(status, hdrs, b)
  counts[status] = (counts[status] or 0) + 1
end
-- wrk sleeps whole milliseconds: dither between the two neighbours so that
-- the mean pause is the fractional one asked for.
local pause = {delay_ms:.4f}
delay = function()
  local whole = math.floor(pause)
  if math.random() < pause - whole then return whole + 1 end
  return whole
end
done = function(summary, latency, requests)
  local total = {{}}
  local put_total = 0
  for _, t in ipairs(threads) do
    put_total = put_total + t:get("puts")
    for status, n in pairs(t:get("counts")) do total[status] = (total[status] or 0) + n end
  end
  io.write("SOAK puts " .. put_total .. "\\n")
  for status, n in pairs(total) do io.write("SOAK s" .. status .. " " .. n .. "\\n") end
end
"""


def run_segment(url: str, script: Path, seconds: float, connections: int) -> dict[str, object]:
    argv = pinned(LOAD_CPU, [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s",
                             "--latency", "-s", str(script), url])
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    counts = {name: int(n) for name, n in _COUNTS.findall(out)}
    pct = {p: float(v) * _UNIT[u] for p, v, u in _PCT.findall(out)}
    statuses = {k[1:]: v for k, v in counts.items() if k.startswith("s")}
    total = sum(statuses.values())
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {
        "rate": total / seconds, "statuses": statuses, "puts": counts.get("puts", 0),
        "p50": pct.get("50"), "p99": pct.get("99"),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident bytes; ``field="RssAnon"`` leaves out file pages (SQLite's cache of the file)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


async def check_writes(url: str, segments: list[dict[str, object]]) -> dict[str, int]:
    """Resolve every handle the run tried to register; compare with the acknowledgements.

    Only 200 (present) and 404 (absent) are answers: a shed request (503) or a
    failed connection is asked again, so that a busy machine cannot pass for a
    lost write.
    """
    present = 0
    semaphore = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def exists(handle: str) -> bool:
            for attempt in range(CHECK_ATTEMPTS):
                try:
                    async with semaphore, session.get(f"{url}/api/handles/{handle}") as r:
                        await r.read()
                        if r.status in (200, 404):
                            return r.status == 200
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05 * 2**attempt)
            raise RuntimeError(f"write check: no answer for {handle} after {CHECK_ATTEMPTS} tries")

        for seg in segments:
            names = [f"{PREFIX}/SOAK-{seg['segment']}-{n}" for n in range(1, int(seg["puts"]) + 1)]
            found = await asyncio.gather(*(exists(h) for h in names))
            seg["present"] = sum(found)
            present += seg["present"]
    acknowledged = sum(int(s["statuses"].get("201", 0)) for s in segments)  # type: ignore[union-attr]
    attempted = sum(int(s["puts"]) for s in segments)
    return {"attempted": attempted, "acknowledged": acknowledged, "present": present}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--load", type=float, default=0.8, help="share of measured capacity")
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--probe", type=float, default=15, help="capacity probe seconds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--write-ratio", type=float, default=0.05)
    parser.add_argument("--missing-ratio", type=float, default=0.02)
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--segment-seconds", type=float, default=SEGMENT_SECONDS,
                        help="length of one measured segment (default one minute)")
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra argument for idnode serve (repeatable)")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    require_wrk()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = args.output / f"{stamp}-soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="idnode-soak-"))
    print(f"preloading {args.preload:,} identifiers ...", flush=True)
    store = prepare_store(work, args.preload).path
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # RSS is read from the node's pid: one process unless --node-arg asks for workers.
    asked = any(a.startswith("--workers") for a in args.node_arg)
    workers = [] if asked else ["--workers", "1"]
    argv = idnode("serve", "--store", str(store), "--port", str(port), "--handle-port", "0",
                  *args.node_arg, *workers)
    summary: dict[str, object] = {"benchmark": "soak", "started": stamp, **vars(args)}
    summary["output"] = str(args.output)
    with listening(pinned(SERVER_CPU, argv), port, out_dir / "node.log") as node:
        rss_start = rss_bytes(node.pid)
        script = work / "probe.lua"
        script.write_text(mix_script(args, "probe", 0))
        probe = run_segment(url, script, args.probe, args.connections)
        capacity = float(probe["rate"])  # type: ignore[arg-type]
        target = args.load * capacity
        print(f"capacity {capacity:,.0f} req/s (p99 {probe['p99']}); soaking at {target:,.0f}/s",
              flush=True)
        # Each connection waits delay + latency per request: start from the
        # delay alone (latency at capacity is inflated) and steer from there.
        delay_ms = args.connections / target * 1000
        segments: list[dict[str, object]] = [{**probe, "segment": "probe"}]
        soak: list[dict[str, object]] = []
        for n in range(max(1, round(args.minutes * 60 / args.segment_seconds))):
            name = f"{stamp}-{n}"
            script.write_text(mix_script(args, name, delay_ms))
            seg = run_segment(url, script, args.segment_seconds, args.connections)
            seg.update(segment=name, delay_ms=delay_ms, rss=rss_bytes(node.pid),
                       rss_anon=rss_bytes(node.pid, "RssAnon"), load_average=os.getloadavg())
            soak.append(seg)
            print(f"  segment {n + 1}: {seg['rate']:,.0f} req/s, statuses {seg['statuses']}, "
                  f"p99 {seg['p99']}, RSS {int(seg['rss']) / 2**20:,.0f} MiB "
                  f"(anonymous {int(seg['rss_anon']) / 2**20:,.0f}), "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            rate = float(seg["rate"])  # type: ignore[arg-type]
            if rate > 0:  # steer the pause toward the target rate
                per_request = args.connections / rate * 1000
                delay_ms = max(0.0, delay_ms + args.connections / target * 1000 - per_request)
        segments += soak
        rss_end = rss_bytes(node.pid)
        writes = asyncio.run(check_writes(url, segments))
    rates = [float(s["rate"]) for s in soak]  # type: ignore[arg-type]
    statuses: dict[str, int] = {}
    for s in soak:
        for k, v in s["statuses"].items():  # type: ignore[union-attr]
            statuses[k] = statuses.get(k, 0) + v
    unexpected = {k: v for k, v in statuses.items() if k not in ("200", "201", "404", "503")}
    rss = [int(s["rss"]) for s in soak]  # type: ignore[arg-type]
    summary.update(capacity=capacity, target=target, segments=segments, writes=writes,
                   rss_start=rss_start, rss_end=rss_end, rss_max=max(rss), statuses=statuses,
                   unexpected_statuses=unexpected,
                   rate_median=statistics.median(rates), rate_min=min(rates),
                   rate_max=max(rates))
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    # Present but unacknowledged is possible only for a PUT whose reply timed out.
    lost = max(0, writes["acknowledged"] - writes["present"])
    report = "\n".join([
        "# idnode soak", "",
        f"{len(soak)} segments of {args.segment_seconds:g} s at {args.load:.0%} of a measured "
        f"capacity of {capacity:,.0f} req/s "
        f"(mix: {args.write_ratio:.0%} registrations, {args.missing_ratio:.0%} 404s, the rest "
        f"Zipf resolves of {args.preload:,} identifiers; wrk -c{args.connections} on core "
        f"{LOAD_CPU}, node on core {SERVER_CPU}).", "",
        f"- throughput per segment: median {statistics.median(rates):,.0f}, "
        f"min {min(rates):,.0f}, max {max(rates):,.0f} req/s "
        f"(spread {(max(rates) - min(rates)) / statistics.median(rates):.1%})",
        f"- RSS: start {rss_start / 2**20:,.0f} MiB, half-time {rss[len(rss) // 2] / 2**20:,.0f}"
        f" MiB, end {rss_end / 2**20:,.0f} MiB, max {max(rss) / 2**20:,.0f} MiB",
        f"- statuses: {statuses}; unexpected: {unexpected or 'none'}",
        f"- writes: {writes['attempted']:,} attempted, {writes['acknowledged']:,} acknowledged, "
        f"{writes['present']:,} present afterwards ({'none lost' if lost == 0 else f'{lost} LOST'};"
        " present but unacknowledged = in flight when a segment ended)",
        "",
    ])
    (out_dir / "report.md").write_text(report)
    print("\n" + report + f"results in {out_dir}")


if __name__ == "__main__":
    main()
