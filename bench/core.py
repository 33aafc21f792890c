"""Core benchmark: the node against a bare aiohttp handler, in one run, same load generator.

    python -m bench.core [--preload 100000] [--seconds 5] [--repetitions 3]

Starts a node (embedded store, N preloaded identifiers) and, per scenario, a
baseline app answering the node's own reply bytes. Node and baseline run
pinned to core 0, wrk to core 1; the two alternate (ABBA) over several
repetitions and each repetition yields one ratio node/baseline. Reported:
min/median/max ratio, and the absolute rates behind them for context only.
Scenarios: cached resolve, 404 (negative cache), single-handle PUT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.preload import PREFIX, SECRET, prepare_store
from bench.processes import free_port, idnode, listening, pinned
from bench.workload import identifier
from bench.wrk_load import WrkResult, lua_rotate_get, lua_unique_put, require_wrk, run_wrk

SERVER_CPU, LOAD_CPU = 0, 1
HOT_SET = 1000


async def fetch(method: str, url: str, **kw: object) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kw) as r:
        return r.status, await r.read()


async def warm(base: str, handles: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for h in handles:
            async with session.get(f"{base}/api/handles/{h}") as r:
                await r.read()


def measure(name: str, node_url: str, base_url: str, script: Path, args: argparse.Namespace,
            baseline_argv: list[str], base_port: int) -> dict[str, object]:
    runs: list[dict[str, object]] = []
    with listening(pinned(SERVER_CPU, baseline_argv), base_port):
        for url in (node_url, base_url):  # warm-up
            run_wrk(url, script, seconds=1, connections=args.connections, cpu=LOAD_CPU)
        for rep in range(args.repetitions):
            order = [("node", node_url), ("baseline", base_url)]
            if rep % 2:
                order.reverse()
            results: dict[str, WrkResult] = {}
            for target, url in order:
                results[target] = run_wrk(url, script, seconds=args.seconds,
                                          connections=args.connections, cpu=LOAD_CPU)
            ratio = results["node"].requests_per_second / results["baseline"].requests_per_second
            runs.append({"ratio": ratio, **{t: vars(r) for t, r in results.items()}})
            print(f"  {name} rep {rep + 1}: node {results['node'].requests_per_second:,.0f}/s "
                  f"baseline {results['baseline'].requests_per_second:,.0f}/s "
                  f"ratio {ratio:.3f}", flush=True)
    ratios = [r["ratio"] for r in runs]
    return {
        "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios), "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    require_wrk()

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = args.output / f"{stamp}-core"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="idnode-bench-"))

    print(f"preloading {args.preload:,} identifiers ...", flush=True)
    preloaded = prepare_store(work, args.preload)
    store, import_seconds = preloaded.path, preloaded.import_seconds
    print(f"  imported in {import_seconds:.1f} s ({args.preload / import_seconds:,.0f}/s "
          "including process start)", flush=True)

    node_port, base_port = free_port(), free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    base_url = f"http://127.0.0.1:{base_port}"
    hot = [identifier(PREFIX, n) for n in range(0, args.preload, max(1, args.preload // HOT_SET))]
    missing = [f"{PREFIX}/MISSING-{n}" for n in range(HOT_SET)]
    auth = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
    put_body = json.dumps({"values": [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/p"}},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": f"{PREFIX}/ADMIN", "index": 300, "permissions": "011111110011"}}},
    ]})
    summary: dict[str, object] = {
        "benchmark": "core", "started": stamp, "preload": args.preload,
        "seconds": args.seconds, "repetitions": args.repetitions,
        "connections": args.connections, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "import_seconds": import_seconds, "scenarios": {},
    }
    with listening(pinned(SERVER_CPU, idnode("serve", "--store", str(store), "--port",
                                           str(node_port), "--handle-port", "0",
                                           "--cache-size", "1G", "--workers", "1")),
                   node_port):
        asyncio.run(warm(node_url, hot))
        status_hot, body_hot = asyncio.run(fetch("GET", f"{node_url}/api/handles/{hot[0]}"))
        status_404, body_404 = asyncio.run(fetch("GET", f"{node_url}/api/handles/{missing[0]}"))
        status_put, body_put = asyncio.run(fetch(
            "PUT", f"{node_url}/api/handles/{PREFIX}/PUT-PROBE-{secrets.token_hex(4)}",
            data=put_body, headers={"Content-Type": "application/json", "Authorization": auth}))
        assert (status_hot, status_404, status_put) == (200, 404, 201), (
            status_hot, status_404, status_put)
        bodies = {"hot": body_hot, "404": body_404, "put": body_put}
        for name, body in bodies.items():
            (work / f"{name}.body").write_bytes(body)

        def baseline(get: str, status: int) -> list[str]:
            return [sys.executable, "-m", "bench.baseline", "--port", str(base_port),
                    "--get-body", str(work / f"{get}.body"), "--get-status", str(status),
                    "--put-body", str(work / "put.body")]

        scripts = {
            "resolve_cached": (lua_rotate_get([f"/api/handles/{h}" for h in hot]), "hot", 200),
            "resolve_404": (lua_rotate_get([f"/api/handles/{h}" for h in missing]), "404", 404),
            "register_put": (lua_unique_put(f"/api/handles/{PREFIX}/PUT-", auth, put_body,
                                            secrets.token_hex(4)), "hot", 200),
        }
        for name, (lua, get, status) in scripts.items():
            script = work / f"{name}.lua"
            script.write_text(lua)
            print(f"{name}:", flush=True)
            summary["scenarios"][name] = measure(  # type: ignore[index]
                name, node_url, base_url, script, args, baseline(get, status), base_port)

    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    lines = ["# idnode core benchmark", "",
             f"{args.preload:,} identifiers preloaded; {args.repetitions} ABBA repetitions of "
             f"{args.seconds:g} s; wrk -t1 -c{args.connections} on core {LOAD_CPU}, servers on "
             f"core {SERVER_CPU}.", "",
             "| scenario | node/baseline min | median | max | node req/s (median rep) |",
             "|---|---|---|---|---|"]
    for name, result in summary["scenarios"].items():  # type: ignore[union-attr]
        rates = sorted(r["node"]["requests_per_second"] for r in result["runs"])
        lines.append(f"| {name} | {result['ratio_min']:.3f} | {result['ratio_median']:.3f} | "
                     f"{result['ratio_max']:.3f} | {statistics.median(rates):,.0f} |")
    report = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(report)
    print()
    print(report)
    print(f"results in {out_dir}")


if __name__ == "__main__":
    main()
