"""One measurement: a locust run against one target, with the server's view around it.

Around the locust run the target's /metrics is scraped (idnode's own latency
histograms, diffed) and, for a server the runner started, its CPU time read,
so the report has node-side percentiles and CPU per request next to locust's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import node_metrics
from bench.locust_run import LoadSpec, LocustResult, run_locust
from bench.processes import cpu_seconds
from bench.targets import Target


@dataclass
class Measurement:
    scenario: str
    target: str
    rep: int
    locust: LocustResult
    node: dict[str, dict[str, float | None]]  # route -> node-side latency (µs)
    server_cpu_seconds: float | None
    cache_hit_ratio: float | None = None

    @property
    def interrupted(self) -> bool:
        return self.locust.interrupted

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_seconds is None or not self.locust.requests:
            return None
        return self.server_cpu_seconds / self.locust.requests * 1e6

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "target": self.target, "rep": self.rep,
            "interrupted": self.interrupted, "requests": self.locust.requests,
            "failures": self.locust.failures, "seconds": self.locust.seconds,
            "rps": self.locust.rps, "latency_ms": self.locust.latency_ms,
            "node_latency_us": self.node, "server_cpu_seconds": self.server_cpu_seconds,
            "cpu_us_per_request": self.cpu_us_per_request,
            "cache_hit_ratio": self.cache_hit_ratio,
            "locust": dataclasses.asdict(self.locust),
        }


def aimed(spec: LoadSpec, target: Target) -> LoadSpec:
    """The load spec sent to ``target``: its URL, and its Handle port for binary users."""
    options = dict(spec.bench_options)
    if target.handle_port is not None:
        options["handle-port"] = str(target.handle_port)
    return dataclasses.replace(spec, url=target.url, bench_options=options)


def measure(target: Target, spec: LoadSpec, rep: int, out: Path) -> Measurement:
    scenario = spec.scenario
    label = f"{scenario.name} · {target.name} · rep {rep + 1}"
    before = node_metrics.scrape(target.url)
    cpu_before = cpu_seconds(target.pid) if target.pid else None
    result = run_locust(aimed(spec, target), out, label)
    cpu_after = cpu_seconds(target.pid) if target.pid else None
    after = node_metrics.scrape(target.url) if before is not None else None
    node = node_metrics.summarise(before, after, scenario.transport, scenario.node_routes)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Measurement(scenario.name, target.name, rep, result, node, cpu,
                       node_metrics.cache_hit_ratio(before, after))
