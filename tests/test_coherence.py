"""Coherence between workers.

The sibling bus: a broadcast returns once every running sibling has handled
it, and a sibling that does not acknowledge is killed before it returns. The
backstop: writes of processes that announce nothing empty the cache.

The siblings are real processes (a broadcast may SIGKILL the process behind a
socket, which must never be the test runner).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live import PREFIX, init_store
from processes import ROOT, _env

from protocol.codes import RC
from protocol.values import HandleValue
from registry.sqlite_store import SQLiteStore
from registry.store import PutItem
from resolver.auth import Identity
from resolver.cache import ResolutionCache
from resolver.coherence import Change, ExternalWritesWatch, SiblingPeers
from resolver.config import NodeConfig
from resolver.node import Node
from resolver.siblings import SiblingBus, socket_path

SIBLING = """
import asyncio, sys
from resolver.siblings import SiblingBus

async def main(directory, behaviour):
    bus = SiblingBus(directory, 1, 2)

    async def handle(payload):
        if behaviour == "hang":
            await asyncio.sleep(3600)
        print("applied", payload, flush=True)

    bus.on("change", handle)
    await bus.start()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def start_sibling(directory: Path, behaviour: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SIBLING, str(directory), behaviour],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_broadcast_returns_after_the_sibling_applied_it(tmp_path: Path):
    sibling = start_sibling(tmp_path, "ack")
    try:
        async def send() -> None:
            bus = SiblingBus(tmp_path, 0, 2, ack_timeout=30)
            await bus.start()
            await bus.broadcast("change", Change(("88.100.1/A", "88.100.1/B")).to_wire())
            await bus.stop()

        asyncio.run(send())
        assert sibling.stdout is not None
        # Printed before the acknowledgement was sent, so already there.
        assert sibling.stdout.readline().strip() == "applied [['88.100.1/A', '88.100.1/B'], False]"
    finally:
        sibling.kill()
        sibling.wait()


def test_an_unresponsive_sibling_is_killed_before_the_broadcast_returns(tmp_path: Path):
    sibling = start_sibling(tmp_path, "hang")
    try:
        async def send() -> int:
            bus = SiblingBus(tmp_path, 0, 2, ack_timeout=0.5)
            await bus.start()
            await bus.broadcast("change", Change(("88.100.1/A",)).to_wire())
            await bus.stop()
            return bus.killed

        assert asyncio.run(send()) == 1
        # Gone already, not merely signalled: no cache left that could be stale.
        assert sibling.poll() == -signal.SIGKILL
    finally:
        if sibling.poll() is None:
            sibling.kill()
        sibling.wait()


def test_a_slot_nobody_listens_on_is_skipped(tmp_path: Path):
    socket_path(tmp_path, 1).write_bytes(b"")  # left by a crashed worker: refused

    async def send() -> float:
        bus = SiblingBus(tmp_path, 0, 3, ack_timeout=30)
        start = time.monotonic()
        await bus.broadcast("change", Change(homed=True).to_wire())
        return time.monotonic() - start

    assert asyncio.run(send()) < 5


def test_change_round_trips_its_wire_form():
    change = Change(("88.100.1/X",), homed=True)
    assert Change.from_wire(change.to_wire()) == change



# -- the backstop for writers that announce nothing ---------------------------


async def test_only_unannounced_writes_are_counted(tmp_path: Path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as offline:  # idnode import, prefix add, ...
        assert await offline.unannounced_writes() == 0
        await offline.put("88.100.1/A", [HandleValue(1, "URL", b"a")])
        await offline.put_many([PutItem("88.100.1/B", [HandleValue(1, "URL", b"b")])])
        assert await offline.unannounced_writes() == 2
    async with SQLiteStore(path, announces_writes=True) as node_store:
        await node_store.put("88.100.1/A", [HandleValue(1, "URL", b"a2")])
        assert await node_store.unannounced_writes() == 2


async def test_an_unannounced_write_empties_the_cache_and_reloads_prefixes(tmp_path: Path):
    path = tmp_path / "s.db"
    cache = ResolutionCache(max_bytes=1 << 20, max_ttl=3600, negative_ttl=5)
    reloads = 0

    async def reload_homed() -> None:
        nonlocal reloads
        reloads += 1

    async def load() -> tuple[RC, tuple[HandleValue, ...]]:
        return RC.SUCCESS, (HandleValue(1, "URL", b"old"),)

    # A snapshot only writes renew: the watch must renew it, or the emptied
    # cache would refill with what the offline writer replaced.
    async with SQLiteStore(path, announces_writes=True, read_snapshot_seconds=3600) as node_store:
        watch = ExternalWritesWatch(node_store, cache, reload_homed, interval=3600)
        await watch.start()
        await cache.get("88.100.1/A", load)
        await node_store.put("88.100.1/B", [HandleValue(1, "URL", b"b")])
        assert not await watch.check()  # the node's own write: announced already
        assert len(cache) == 1
        assert await node_store.get("88.100.1/A") is None  # holds a snapshot from here
        async with SQLiteStore(path) as offline:
            await offline.put("88.100.1/A", [HandleValue(1, "URL", b"new")])
        assert await watch.check()
        assert len(cache) == 0 and reloads == 1
        assert await node_store.get("88.100.1/A") == (HandleValue(1, "URL", b"new"),)
        await watch.stop()


# -- two nodes as sibling workers, in one process ------------------------------


@pytest.mark.parametrize("snapshot", [0.0, 3600.0], ids=["per-lookup", "held-snapshot"])
async def test_sibling_nodes_drop_a_written_record_and_learn_new_prefixes_at_once(
    tmp_path: Path, snapshot: float,
):
    """Held: b's lookups share a snapshot that only a's announcements renew."""
    store = tmp_path / "node.db"
    await init_store(store)
    config = NodeConfig(store=str(store), port=0, handle_port=None,
                        server_admins=("300:0.NA/ADMIN",), sqlite_read_snapshot=snapshot)
    buses = [SiblingBus(tmp_path, slot, 2, ack_timeout=30) for slot in (0, 1)]
    nodes = [Node(dataclasses.replace(config, worker_slot=slot), peers=[SiblingPeers(bus)])
             for slot, bus in enumerate(buses)]
    for bus in buses:
        await bus.start()
    for node in nodes:
        await node.start()
    try:
        a, b = nodes
        admin = Identity.parse("300:0.NA/ADMIN")
        handle = a.parse(f"{PREFIX}/coherent")

        async def write(data: bytes) -> None:
            await a.registrar.put_record(admin, handle, [HandleValue(1, "URL", data)],
                                         overwrite=True)

        async def read_b() -> bytes:
            values = (await b.resolve(handle)).values
            assert values is not None
            return values[0].data

        await write(b"v1")
        assert await read_b() == b"v1"  # now cached by b
        for n in range(2, 6):
            await write(b"v%d" % n)
            assert b.cache.peek(handle.key) is None  # dropped before the write returned
            assert await read_b() == b"v%d" % n
        assert b.coherence.received >= 5

        assert not b.serves("88.300")
        await a.home_prefix("88.300", [])
        assert b.serves("88.300")  # b reloaded its prefixes before a returned
    finally:
        for node in nodes:
            await node.stop()
        for bus in buses:
            await bus.stop()
