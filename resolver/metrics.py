"""Prometheus metrics for the node.

Per-request counting is on the hot path, where prometheus-client's labelled
objects cost ~1 µs (counter) and ~2 µs (histogram) per call on these machines:
a few percent of a cached resolve. So requests are counted in plain ints and a
fixed-bucket histogram here and handed to prometheus-client as metric families
at scrape time. Everything off the hot path uses prometheus-client directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

# Seconds; fine at the bottom because a cached resolve takes tens of µs.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class RouteLatency:
    """Counts and a latency histogram for one route: O(log buckets) per request."""

    __slots__ = ("buckets", "codes", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last one is +Inf
        self.total = 0.0
        self.codes: dict[int, int] = {}

    def observe(self, status: int, seconds: float, requests: int = 1) -> None:
        """``requests`` answers, one of them timed at ``seconds`` standing for all
        (a sampling caller passes those it did not time since its last call)."""
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += requests
        self.total += seconds * requests
        self.codes[status] = self.codes.get(status, 0) + requests


class RequestMetrics:
    """Request counters for every transport; a prometheus-client collector."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteLatency] = {}
        # Called before every scrape by callers that sample: they count what
        # they have answered but not observed yet.
        self.flushes: set[Callable[[], None]] = set()

    def route(self, transport: str, route: str) -> RouteLatency:
        """Bind once per route (at startup or first use) and keep the object."""
        key = (transport, route)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteLatency()
        return stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "idnode_requests", "Requests answered, by transport, route and status",
            labels=["transport", "route", "status"],
        )
        latency = HistogramMetricFamily(
            "idnode_request_duration_seconds", "Time to answer a request",
            labels=["transport", "route"],
        )
        for flush in list(self.flushes):
            flush()
        for (transport, route), stats in sorted(self.routes.items()):
            for status, count in sorted(stats.codes.items()):
                requests.add_metric([transport, route, str(status)], count)
            latency.add_metric([transport, route], _cumulative(stats.buckets), stats.total)
        yield requests
        yield latency


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus's cumulative ``le`` buckets."""
    cumulative, out = 0, list[tuple[str, float]]()
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
        cumulative += count
        out.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
    return out


class OperationLatency:
    """One store operation's latency histogram, in plain numbers."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class StoreLatency:
    """``idnode_store_duration_seconds`` by operation: a cache miss times its
    store read, so this is on the resolve path too (~0.3 µs a call against
    ~1 µs for a prometheus-client Histogram child)."""

    def __init__(self) -> None:
        self.operations: dict[str, OperationLatency] = {}

    def operation(self, name: str) -> OperationLatency:
        """Bind once per operation and keep the object."""
        stats = self.operations.get(name)
        if stats is None:
            stats = self.operations[name] = OperationLatency()
        return stats

    def collect(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "idnode_store_duration_seconds", "Time spent in store calls, by operation",
            labels=["operation"],
        )
        for name, stats in sorted(self.operations.items()):
            latency.add_metric([name], _cumulative(stats.buckets), stats.total)
        yield latency


class GaugeCollector:
    """Exposes numbers owned by other objects (cache counters...) at scrape time."""

    def __init__(self, gauges: dict[str, tuple[str, str, Callable[[], float]]]) -> None:
        # name -> (kind "counter"|"gauge", help, read)
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, (kind, help_text, read) in self.gauges.items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, help_text, value=read())
