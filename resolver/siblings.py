"""Request/acknowledge messages between the worker processes of one node.

Each worker listens on ``<dir>/worker-<slot>.sock`` (a unix stream socket)
from before its node opens the store until after it has stopped serving, so
a worker that cannot be connected to holds no cache. ``broadcast`` sends one
message to every other slot and returns when each has handled it and
acknowledged, or is known not to be running:

- connection refused / no socket file: that slot is not running (or not yet
  started: it will read the store afresh), nothing to wait for;
- no acknowledgement within ``ack_timeout``, or the connection breaks: the
  sibling is suspect. It is killed (SIGKILL through a pidfd taken when we
  connected, so never another process reusing the pid) and ``broadcast``
  waits until it has exited before returning; the supervisor restarts it
  with an empty cache.

Frames are a 4-byte big-endian length and a msgpack array: requests
``[id, kind, payload]``, acknowledgements ``[id]``. One connection per
(sender, receiver) pair carries any number of concurrent requests; the
receiver handles a connection's requests in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import select
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

# Seconds; a worker stalled longer is treated as hung (a loaded 2-core host
# can stall a process for over a second).
ACK_TIMEOUT = 5.0
EXIT_TIMEOUT = 10.0  # waiting for a killed sibling to be gone
MAX_FRAME = 64 << 20
_LENGTH = struct.Struct(">I")

# payload -> handled; the acknowledgement is sent when it returns.
Handler = Callable[[Any], Awaitable[None]]


def socket_path(directory: str | Path, slot: int) -> Path:
    return Path(directory) / f"worker-{slot}.sock"


def _frame(message: list[Any]) -> bytes:
    body = msgpack.packb(message)
    return _LENGTH.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> list[Any]:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise ConnectionError(f"sibling frame of {length} bytes")
    message = msgpack.unpackb(await reader.readexactly(length))
    if not isinstance(message, list) or not message:
        raise ConnectionError("malformed sibling frame")
    return message


class SiblingSuspect(Exception):
    """A sibling did not acknowledge in time (it has been killed)."""


class _Peer:
    """Our connection to one sibling, and the pidfd of the process behind it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pidfd: int, pid: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.pidfd = pidfd
        self.pid = pid
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.reading = asyncio.ensure_future(self._read_acks())

    async def _read_acks(self) -> None:
        try:
            while True:
                message = await _read_frame(self.reader)
                future = self.waiting.pop(message[0], None)
                if future is not None and not future.done():
                    future.set_result(None)
        except (OSError, EOFError, ConnectionError, asyncio.IncompleteReadError,
                ValueError) as exc:
            self._fail(ConnectionError(f"sibling pid {self.pid} connection lost: {exc!r}"))

    def _fail(self, error: BaseException) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()

    @property
    def broken(self) -> bool:
        return self.reading.done() or self.writer.is_closing()

    def close(self) -> None:
        self.reading.cancel()
        self.writer.close()
        self._fail(ConnectionError("closed"))
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class SiblingBus:
    def __init__(
        self,
        directory: str | Path,
        slot: int,
        slots: int,
        *,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.directory = Path(directory)
        self.slot = slot
        self.slots = slots
        self.handlers: dict[str, Handler] = {}  # by message kind
        self.ack_timeout = ack_timeout
        self._server: asyncio.AbstractServer | None = None
        self._peers: dict[int, _Peer] = {}
        self._connecting: dict[int, asyncio.Lock] = {}
        self._ids = itertools.count(1)
        self._serving: set[asyncio.StreamWriter] = set()  # senders connected to us
        self.killed = 0  # siblings killed for not acknowledging

    def on(self, kind: str, handler: Handler) -> None:
        """Handle messages of ``kind`` (before ``start``)."""
        self.handlers[kind] = handler

    async def start(self) -> None:
        path = socket_path(self.directory, self.slot)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by the crashed worker this one replaces
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                socket_path(self.directory, self.slot).unlink()
        for writer in list(self._serving):
            writer.close()  # their reads end with EOF
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()

    # -- receiving ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._serving.add(writer)
        try:
            while True:
                message = await _read_frame(reader)
                if len(message) != 3:
                    raise ConnectionError("malformed sibling request")
                request_id, kind, payload = message
                handler = self.handlers.get(kind)
                if handler is None:
                    log.warning("Sibling message of unknown kind %r acknowledged unhandled", kind)
                else:
                    await handler(payload)
                writer.write(_frame([request_id]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass  # the sender went away (or spoke nonsense): drop the connection
        except Exception:
            # Never acknowledge what was not done: the sender will treat us
            # as suspect (and kill us), which is what keeps caches coherent.
            log.exception("Could not apply a sibling's message")
        finally:
            self._serving.discard(writer)
            writer.close()

    # -- sending -----------------------------------------------------------

    async def broadcast(self, kind: str, payload: Any) -> None:
        """Every running sibling has handled ``(kind, payload)`` when this returns."""
        others = [s for s in range(self.slots) if s != self.slot]
        if others:
            await asyncio.gather(*(self._deliver(s, kind, payload) for s in others))

    async def _deliver(self, slot: int, kind: str, payload: Any) -> None:
        # A broken connection means that sibling died (or is being replaced):
        # make sure it is gone, then try whoever listens on the slot now.
        for _attempt in range(2):
            peer = await self._peer(slot)
            if peer is None:
                return  # nobody there: no cache to drop
            request_id = next(self._ids)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            peer.waiting[request_id] = future
            try:
                peer.writer.write(_frame([request_id, kind, payload]))
                await asyncio.wait_for(future, self.ack_timeout)
                return
            except (TimeoutError, ConnectionError, OSError) as exc:
                peer.waiting.pop(request_id, None)
                await self._remove(slot, peer, exc)
        raise SiblingSuspect(f"worker slot {slot} keeps failing to acknowledge")

    async def _peer(self, slot: int) -> _Peer | None:
        peer = self._peers.get(slot)
        if peer is not None and not peer.broken:
            return peer
        lock = self._connecting.setdefault(slot, asyncio.Lock())
        async with lock:
            peer = self._peers.get(slot)
            if peer is not None and not peer.broken:
                return peer
            if peer is not None:
                await self._remove(slot, peer, ConnectionError("connection lost"))
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(socket_path(self.directory, slot))
                )
            except (FileNotFoundError, ConnectionRefusedError):
                return None
            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # exited since it accepted us
                writer.close()
                return None
            peer = self._peers[slot] = _Peer(reader, writer, pidfd, pid)
            return peer

    async def _remove(self, slot: int, peer: _Peer, why: BaseException) -> None:
        if self._peers.get(slot) is peer:
            del self._peers[slot]
        if peer.pid == os.getpid():  # siblings in one process (tests): never kill ourselves
            peer.close()
            raise SiblingSuspect(f"sibling slot {slot} in this process failed: {why!r}")
        if _alive(peer.pidfd):
            log.error("Killing worker slot %d (pid %d): it did not acknowledge an "
                      "invalidation (%r); it will be restarted with an empty cache",
                      slot, peer.pid, why)
            self.killed += 1
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(peer.pidfd, signal.SIGKILL)
            await _wait_exited(peer.pidfd, EXIT_TIMEOUT)
        peer.close()


def _alive(pidfd: int) -> bool:
    """A pidfd turns readable when its process has exited."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return not readable


async def _wait_exited(pidfd: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await asyncio.wait_for(exited, timeout)
    finally:
        loop.remove_reader(pidfd)
