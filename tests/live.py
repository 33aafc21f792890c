"""A live node on a loopback port with a known admin secret, for API tests."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from resolver import admin_tasks
from resolver.config import NodeConfig
from resolver.server import RunningNode

PREFIX = "88.100.1"
OTHER_PREFIX = "88.200.1"
SECRET = "test-secret-100"
OTHER_SECRET = "test-secret-200"
ADMIN = f"300:{PREFIX}/ADMIN"
OTHER_ADMIN = f"300:{OTHER_PREFIX}/ADMIN"


@dataclasses.dataclass
class LiveNode:
    running: RunningNode
    url: str
    session: aiohttp.ClientSession
    store_path: Path

    @property
    def node(self):
        return self.running.node

    def auth(self, identity: str = ADMIN, secret: str = SECRET) -> dict[str, str]:
        """Basic credentials as Handle.Net clients send them (colon percent-encoded)."""
        login = identity.replace(":", "%3A", 1)
        return {"Authorization": aiohttp.encode_basic_auth(login, secret)}

    def handle_url(self, handle: str) -> str:
        return f"{self.url}/api/handles/{handle}"


async def init_store(path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.init(str(path), PREFIX, SECRET, False)
        await admin_tasks.init(str(path), OTHER_PREFIX, OTHER_SECRET, False)


@pytest.fixture
async def live_node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    store_path = tmp_path / "node.db"
    await init_store(store_path)
    # No wait shedding: these tests' clients share the node's loop, so a request
    # would wait on their own work (tests/test_overload.py turns it on).
    running = RunningNode(NodeConfig(store=str(store_path), port=0, handle_port=0, shed_lag=0))
    await running.start()
    session = aiohttp.ClientSession()
    try:
        yield LiveNode(running, f"http://127.0.0.1:{running.port}", session, store_path)
    finally:
        await session.close()
        await running.stop()
