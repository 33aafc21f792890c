"""What the two embedded backends (SQLite, LMDB) share: a lifecycle, inline
point lookups on the event loop thread, and writes group-committed by one
writer thread (``registry.write_queue``).

A backend supplies ``_read_blob`` (a record's stored bytes, read inline) and
``_put_many_op`` (one writer operation for a chunk of put_many items), opens
``_writes`` with ``_start_writes`` and runs the writer thread itself.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from protocol.errors import MalformedMessage
from protocol.record_msgpack import StoredRecord, decode_record
from registry.store import PutItem, PutResult, Record, RecordView, Store, StoreClosed, StoreError
from registry.write_queue import WriteQueue, discard_result


def decode_stored(key: str, blob: bytes) -> Record:
    try:
        return decode_record(blob)
    except MalformedMessage as exc:
        raise corrupt(key, exc) from exc


def corrupt(key: str, exc: MalformedMessage) -> StoreError:
    # Not the client's protocol error: our own data is damaged.
    return StoreError(f"Stored record of {key!r} is corrupt: {exc.message}")


class EmbeddedStore(Store):
    """A store in local files, used by one process's event loop and its writer thread."""

    def __init__(
        self, path: str | Path, *, max_batch: int, bulk_chunk: int, max_pending: int,
        busy_when_full: bool,
    ) -> None:
        if min(max_batch, bulk_chunk, max_pending) < 1:
            raise ValueError("max_batch, bulk_chunk and max_pending must be positive")
        self.path = Path(path)
        self.max_batch = max_batch
        self.bulk_chunk = bulk_chunk
        self._max_pending = max_pending
        self._busy_when_full = busy_when_full
        self._state = "new"  # new → open → closing → closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: WriteQueue | None = None
        # Written by the writer thread only; read for metrics and tests.
        self.commits = 0  # transactions committed
        self.committed_ops = 0  # write operations (put_many chunks count once) in them

    async def __aenter__(self) -> EmbeddedStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosed(f"{type(self).__name__}({self.path}) is not open ({self._state})")

    def _start_writes(self, loop: asyncio.AbstractEventLoop) -> WriteQueue:
        self._loop = loop
        self._writes = WriteQueue(loop, max_batch=self.max_batch, bulk_chunk=self.bulk_chunk,
                                  max_pending=self._max_pending,
                                  busy_when_full=self._busy_when_full)
        return self._writes

    # -- reads -----------------------------------------------------------------

    @abstractmethod
    def _read_blob(self, key: str) -> bytes | None:
        """The stored record of ``key``, read inline; None if absent."""

    async def get(self, key: str) -> Record | None:
        blob = self._read_blob(key)
        return None if blob is None else decode_stored(key, blob)

    def inline_reader(self) -> Callable[[str], RecordView | None]:
        return self.read_now

    def read_now(self, key: str) -> StoredRecord | None:
        """``get`` without the coroutine, for the resolve path: the values come
        decoded only as far as ``StoredRecord`` (cheap); ``HandleValue``s on demand."""
        blob = self._read_blob(key)
        if blob is None:
            return None
        try:
            return StoredRecord(blob)
        except MalformedMessage as exc:
            raise corrupt(key, exc) from exc

    # -- writes: the caller's side ---------------------------------------------

    async def _enqueue(
        self, fn: Callable[..., Any], weight: int = 1, *, may_shed: bool = True
    ) -> asyncio.Future[Any]:
        self._check_open()
        assert self._writes is not None
        return await self._writes.submit(fn, weight, may_shed=may_shed,
                                         still_open=self._check_open)

    async def _write(self, fn: Callable[..., Any], weight: int = 1) -> Any:
        # A cancelled caller does not cancel the write (it may be committed
        # already); only the answer is dropped.
        return await (await self._enqueue(fn, weight))

    @abstractmethod
    def _put_many_op(self, chunk: Sequence[PutItem]) -> Callable[..., list[PutResult]]:
        """The writer operation that applies one chunk of put_many items."""

    async def put_many(self, items: Sequence[PutItem]) -> list[PutResult]:
        """Chunks of ``bulk_chunk`` items, each one writer operation.

        Items are applied independently. If a chunk fails as a whole (the
        store closes mid-call, an I/O error aborts its transaction) the call
        raises, and other chunks may have been applied.
        """
        self._check_open()
        seq = items if isinstance(items, list | tuple) else list(items)
        futures: list[asyncio.Future[Any]] = []
        try:
            for start in range(0, len(seq), self.bulk_chunk):
                chunk = seq[start : start + self.bulk_chunk]
                # Only the first chunk may be shed: later ones wait, so a call
                # either writes nothing or all it can.
                futures.append(await self._enqueue(self._put_many_op(chunk), len(chunk),
                                                   may_shed=not futures))
        except BaseException:
            for future in futures:  # still written; nobody will read the answers
                future.add_done_callback(discard_result)
            raise
        parts = await asyncio.gather(*futures)
        return [result for part in parts for result in part]
