"""Invalidations between nodes (a ``resolver.coherence.Peers`` tier): publish,
wait for every live node, lease the cache.

Each node keeps one subscription (the invalidation channel and its own
acknowledgement channel) and heartbeats through it: a ``PING`` on the
subscribed connection comes back after every message published before it, so
its ``PONG`` proves nothing was missed up to then. The node then renews its
presence (a score in a sorted set: Redis time + lease) and lends its cache a
lease measured from when the ping was sent, a little shorter than the presence
Redis keeps. Whatever happens after that (lost connection, stalled event loop)
the cache stops serving before writers stop waiting for this node.

A writer runs ``INVALIDATE`` (new generations, shared values deleted, message
published, live nodes listed, all at one instant), then waits until each live
node has acknowledged or left the presence set. A node acknowledges after
applying the change (``Coherence.apply``: the keys dropped from its cache).
On any failure a node drops its whole cache, leaves, and subscribes again with
backoff; its cache is trusted again only after a fresh heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from protocol.codes import RC
from protocol.errors import HandleError
from resolver.cache import ResolutionCache
from resolver.coherence import ApplyChange, Change
from resolver.redis_tier.l2 import GENERATION_TTL
from resolver.redis_tier.names import HEARTBEAT, INVALIDATE, LIVE, Names

log = logging.getLogger(__name__)

LEASE_SHARE = 0.8  # of the presence lease: margin for clock rates and slow replies
RECONNECT_MIN = 0.1
RECONNECT_MAX = 5.0
ACK_QUEUE = 10_000  # acknowledgements not yet sent; more means this node is stuck
ACK_BATCH = 256
# Writes that could not be confirmed, redone when Redis is back (beyond: logged).
MAX_UNCONFIRMED = 10_000


class LinkLost(Exception):
    """The subscription can no longer vouch for every invalidation."""


class WritesUnavailable(HandleError):
    """Redis is unreachable: a write here could not reach other nodes' caches."""

    rc = RC.SERVER_BACKUP


class WriteNotConfirmed(HandleError):
    """Stored, but not every node confirmed it dropped the old record."""

    rc = RC.SERVER_TOO_BUSY


@dataclass(slots=True)
class _Wait:
    done: asyncio.Future[None]
    acked: set[str] = field(default_factory=set)
    pending: set[str] | None = None  # known once the script answered


class RedisInvalidation:
    def __init__(
        self,
        client: Redis,
        names: Names,
        cache: ResolutionCache,
        *,
        lease: float,
        heartbeat: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = uuid.uuid4().hex[:16]
        self._client = client
        self._names = names
        self._cache = cache
        self._lease = lease
        self._heartbeat = heartbeat
        self._timeout = lease / 4  # any one command on the control path
        self._clock = clock
        self._invalidate = client.register_script(INVALIDATE)
        self._beat = client.register_script(HEARTBEAT)
        self._live = client.register_script(LIVE)
        self._seq = itertools.count(1)
        self._waits: dict[int, _Wait] = {}
        self._acks: asyncio.Queue[tuple[str, int]] = asyncio.Queue(ACK_QUEUE)
        self._pong: asyncio.Future[bytes] | None = None
        self._unconfirmed: set[str] = set()
        self._unconfirmed_homed = False
        self._apply: ApplyChange | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._up_event = asyncio.Event()
        self.up = False
        self._down_logged = False
        self.invalidations_sent = 0
        self.invalidations_received = 0
        self.transitions = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self, apply: ApplyChange, wait: float) -> None:
        """Connect in the background; wait up to ``wait`` seconds for the link."""
        self._apply = apply
        self._cache.distrust()
        self._supervisor = asyncio.create_task(self._supervise())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up_event.wait(), wait)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._set_down(None)
        # Leave now rather than make writers wait for the lease to run out.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(
                self._client.zrem(self._names.presence, self.node_id), self._timeout
            )

    # -- the write path ----------------------------------------------------

    def check_writable(self) -> None:
        if not self.up:
            raise WritesUnavailable(
                "Writes are refused while the shared cache (Redis) is unreachable; retry later"
            )

    async def publish(self, change: Change) -> None:
        """Return once every live node has applied ``change`` (this one did already)."""
        if not self.up:
            self._remember(change)
            raise WriteNotConfirmed(
                "The change was stored but the shared cache is unreachable: other nodes "
                "may serve the old record until it is back; read it back to confirm"
            )
        try:
            await self._broadcast(change)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("Could not confirm an invalidation of %d keys: %r", len(change.keys), exc)
            self._remember(change)
            raise WriteNotConfirmed(
                "The change was stored but not every node confirmed it; read it back to confirm"
            ) from None

    async def _broadcast(self, change: Change) -> None:
        names = self._names
        keys = change.keys
        seq = next(self._seq)
        wait = _Wait(asyncio.get_running_loop().create_future())
        self._waits[seq] = wait  # before publishing: acks may beat the script's reply
        try:
            message = msgpack.packb([self.node_id, seq, change.to_wire()])
            live = await asyncio.wait_for(
                self._invalidate(
                    keys=[names.presence, *map(names.value, keys), *map(names.generation, keys)],
                    args=[f"{self.node_id}:{seq}", int(GENERATION_TTL * 1000),
                          names.invalidations, message],
                ),
                self._timeout,
            )
            self.invalidations_sent += 1
            wait.pending = {n.decode() for n in live} - wait.acked - {self.node_id}
            # A node that neither acknowledges nor renews its presence is gone
            # after one lease; one that is live but silent longer is broken.
            deadline = self._clock() + 2 * self._lease
            while wait.pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(wait.done), self._heartbeat)
                    return
                if self._clock() > deadline:
                    raise TimeoutError(f"no acknowledgement from {sorted(wait.pending)}")
                live = await asyncio.wait_for(
                    self._live(keys=[names.presence]), self._timeout
                )
                wait.pending &= {n.decode() for n in live}
        finally:
            del self._waits[seq]

    def _remember(self, change: Change) -> None:
        self._unconfirmed_homed |= change.homed
        if len(self._unconfirmed) + len(change.keys) > MAX_UNCONFIRMED:
            log.error("Too many unconfirmed invalidations; the shared cache may serve "
                      "old records until their TTL")
            return
        self._unconfirmed.update(change.keys)

    # -- the link ----------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = RECONNECT_MIN
        while True:
            started = self._clock()
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError, LinkLost):
                pass  # logged on the way down
            except Exception:
                log.exception("Redis link failed unexpectedly")
            if self._clock() - started > 10 * self._lease:
                backoff = RECONNECT_MIN  # it worked for a while: retry soon
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX)

    async def _session(self) -> None:
        self._cache.distrust()
        pubsub = self._client.pubsub()
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.wait_for(
                pubsub.subscribe(self._names.invalidations, self._names.acks(self.node_id)),
                self._timeout,
            )
            tasks = [
                asyncio.create_task(self._read(pubsub)),
                asyncio.create_task(self._send_acks()),
                asyncio.create_task(self._keep_alive(pubsub)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises why it stopped
            raise LinkLost("a link task ended")
        except Exception as exc:
            self._set_down(exc)  # at once: no write may pass check_writable from now
            raise
        finally:
            self._cache.distrust()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(pubsub.aclose(), self._timeout)

    async def _keep_alive(self, pubsub: PubSub) -> None:
        names = self._names
        lease_ms = int(self._lease * 1000)
        for token in itertools.count():
            sent = self._clock()
            pong = asyncio.get_running_loop().create_future()
            self._pong = pong
            await asyncio.wait_for(pubsub.ping(str(token)), self._timeout)
            if await asyncio.wait_for(pong, self._timeout) != str(token).encode():
                raise LinkLost("heartbeat answered out of order")
            await asyncio.wait_for(
                self._beat(keys=[names.presence], args=[self.node_id, lease_ms]), self._timeout
            )
            if not self.up:
                await self._redo_unconfirmed()
            self._cache.trust_until(sent + self._lease * LEASE_SHARE)
            self._set_up()
            await asyncio.sleep(self._heartbeat)

    async def _redo_unconfirmed(self) -> None:
        """Writes not confirmed while Redis was away: clear their shared values now."""
        if self._unconfirmed_homed:
            await self._broadcast(Change(homed=True))
            self._unconfirmed_homed = False
        while self._unconfirmed:
            keys = tuple(itertools.islice(self._unconfirmed, 500))
            await self._broadcast(Change(keys))
            self._unconfirmed.difference_update(keys)

    async def _read(self, pubsub: PubSub) -> None:
        subscribed = 0
        own_channel = self._names.acks(self.node_id).encode()
        while True:
            # Not a blocking read: that one would time out (socket_timeout) whenever
            # the channel is quiet for a moment; heartbeats watch the link instead.
            message: dict[str, Any] | None = await pubsub.get_message(timeout=self._heartbeat)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                if message["channel"] == own_channel:
                    self._on_ack(message["data"])
                else:
                    await self._on_invalidation(message["data"])
            elif kind == "pong":
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(message["data"])
            elif kind == "subscribe":
                subscribed += 1
                if subscribed > 2:  # redis-py reconnected by itself: messages were lost
                    raise LinkLost("subscription was renewed")

    async def _on_invalidation(self, data: bytes) -> None:
        try:
            writer, seq, wire = msgpack.unpackb(data)
            change = Change.from_wire(wire)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise LinkLost(f"unreadable invalidation: {exc}") from None
        if writer == self.node_id:
            return
        assert self._apply is not None
        await self._apply(change)
        self.invalidations_received += 1
        try:
            self._acks.put_nowait((writer, seq))
        except asyncio.QueueFull:
            raise LinkLost("acknowledgements are not getting out") from None

    def _on_ack(self, data: bytes) -> None:
        try:
            node, seqs = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.warning("Ignoring an unreadable acknowledgement")
            return
        for seq in seqs:
            wait = self._waits.get(seq)
            if wait is None:
                continue
            wait.acked.add(node)
            if wait.pending is not None:
                wait.pending.discard(node)
                if not wait.pending and not wait.done.done():
                    wait.done.set_result(None)

    async def _send_acks(self) -> None:
        while True:
            batch = [await self._acks.get()]
            while len(batch) < ACK_BATCH and not self._acks.empty():
                batch.append(self._acks.get_nowait())
            by_writer: dict[str, list[int]] = {}
            for writer, seq in batch:
                by_writer.setdefault(writer, []).append(seq)
            async with self._client.pipeline(transaction=False) as pipe:
                for writer, seqs in by_writer.items():
                    pipe.publish(self._names.acks(writer), msgpack.packb([self.node_id, seqs]))
                await asyncio.wait_for(pipe.execute(), self._timeout)

    # -- state -------------------------------------------------------------

    def _set_up(self) -> None:
        if not self.up:
            self.up = True
            self._down_logged = False
            self.transitions += 1
            self._up_event.set()
            log.info("Redis up: shared cache and invalidations on (node %s)", self.node_id)

    def _set_down(self, reason: BaseException | None) -> None:
        self._cache.distrust()
        if self.up:
            self.up = False
            self.transitions += 1
            self._up_event.clear()
        if reason is not None and not self._down_logged:
            self._down_logged = True
            log.warning("Redis down (%r): serving from the store, writes refused", reason)
        # Acknowledgements queued for the lost link mean nothing to the next one.
        while not self._acks.empty():
            self._acks.get_nowait()
