"""``/metrics`` for a whole multi-worker node: per-worker snapshots summed at scrape.

Requests are counted in plain ints on the hot path (``resolver.metrics``).
prometheus-client's multiprocess mode keeps values in per-process mmap files
but only through its own metric objects (~1-3 µs per call here), and has no
public way to add a histogram's bucket counts, so instead each worker writes
a snapshot of everything its registry collects to
``<dir>/worker-<slot>-<pid>.msgpack`` (atomically: a temporary file renamed
over the last) every ``FLUSH_SECONDS`` and whenever a sibling scrapes. A
scrape asks every sibling to flush (over ``resolver.siblings``, acknowledged),
writes its own, and sums the samples of all snapshots: counters and
histograms over every snapshot, including those of workers that have exited
(renamed ``retired-*`` by the supervisor, so totals never go backwards),
gauges (cache entries and bytes, homed prefixes) over live workers only.

Limit: a worker killed with SIGKILL loses what it counted since its last
flush (at most ``FLUSH_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_KIND = "flush-metrics"
LIVE_PREFIX = "worker-"
RETIRED_PREFIX = "retired-"


def snapshot_path(directory: Path, slot: int, pid: int) -> Path:
    return directory / f"{LIVE_PREFIX}{slot}-{pid}.msgpack"


def retire(directory: str | Path, slot: int, pid: int) -> None:
    """The worker exited: keep its counters, stop counting its gauges (supervisor)."""
    path = snapshot_path(Path(directory), slot, pid)
    with contextlib.suppress(FileNotFoundError):
        path.rename(path.with_name(RETIRED_PREFIX + path.name.removeprefix(LIVE_PREFIX)))


def _encode(registry: CollectorRegistry) -> bytes:
    families = []
    for metric in registry.collect():
        samples = [
            [s.name, dict(s.labels), s.value]
            for s in metric.samples
            if not s.name.endswith("_created")  # a time, not a count: meaningless summed
        ]
        families.append([metric.name, metric.type, metric.documentation, samples])
    return msgpack.packb(families)


class WorkerMetrics:
    """One worker's side: flush its registry's snapshot; aggregate everyone's on scrape."""

    def __init__(self, directory: str | Path, slot: int, registry: CollectorRegistry) -> None:
        self.directory = Path(directory)
        self.slot = slot
        self.registry = registry
        self.path = snapshot_path(self.directory, slot, os.getpid())
        self._task: asyncio.Task[None] | None = None

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(_encode(self.registry))
        os.replace(tmp, self.path)

    async def flush_on_request(self, payload: Any) -> None:
        self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()  # a clean exit loses nothing

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except OSError:
                log.exception("Could not write the metrics snapshot %s", self.path)

    def node_registry(self) -> CollectorRegistry:
        """What ``/metrics`` renders: the sum over every worker's snapshot."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_NodeWide(self.directory))  # type: ignore[arg-type]
        return registry


class _NodeWide:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        live = 0
        for path, data in self._snapshots():
            is_live = path.name.startswith(LIVE_PREFIX)
            live += is_live
            for name, kind, doc, samples in data:
                if kind in ("gauge", "info", "stateset") and not is_live:
                    continue
                if name not in families:
                    families[name] = Metric(name, doc, kind)
                    sums[name] = {}
                totals = sums[name]
                for sample_name, labels, value in samples:
                    key = (sample_name, tuple(sorted(labels.items())))
                    totals[key] = totals.get(key, 0.0) + value
        for name, metric in families.items():
            for (sample_name, labels), value in sums[name].items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric
        yield GaugeMetricFamily("idnode_workers", "Worker processes reporting", value=live)

    def _snapshots(self) -> Iterable[tuple[Path, list[Any]]]:
        for path in sorted(self.directory.glob("*.msgpack")):
            try:
                try:
                    blob = path.read_bytes()
                except FileNotFoundError:  # retired between the listing and the read
                    path = path.with_name(RETIRED_PREFIX + path.name.removeprefix(LIVE_PREFIX))
                    blob = path.read_bytes()
                data = msgpack.unpackb(blob)
            except (OSError, ValueError) as exc:  # unreadable: skip it, say so
                log.warning("Skipping metrics snapshot %s: %r", path, exc)
                continue
            yield path, data
