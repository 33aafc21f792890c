"""Authorisation as a property: over random actors, targets, operations and APIs
(Handle REST, REST batch, SNMS, binary), nobody writes, deletes or reads
non-public values beyond what HS_ADMIN and SNMS roles grant.

The node starts once (in a thread with its own event loop) with two prefixes
and a few records; before every example the store is put back as it was.
The oracle is deliberately conservative: it names the cases that MUST be
refused; for those, the reply must be a refusal and the store unchanged, and
a read must not show a non-public value.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codes import RC
from protocol.handle_envelope import FLAG_RECU, Envelope
from protocol.handle_wire import (
    ChallengeAnswer,
    ChallengeBody,
    HandleBody,
    IndexesBody,
    Message,
    OpCode,
    ResolutionRequest,
    ValuesBody,
    answer_secret_key_challenge,
    encode_packet,
)
from protocol.snms import sha256_hex
from protocol.values import (
    HS_ADMIN,
    HS_SECKEY,
    SECRET_PERMS,
    AdminRecord,
    HandleValue,
    admin_perms_from_text,
    encode_admin,
)
from registry.store import Account
from resolver import admin_tasks
from resolver.config import NodeConfig
from resolver.handle_client import exchange_tcp
from resolver.server import RunningNode

A, B = "88.100.1", "88.200.1"
SECRETS = {f"300:{A}/ADMIN": "secret-a", f"300:{B}/ADMIN": "secret-b", f"300:{A}/USER": "secret-u"}
SNMS_PASSWORD = "snms-pass"
ALL_PERMS = "111111111111"
PRIVATE_INDEX = 5

T = TypeVar("T")
TEMPLATE_VERSION = "1.0"
TEMPLATE = {
    "version": TEMPLATE_VERSION, "industryCategory": "C", "industrySpecific": "34",
    "industryTrade": "344", "industrySubclass": "3441", "type": 1, "description": "test",
    "items": [{"name": "name", "idType": "name", "idIndex": 2000, "required": True,
               "metadata": {"type": "string", "minLength": 1, "maxLength": 20}}],
}


def _admin_value(identity: str) -> HandleValue:
    index, _, handle = identity.partition(":")
    return HandleValue(100, HS_ADMIN, encode_admin(
        AdminRecord(handle, int(index), admin_perms_from_text(ALL_PERMS))))


def _record(admin_identity: str) -> tuple[HandleValue, ...]:
    return (
        HandleValue(1, "URL", b"https://example.com/p"),
        HandleValue(PRIVATE_INDEX, "internal", b"private", permissions=SECRET_PERMS),
        _admin_value(admin_identity),
    )


# Handles present before every example, and who administers each (its HS_ADMIN).
OWNERS = {
    f"{A}/PLAIN": f"300:{A}/ADMIN",
    f"{A}/OWNED": f"300:{A}/USER",  # administered by a user, not the prefix admin
    f"{B}/PLAIN": f"300:{B}/ADMIN",
}
TARGETS = [*OWNERS, f"{A}/NEW", f"{B}/NEW"]

HANDLE_ACTORS = ["anonymous", f"300:{A}/ADMIN", f"300:{B}/ADMIN", f"300:{A}/USER", "wrong-secret"]
SNMS_ACCOUNTS = {"ent-a": (A, "enterprise"), "ent-b": (B, "enterprise"),
                 "read-a": (A, "readonly")}
WRITES = ["create", "replace", "add_value", "remove_value", "delete"]


@dataclass(frozen=True)
class Operation:
    api: str  # rest | batch | snms | binary
    actor: str
    op: str  # read or one of WRITES
    target: str


def _operations() -> st.SearchStrategy[Operation]:
    handle_ops = st.builds(
        Operation, st.sampled_from(["rest", "binary"]), st.sampled_from(HANDLE_ACTORS),
        st.sampled_from(["read", *WRITES]), st.sampled_from(TARGETS),
    )
    batch_ops = st.builds(
        Operation, st.just("batch"), st.sampled_from(HANDLE_ACTORS),
        st.sampled_from(["create", "replace"]), st.sampled_from(TARGETS),
    )
    snms_ops = st.builds(
        Operation, st.just("snms"), st.sampled_from(list(SNMS_ACCOUNTS)),
        st.sampled_from(["read", "create", "replace", "delete"]), st.sampled_from(TARGETS),
    )
    return st.one_of(handle_ops, batch_ops, snms_ops)


def _prefix(handle: str) -> str:
    return handle.partition("/")[0]


def must_be_refused(o: Operation) -> bool:
    """Writes nobody granted this actor (the conservative oracle)."""
    if o.op == "read":
        return False
    if o.api == "snms":
        prefix, role = SNMS_ACCOUNTS[o.actor]
        return role != "enterprise" or _prefix(o.target) != prefix
    if o.actor in ("anonymous", "wrong-secret"):
        return True
    owner = OWNERS.get(o.target)
    if owner is None:  # a new handle: only its prefix's admin may create it
        return o.actor != f"300:{_prefix(o.target)}/ADMIN"
    return o.actor != owner  # an existing handle: only the admins its HS_ADMIN names


def may_see_private(o: Operation) -> bool:
    if o.api == "snms":
        prefix, _ = SNMS_ACCOUNTS[o.actor]
        return _prefix(o.target) == prefix
    return OWNERS.get(o.target) == o.actor


class NodeThread:
    """A node on its own event loop in a thread, driven from the test's thread."""

    def __init__(self, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store_path = directory / "node.db"
        self.baseline: dict[str, tuple[HandleValue, ...]] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def start(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            await admin_tasks.init(str(self.store_path), A, SECRETS[f"300:{A}/ADMIN"], False)
            await admin_tasks.init(str(self.store_path), B, SECRETS[f"300:{B}/ADMIN"], False)
        self.running = RunningNode(NodeConfig(store=str(self.store_path), port=0, handle_port=0))
        await self.running.start()
        node = self.running.node
        user_secret = node.sealer.seal(SECRETS[f"300:{A}/USER"].encode())
        await node.store.put(f"{A}/USER", (HandleValue(300, HS_SECKEY, user_secret,
                                                       permissions=SECRET_PERMS),
                                           _admin_value(f"300:{A}/ADMIN")))
        for handle, owner in OWNERS.items():
            await node.store.put(handle.upper(), _record(owner))
        for username, (prefix, role) in SNMS_ACCOUNTS.items():
            sealed = node.sealer.seal(sha256_hex(SNMS_PASSWORD).encode())
            await node.store.put_account(Account(username, prefix, role, sealed))
        self.session = aiohttp.ClientSession()
        self.url = f"http://127.0.0.1:{self.running.port}"
        self.tokens = {}
        for username in SNMS_ACCOUNTS:
            async with self.session.post(f"{self.url}/identity/token", json={
                    "username": username, "password": SNMS_PASSWORD}) as r:
                self.tokens[username] = (await r.json())["data"]["token"]
        for username in ("ent-a", "ent-b"):  # SNMS writes name a template of their prefix
            template = {**TEMPLATE, "prefix": SNMS_ACCOUNTS[username][0]}
            async with self.session.post(f"{self.url}/snms/api/v5/template", json=template,
                                         headers={"Authorization": self.tokens[username]}) as r:
                assert (await r.json())["status"] == 1
        # Verify every identity once, so the throttle knows their address.
        for identity in SECRETS:
            async with self.session.get(f"{self.url}/api/handles/{A}/PLAIN",
                                        headers=self.basic(identity)) as r:
                assert r.status == 200
        self.baseline = await self.snapshot()

    async def stop(self) -> None:
        await self.session.close()
        await self.running.stop()

    def basic(self, actor: str) -> dict[str, str]:
        if actor == "anonymous":
            return {}
        identity, secret = (f"300:{A}/ADMIN", "not-the-secret") if actor == "wrong-secret" else (
            actor, SECRETS[actor])
        login = identity.replace(":", "%3A", 1)
        return {"Authorization": aiohttp.encode_basic_auth(login, secret)}

    async def snapshot(self) -> dict[str, tuple[HandleValue, ...]]:
        return {key: record async for key, record in self.running.node.store.iter_records()}

    async def restore(self) -> None:
        store = self.running.node.store
        for key in (await self.snapshot()).keys() - self.baseline.keys():
            await store.delete(key)
        for key, record in self.baseline.items():
            await store.put(key, record)
        self.running.node.cache.clear()
        # Each example starts unthrottled: wrong-secret actors of earlier examples
        # would otherwise block binary challenge answers from this address.
        self.running.node.authenticator.throttle.forget_failures()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    running = NodeThread(tmp_path_factory.mktemp("authz"))
    running.run(running.start())
    try:
        yield running
    finally:
        running.run(running.stop())
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)


def _new_values(o: Operation) -> list[dict[str, Any]]:
    return [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x/new"}},
            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                "handle": f"{_prefix(o.target)}/ADMIN", "index": 300,
                "permissions": ALL_PERMS}}}]


async def rest(n: NodeThread, o: Operation) -> tuple[bool, list[dict[str, Any]]]:
    """(refused?, values shown) for a REST or batch operation."""
    url = f"{n.url}/api/handles/{o.target}"
    headers = {"Content-Type": "application/json", **n.basic(o.actor)}
    body = orjson.dumps({"values": _new_values(o)})
    if o.api == "batch":
        records = [{"handle": o.target, "values": _new_values(o)}]
        params = {"overwrite": "false"} if o.op == "create" else {}
        async with n.session.post(f"{n.url}/api/handles", data=orjson.dumps(records),
                                  headers=headers, params=params) as r:
            reply = await r.json(content_type=None)
            if r.status >= 400:
                return True, []
            items = reply.get("results", reply) if isinstance(reply, dict) else reply
            return all(item.get("responseCode") != 1 for item in items), []
    if o.op == "read":
        async with n.session.get(url, headers=headers) as r:
            reply = await r.json(content_type=None)
            return r.status >= 400, reply.get("values", []) if isinstance(reply, dict) else []
    request = {
        "create": ("PUT", {"overwrite": "false"}, body),
        "replace": ("PUT", {}, body),
        "add_value": ("PUT", {"index": "7"}, orjson.dumps({"values": [
            {"index": 7, "type": "EMAIL", "data": "x@example.com"}]})),
        "remove_value": ("DELETE", {"index": "1"}, None),
        "delete": ("DELETE", {}, None),
    }[o.op]
    method, params, data = request
    async with n.session.request(method, url, params=params, data=data, headers=headers) as r:
        await r.read()
        return r.status >= 300, []


async def snms(n: NodeThread, o: Operation) -> tuple[bool, list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {n.tokens[o.actor]}"}
    if o.op == "read":
        async with n.session.get(f"{n.url}/identityv2/data/detail", params={"handle": o.target},
                                 headers=headers) as r:
            reply = await r.json(content_type=None)
            data = reply.get("data") or {}
            return reply["status"] != 1, data.get("value", []) if isinstance(data, dict) else []
    if o.op == "delete":
        method, body = "DELETE", {"handle": o.target}
    else:
        method = "POST" if o.op == "create" else "PUT"
        body = {"handle": o.target, "templateVersion": TEMPLATE_VERSION, "value": [
            {"index": 2000, "type": "name", "data": {"format": "string", "value": "x"}}]}
    async with n.session.request(method, f"{n.url}/identityv2/data", json=body,
                                 headers=headers) as r:
        reply = await r.json(content_type=None)
        return reply["status"] != 1, []


async def binary(n: NodeThread, o: Operation) -> tuple[bool, list[dict[str, Any]]]:
    port = n.running.handle_port
    assert port
    url = HandleValue(1, "URL", b"https://x/b")
    body = {
        "read": (OpCode.RESOLUTION, ResolutionRequest(o.target, (), ())),
        "create": (OpCode.CREATE_HANDLE, ValuesBody(o.target, (url, _admin_value(
            f"300:{_prefix(o.target)}/ADMIN")))),
        "replace": (OpCode.MODIFY_VALUE, ValuesBody(o.target, (url,))),
        "add_value": (OpCode.ADD_VALUE, ValuesBody(o.target, (HandleValue(7, "EMAIL", b"x"),))),
        "remove_value": (OpCode.REMOVE_VALUE, IndexesBody(o.target, (1,))),
        "delete": (OpCode.DELETE_HANDLE, HandleBody(o.target)),
    }[o.op]
    message = Message(body[0], 0, FLAG_RECU, body[1])
    env, reply = await exchange_tcp("127.0.0.1", port, encode_packet(Envelope(request_id=1),
                                                                     message))
    if reply.response_code == RC.AUTHENTICATION_NEEDED and o.actor != "anonymous":
        assert isinstance(reply.body, ChallengeBody)
        identity, secret = (f"300:{A}/ADMIN", "nope") if o.actor == "wrong-secret" else (
            o.actor, SECRETS[o.actor])
        index, _, handle = identity.partition(":")
        signed = answer_secret_key_challenge(secret.encode(), reply.body.nonce,
                                             reply.request_digest.digest, scheme=0x22)
        answer = Message(OpCode.CHALLENGE_RESPONSE, 0, FLAG_RECU,
                         ChallengeAnswer(HS_SECKEY, handle, int(index), signed))
        _, reply = await exchange_tcp("127.0.0.1", port, encode_packet(
            Envelope(session_id=env.session_id, request_id=2), answer))
    refused = reply.response_code != RC.SUCCESS
    values = getattr(reply.body, "values", ()) if not refused else ()
    return refused, [{"index": v.index} for v in values]


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(o=_operations())
def test_nobody_acts_beyond_their_grants(node: NodeThread, o: Operation) -> None:
    node.run(node.restore())
    before = node.run(node.snapshot())
    call = {"rest": rest, "batch": rest, "snms": snms, "binary": binary}[o.api]
    refused, shown = node.run(call(node, o))
    after = node.run(node.snapshot())
    if must_be_refused(o):
        assert refused, f"{o} was not refused"
        assert after == before, f"{o} changed the store"
    if not may_see_private(o):
        assert all(v.get("index") != PRIVATE_INDEX for v in shown), f"{o} showed a private value"


GRANTED = [
    Operation("rest", f"300:{A}/ADMIN", "create", f"{A}/NEW"),
    Operation("rest", f"300:{A}/USER", "delete", f"{A}/OWNED"),
    Operation("batch", f"300:{B}/ADMIN", "create", f"{B}/NEW"),
    Operation("snms", "ent-a", "replace", f"{A}/OWNED"),
    Operation("snms", "ent-b", "create", f"{B}/NEW"),
    Operation("binary", f"300:{A}/ADMIN", "add_value", f"{A}/PLAIN"),
    Operation("binary", f"300:{A}/USER", "remove_value", f"{A}/OWNED"),
]


@pytest.mark.parametrize("o", GRANTED, ids=lambda o: f"{o.api}-{o.op}-{o.target}")
def test_granted_operations_do_happen(node: NodeThread, o: Operation) -> None:
    """The harness is not vacuous: what the grants allow goes through and changes the store."""
    assert not must_be_refused(o)
    node.run(node.restore())
    before = node.run(node.snapshot())
    call = {"rest": rest, "batch": rest, "snms": snms, "binary": binary}[o.api]
    refused, _ = node.run(call(node, o))
    assert not refused and node.run(node.snapshot()) != before


@pytest.mark.parametrize("api", ["rest", "binary"])
def test_owners_read_their_private_values(node: NodeThread, api: str) -> None:
    node.run(node.restore())
    call = {"rest": rest, "binary": binary}[api]
    _, shown = node.run(call(node, Operation(api, f"300:{A}/USER", "read", f"{A}/OWNED")))
    assert PRIVATE_INDEX in [v.get("index") for v in shown]
