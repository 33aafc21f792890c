"""Point lookups that share one SQLite read transaction instead of one each.

A lookup in autocommit mode opens and closes a WAL read transaction around
its one SELECT: it takes and drops a read lock on the -shm file (fcntl) and
checks the file's size (fstat) every time. Holding the transaction across
lookups skips that work: 12-19 us a lookup became 10-12 us at 10M records in
a tight loop, and a cold resolve through the node cost 121-148 against
146-196 us at 100M (bench/README.md).

A held transaction reads the store as it was when it began, so it must end
before any read that has to see a newer write:

- after every commit of this store's own writer (``expire`` from its thread,
  before the writers' futures resolve), so a caller reads its own writes;
- when told another process wrote (``expire`` from ``Store.refresh_reads``:
  the node's coherence calls it for every change a peer announces, before it
  acknowledges, and when unannounced writes were noticed);
- after ``max_age`` seconds in any case, so it never pins the WAL: a checkpoint
  cannot move past the oldest reader's snapshot.

Ending it only marks it stale; the next lookup rolls it back and begins anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3


class ReadSnapshot:
    """The lookup connection and the read transaction it may hold.

    Used on the event loop thread only, except ``expire``, which any thread may
    call (an attribute store is atomic under the GIL). ``max_age`` 0: every
    lookup is its own transaction, as in plain autocommit mode.
    """

    __slots__ = ("_loop", "_max_age", "_timer", "conn", "current")

    def __init__(
        self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, max_age: float
    ) -> None:
        self.conn = conn
        # False: the next lookup must call ``begin`` first.
        self.current = False
        self._loop = loop
        self._max_age = max_age
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """Replace the held transaction by a new one (its snapshot is taken by
        the first SELECT in it)."""
        # Marked current before BEGIN: a commit from here on expires it again,
        # and one that lands before the next SELECT is in the new snapshot.
        self.current = True
        if self._max_age <= 0:
            return
        conn = self.conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # read-only: nothing to commit
        conn.execute("BEGIN")
        if self._timer is None:
            self._timer = self._loop.call_later(self._max_age, self._age_out)

    def expire(self) -> None:
        """Later lookups see every commit made before this call."""
        self.current = False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.current = False
        self.conn.close()

    def _age_out(self) -> None:
        self._timer = None
        self.current = False
        # Also release it now: an idle node must not keep the WAL pinned.
        with contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
