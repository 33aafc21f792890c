"""Admission control: past its bounds the node answers "server too busy" at once.

Two signals, both O(1) to read per request:

- ``inflight``: requests inside a handler (awaiting the writer queue, a
  password check, an upstream...). Past ``max_inflight`` a new one is refused
  instead of joining a queue whose wait nobody bounds.
- event-loop lag: reads are answered inline on the loop (registry/sqlite_store),
  so a CPU-bound overload shows as a loop that cannot get round to its timers,
  not as requests waiting on something. A timer stamps the time every few ms;
  a request that starts more than ``max_lag`` after the last stamp is being
  handled that late (the loop is deep in a backlog) and is refused, which
  drops the backlog's work until the loop is back on time. The check is one
  clock read; it needs no history, so a lone stall (a GC pause, a stolen time
  slice) refuses only the requests caught behind it.

Refusing costs a pre-built reply, a small fraction of a store lookup, so the
node keeps answering (fast 503s) at twice its capacity instead of letting
every reply wait. Cached resolves (the HTTP fast path, the UDP shortcut) are
never refused: they are cheaper than the refusal.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Final

from protocol import rest_json
from protocol.codes import RC

BUSY_BODY: Final = rest_json.error_reply(RC.SERVER_TOO_BUSY, None, "Server too busy")
SAMPLE_SECONDS: Final = 0.005  # lag sampling period; ~200 wake-ups/s cost nothing measurable


class Admission:
    __slots__ = ("_clock", "_handle", "_stale_after", "inflight", "max_inflight", "max_lag",
                 "shed")

    def __init__(self, max_inflight: int, max_lag: float) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be positive")
        self.max_inflight = max_inflight
        self.max_lag = max_lag  # seconds; 0 turns lag shedding off
        self.inflight = 0
        self.shed = 0  # requests refused so far (metrics)
        self._clock = time.perf_counter
        self._stale_after = math.inf  # refuse requests starting after this (no timer: never)
        self._handle: asyncio.TimerHandle | None = None

    def refuse(self) -> bool:
        """Whether a new request must be refused now; counts it if so."""
        if self.inflight >= self.max_inflight or self._clock() > self._stale_after:
            self.shed += 1
            return True
        return False

    @property
    def lagging(self) -> bool:
        return self._clock() > self._stale_after

    def start(self) -> None:
        if self.max_lag > 0 and self._handle is None:
            self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stale_after = math.inf

    def _tick(self) -> None:
        # A plain callback, not a task: it runs in the loop pass where it is due.
        self._stale_after = self._clock() + self.max_lag
        self._handle = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self._tick)
