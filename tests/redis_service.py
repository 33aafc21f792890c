"""Redis for tests: the shared server (unique names per test), or a private one.

Tests skip when Redis is absent, except with IDNODE_REQUIRE_SERVICES=1 (CI),
where absence fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio", reason="redis-py not installed (redis extra)")

SHARED_REDIS = os.environ.get("IDNODE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def missing(reason: str) -> None:
    """Skip, or fail where the services are required."""
    if os.environ.get("IDNODE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (IDNODE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[str, str]]:
    """(url, prefix): the shared Redis and a namespace of this test's own, removed after."""
    client = redis_asyncio.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1)
    try:
        await client.ping()
    except (OSError, redis_asyncio.RedisError) as exc:
        await client.aclose()
        missing(f"Redis not reachable at {SHARED_REDIS}: {exc}")
    prefix = f"idnode-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield SHARED_REDIS, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


class PrivateRedis:
    """A throwaway ``redis-server`` on a free port, without persistence, to stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server binary not installed")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
