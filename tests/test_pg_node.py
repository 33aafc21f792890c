"""Nodes on ``--store postgresql://...``: REST and binary protocol, two nodes on one database."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pg_service
import pytest
from live import ADMIN, PREFIX, SECRET
from test_handle_server import admin_exchange

from protocol.codes import RC
from protocol.handle_envelope import FLAG_RECU
from protocol.handle_messages import Message, OpCode, ValuesBody
from protocol.values import HandleValue
from registry.credentials import MasterKeyError
from resolver import admin_tasks
from resolver.auth import Identity
from resolver.config import NodeConfig
from resolver.handle_client import resolve_tcp, resolve_udp
from resolver.node import Node
from resolver.server import RunningNode

pytest.importorskip("asyncpg")

HOST = "127.0.0.1"
AUTH = {"Authorization": aiohttp.encode_basic_auth(ADMIN.replace(":", "%3A", 1), SECRET)}


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    await pg_service.require_postgres()
    url = pg_service.url_for(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.init(url, PREFIX, SECRET, False, master_key=str(tmp_path / "master.key"))
    yield url
    await pg_service.drop_schema(tmp_path)


async def start(url: str, key_file: Path) -> RunningNode:
    running = RunningNode(NodeConfig(store=url, port=0, handle_port=0, master_key=str(key_file)))
    await running.start()
    return running


async def test_two_nodes_on_one_database_rest_and_binary(pg_url: str, tmp_path: Path):
    key_file = tmp_path / "master.key"
    a, b = await start(pg_url, key_file), await start(pg_url, key_file)
    try:
        async with aiohttp.ClientSession() as http:
            handle = f"{PREFIX}/pg-1"
            body = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/pg"}]}
            r = await http.put(f"http://{HOST}:{a.port}/api/handles/{handle}",
                               data=orjson.dumps(body),
                               headers={"Content-Type": "application/json", **AUTH})
            assert r.status == 201, await r.text()
            for node in (a, b):  # written through a, read by both
                r = await http.get(f"http://{HOST}:{node.port}/api/handles/{handle}")
                assert r.status == 200
                assert (await r.json())["values"][0]["data"]["value"] == "https://example.com/pg"
                assert node.handle_port
                for resolve in (resolve_udp, resolve_tcp):
                    result = await resolve(HOST, node.handle_port, handle.upper())
                    assert result.rc == RC.SUCCESS
                    assert [(v.index, v.data) for v in result.values] == [
                        (1, b"https://example.com/pg")]
            # Binary challenge-response on b: the admin secret was sealed by
            # `idnode init` under the shared master key, which b unseals.
            assert b.handle_port
            add = Message(OpCode.ADD_VALUE, 0, FLAG_RECU,
                          ValuesBody(handle, (HandleValue(2, "EMAIL", b"a@b.c"),)))
            reply = await admin_exchange(b.handle_port, add, Identity.parse(ADMIN),
                                         SECRET.encode())
            assert reply.response_code == RC.SUCCESS
            r = await http.get(f"http://{HOST}:{b.port}/api/handles/{handle}",
                               params={"type": "EMAIL"})
            assert (await r.json())["values"][0]["data"]["value"] == "a@b.c"
            # a's store sees it at once (a's cache may serve the old record
            # until its TTL: coherence between nodes' caches is not the store's job).
            record = await a.node.store.get(a.node.parse(handle).key)
            assert record is not None and record[-1].data == b"a@b.c"
    finally:
        await a.stop()
        await b.stop()


async def test_url_store_without_a_master_key_is_a_clear_startup_error(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.delenv("IDNODE_MASTER_KEY", raising=False)
    with pytest.raises(MasterKeyError, match="--master-key FILE or"):
        Node(NodeConfig(store=pg_url))
    with pytest.raises(MasterKeyError, match="does not exist"):
        Node(NodeConfig(store=pg_url, master_key=str(tmp_path / "absent.key")))
