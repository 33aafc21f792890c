"""The node's own latency histograms, scraped from /metrics before and after a run.

Locust rounds latencies below 100 ms to whole milliseconds, and a cached
resolve takes tens of microseconds, so the node's
``idnode_request_duration_seconds`` buckets (50 µs upwards) say more. The
difference of two scrapes is the run's own histogram; percentiles interpolate
linearly inside a bucket, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRIC = "idnode_request_duration_seconds"
QUANTILES = (0.5, 0.9, 0.99)
CACHE_HITS, CACHE_MISSES = "idnode_cache_hits", "idnode_cache_misses"


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (the last bound is +Inf) and their sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total_seconds: float

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None:
            return self
        if earlier.bounds != self.bounds:
            raise ValueError("histogram buckets changed between scrapes")
        return Histogram(self.bounds,
                         tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative,
                                                     strict=True)),
                         self.total_seconds - earlier.total_seconds)

    def quantile(self, q: float) -> float | None:
        """Seconds below which a fraction ``q`` of requests finished (bucket-interpolated)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower  # beyond the last finite bucket: all we know
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass(frozen=True)
class Scrape:
    histograms: dict[tuple[str, str], Histogram]  # (transport, route) -> latency
    counters: dict[str, float]  # the cache's hits and misses


def parse(text: str) -> Scrape:
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    sums: dict[tuple[str, str], float] = {}
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in (CACHE_HITS, CACHE_MISSES):
            counters[family.name] = sum(s.value for s in family.samples
                                        if s.name.endswith("_total"))
        if family.name != METRIC:
            continue
        for sample in family.samples:
            key = (sample.labels.get("transport", ""), sample.labels.get("route", ""))
            if sample.name == f"{METRIC}_bucket":
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{METRIC}_sum":
                sums[key] = sample.value
    histograms = {}
    for key, pairs in buckets.items():
        pairs.sort()
        histograms[key] = Histogram(tuple(b for b, _ in pairs), tuple(c for _, c in pairs),
                                    sums.get(key, 0.0))
    return Scrape(histograms, counters)


def scrape(base_url: str, timeout: float = 5.0) -> Scrape | None:
    """The node's histograms, or None when the target has no idnode /metrics."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as reply:
            return parse(reply.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def cache_hit_ratio(before: Scrape | None, after: Scrape | None) -> float | None:
    """Share of this run's cache lookups that hit (None without idnode's counters)."""
    if before is None or after is None:
        return None
    hits, misses = (after.counters.get(n, 0.0) - before.counters.get(n, 0.0)
                    for n in (CACHE_HITS, CACHE_MISSES))
    return hits / (hits + misses) if hits + misses > 0 else None


def summarise(before: Scrape | None, after: Scrape | None, transport: str,
              routes: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Per route: requests, mean and percentiles in microseconds, for this run alone."""
    if after is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for route in routes:
        hist = after.histograms.get((transport, route))
        if hist is None:
            continue
        run = hist.minus(before.histograms.get((transport, route)) if before else None)
        if run.count <= 0:
            continue
        row: dict[str, float | None] = {
            "requests": run.count, "mean_us": run.total_seconds / run.count * 1e6}
        for q in QUANTILES:
            value = run.quantile(q)
            row[f"p{q * 100:g}_us"] = None if value is None else value * 1e6
        out[route] = row
    return out
