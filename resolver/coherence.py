"""Cache coherence: after a write is acknowledged, no cache anywhere serves the old record.

Guarantee (read-your-writes, and more: no stale read after the acknowledgement
by anyone). Every write path (``Registrar``, ``Node.home_prefix``) commits to
the store, then awaits ``Coherence.invalidate(keys)`` (or ``reload_homed``)
and only then acknowledges. That call drops the keys from this process's
cache and returns only when every peer tier has confirmed that each of its
live members dropped them too. A request that reaches any member after the
acknowledgement therefore misses its cache and reads the committed record; a
load that was in flight during the invalidation is answered but not kept
(``ResolutionCache.invalidate``).

Tiers (``Peers``): ``resolver.siblings`` for the worker processes of one
node (unix sockets, acknowledged; a sibling that does not acknowledge within
``ACK_TIMEOUT`` is killed, and the write waits for it to be gone, so the
guarantee holds even then). The shared-cache tier for several nodes
(``resolver.redis_tier``, ``--redis``) implements the same ``Peers``
interface: ``publish`` returns only when every live node has dropped the keys
(or has been declared dead and cannot answer any more), and ``start`` hands
it the receive side.

Limits, stated honestly:
- Writes by processes that announce nothing (``idnode import``, ``idnode
  prefix add``, ``account``, another program writing the store) are
  not covered by the acknowledgement. Their store counts them
  (``Store.unannounced_writes``, one counter bumped per transaction);
  ``ExternalWritesWatch`` polls it every ``EXTERNAL_POLL_SECONDS`` and drops
  the whole cache and reloads homed prefixes when it moved. So such writes
  are visible within about that interval, not at once. The poll is one
  point read on a timer: nothing is added to a request's hot path. (SQLite's
  ``PRAGMA data_version`` would be as cheap but moves on every sibling's
  write too, so it cannot tell an unannounced write from an announced one.)
- Reads answered from the cache before the acknowledgement may show the
  old record (the write was not yet acknowledged: that is allowed).
- If the peer tier cannot confirm (a sibling that will not die), the write
  is committed but answered with an error (rc 2), never acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.codes import RC
from protocol.errors import HandleError
from registry.store import Store
from resolver.cache import ResolutionCache
from resolver.siblings import SiblingBus, SiblingSuspect

log = logging.getLogger(__name__)

EXTERNAL_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Change:
    """What a peer must forget: cache ``keys``, or (``homed``) the homed prefixes and
    the whole cache (prefix homing changed, so "not responsible" answers may be wrong)."""

    keys: tuple[str, ...] = ()
    homed: bool = False

    def to_wire(self) -> list[Any]:
        return [list(self.keys), self.homed]

    @classmethod
    def from_wire(cls, payload: Any) -> Change:
        keys, homed = payload
        return cls(tuple(str(k) for k in keys), bool(homed))


# The receive side a tier calls for every change a peer published.
ApplyChange = Callable[[Change], Awaitable[None]]


class Peers(Protocol):
    """A tier of caches that must hear of every write (sibling workers, other nodes)."""

    async def start(self, apply: ApplyChange) -> None:
        """Begin receiving: call ``apply`` for each change a peer publishes, and
        acknowledge it only after ``apply`` returns."""

    async def publish(self, change: Change) -> None:
        """Return only when every live peer has applied ``change`` (or is gone)."""

    async def stop(self) -> None: ...


class Coherence:
    """This process's cache plus its peer tiers; what every write path awaits."""

    def __init__(
        self,
        cache: ResolutionCache,
        reload_homed: Callable[[], Awaitable[None]],
        tiers: Sequence[Peers] = (),
        refresh_reads: Callable[[], None] = lambda: None,
    ) -> None:
        self._cache = cache
        self._reload_homed = reload_homed  # this process's, without telling anyone
        # The store's (Store.refresh_reads): a store reading from a held
        # snapshot must take a new one before the change is acknowledged.
        self._refresh_reads = refresh_reads
        self.tiers = list(tiers)
        self.published = 0
        self.received = 0

    async def start(self) -> None:
        for tier in self.tiers:
            await tier.start(self.apply)

    async def stop(self) -> None:
        for tier in self.tiers:
            await tier.stop()

    async def invalidate(self, keys: Collection[str]) -> None:
        """Forget ``keys`` here and in every peer; call after the commit, before the ack.

        One message per call and tier, however many keys: batches pass theirs whole.
        """
        if not keys:
            return
        invalidate = self._cache.invalidate
        for key in keys:
            invalidate(key)
        await self._publish(Change(tuple(keys)))

    async def reload_homed(self) -> None:
        """Homed prefixes changed in the store: reload them here and in every peer."""
        await self._reload_homed()
        await self._publish(Change(homed=True))

    async def apply(self, change: Change) -> None:
        """The receive side: a peer's write."""
        self.received += 1
        self._refresh_reads()
        invalidate = self._cache.invalidate
        for key in change.keys:
            invalidate(key)
        if change.homed:
            self._cache.clear()
            await self._reload_homed()

    async def _publish(self, change: Change) -> None:
        if not self.tiers:
            return
        self.published += 1
        try:
            await asyncio.gather(*(tier.publish(change) for tier in self.tiers))
        except (OSError, TimeoutError, SiblingSuspect) as exc:
            log.error("Write committed but other caches could not confirm dropping it: %r", exc)
            raise HandleError(
                "The write was stored but could not be confirmed on every worker; "
                "read it back before relying on it", RC.ERROR,
            ) from exc


class SiblingPeers:
    """The ``Peers`` tier of one node's worker processes, over their ``SiblingBus``."""

    KIND = "change"

    def __init__(self, bus: SiblingBus) -> None:
        self._bus = bus

    async def start(self, apply: ApplyChange) -> None:
        async def receive(payload: Any) -> None:
            await apply(Change.from_wire(payload))

        self._bus.on(self.KIND, receive)

    async def publish(self, change: Change) -> None:
        await self._bus.broadcast(self.KIND, change.to_wire())

    async def stop(self) -> None:
        pass  # the bus is the worker's: it outlives the node


class ExternalWritesWatch:
    """The backstop for writers that announce nothing: poll the store's counter."""

    def __init__(
        self,
        store: Store,
        cache: ResolutionCache,
        reload_homed: Callable[[], Awaitable[None]],
        interval: float = EXTERNAL_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._cache = cache
        self._reload_homed = reload_homed
        self.interval = interval
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.noticed = 0

    async def start(self) -> None:
        self._seen = await self._store.unannounced_writes()
        if self._seen is not None:  # None: this backend does not count
            self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> bool:
        """Drop everything if someone wrote unannounced since the last check."""
        count = await self._store.unannounced_writes()
        if count == self._seen:
            return False
        self._seen = count
        self.noticed += 1
        self._store.refresh_reads()  # before the cache refills from the store
        self._cache.clear()
        await self._reload_homed()
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("Could not check the store for unannounced writes")
