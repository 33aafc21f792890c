"""Group commit for an embedded store: many tasks' writes, one writer thread.

Callers on the event loop queue operations (``submit``); the store's writer
thread takes whatever queued up while its last transaction committed
(``next_batch``: up to ``max_batch`` operations or ``bulk_chunk`` weight),
runs them in one transaction, and hands every caller its outcome with one
``call_soon_threadsafe`` per batch (``settle``). ``max_pending`` bounds the
queue: beyond it writers wait (backpressure) or, with ``busy_when_full`` (a
serving node), fail at once with ``StoreBusy`` so the caller sheds load.

Used by the SQLite and LMDB backends; what an operation is (a function of the
backend's connection or transaction) is the backend's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable
from typing import Any, Final

from registry.store import StoreBusy, StoreClosed

_STOP: Final = object()
# A caller's future, and the result or the error it gets.
Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


class WriteOp:
    """One queued write: ``fn`` runs in the writer thread, inside the batch's transaction."""

    __slots__ = ("fn", "future", "weight")

    def __init__(self, fn: Callable[..., Any], future: asyncio.Future[Any], weight: int) -> None:
        self.fn = fn
        self.future = future
        self.weight = weight


class WriteQueue:
    """Between the loop (``submit``) and the writer thread (``next_batch``, ``settle``)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, max_batch: int, bulk_chunk: int,
        max_pending: int, busy_when_full: bool,
    ) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[WriteOp | object] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(max_pending)
        self._max_batch = max_batch
        self._bulk_chunk = bulk_chunk
        self._busy_when_full = busy_when_full
        self._stopping = False  # set by the writer thread once it saw the stop mark

    # -- the loop's side ---------------------------------------------------------

    async def submit(
        self, fn: Callable[..., Any], weight: int, *, may_shed: bool,
        still_open: Callable[[], None],
    ) -> asyncio.Future[Any]:
        """Queue ``fn``; its future resolves once its batch committed (or failed).

        ``still_open`` raises if the store closed while we waited for a slot.
        """
        if may_shed and self._busy_when_full and self._slots.locked():
            raise StoreBusy("Write queue full")
        await self._slots.acquire()  # bounded queue: wait here while it is full
        try:
            still_open()
        except BaseException:
            self._slots.release()
            raise
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(WriteOp(fn, future, weight))
        return future

    def stop(self) -> None:
        """The writer stops after every operation queued before this call."""
        self._queue.put(_STOP)  # FIFO: behind every write already queued

    # -- the writer thread's side --------------------------------------------------

    def next_batch(self) -> list[WriteOp] | None:
        """Sleep until there is work, then take what is queued; None once stopped."""
        if self._stopping:
            return None
        first = self._queue.get()
        if first is _STOP:
            self._stopping = True
            return None
        assert isinstance(first, WriteOp)
        batch, weight = [first], first.weight
        while len(batch) < self._max_batch and weight < self._bulk_chunk:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is _STOP:
                self._stopping = True  # run this batch, then stop
                break
            assert isinstance(op, WriteOp)
            batch.append(op)
            weight += op.weight
        return batch

    def refuse_leftovers(self) -> None:
        """Fail whatever was queued after the stop mark (it came after close began)."""
        leftovers: list[Outcome] = []
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(op, WriteOp):
                leftovers.append((op.future, None, StoreClosed("Store closed")))
        self.settle(leftovers)

    def settle(self, outcomes: list[Outcome]) -> None:
        """From the writer thread: resolve the batch's callers on the loop, in one call."""
        if outcomes:
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody waits
                self._loop.call_soon_threadsafe(self._settle_on_loop, outcomes)

    def _settle_on_loop(self, outcomes: list[Outcome]) -> None:
        for future, result, error in outcomes:
            self._slots.release()
            if future.done():  # the caller was cancelled
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


def discard_result(future: asyncio.Future[Any]) -> None:
    """Done-callback for a write nobody will read the answer of."""
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "never retrieved" log


def settle_one(future: asyncio.Future[Any], error: BaseException | None) -> None:
    """On the loop: resolve a start/stop future of the writer thread."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
