"""Recursive resolution against direct resolution at the secondary, in one run.

    python -m bench.hierarchy [--ids 40000] [--hot 1000] [--duration 5]
                              [--concurrency 32] [--repetitions 2] [--out FILE]

Starts a top-level, a secondary homed at it (its store bulk-loaded with
``--ids`` records under the enterprise prefix 88.101.1 by ``idnode import``)
and a recursive node, as ``idnode`` processes on loopback, then measures
binary Handle resolutions over UDP (PUBL, one shared socket, ``--concurrency``
requests in flight, closed loop) in phases:

    direct-hot      the secondary, a hot set of ``--hot`` identifiers (its cache)
    recursive-hit   the recursive node, the same hot set (its cache, after a warm-up)
    recursive-miss  the recursive node, identifiers never asked before: each
                    request goes on to the secondary (prefix → site is cached)
    direct-miss     the secondary, identifiers never asked before (its store)

Each phase runs ``--repetitions`` times, interleaved; the median rate counts.
The recursive node's cache hit ratio per phase comes from its /metrics. Ratios
are to direct-hot (and recursive-miss to direct-miss) measured in the same
run. Load generator and nodes share the machine's cores, so the absolute
rates say more about the machine than about idnode: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from bench.handle_requests import addressed, reply_request_id, resolution_template
from bench.node_metrics import cache_hit_ratio, scrape
from bench.processes import free_port, free_udp_tcp_port, idnode, listening
from protocol.codes import RC
from protocol.handle_wire import decode_response

INDUSTRY = "88.101"
ENTERPRISE = "88.101.1"
TIMEOUT = 2.0


class UdpLoad(asyncio.DatagramProtocol):
    """Closed-loop UDP requests over one socket, replies matched by request id."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        future = self.waiting.pop(reply_request_id(data) or 0, None)
        if future is not None and not future.done():
            future.set_result(data)


async def run_phase(port: int, handles: Callable[[], str | None], duration: float,
                    concurrency: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    transport, load = await loop.create_datagram_endpoint(
        UdpLoad, remote_addr=("127.0.0.1", port))
    ok = failed = 0
    next_id = 1
    deadline = time.perf_counter() + duration

    async def user() -> None:
        nonlocal ok, failed, next_id
        while time.perf_counter() < deadline:
            handle = handles()
            if handle is None:
                return
            request_id, next_id = next_id, next_id + 1
            future = loop.create_future()
            load.waiting[request_id] = future
            transport.sendto(addressed(resolution_template(handle), request_id,
                                       int(time.time()) + 60))
            try:
                reply = await asyncio.wait_for(future, TIMEOUT)
            except TimeoutError:
                load.waiting.pop(request_id, None)
                failed += 1
                continue
            if decode_response(reply)[1].response_code == RC.SUCCESS:
                ok += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    took = time.perf_counter() - started
    transport.close()
    return {"requests": ok, "failures": failed, "seconds": took, "rate": ok / took}


def _records(ids: int) -> Iterator[str]:
    for n in range(ids):
        yield json.dumps({"handle": f"{ENTERPRISE}/ITEM-{n:07d}", "values": [
            {"index": 1, "type": "URL",
             "data": {"format": "string", "value": f"https://e1.example.cn/id/{n}"}},
            {"index": 2, "type": "batch", "data": {"format": "string", "value": f"B{n % 97}"}},
        ]})


def _run(argv: list[str]) -> None:
    import subprocess

    from bench.processes import child_env

    subprocess.run(idnode(*argv), check=True, capture_output=True, env=child_env(), timeout=600)


def _wait_homed(top_url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            url = f"{top_url}/api/handles/0.NA/{INDUSTRY}?type=HS_SITE"
            with urllib.request.urlopen(url, timeout=2) as reply:
                if json.load(reply).get("values"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the secondary did not home at the top-level")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hierarchy", description=__doc__)
    p.add_argument("--ids", type=int, default=40_000)
    p.add_argument("--hot", type=int, default=1000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--repetitions", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here too")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idnode-hier-bench-") as tmp:
        return asyncio.run(_bench(args, Path(tmp)))


async def _bench(args: argparse.Namespace, tmp: Path) -> int:
    top_db, sec_db, rec_db = (str(tmp / f"{n}.db") for n in ("top", "secondary", "recursive"))
    secret = os.urandom(16).hex()
    _run(["delegate", INDUSTRY, "--store", top_db, "--secret", secret])
    _run(["init", "--store", sec_db, "--prefix", INDUSTRY, "--admin-secret", secret])
    _run(["init", "--store", sec_db, "--prefix", ENTERPRISE, "--admin-secret", secret])
    jsonl = tmp / "records.jsonl"
    jsonl.write_text("\n".join(_records(args.ids)) + "\n")
    _run(["import", "--store", sec_db, str(jsonl)])

    ports = {name: (free_port(), free_udp_tcp_port()) for name in ("top", "sec", "rec")}

    def serve(name: str, store: str, role: str, *extra: str) -> list[str]:
        http, handle = ports[name]
        return idnode("serve", "--store", store, "--role", role, "--port", str(http),
                      "--handle-port", str(handle), *extra)

    top_url = f"http://127.0.0.1:{ports['top'][0]}"
    rec_url = f"http://127.0.0.1:{ports['rec'][0]}"
    with ExitStack() as stack:
        stack.enter_context(listening(serve("top", top_db, "top-level"), ports["top"][0],
                                      tmp / "top.log"))
        stack.enter_context(listening(
            serve("sec", sec_db, "secondary", "--home-at", top_url,
                  "--home-auth", f"300:0.NA/{INDUSTRY}", "--home-secret", secret),
            ports["sec"][0], tmp / "secondary.log"))
        stack.enter_context(listening(
            serve("rec", rec_db, "recursive", "--top-level", f"127.0.0.1:{ports['top'][1]}"),
            ports["rec"][0], tmp / "recursive.log"))
        _wait_homed(top_url)
        results = await _phases(args, ports["sec"][1], ports["rec"][1], rec_url)
    _report(args, results)
    return 0


async def _phases(args: argparse.Namespace, sec_port: int, rec_port: int,
                  rec_url: str) -> dict[str, list[dict[str, float]]]:
    names = [f"{ENTERPRISE}/ITEM-{n:07d}" for n in range(args.ids)]
    hot, cold = names[: args.hot], names[args.hot:]
    fresh_for_recursive = iter(cold[0::2])
    fresh_for_direct = iter(cold[1::2])
    counter = 0

    def hot_handles() -> str:
        nonlocal counter
        counter += 1
        return hot[counter % len(hot)]

    def fresh(source: Iterator[str]) -> Callable[[], str | None]:
        return lambda: next(source, None)

    # Warm both caches with the hot set (not measured).
    for port in (sec_port, rec_port):
        warm = iter(hot)
        await run_phase(port, lambda w=warm: next(w, None), 60, args.concurrency)
    phases = {
        "direct-hot": (sec_port, hot_handles),
        "recursive-hit": (rec_port, hot_handles),
        "recursive-miss": (rec_port, fresh(fresh_for_recursive)),
        "direct-miss": (sec_port, fresh(fresh_for_direct)),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in phases}
    for _ in range(args.repetitions):
        for name, (port, handles) in phases.items():
            before = scrape(rec_url)
            result = await run_phase(port, handles, args.duration, args.concurrency)
            ratio = cache_hit_ratio(before, scrape(rec_url)) if port == rec_port else None
            result["recursive_hit_ratio"] = ratio if ratio is not None else float("nan")
            results[name].append(result)
    return results


def _report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    median = {name: statistics.median(r["rate"] for r in runs) for name, runs in results.items()}
    print(f"Hierarchy benchmark: {args.ids} ids, hot set {args.hot}, {args.duration:g} s x "
          f"{args.repetitions}, {args.concurrency} in flight, binary UDP, "
          f"{os.cpu_count()} CPUs shared by load and nodes (preliminary)")
    print(f"{'phase':<16}{'req/s (median)':>16}{'failures':>10}{'hit ratio':>11}"
          f"{'vs direct-hot':>15}")
    for name, runs in results.items():
        failures = sum(r["failures"] for r in runs)
        hit = statistics.median(r["recursive_hit_ratio"] for r in runs)
        hit_text = "-" if hit != hit else f"{hit:.3f}"
        print(f"{name:<16}{median[name]:>16.0f}{failures:>10.0f}{hit_text:>11}"
              f"{median[name] / median['direct-hot']:>15.2f}")
    print(f"recursive-miss / direct-miss: {median['recursive-miss'] / median['direct-miss']:.2f}; "
          f"recursive-miss / recursive-hit: "
          f"{median['recursive-miss'] / median['recursive-hit']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"parameters": vars(args), "results": results,
                                              "median_rate": median}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
