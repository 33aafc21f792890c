"""Admission control: past its bounds the node answers "server too busy" at once.

Two signals, both O(1) to read per request:

- ``inflight``: requests inside a handler (awaiting the writer queue, a
  password check, an upstream...). Past ``max_inflight`` a new one is refused
  instead of joining a queue whose wait nobody bounds.
- event-loop lag: reads are answered inline on the loop (registry/sqlite_store),
  so a CPU-bound overload shows as callbacks running late, not as requests
  waiting on something. A timer measures how late it fires; once it is late by
  more than ``max_lag`` twice in a row (one late wake-up is a GC pause or a
  stolen time slice, not an overload) new requests are refused, which sheds
  the work that made the loop late; the first wake-up on time resumes admission.

Refusing costs a pre-built reply, a small fraction of a store lookup, so the
node keeps answering (fast 503s) at twice its capacity instead of letting
every reply wait. Cached resolves (the HTTP fast path, the UDP shortcut) are
never refused: they are cheaper than the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from protocol import rest_json
from protocol.codes import RC

BUSY_BODY: Final = rest_json.error_reply(RC.SERVER_TOO_BUSY, None, "Server too busy")
SAMPLE_SECONDS: Final = 0.005  # lag sampling period; ~200 wake-ups/s cost nothing measurable


class Admission:
    __slots__ = ("_clock", "_task", "inflight", "lagging", "max_inflight", "max_lag", "shed")

    LATE_SAMPLES = 2  # consecutive late wake-ups that mean overload

    def __init__(self, max_inflight: int, max_lag: float) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be positive")
        self.max_inflight = max_inflight
        self.max_lag = max_lag  # seconds; 0 turns lag shedding off
        self.inflight = 0
        self.lagging = False
        self.shed = 0  # requests refused so far (metrics)
        self._task: asyncio.Task[None] | None = None
        self._clock = time.perf_counter

    def refuse(self) -> bool:
        """Whether a new request must be refused now; counts it if so."""
        if self.lagging or self.inflight >= self.max_inflight:
            self.shed += 1
            return True
        return False

    def start(self) -> None:
        if self.max_lag > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch_lag())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch_lag(self) -> None:
        clock, max_lag, late = self._clock, self.max_lag, 0
        while True:
            due = clock() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            late = late + 1 if clock() - due > max_lag else 0
            self.lagging = late >= self.LATE_SAMPLES
