"""Admission control: past its bounds the node answers "server too busy" at once.

Two signals, both O(1) to read per request:

- ``inflight``: requests inside a handler (awaiting the writer queue, a
  password check, an upstream...). Past ``max_inflight`` a new one is refused
  instead of joining a queue whose wait nobody bounds.
- wait: how long the request sat between its bytes being read and its
  handler starting (resolver/arrival stamps the read). Reads are answered
  inline on the event loop (registry/sqlite_store), so a CPU-bound overload
  shows as requests queued for the loop, not inside handlers. One that waited
  longer than ``max_wait`` is refused: the backlog's excess is dropped for the
  price of a pre-built reply, and every admitted request has waited at most
  ``max_wait`` (plus the kernel's socket queue, which the node cannot see).
  It needs no history: a lone stall (a GC pause, a stolen time slice) refuses
  only the requests caught behind it, and the next request read on time is
  admitted again.

Refusing costs a small fraction of a store lookup, so the node keeps
answering (fast 503s) at twice its capacity instead of letting every reply
wait. Cached resolves (the HTTP fast path, the UDP shortcut) are never
refused: they are cheaper than the refusal.
"""

from __future__ import annotations

from typing import Final

from protocol import rest_json
from protocol.codes import RC

BUSY_BODY: Final = rest_json.error_reply(RC.SERVER_TOO_BUSY, None, "Server too busy")


class Admission:
    __slots__ = ("inflight", "max_inflight", "max_wait", "shed")

    def __init__(self, max_inflight: int, max_wait: float) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be positive")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_inflight = max_inflight
        self.max_wait = max_wait if max_wait > 0 else float("inf")  # 0: wait shedding off
        self.inflight = 0
        self.shed = 0  # requests refused so far (metrics)

    def refuse(self, waited: float) -> bool:
        """Whether an HTTP request that waited ``waited`` s must be refused now (its
        handler not entered yet); counts it if so."""
        if waited > self.max_wait or self.inflight >= self.max_inflight:
            self.shed += 1
            return True
        return False

    def late(self, waited: float) -> bool:
        """Whether a request that waited ``waited`` s is too late to answer (the binary
        protocol's servers bound their own in-flight counts); counts it if so."""
        if waited > self.max_wait:
            self.shed += 1
            return True
        return False
