"""``idnode serve --workers 2``: real processes on free ports.

Every request below goes over a fresh connection, so the kernel's SO_REUSEPORT
hashing spreads them over both workers; the tests first check that both
workers do answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from processes import ROOT, ServerProcess, _env, free_port, init_store

from protocol.codes import RC
from resolver.handle_client import resolve_udp

pytestmark = pytest.mark.slow

PREFIX = "88.100.1"
SECRET = "workers-secret"
AUTH = "Basic " + base64.b64encode(f"300%3A{PREFIX}/ADMIN:{SECRET}".encode()).decode()
WAIT = 30.0  # generous: the machine is shared and loaded


def call(url: str, method: str = "GET", body: object = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if method != "GET":
        request.add_header("Authorization", AUTH)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def url_values(n: int) -> dict:
    return {"values": [{"index": 1, "type": "URL",
                        "data": {"format": "string", "value": f"https://example.com/v{n}"}}]}


def served_value(reply: dict) -> str:
    return reply["values"][0]["data"]["value"]


def workers_seen(base: str, want: int, deadline: float) -> dict[int, int]:
    """slot -> pid of each worker answering /healthz, once ``want`` of them have."""
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        try:
            _, health = call(f"{base}/healthz")
        except OSError:
            time.sleep(0.05)
            continue
        seen[health["worker"]] = health["pid"]
        if len(seen) >= want:
            return seen
    raise AssertionError(f"only workers {seen} answered")


def metric(base: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def free_udp_tcp_port() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Both embedded stores: SQLite (a file) and LMDB (a directory shared by the
# workers' processes).
@pytest.fixture(params=["node.db", "node.lmdb"], ids=["sqlite", "lmdb"])
def node(tmp_path: Path, request: pytest.FixtureRequest):
    store = tmp_path / request.param
    init_store(store, PREFIX, SECRET)
    handle_port = free_udp_tcp_port()
    server = ServerProcess(store, "--workers", "2", "--handle-port", str(handle_port)).start()
    server.handle_port = handle_port  # type: ignore[attr-defined]
    try:
        workers_seen(server.url, 2, time.monotonic() + WAIT)
        yield server
    finally:
        server.stop()


def test_a_write_through_any_worker_is_read_back_through_every_worker(node: ServerProcess):
    handle = f"{node.url}/api/handles/{PREFIX}/rw"
    assert call(handle, "PUT", url_values(0))[0] == 201
    for _ in range(10):  # both workers cache version 0
        assert served_value(call(handle)[1]) == "https://example.com/v0"
    for n in range(1, 41):
        status, _ = call(handle, "PUT", url_values(n))
        assert status == 200
        for _ in range(4):  # fresh connections: both workers answer some of them
            status, reply = call(handle)
            assert status == 200
            assert served_value(reply) == f"https://example.com/v{n}", f"stale after write {n}"
    # A delete is a write too.
    assert call(handle, "DELETE")[0] == 200
    for _ in range(8):
        assert call(handle)[0] == 404


def test_a_write_is_read_back_over_udp_from_every_worker(node: ServerProcess):
    handle = f"{node.url}/api/handles/{PREFIX}/udp"
    port = node.handle_port  # type: ignore[attr-defined]

    async def resolve_many(times: int) -> set[bytes]:
        # A new socket (source port) each time: the kernel hashes them over both workers.
        results = [await resolve_udp("127.0.0.1", port, f"{PREFIX}/udp") for _ in range(times)]
        assert all(r.rc == RC.SUCCESS for r in results)
        return {r.values[0].data for r in results}

    assert call(handle, "PUT", url_values(0))[0] == 201
    asyncio.run(resolve_many(10))  # cached (reply packets too) by both workers
    for n in range(1, 11):
        assert call(handle, "PUT", url_values(n))[0] == 200
        assert asyncio.run(resolve_many(6)) == {f"https://example.com/v{n}".encode()}


def test_batch_writes_reach_every_worker(node: ServerProcess):
    names = [f"{PREFIX}/batch-{i}" for i in range(50)]
    for round_ in range(3):
        body = [{"handle": h, **url_values(round_)} for h in names]
        status, reply = call(f"{node.url}/api/handles", "POST", body)
        assert status == 200, reply
        for h in names[::7]:
            for _ in range(3):
                value = served_value(call(f"{node.url}/api/handles/{h}")[1])
                assert value == f"https://example.com/v{round_}"


def test_metrics_count_every_request_of_every_worker(node: ServerProcess):
    handle = f"{node.url}/api/handles/{PREFIX}/counted"
    assert call(handle, "PUT", url_values(1))[0] == 201
    call(handle)
    before = metric(node.url, "idnode_requests_total", transport="http", route="resolve")
    sent = 60
    for _ in range(sent):
        assert call(handle)[0] == 200
    after = metric(node.url, "idnode_requests_total", transport="http", route="resolve")
    assert after - before == sent
    assert metric(node.url, "idnode_workers") == 2


def test_a_killed_worker_is_restarted_and_the_node_keeps_serving(node: ServerProcess):
    handle = f"{node.url}/api/handles/{PREFIX}/survivor"
    assert call(handle, "PUT", url_values(1))[0] == 201
    seen = workers_seen(node.url, 2, time.monotonic() + WAIT)
    os.kill(seen[0], signal.SIGKILL)
    # Connections queued on the killed worker's socket are reset (the
    # kernel does not move them unless net.ipv4.tcp_migrate_req=1): wait
    # until it is gone, then every new connection reaches the other worker.
    deadline = time.monotonic() + WAIT
    while _alive(seen[0]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(20):  # the other worker answers meanwhile
        assert call(handle)[0] == 200
    deadline = time.monotonic() + WAIT
    while True:
        now = workers_seen(node.url, 2, deadline)
        if now[0] != seen[0]:
            break
    assert now[1] == seen[1]
    # The new worker is a sibling like the old one: writes reach it.
    assert call(handle, "PUT", url_values(2))[0] == 200
    for _ in range(10):
        assert served_value(call(handle)[1]) == "https://example.com/v2"


def test_sigterm_stops_every_worker_cleanly(node: ServerProcess):
    pids = workers_seen(node.url, 2, time.monotonic() + WAIT).values()
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=WAIT) == 0
    assert not any(_alive(pid) for pid in pids)
    assert "Traceback" not in node.log()


def test_writes_of_other_processes_are_noticed(node: ServerProcess, tmp_path: Path):
    handle = f"{node.url}/api/handles/{PREFIX}/imported"
    assert call(handle, "PUT", url_values(1))[0] == 201
    for _ in range(6):
        call(handle)  # cached by both workers
    lines = tmp_path / "import.jsonl"
    lines.write_text(json.dumps({"handle": f"{PREFIX}/imported", **url_values(2)}) + "\n")
    subprocess.run([sys.executable, "-m", "resolver.cli", "import", "--store", str(node.store),
                    str(lines)], cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + WAIT
    while True:
        values = {served_value(call(handle)[1]) for _ in range(6)}
        if values == {"https://example.com/v2"}:
            break
        assert time.monotonic() < deadline, values


def test_workers_that_cannot_start_make_the_node_exit_non_zero(tmp_path: Path):
    store = tmp_path / "node.db"
    init_store(store, PREFIX, SECRET)
    port = free_port()
    with socket.socket() as taken:  # no SO_REUSEPORT: the workers cannot bind
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "resolver.cli", "serve", "--store", str(store),
             "--port", str(port), "--handle-port", "0", "--workers", "2",
             "--log-level", "WARNING"],
            cwd=ROOT, env=_env(), capture_output=True, timeout=120,
        )
    assert proc.returncode == 1
    assert b"failed" in proc.stderr
