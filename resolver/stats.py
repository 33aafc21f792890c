"""Usage statistics upward: count per prefix, roll into intervals, deliver to the top-level.

Counting is a dict increment on the paths that answer (the cached fast paths
included); the prefix of a resolution was worked out when its cache entry was
made (``CacheEntry.prefix``). Every ``interval`` seconds (aligned to
multiples of it) the counts become one report (``protocol.stats_report``),
written to the spool, then POSTed to ``<upstream>/api/stats/reports``.

The spool is a directory of one file per report (written to a temporary
name, fsynced, renamed), so reports survive a restart of this node as well
as an outage of the top-level; a report's file is deleted only once the
top-level acknowledged it (a 200 answer, for a new report or a duplicate).
Delivery retries with exponential backoff, oldest report first. The spool
is bounded (``max_reports``): while it is full no new report is cut, and
the counts keep accumulating into the current interval, so an outage longer
than the spool holds makes the next report cover a longer interval; nothing
is dropped. Without a directory (a store that is not a file) the spool is
in memory, bounded the same way, and lost on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiohttp

from protocol import stats_report
from protocol.stats_report import PrefixCounts, StatsReport

log = logging.getLogger(__name__)

DEFAULT_MAX_REPORTS: Final = 1440  # a day of 60 s reports
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 60.0
POST_TIMEOUT: Final = 15.0
REPORTS_PATH: Final = "/api/stats/reports"


class UsageCounter:
    """Registrations and resolutions per prefix since the last report.

    Holders keep references to ``resolutions``/``registrations`` (the hot
    paths index them directly), so ``take`` copies and clears them in place.
    The "" key collects answers for prefixes not served here and is dropped.
    """

    __slots__ = ("registrations", "resolutions", "since")

    def __init__(self, now: float) -> None:
        self.resolutions: defaultdict[str, int] = defaultdict(int)
        self.registrations: defaultdict[str, int] = defaultdict(int)
        self.since = now

    def take(self, now: float) -> tuple[int, dict[str, tuple[int, int]]]:
        """(interval start, {prefix: (registrations, resolutions)}), and start afresh."""
        counts: dict[str, tuple[int, int]] = {}
        for prefix in self.registrations.keys() | self.resolutions.keys():
            if prefix:
                counts[prefix] = (self.registrations.get(prefix, 0),
                                  self.resolutions.get(prefix, 0))
        self.registrations.clear()
        self.resolutions.clear()
        start, self.since = int(self.since), now
        return start, counts


class StatsSpool:
    """Reports not yet acknowledged, oldest first: files in ``directory``, or memory."""

    def __init__(self, directory: Path | None, max_reports: int = DEFAULT_MAX_REPORTS) -> None:
        self.directory = directory
        self.max_reports = max_reports
        self._memory: deque[tuple[str, bytes]] = deque()
        self._names: list[str] = []
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.iterdir():
                if path.name.startswith(".tmp-"):
                    path.unlink(missing_ok=True)  # a write a crash interrupted: never acknowledged
            self._names = sorted(p.name for p in directory.glob("*.msgpack"))

    def __len__(self) -> int:
        return len(self._names) if self.directory is not None else len(self._memory)

    @property
    def full(self) -> bool:
        return len(self) >= self.max_reports

    async def add(self, report: StatsReport) -> None:
        data = stats_report.encode_report(report)
        name = f"{report.start:012d}-{report.end:012d}-{report.report_id}.msgpack"
        if self.directory is None:
            self._memory.append((name, data))
            return
        await asyncio.to_thread(self._write, name, data)
        self._names.append(name)
        self._names.sort()

    def _write(self, name: str, data: bytes) -> None:
        assert self.directory is not None
        tmp = self.directory / f".tmp-{name}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a crash
        finally:
            os.close(fd)

    async def oldest(self) -> tuple[str, bytes] | None:
        if self.directory is None:
            return self._memory[0] if self._memory else None
        if not self._names:
            return None
        name = self._names[0]
        data = await asyncio.to_thread((self.directory / name).read_bytes)
        return name, data

    async def remove(self, name: str, *, keep_as: str | None = None) -> None:
        """Forget an acknowledged report (or set a refused one aside as ``keep_as``)."""
        if self.directory is None:
            if self._memory and self._memory[0][0] == name:
                self._memory.popleft()
            return
        path = self.directory / name
        if keep_as is not None:
            await asyncio.to_thread(os.replace, path, self.directory / f"{name}.{keep_as}")
        else:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        self._names.remove(name)


class StatsReporter:
    """Cuts a report every ``interval`` seconds and delivers the spool upstream."""

    def __init__(
        self,
        usage: UsageCounter,
        spool: StatsSpool,
        *,
        upstream: str,
        node_name: str,
        authorization: str | None,
        interval: float,
        clock: Callable[[], float] = time.time,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.usage = usage
        self.spool = spool
        self.url = upstream.rstrip("/") + REPORTS_PATH
        self.node_name = node_name
        self._headers = {"Content-Type": stats_report.CONTENT_TYPE}
        if authorization:
            self._headers["Authorization"] = authorization
        if interval <= 0:
            raise ValueError("the statistics interval must be positive")
        self.interval = interval
        self._clock = clock
        # Never wait longer than an interval between attempts (nor over a minute).
        self._backoff_max = min(backoff_max, max(interval, BACKOFF_FIRST))
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0  # reports acknowledged
        self.failures = 0  # delivery attempts that failed

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cut the last partial interval into the spool (it is sent after a restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            await self.roll()
        if self._session is not None:
            await self._session.close()

    def _next_boundary(self, now: float) -> float:
        return (now // self.interval + 1) * self.interval

    async def roll(self) -> StatsReport | None:
        """Turn the counts so far into a spooled report (None if there was nothing,
        or the spool is full and the counts keep accumulating)."""
        if self.spool.full:
            log.warning("Stats spool full (%d reports unacknowledged); the current interval "
                        "grows until %s accepts reports", len(self.spool), self.url)
            return None
        now = self._clock()
        start, counts = self.usage.take(now)
        end = max(int(now), start + 1)
        if not counts:
            return None
        report = StatsReport(
            uuid.uuid4().hex, self.node_name, start, end,
            tuple(PrefixCounts(p, reg, res) for p, (reg, res) in sorted(counts.items())),
        )
        await self.spool.add(report)
        return report

    async def deliver(self) -> bool:
        """Send spooled reports, oldest first; True once the spool is empty."""
        assert self._session is not None
        while (item := await self.spool.oldest()) is not None:
            name, data = item
            try:
                async with self._session.post(self.url, data=data,
                                              headers=self._headers) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.failures += 1
                log.info("Stats report %s not delivered to %s: %s", name, self.url,
                         exc or type(exc).__name__)
                return False
            if status == 200:
                await self.spool.remove(name)
                self.delivered += 1
                if b'"refused"' in body:
                    log.warning("Stats report %s: %s did not count some prefixes: %s", name,
                                self.url, body[:300])
                continue
            self.failures += 1
            if status in (400, 403):
                # A definite refusal of this report's content (malformed, or only
                # prefixes this node may not report): retrying cannot help.
                log.error("Stats report %s refused by %s: %s; kept as %s.refused", name,
                          self.url, body[:200], name)
                await self.spool.remove(name, keep_as="refused")
                continue
            log.warning("Stats report %s: %s answered %d %s", name, self.url, status,
                        body[:200])
            return False
        return True

    async def _run(self) -> None:
        next_roll = self._next_boundary(self._clock())
        delay = 0.0
        while True:
            now = self._clock()
            if now >= next_roll:
                await self.roll()
                next_roll = self._next_boundary(now)
            try:
                empty = await self.deliver()
            except OSError as exc:  # the spool directory itself failed
                log.error("Stats spool: %s", exc)
                empty = False
            if empty:
                delay = 0.0
                wake = next_roll
            else:
                delay = min(max(delay * 2, BACKOFF_FIRST), self._backoff_max)
                wake = min(next_roll, self._clock() + delay)
            await asyncio.sleep(max(0.0, wake - self._clock()))
