"""One headless locust run as a child process: its command line, its progress, its result.

The scenario's locustfile writes ``progress.jsonl`` and ``final.json`` (see
``bench/scenarios/common.py``); this module turns them into a progress line
while locust runs and a :class:`LocustResult` afterwards. Ctrl-C stops locust
with SIGTERM, which makes it write its final stats like a normal end.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import group_cpu_seconds, pinned, spawn, stop
from bench.scenarios import Scenario

PERCENTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass(frozen=True)
class Distribution:
    """Where locust's workers connect: this run is their master (``--master``)."""

    expect_workers: int
    bind_host: str = "127.0.0.1"
    bind_port: int = 5557


@dataclass(frozen=True)
class LoadSpec:
    scenario: Scenario
    url: str
    users: int
    spawn_rate: float
    seconds: int
    processes: int = 1
    bench_options: dict[str, str] = field(default_factory=dict)  # --bench-* values
    distribution: Distribution | None = None
    cpus: str | None = None  # taskset list for the load generator
    locustfiles: str = ""  # instead of the scenario's: several, comma-separated

    @property
    def locustfile(self) -> str:
        return self.locustfiles or str(self.scenario.locustfile)


@dataclass
class LocustResult:
    requests: int
    failures: int
    seconds: float
    rps: float
    latency_ms: dict[str, float | None]  # mean (exact), p50..p99.9 and max (locust-rounded)
    per_second: list[int]  # requests completed in each whole second of the run
    by_name: dict[str, dict[str, Any]]
    errors: list[dict[str, Any]]
    cpu_warning: bool
    workers: int
    interrupted: bool = False
    # % of one core used by the busiest local locust process while users ran:
    # near 100 the load generator, not the target, set the pace.
    load_cpu_percent: float | None = None


def locust_argv(spec: LoadSpec, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", spec.locustfile, "--headless",
            "--host", spec.url, "-u", str(spec.users), "-r", f"{spec.spawn_rate:g}",
            "-t", f"{spec.seconds}s", "--stop-timeout", "2", "--only-summary",
            "--exit-code-on-error", "0", "--bench-out", str(out)]
    for name, value in spec.bench_options.items():
        argv += [f"--bench-{name}", value]
    if spec.distribution is not None:
        d = spec.distribution
        argv += ["--master", "--expect-workers", str(d.expect_workers),
                 "--expect-workers-max-wait", "120",
                 "--master-bind-host", d.bind_host, "--master-bind-port", str(d.bind_port)]
    elif spec.processes > 1:
        argv += ["--processes", str(spec.processes)]
    return pinned(spec.cpus, argv)


def run_locust(spec: LoadSpec, out: Path, label: str) -> LocustResult:
    """Run to the end, or to Ctrl-C (``interrupted`` set), and return what locust measured."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "locust.log"
    proc = spawn(locust_argv(spec, out), log)
    progress = Progress(out / "progress.jsonl", label, spec.seconds)
    load_cpu = LoadCpu(proc.pid)
    interrupted = False
    deadline = time.monotonic() + spec.seconds + 180  # generous: workers may be slow to join
    try:
        while proc.poll() is None:
            progress.show()
            if progress.running:
                load_cpu.sample()
            if time.monotonic() > deadline:
                raise RuntimeError(f"locust did not finish; see {log}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\n  interrupted: stopping locust ({label}) ...", flush=True)
    finally:
        stop(proc, timeout=20)
        progress.done()
    final = out / "final.json"
    if not final.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust ended without final stats (exit {proc.returncode}):\n{tail}")
    result = parse_final(json.loads(final.read_text()))
    result.interrupted = interrupted
    result.load_cpu_percent = load_cpu.busiest_percent()
    return result


class LoadCpu:
    """CPU use of the locust processes, from /proc samples taken while users run."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.first: tuple[float, dict[int, float]] | None = None
        self.last: tuple[float, dict[int, float]] | None = None

    def sample(self) -> None:
        point = (time.monotonic(), group_cpu_seconds(self.pgid))
        self.first = self.first or point
        self.last = point

    def busiest_percent(self) -> float | None:
        if self.first is None or self.last is None or self.last[0] - self.first[0] < 0.9:
            return None
        (t0, cpu0), (t1, cpu1) = self.first, self.last
        used = [cpu1[pid] - cpu0[pid] for pid in cpu1.keys() & cpu0.keys()]
        return max(used) / (t1 - t0) * 100 if used else None


def percentile(times: dict[int, int], count: int, q: float) -> float | None:
    """locust's own way: the smallest recorded (rounded) time covering q of the requests."""
    if count <= 0:
        return None
    seen = 0
    for ms in sorted(times):
        seen += times[ms]
        if seen >= q * count:
            return float(ms)
    return float(max(times))


def _latency(times: dict[int, int], count: int, total_ms: float,
             max_ms: float | None) -> dict[str, float | None]:
    row: dict[str, float | None] = {"mean": total_ms / count if count else None}
    for q in PERCENTILES:
        row[f"p{q * 100:g}"] = percentile(times, count, q)
    row["max"] = max_ms
    return row


def parse_final(final: dict[str, Any]) -> LocustResult:
    entries = final["entries"]
    times: dict[int, int] = {}
    per_sec: dict[int, int] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for e in entries:
        e_times = {int(k): v for k, v in e["response_times"].items()}
        for k, v in e_times.items():
            times[k] = times.get(k, 0) + v
        for k, v in e["num_reqs_per_sec"].items():
            per_sec[int(k)] = per_sec.get(int(k), 0) + v
        by_name[e["name"]] = {
            "method": e["method"], "requests": e["num_requests"], "failures": e["num_failures"],
            "latency_ms": _latency(e_times, e["num_requests"], e["total_response_time"],
                                   e["max_response_time"]),
        }
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    starts = [e["start_time"] for e in entries]
    ends = [e["last_request_timestamp"] for e in entries if e["last_request_timestamp"]]
    seconds = max(ends) - min(starts) if ends and starts else 0.0
    total_ms = sum(e["total_response_time"] for e in entries)
    max_ms = max((e["max_response_time"] for e in entries), default=None)
    series = ([per_sec.get(s, 0) for s in range(min(per_sec), max(per_sec) + 1)]
              if per_sec else [])
    return LocustResult(
        requests=requests, failures=failures, seconds=seconds,
        rps=requests / seconds if seconds > 0 else 0.0,
        latency_ms=_latency(times, requests, total_ms, max_ms), per_second=series,
        by_name=by_name, errors=final.get("errors", []),
        cpu_warning=bool(final.get("cpu_warning")), workers=int(final.get("workers", 0)),
    )


class Progress:
    """One status line from ``progress.jsonl``: rewritten in place on a terminal."""

    def __init__(self, path: Path, label: str, seconds: int) -> None:
        self.path, self.label, self.seconds = path, label, seconds
        self.offset = 0
        self.first: float | None = None
        self.last: dict[str, Any] | None = None
        self.rate = 0.0
        self.tty = sys.stdout.isatty()
        self.printed_at = 0.0

    def show(self) -> None:
        try:
            with self.path.open() as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        lines = chunk.split("\n")
        self.offset += len(chunk) - len(lines[-1])  # keep a half-written line for later
        for line in lines[:-1]:
            point = json.loads(line)
            if self.first is None and point["users"] > 0:
                self.first = point["t"]
            if self.last is not None and point["t"] > self.last["t"]:
                self.rate = (point["requests"] - self.last["requests"]) / (
                    point["t"] - self.last["t"])
            self.last = point
        last = self.last
        if last is None or not self.running:
            return  # locust still starting (or waiting for its workers)
        now = time.monotonic()
        if not self.tty and now - self.printed_at < 5:
            return
        self.printed_at = now
        elapsed = last["t"] - self.first if self.first else 0.0
        text = (f"  {self.label}  {elapsed:3.0f}/{self.seconds} s  {last['users']} users  "
                f"{self.rate:8,.0f} req/s  {last['requests']:,} requests  "
                f"{last['failures']:,} failures")
        print(f"\r{text}" if self.tty else text, end="" if self.tty else "\n", flush=True)

    @property
    def running(self) -> bool:
        return self.last is not None and bool(self.last["users"] or self.last["requests"])

    def done(self) -> None:
        if self.tty and self.last is not None:
            print(flush=True)
