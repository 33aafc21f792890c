"""``idnode serve --workers N``: a supervisor and N worker processes sharing the node's ports.

::

    supervisor ── chooses the ports, prepares the store and master key, makes a
       │          runtime dir (sibling sockets, metrics snapshots), restarts
       │          crashed workers, forwards SIGINT/SIGTERM
       ├── worker 0: RunningNode on its own uvloop, HTTP + Handle UDP/TCP with SO_REUSEPORT
       └── worker 1 ...          (the kernel spreads connections and datagrams)

Each worker is a whole node (``resolver.server.RunningNode``) with its own
cache; writes reach the siblings' caches before they are acknowledged
(``resolver.coherence`` over ``resolver.siblings``) and ``/metrics`` on any
worker reports the whole node (``resolver.worker_metrics``).

A worker that exits is restarted after a backoff (0.5 s doubling to 10 s;
reset once it has run ``STABLE_SECONDS``). If one fails ``MAX_QUICK_FAILURES``
times in a row without running that long, the supervisor stops them all and
exits 1. Workers watch a pipe from the supervisor and stop if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from registry.credentials import load_master_key
from resolver.config import NodeConfig
from resolver.worker_metrics import retire

log = logging.getLogger(__name__)

STABLE_SECONDS = 10.0
MAX_QUICK_FAILURES = 5
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
STOP_GRACE = 10.0
PORT_ATTEMPTS = 20


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# -- supervisor --------------------------------------------------------------


def supervise(config: NodeConfig, workers: int) -> int:
    """Run the node as ``workers`` processes until SIGINT/SIGTERM; the exit status."""
    reserved: list[socket.socket] = []
    runtime = Path(tempfile.mkdtemp(prefix="idnode-workers-"))
    try:
        config = _choose_ports(config, reserved)
        _prepare_store(config)
        (runtime / "metrics").mkdir()
        return asyncio.run(Supervisor(config, workers, runtime).run())
    finally:
        for sock in reserved:
            sock.close()
        shutil.rmtree(runtime, ignore_errors=True)


def _reuse_socket(kind: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _choose_ports(config: NodeConfig, reserved: list[socket.socket]) -> NodeConfig:
    """Real port numbers for port 0, so every worker binds the same ones.

    The TCP sockets stay bound (never listening, so never handed a
    connection) while the node runs, keeping the numbers ours. UDP cannot be
    held that way (a bound UDP socket would receive datagrams), so its check
    is momentary.
    """
    port = config.port
    if port == 0:
        sock = _reuse_socket(socket.SOCK_STREAM, config.host, 0)
        reserved.append(sock)
        port = sock.getsockname()[1]
    handle_port = config.handle_port
    if handle_port == 0:
        for _attempt in range(PORT_ATTEMPTS):
            tcp = _reuse_socket(socket.SOCK_STREAM, config.host, 0)
            candidate = tcp.getsockname()[1]
            try:
                _reuse_socket(socket.SOCK_DGRAM, config.host, candidate).close()
            except OSError:
                tcp.close()
                continue
            reserved.append(tcp)
            handle_port = candidate
            break
        else:
            raise OSError("no port free for both UDP and TCP")
    return dataclasses.replace(config, port=port, handle_port=handle_port, reuse_port=True)


def _prepare_store(config: NodeConfig) -> None:
    """Create or migrate the schema and the master key once, before the workers race."""
    from resolver.node import open_store

    async def prepare() -> None:
        store = open_store(config)
        await store.open()
        await store.close()

    load_master_key(config.store)
    asyncio.run(prepare())


class Supervisor:
    def __init__(self, config: NodeConfig, workers: int, runtime: Path) -> None:
        self.config = config
        self.workers = workers
        self.runtime = runtime
        self._stopping = asyncio.Event()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self.gave_up = False
        self._lifeline_read, self._lifeline_write = os.pipe()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        log.info("idnode node on %s:%d (Handle port %s) with %d workers",
                 self.config.host, self.config.port, self.config.handle_port, self.workers)
        slots = [asyncio.create_task(self._keep_running(s)) for s in range(self.workers)]
        try:
            await self._stopping.wait()
        finally:
            await self._stop_all()
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            os.close(self._lifeline_write)
            os.close(self._lifeline_read)
        return 1 if self.gave_up else 0

    async def _keep_running(self, slot: int) -> None:
        quick_failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await self._spawn(slot)
            self._procs[slot] = proc
            code = await proc.wait()
            retire(self.runtime / "metrics", slot, proc.pid)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            quick_failures = quick_failures + 1 if ran < STABLE_SECONDS else 0
            if quick_failures >= MAX_QUICK_FAILURES:
                log.error("Worker %d failed %d times in a row at start (last exit %s): "
                          "stopping the node", slot, quick_failures, code)
                self.gave_up = True
                self._stopping.set()
                return
            delay = min(BACKOFF_FIRST * 2 ** max(quick_failures - 1, 0), BACKOFF_MAX)
            log.warning("Worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                        slot, proc.pid, code, ran, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        spec = {
            "config": dataclasses.asdict(dataclasses.replace(self.config, worker_slot=slot)),
            "slots": self.workers,
            "runtime": str(self.runtime),
            "lifeline": self._lifeline_read,
        }
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resolver.workers", json.dumps(spec),
            pass_fds=(self._lifeline_read,),
        )

    async def _stop_all(self) -> None:
        live = [p for p in self._procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not live:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live],
                                     timeout=STOP_GRACE)
        if late:
            log.warning("%d workers did not stop within %.0f s: killing them", len(late),
                        STOP_GRACE)
            for proc in live:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in live))


# -- worker ------------------------------------------------------------------


async def serve_worker(config: NodeConfig, slots: int, runtime: Path, lifeline: int) -> None:
    from resolver.coherence import SiblingPeers
    from resolver.gc_policy import settle_for_serving
    from resolver.node import Node
    from resolver.server import RunningNode
    from resolver.siblings import SiblingBus
    from resolver.worker_metrics import FLUSH_KIND, WorkerMetrics

    assert config.worker_slot is not None
    slot = config.worker_slot
    # Listening before the store is opened: a slot that cannot be reached
    # holds no cache (resolver.siblings).
    bus = SiblingBus(runtime, slot, slots)
    node = Node(config, peers=[SiblingPeers(bus)])
    metrics = WorkerMetrics(runtime / "metrics", slot, node.registry)
    bus.on(FLUSH_KIND, metrics.flush_on_request)

    async def flush_everyone() -> None:
        await bus.broadcast(FLUSH_KIND, None)
        metrics.flush()

    node.before_scrape = flush_everyone
    node.metrics_view = metrics.node_registry()
    await bus.start()
    running = RunningNode(config, node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # EOF on the lifeline: the supervisor is gone (even by SIGKILL).
    loop.add_reader(lifeline, stop.set)
    try:
        await running.start()
        metrics.start()
        settle_for_serving()  # as a lone node does (resolver.server.serve_forever)
        await stop.wait()
    finally:
        loop.remove_reader(lifeline)
        await running.stop()  # stop serving before we stop hearing of writes
        await metrics.stop()  # the last snapshot: a clean exit loses no count
        await bus.stop()


def _worker_main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[0])
    # JSON has no tuples: NodeConfig's sequences are tuples (it is frozen).
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()
    }
    config = NodeConfig(**fields)
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{config.worker_slot} %(name)s: %(message)s",
    )
    coroutine = serve_worker(config, spec["slots"], Path(spec["runtime"]), spec["lifeline"])
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
