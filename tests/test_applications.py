"""Enterprise prefix applications on a live secondary node: apply, decide, collect, use."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from live import LiveNode, init_store

from registry.store import Account
from resolver import admin_tasks
from resolver.cli import main as cli_main
from resolver.config import NodeConfig
from resolver.server import RunningNode

PARENT = "88.118"
PASSWORD = "pw-123456"


@contextlib.asynccontextmanager
async def started(tmp_path: Path, parent: str | None = PARENT) -> AsyncIterator[LiveNode]:
    store_path = tmp_path / "node.db"
    await init_store(store_path)
    running = RunningNode(NodeConfig(store=str(store_path), port=0, handle_port=None,
                                     enterprise_parent=parent))
    await running.start()
    session = aiohttp.ClientSession()
    try:
        yield LiveNode(running, f"http://127.0.0.1:{running.port}", session, store_path)
    finally:
        await session.close()
        await running.stop()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    async with started(tmp_path) as n:
        await add_account(n, "root", "node-admin")
        for username, role in (("ent1", "applicant"), ("ent2", "applicant"),
                               ("audit1", "auditor")):
            status, body = await call(n, "POST", "/api/admin/accounts",
                                      {"username": username, "role": role, "password": PASSWORD},
                                      token=await login(n, "root"))
            assert status == 201, body
        yield n


async def add_account(n: LiveNode, username: str, role: str, prefix: str = "") -> None:
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest().encode()
    sealed = n.node.sealer.seal(digest, iterations=1000)
    await n.node.store.put_account(Account(username, prefix, role, sealed))


async def login(n: LiveNode, username: str) -> str:
    r = await n.session.post(n.url + "/identity/token",
                             json={"username": username, "password": PASSWORD})
    body = await r.json(content_type=None)
    assert body["status"] == 1, body
    return str(body["data"]["token"])


async def call(n: LiveNode, method: str, path: str, body: object = None, *,
               token: str | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    r = await n.session.request(method, n.url + path, data=data, headers=headers)
    return r.status, await r.json(content_type=None)


async def apply(n: LiveNode, username: str = "ent1", **fields: object) -> dict:
    status, body = await call(n, "POST", "/api/admin/applications",
                              {"enterprise": "Acme Machines", **fields},
                              token=await login(n, username))
    assert status == 201, body
    return body["application"]  # type: ignore[no-any-return]


async def test_apply_approve_collect_then_register_and_resolve(node: LiveNode) -> None:
    app = await apply(node, detail="contact: ops@acme.example")
    assert (app["state"], app["applicant"], app["prefix"]) == ("pending", "ent1", None)
    auditor = await login(node, "audit1")
    status, body = await call(node, "GET", "/api/admin/applications?state=pending",
                              token=auditor)
    assert status == 200 and [a["id"] for a in body["applications"]] == [app["id"]]

    status, body = await call(node, "POST", f"/api/admin/applications/{app['id']}/approve",
                              {"reason": "documents complete"}, token=auditor)
    assert status == 200, body
    done = body["application"]
    assert done["state"] == "approved" and done["prefix"] == f"{PARENT}.1"
    assert done["decidedBy"] == "audit1" and done["reason"] == "documents complete"
    assert done["decidedAt"] and done["adminIdentity"] == f"300:{PARENT}.1/ADMIN"

    # The prefix resolves at once: its 0.NA record names the new admin.
    r = await node.session.get(node.handle_url(f"0.NA/{PARENT}.1"))
    record = await r.json()
    assert r.status == 200, record
    assert {v["type"] for v in record["values"]} == {"HS_ADMIN", "HS_VLIST"}

    # The enterprise collects its admin credentials, exactly once.
    token = await login(node, "ent1")
    path = f"/api/admin/applications/{app['id']}/credentials"
    status, creds = await call(node, "POST", path, token=token)
    assert status == 200 and creds["identity"] == f"300:{PARENT}.1/ADMIN", creds
    status, again = await call(node, "POST", path, token=token)
    assert status == 409 and "collected already" in again["message"]

    # ... and registers under its prefix over the Handle REST API.
    headers = {**node.auth(creds["identity"], creds["secret"]),
               "Content-Type": "application/json"}
    values = {"values": [{"index": 1, "type": "URL",
                          "data": {"format": "string", "value": "https://acme.example"}}]}
    r = await node.session.put(node.handle_url(f"{PARENT}.1/part-7"), json=values,
                               headers=headers)
    assert r.status == 201, await r.text()
    r = await node.session.get(node.handle_url(f"{PARENT}.1/part-7"))
    assert r.status == 200 and (await r.json())["values"][0]["data"]["value"] == \
        "https://acme.example"
    # Not under someone else's prefix.
    r = await node.session.put(node.handle_url("88.100.1/stolen"), json=values, headers=headers)
    assert r.status in (400, 401, 403), await r.text()

    # The account is now the prefix's enterprise admin in the SNMS API too.
    account = await node.node.store.get_account("ent1")
    assert account is not None and (account.role, account.prefix) == ("enterprise", f"{PARENT}.1")
    # An enterprise admin decides nothing, not even about another applicant.
    other = await apply(node, "ent2")
    status, body = await call(node, "POST", f"/api/admin/applications/{other['id']}/approve",
                              token=token)
    assert status == 403 and body["responseCode"] == 401
    status, _ = await call(node, "POST", "/api/admin/applications", {"enterprise": "Again"},
                           token=token)
    assert status == 403  # nor applies for a second prefix


async def test_replays_and_late_decisions_are_refused(node: LiveNode) -> None:
    app = await apply(node)
    auditor = await login(node, "audit1")
    base = f"/api/admin/applications/{app['id']}"
    assert (await call(node, "POST", base + "/approve", token=auditor))[0] == 200
    before = await node.node.store.homed_prefixes()
    status, body = await call(node, "POST", base + "/approve", token=auditor)
    assert status == 409 and "approved already" in body["message"]
    status, body = await call(node, "POST", base + "/reject", {"reason": "changed my mind"},
                              token=auditor)
    assert status == 409 and body["responseCode"] == 202
    assert await node.node.store.homed_prefixes() == before
    status, body = await call(node, "GET", base, token=auditor)
    assert body["application"]["state"] == "approved"


async def test_reject_needs_a_reason_and_changes_no_prefix_data(node: LiveNode) -> None:
    store = node.node.store
    homed = await store.homed_prefixes()
    count = await store.count_handles()
    app = await apply(node, prefix="5")
    auditor = await login(node, "audit1")
    base = f"/api/admin/applications/{app['id']}"
    status, body = await call(node, "POST", base + "/reject", {"reason": "  "}, token=auditor)
    assert status == 400 and "reason" in body["message"]
    status, body = await call(node, "POST", base + "/reject", {"reason": "licence missing"},
                              token=auditor)
    assert status == 200
    assert body["application"]["state"] == "rejected"
    assert body["application"]["reason"] == "licence missing"
    assert body["application"]["decidedBy"] == "audit1"
    assert await store.homed_prefixes() == homed and await store.count_handles() == count
    assert (await store.get_account("ent1")).role == "applicant"  # type: ignore[union-attr]
    status, body = await call(node, "POST", base + "/credentials",
                              token=await login(node, "ent1"))
    assert status == 409
    # The applicant sees the reason, and may apply again.
    status, body = await call(node, "GET", "/api/admin/applications",
                              token=await login(node, "ent1"))
    assert [a["reason"] for a in body["applications"]] == ["licence missing"]
    await apply(node)


async def test_roles_are_enforced(node: LiveNode) -> None:
    auditor = await login(node, "audit1")
    applicant = await login(node, "ent1")
    status, body = await call(node, "POST", "/api/admin/applications",
                              {"enterprise": "Audit Co"}, token=auditor)
    assert status == 403 and body["responseCode"] == 401
    app = await apply(node)
    base = f"/api/admin/applications/{app['id']}"
    for who in (applicant, await login(node, "root")):
        status, body = await call(node, "POST", base + "/approve", token=who)
        assert status == 403, body
        status, _ = await call(node, "POST", base + "/reject", {"reason": "x"}, token=who)
        assert status == 403
    # Another applicant sees neither the application nor the list of all.
    other = await login(node, "ent2")
    assert (await call(node, "GET", base, token=other))[0] == 403
    status, body = await call(node, "GET", "/api/admin/applications", token=other)
    assert status == 200 and body["applications"] == []
    assert (await call(node, "GET", "/api/admin/applications?applicant=ent1",
                       token=other))[0] == 403
    # An applicant creates no accounts; one pending application at a time.
    status, _ = await call(node, "POST", "/api/admin/accounts",
                           {"username": "x", "role": "auditor"}, token=applicant)
    assert status == 403
    status, body = await call(node, "POST", "/api/admin/applications",
                              {"enterprise": "Acme"}, token=applicant)
    assert status == 409 and "pending already" in body["message"]
    # An applicant has no prefix: the SNMS data API refuses it.
    r = await node.session.get(node.url + "/identityv2/data/detail?handle=88.100.1/x",
                               headers={"Authorization": f"Bearer {applicant}"})
    assert (await r.json(content_type=None))["status"] != 1
    status, body = await call(node, "GET", base, token=auditor)
    assert body["application"]["state"] == "pending"


async def test_requested_prefix_is_granted_if_free_else_the_next_free(node: LiveNode) -> None:
    auditor = await login(node, "audit1")
    first = await apply(node, "ent1", prefix=f"{PARENT}.7")
    second = await apply(node, "ent2", prefix="7")
    _, body = await call(node, "POST", f"/api/admin/applications/{first['id']}/approve",
                         token=auditor)
    assert body["application"]["prefix"] == f"{PARENT}.7"
    _, body = await call(node, "POST", f"/api/admin/applications/{second['id']}/approve",
                         token=auditor)
    assert body["application"]["prefix"] == f"{PARENT}.1"


async def test_bad_requests_get_handle_style_errors(node: LiveNode) -> None:
    applicant = await login(node, "ent1")
    status, body = await call(node, "GET", "/api/admin/applications")
    assert status == 401 and body["responseCode"] == 402
    status, body = await call(node, "GET", "/api/admin/applications", token="forged.x.y")
    assert status == 401
    status, body = await call(node, "POST", "/api/admin/applications", raw=b"{nope",
                              token=applicant)
    assert status == 400 and body["responseCode"] == 4
    for bad in ({"enterprise": ""}, {"enterprise": 7}, {"enterprise": "A", "prefix": "88.119.2"},
                {"enterprise": "A", "prefix": "0"}):
        status, body = await call(node, "POST", "/api/admin/applications", bad, token=applicant)
        assert status == 400, (bad, body)
    # A state filter is one of the documented three; "state=" is none of them
    # (found by the long schemathesis run, 2026-12-06).
    for state in ("", "done", "PENDING"):
        status, body = await call(node, "GET", f"/api/admin/applications?state={state}",
                                  token=applicant)
        assert status == 400 and body["responseCode"] == 202, (state, body)  # invalid value
    assert (await call(node, "GET", "/api/admin/applications/99", token=applicant))[0] == 404
    assert (await call(node, "GET", "/api/admin/applications/x1", token=applicant))[0] == 400
    # A known path, a method it does not take: 405 (with Allow), as elsewhere in /api.
    assert (await call(node, "DELETE", "/api/admin/applications", token=applicant))[0] == 405
    assert (await call(node, "GET", "/api/admin/nothing", token=applicant))[0] == 404
    assert await node.node.store.list_applications() == []


async def test_a_node_without_a_parent_prefix_takes_no_applications(tmp_path: Path) -> None:
    async with started(tmp_path, parent=None) as n:
        await add_account(n, "ent1", "applicant")
        status, body = await call(n, "POST", "/api/admin/applications", {"enterprise": "A"},
                                  token=await login(n, "ent1"))
        assert status == 501 and "--enterprise-parent" in body["message"]


async def test_operator_cli_lists_approves_and_rejects(tmp_path: Path) -> None:
    async with started(tmp_path) as n:
        await add_account(n, "ent1", "applicant")
        await add_account(n, "ent2", "applicant")
        first, second = await apply(n, "ent1"), await apply(n, "ent2")
        store = str(n.store_path)
    out = io.StringIO()

    def run(*argv: str) -> int:
        return cli_main([*argv, "--store", store])

    with contextlib.redirect_stdout(out):  # the CLI runs its own event loop: a thread
        assert await asyncio.to_thread(run, "application", "approve", str(first["id"]),
                                       "--parent", PARENT, "--by", "ops") == 0
        assert await asyncio.to_thread(run, "application", "reject", str(second["id"]),
                                       "--reason", "dup") == 0
        assert await asyncio.to_thread(run, "application", "approve", str(second["id"]),
                                       "--parent", PARENT) == 2
        assert await asyncio.to_thread(run, "application", "list", "--json") == 0
    listed = orjson.loads(out.getvalue()[out.getvalue().index("[\n"):])
    assert [(a["state"], a["prefix"], a["decidedBy"]) for a in listed] == [
        ("approved", f"{PARENT}.1", "ops"), ("rejected", None, "operator")]
    with contextlib.redirect_stdout(io.StringIO()):
        async with admin_tasks.opened(store) as s:
            assert f"{PARENT}.1" in await s.homed_prefixes()


async def test_account_add_for_prefixless_roles(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.account_add(store, "ent9", None, "pw", "applicant")
        with pytest.raises(admin_tasks.CommandError, match="has no prefix"):
            await admin_tasks.account_add(store, "aud", "88.118", "pw", "auditor")
        with pytest.raises(admin_tasks.CommandError, match="needs --prefix"):
            await admin_tasks.account_add(store, "e", None, "pw", "enterprise")
    async with admin_tasks.opened(store) as s:
        account = await s.get_account("ent9")
    assert account is not None and (account.role, account.prefix) == ("applicant", "")


async def test_forged_tokens_are_throttled_per_address(node: LiveNode) -> None:
    statuses = [(await call(node, "GET", "/api/admin/applications", token=f"forged.{i}.x"))[0]
                for i in range(8)]
    assert statuses[0] == 401 and statuses[-1] == 429
