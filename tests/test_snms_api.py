"""The SNMS v5 management API against a live node (shared/reference/snms-v5.md)."""

from __future__ import annotations

import datetime
import hashlib
import io
from contextlib import redirect_stdout
from pathlib import Path

import aiohttp
import orjson
import pytest
from live import OTHER_PREFIX, PREFIX, LiveNode, init_store

from protocol import snms, templates
from protocol.snms import BusinessError, SnmsValue
from registry.sqlite_store import SQLiteStore
from registry.store import Account
from resolver import admin_tasks
from resolver.config import NodeConfig
from resolver.quotas import PrefixQuotaExceeded, Quota, parse_quota
from resolver.server import RunningNode
from resolver.snms_api import v1_days
from resolver.snms_tokens import InvalidToken, TokenClaims, bearer, issue, token_key, verify

USER, PASSWORD = "app1", "pass-123456"
VERSION = "1.0"
TEMPLATE = {
    "prefix": PREFIX, "version": VERSION, "industryCategory": "A", "industrySpecific": "01",
    "industryTrade": "011", "industrySubclass": "0111", "type": 1, "description": "模板1.0",
    "items": [
        {"name": "名称", "idType": "name", "idIndex": "2000", "required": True,
         "metadata": {"type": "string", "minLength": 1, "maxLength": 20}},
        {"name": "网址", "idType": "URL", "idIndex": 2001, "required": False,
         "metadata": {"type": "string", "minLength": 0, "maxLength": 100}},
    ],
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def value(index: int, type_: str, text: str) -> dict:
    return {"index": index, "type": type_, "auth": "", "data": {"format": "string", "value": text}}


def record(handle: str, name: str = "小型机械01", version: str = VERSION, **extra) -> dict:
    return {"handle": handle, "templateVersion": version,
            "value": [value(2000, "name", name), value(2001, "URL", "https://x.example")],
            **extra}


async def add_account(n: LiveNode, username: str = USER, prefix: str = PREFIX,
                      role: str = "enterprise", generation: int = 0) -> None:
    sealed = n.node.sealer.seal(sha(PASSWORD).encode(), iterations=1000)
    await n.node.store.put_account(Account(username, prefix, role, sealed, generation))


async def call(n: LiveNode, method: str, path: str, body=None, *, token=None, raw=None,
               params=None, scheme="Bearer "):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = scheme + token
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    r = await n.session.request(method, n.url + path, data=data, headers=headers, params=params)
    return r.status, await r.json(content_type=None)


async def login(n: LiveNode, username: str = USER) -> str:
    status, body = await call(n, "POST", "/identity/token",
                              {"username": username, "password": PASSWORD})
    assert status == 200 and body["status"] == 1, body
    return body["data"]["token"]


@pytest.fixture
async def ready(live_node: LiveNode) -> tuple[LiveNode, str]:
    """A node with account app1 (prefix 88.100.1), a token, and template 1.0."""
    await add_account(live_node)
    token = await login(live_node)
    _, body = await call(live_node, "POST", "/snms/api/v5/template", TEMPLATE, token=token)
    assert body == {"message": "success", "status": 1, "data": True}
    return live_node, token


async def stored(n: LiveNode, handle: str):
    return await n.node.store.get(n.node.parse(handle).key)


# -- tokens ------------------------------------------------------------------------


async def test_token_and_wrong_password(live_node: LiveNode):
    await add_account(live_node)
    token = await login(live_node)
    assert token.count(".") == 2
    status, body = await call(live_node, "POST", "/identity/token",
                              {"username": USER, "password": "nope"})
    assert status == 200
    assert body == {"message": "用户名/密码错误！", "status": -2, "data": None}
    _, body = await call(live_node, "POST", "/identity/token",
                         {"username": "ghost", "password": PASSWORD})
    assert body["status"] == -2


async def test_token_v1_accepts_china_and_utc_dates(live_node: LiveNode):
    await add_account(live_node)
    today = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).date()
    for day in (today, today - datetime.timedelta(days=1)):
        password = sha(sha(PASSWORD) + day.isoformat())
        _, body = await call(live_node, "POST", "/identity/token/v1",
                             {"username": USER, "password": password})
        assert body["status"] == 1, body
    stale = sha(sha(PASSWORD) + (today - datetime.timedelta(days=3)).isoformat())
    _, body = await call(live_node, "POST", "/identity/token/v1",
                         {"username": USER, "password": stale})
    assert body == {"message": "用户名/密码错误！", "status": -2, "data": None}


def test_v1_formula_matches_the_docs_example():
    # The docs label it sha256(sha256('12345') + '2019-08-15'); it is '123456'.
    expected = "58e2c92c46485fdbc35fdcd0814d6c0f000cad5aa156848ca5edaf29406b7661"
    assert snms.v1_password(snms.sha256_hex("123456"), "2019-08-15") == expected


def test_v1_days_cover_both_zones():
    # 2024-01-01 20:00 UTC is 2024-01-02 04:00 in UTC+8.
    now = datetime.datetime(2024, 1, 1, 20, tzinfo=datetime.UTC).timestamp()
    assert v1_days(now) == {"2023-12-31", "2024-01-01", "2024-01-02"}


def test_token_codec():
    key = token_key(b"k" * 32)
    claims = TokenClaims("u", "88.100.1", "enterprise", 3, 1000, 2000)
    token = issue(key, claims)
    assert verify(key, token, 1999) == claims
    with pytest.raises(InvalidToken, match="expired"):
        verify(key, token, 2000)
    with pytest.raises(InvalidToken, match="signature"):
        verify(token_key(b"x" * 32), token, 1500)
    head, payload, sig = token.split(".")
    with pytest.raises(InvalidToken):
        verify(key, f"{head}.{payload[:-2]}.{sig}", 1500)
    assert bearer(f"Bearer {token}") == token and bearer(token) == token
    assert bearer(None) is None and bearer("Basic abc") is None


async def test_bad_tokens_are_not_logged_in(ready):
    n, token = ready
    body = record(f"{PREFIX}/T1")
    for bad in (None, "garbage", token[:-3] + "AAA"):
        status, reply = await call(n, "POST", "/identityv2/data", body, token=bad)
        assert status == 200 and reply["status"] == -1 and reply["data"] is None
    # expired: signed correctly, in the past
    old = issue(n.node.token_key, TokenClaims(USER, PREFIX, "enterprise", 0, 1, 2))
    _, reply = await call(n, "POST", "/identityv2/data", body, token=old)
    assert reply["status"] == -1
    assert await stored(n, f"{PREFIX}/T1") is None
    # the bare token (no "Bearer ") is accepted
    _, reply = await call(n, "POST", "/identityv2/data", body, token=token, scheme="")
    assert reply["status"] == 1


async def test_revoking_an_account_ends_its_tokens(ready):
    n, token = ready
    await add_account(n, generation=1)  # what `idnode account revoke` does
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=token,
                          params={"handle": f"{PREFIX}/X"})
    assert reply["status"] == -1
    fresh = await login(n)
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=fresh,
                          params={"handle": f"{PREFIX}/X"})
    assert reply == {"message": "没有找到标识", "status": -2, "data": None}


async def test_account_cli_creates_resets_and_revokes(tmp_path: Path):
    path = str(tmp_path / "s.db")
    out = io.StringIO()
    with redirect_stdout(out):
        await admin_tasks.account_add(path, "cli", "88.100.1", None, "enterprise")
    assert "Password: " in out.getvalue()
    with redirect_stdout(io.StringIO()):
        await admin_tasks.account_add(path, "cli", "88.100.1", "pw", "readonly")
        await admin_tasks.account_revoke(path, "cli")
    async with SQLiteStore(path) as store:
        account = await store.get_account("cli")
    assert account is not None
    assert (account.prefix, account.role, account.generation) == ("88.100.1", "readonly", 2)
    sealer = admin_tasks.sealer_for(path)
    assert sealer.unseal(account.secret_hash) == sha("pw").encode()
    with pytest.raises(admin_tasks.CommandError):
        await admin_tasks.account_add(path, "cli", "not a prefix/", "pw", "enterprise")


# -- identity data -----------------------------------------------------------------


async def test_create_resolves_over_rest_and_detail(ready):
    n, token = ready
    handle = f"{PREFIX}/xx002"
    status, reply = await call(n, "POST", "/identityv2/data", record(handle), token=token)
    assert (status, reply) == (200, {"message": "success", "status": 1, "data": True})
    r = await n.session.get(n.handle_url(handle))
    rest = await r.json()
    assert r.status == 200
    by_index = {v["index"]: v for v in rest["values"]}
    assert by_index[1001]["type"] == "TEMPLATE" and by_index[1001]["data"]["value"] == VERSION
    assert by_index[2000]["data"]["value"] == "小型机械01"
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=token,
                          params={"handle": handle})
    data = reply["data"]
    assert reply["status"] == 1
    assert (data["prefix"], data["handle"], data["templateVersion"]) == (PREFIX, handle, VERSION)
    assert [v["index"] for v in data["value"]] == [1001, 2000, 2001]
    assert data["value"][1] == value(2000, "name", "小型机械01")
    # A retried create reports "already exists" (clients treat it as success).
    _, reply = await call(n, "POST", "/identityv2/data", record(handle), token=token)
    assert reply == {"message": "标识已存在", "status": -2, "data": None}


async def test_update_replaces_and_delete(ready):
    n, token = ready
    handle = f"{PREFIX}/u1"
    _, reply = await call(n, "PUT", "/identityv2/data", record(handle), token=token)
    assert reply == {"message": "没有找到标识", "status": -2, "data": None}
    assert await stored(n, handle) is None
    await call(n, "POST", "/identityv2/data", record(handle), token=token)
    await n.session.get(n.handle_url(handle))  # cache it
    _, reply = await call(n, "PUT", "/identityv2/data", record(handle, name="new"), token=token)
    assert reply["status"] == 1
    rest = await (await n.session.get(n.handle_url(handle))).json()
    assert {v["index"]: v["data"]["value"] for v in rest["values"]}[2000] == "new"
    _, reply = await call(n, "DELETE", "/identityv2/data", {"handle": handle}, token=token)
    assert reply == {"message": "success", "status": 1, "data": True}
    assert (await n.session.get(n.handle_url(handle))).status == 404
    _, reply = await call(n, "DELETE", "/identityv2/data", {"handle": handle}, token=token)
    assert reply == {"message": "没有找到标识", "status": -2, "data": None}


async def test_detail_needs_the_handle_parameter(ready):
    n, token = ready
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=token)
    assert reply == {"message": "缺少必要的请求参数: handle", "status": -2, "data": None}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "请求体不是合法的JSON"),
        (orjson.dumps(record(f"{PREFIX}/bad", extra=1)), "未知参数: extra"),
        (orjson.dumps({**record(f"{PREFIX}/bad"), "value": [{**value(2000, "name", "a"),
                                                              "colour": 1}]}), "未知参数: colour"),
        (orjson.dumps({"handle": f"{PREFIX}/bad", "value": []}),
         "缺少必要的请求参数: templateVersion"),
        (orjson.dumps({**record(f"{PREFIX}/bad"), "value": [value(1001, "TEMPLATE", "x")]}),
         "非法操作，索引1001为系统保留索引"),
        (orjson.dumps({**record(f"{PREFIX}/bad"), "value": [value(1000, "name", "x")]}),
         "非法操作，索引1000在模板中不存在"),
        (orjson.dumps({**record(f"{PREFIX}/bad"), "value": [value(2000, "URL", "x")]}),
         "非法操作，索引2000的类型应为name"),
        (orjson.dumps(record(f"{PREFIX}/bad", name="x" * 21)), "属性name的长度应在1到20之间"),
        (orjson.dumps({**record(f"{PREFIX}/bad"), "value": [value(2001, "URL", "x")]}),
         "缺少必填属性: name"),
        (orjson.dumps(record(f"{PREFIX}/bad", version="9.9")), f"模板不存在: {PREFIX} 9.9"),
    ],
)
async def test_bad_input_changes_nothing(ready, raw: bytes, message: str):
    n, token = ready
    _, reply = await call(n, "POST", "/identityv2/data", raw=raw, token=token)
    assert reply == {"message": message, "status": -2, "data": None}
    assert await stored(n, f"{PREFIX}/bad") is None


async def test_another_enterprises_prefix_is_no_permission(ready):
    n, token = ready
    handle = f"{OTHER_PREFIX}/x"
    for method, path, body in (
        ("POST", "/identityv2/data", record(handle)),
        ("PUT", "/identityv2/data", record(handle)),
        ("DELETE", "/identityv2/data", {"handle": handle}),
    ):
        _, reply = await call(n, method, path, body, token=token)
        assert reply["status"] == -3, (method, reply)
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=token,
                          params={"handle": handle})
    assert reply["status"] == -3
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", [record(handle)], token=token)
    assert reply["status"] == 1 and reply["data"][0]["msg"].startswith("没有权限")
    assert await stored(n, handle) is None


async def test_readonly_account_cannot_write(ready):
    n, _ = ready
    await add_account(n, "viewer", role="readonly")
    token = await login(n, "viewer")
    _, reply = await call(n, "POST", "/identityv2/data", record(f"{PREFIX}/ro"), token=token)
    assert reply["status"] == -3
    _, reply = await call(n, "GET", "/snms/api/v5/template", token=token,
                          params={"prefix": PREFIX, "version": VERSION})
    assert reply["status"] == 1


# -- batches -------------------------------------------------------------------------


async def test_batch_create_update_delete(ready):
    n, token = ready
    await call(n, "POST", "/identityv2/data", record(f"{PREFIX}/b1"), token=token)
    items = [record(f"{PREFIX}/b{i}") for i in range(5)]
    items[3] = record(f"{PREFIX}/b3", name="")  # too short: fails alone
    status, reply = await call(n, "POST", "/identityv2/data/batchCreate", items, token=token)
    assert status == 200 and reply["status"] == 1
    assert reply["data"] == [
        {"handle": f"{PREFIX}/b0", "msg": "success"},
        {"handle": f"{PREFIX}/b1", "msg": "标识已存在"},
        {"handle": f"{PREFIX}/b2", "msg": "success"},
        {"handle": f"{PREFIX}/b3", "msg": "属性name的长度应在1到20之间"},
        {"handle": f"{PREFIX}/b4", "msg": "success"},
    ]
    assert await stored(n, f"{PREFIX}/b3") is None
    rest = await (await n.session.get(n.handle_url(f"{PREFIX}/b4"))).json()
    assert rest["responseCode"] == 1

    updates = [record(f"{PREFIX}/b0", name="v2"), record(f"{PREFIX}/missing")]
    _, reply = await call(n, "PUT", "/identityv2/data/batchUpdate", updates, token=token)
    assert [i["msg"] for i in reply["data"]] == ["success", "没有找到标识"]
    assert await stored(n, f"{PREFIX}/missing") is None
    rest = await (await n.session.get(n.handle_url(f"{PREFIX}/b0"))).json()
    assert {v["index"]: v["data"]["value"] for v in rest["values"]}[2000] == "v2"

    handles = [f"{PREFIX}/b0", f"{PREFIX}/b3", f"{OTHER_PREFIX}/b0"]
    _, reply = await call(n, "DELETE", "/identityv2/data/batchDelete", handles, token=token)
    assert reply["status"] == 1
    assert [(i["handle"], i["code"]) for i in reply["data"]] == [
        (f"{PREFIX}/b0", 1), (f"{PREFIX}/b3", -2), (f"{OTHER_PREFIX}/b0", -2)
    ]
    assert reply["data"][1]["msg"] == "标识不存在"
    assert (await n.session.get(n.handle_url(f"{PREFIX}/b0"))).status == 404
    # the documented table's {"handles": [...]} form works too
    _, reply = await call(n, "DELETE", "/identityv2/data/batchDelete",
                          {"handles": [f"{PREFIX}/b2"]}, token=token)
    assert reply["data"] == [{"handle": f"{PREFIX}/b2", "code": 1, "msg": "success"}]


async def test_batch_limit_is_2000(ready):
    n, token = ready
    items = [record(f"{PREFIX}/L{i}") for i in range(2001)]
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", items, token=token)
    assert reply == {"message": "批量操作一次最多2000条，本次2001条", "status": -2, "data": None}
    assert await n.node.store.count_handles(PREFIX) == 1  # just <PREFIX>/ADMIN
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", items[:2000], token=token)
    assert reply["status"] == 1 and {i["msg"] for i in reply["data"]} == {"success"}
    assert await n.node.store.count_handles(PREFIX) == 2001
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", {"a": 1}, token=token)
    assert reply["status"] == -2


async def test_batch_bad_input(ready):
    n, token = ready
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", raw=b"[{", token=token)
    assert reply == {"message": "请求体不是合法的JSON", "status": -2, "data": None}
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", [], token=token)
    assert reply["status"] == -2
    items = [record(f"{PREFIX}/k1", colour="red"), "not an object", record(f"{PREFIX}/k2")]
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", items, token=token)
    assert reply["data"] == [
        {"handle": f"{PREFIX}/k1", "msg": "未知参数: colour"},
        {"handle": None, "msg": "参数错误: body"},
        {"handle": f"{PREFIX}/k2", "msg": "success"},
    ]
    assert await stored(n, f"{PREFIX}/k1") is None
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", items, token="wrong")
    assert reply["status"] == -1
    _, reply = await call(n, "DELETE", "/identityv2/data/batchDelete",
                          [f"{PREFIX}/k2"] * 2001, token=token)
    assert reply["status"] == -2 and await stored(n, f"{PREFIX}/k2") is not None
    _, reply = await call(n, "POST", "/identity/token", raw=b"{", token=None)
    assert reply == {"message": "请求体不是合法的JSON", "status": -2, "data": None}


# -- templates -----------------------------------------------------------------------


async def test_template_get_put_delete(ready):
    n, token = ready
    params = {"prefix": PREFIX, "version": VERSION}
    _, reply = await call(n, "GET", "/snms/api/v5/template", token=token, params=params)
    data = reply["data"]
    assert data["industrySubclass"] == "0111" and data["type"] == 1
    assert data["items"][0] == {
        "name": "名称", "idType": "name", "idIndex": 2000, "required": True, "state": 1,
        "metadata": {"type": "string", "minLength": 1, "maxLength": 20},
    }
    _, reply = await call(n, "POST", "/snms/api/v5/template", TEMPLATE, token=token)
    assert reply["status"] == -2  # exists
    # PUT: disable URL, add an item without idIndex (gets 2002); items are never removed
    change = {**TEMPLATE, "description": "v2", "items": [
        {"name": "网址", "idType": "URL", "idIndex": 2001, "state": 0,
         "metadata": {"type": "string", "minLength": 0, "maxLength": 100}},
        {"name": "颜色", "idType": "colour", "state": 1,
         "metadata": {"type": "string", "minLength": 1, "maxLength": 8}},
    ]}
    _, reply = await call(n, "PUT", "/snms/api/v5/template", change, token=token)
    assert reply["status"] == 1, reply
    _, reply = await call(n, "GET", "/snms/api/v5/template", token=token, params=params)
    items = {i["idIndex"]: i for i in reply["data"]["items"]}
    assert sorted(items) == [2000, 2001, 2002] and items[2001]["state"] == 0
    assert reply["data"]["description"] == "v2"
    # a disabled item is refused in records
    _, reply = await call(n, "POST", "/identityv2/data", record(f"{PREFIX}/t1"), token=token)
    assert reply["message"] == "非法操作，索引2001在模板中已停用"
    ok = {**record(f"{PREFIX}/t1"), "value": [value(2000, "name", "n")]}
    _, reply = await call(n, "POST", "/identityv2/data", ok, token=token)
    assert reply["status"] == 1
    # in use: cannot be deleted
    key = {"prefix": PREFIX, "version": VERSION}
    _, reply = await call(n, "DELETE", "/snms/api/v5/template", key, token=token)
    assert reply == {"message": "模板已被标识使用，不能删除", "status": -2, "data": None}
    await call(n, "DELETE", "/identityv2/data", {"handle": f"{PREFIX}/t1"}, token=token)
    _, reply = await call(n, "DELETE", "/snms/api/v5/template", key, token=token)
    assert reply["status"] == 1
    _, reply = await call(n, "GET", "/snms/api/v5/template", token=token, params=params)
    assert reply["status"] == -2


async def test_template_of_another_prefix_is_no_permission(ready):
    n, token = ready
    _, reply = await call(n, "POST", "/snms/api/v5/template", {**TEMPLATE, "prefix": OTHER_PREFIX},
                          token=token)
    assert reply["status"] == -3
    assert await n.node.store.get_template(OTHER_PREFIX, VERSION) is None


def test_template_validation_unit():
    template, _ = templates.parse_template(TEMPLATE)
    templates.validate(template, [SnmsValue(2000, "name", "a")])
    with pytest.raises(BusinessError, match="缺少必填属性"):
        templates.validate(template, [])
    with pytest.raises(BusinessError, match="idIndex必须从2000开始"):
        templates.parse_template({**TEMPLATE, "items": [{**TEMPLATE["items"][0], "idIndex": 5}]})
    with pytest.raises(BusinessError, match="模板属性重复"):
        templates.parse_template({**TEMPLATE, "items": [TEMPLATE["items"][0]] * 2})
    assert templates.loads(template.dumps()) == template


async def test_unknown_snms_path_is_404_envelope(ready):
    n, token = ready
    status, reply = await call(n, "GET", "/identityv2/nothing", token=token)
    assert status == 404 and reply["status"] == -2


# -- quotas ---------------------------------------------------------------------------


@pytest.fixture
async def quota_node(tmp_path: Path):


    store_path = tmp_path / "node.db"
    await init_store(store_path)
    config = NodeConfig(store=str(store_path), port=0, handle_port=0, quotas=(
        f"{PREFIX}:identifiers=3,subprefixes=1", f"{OTHER_PREFIX}:requests=3",
    ))
    running = RunningNode(config)
    await running.start()
    session = aiohttp.ClientSession()
    try:
        yield LiveNode(running, f"http://127.0.0.1:{running.port}", session, store_path)
    finally:
        await session.close()
        await running.stop()


async def test_identifier_quota_refuses_whole_batches(quota_node: LiveNode):
    n = quota_node  # 88.100.1 holds <PREFIX>/ADMIN already: 2 more fit
    await add_account(n)
    token = await login(n)
    await call(n, "POST", "/snms/api/v5/template", TEMPLATE, token=token)
    three = [record(f"{PREFIX}/q{i}") for i in range(3)]
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", three, token=token)
    assert reply == {"message": "标识数量已超出配额", "status": -2, "data": None}
    assert await n.node.store.count_handles(PREFIX) == 1
    _, reply = await call(n, "POST", "/identityv2/data/batchCreate", three[:2], token=token)
    assert [i["msg"] for i in reply["data"]] == ["success", "success"]
    _, reply = await call(n, "POST", "/identityv2/data", three[2], token=token)
    assert reply["message"] == "标识数量已超出配额"
    # the Handle REST API answers rc 604 / HTTP 429, and may still replace
    url = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x/"}}
    r = await n.session.put(n.handle_url(f"{PREFIX}/rest"), data=orjson.dumps({"values": [url]}),
                            headers={"Content-Type": "application/json", **n.auth()})
    assert r.status == 429 and (await r.json())["responseCode"] == 604
    r = await n.session.put(n.handle_url(f"{PREFIX}/q0"), data=orjson.dumps({"values": [url]}),
                            headers={"Content-Type": "application/json", **n.auth()})
    assert r.status == 200
    # deleting frees room
    await call(n, "DELETE", "/identityv2/data", {"handle": f"{PREFIX}/q1"}, token=token)
    _, reply = await call(n, "POST", "/identityv2/data", three[2], token=token)
    assert reply["status"] == 1


async def test_request_and_sub_prefix_quotas(quota_node: LiveNode):
    n = quota_node
    await add_account(n, "other", prefix=OTHER_PREFIX)
    token = await login(n, "other")
    params = {"handle": f"{OTHER_PREFIX}/x"}
    for _ in range(3):
        _, reply = await call(n, "GET", "/identityv2/data/detail", token=token, params=params)
        assert reply["status"] == -2 and reply["message"] == "没有找到标识"
    _, reply = await call(n, "GET", "/identityv2/data/detail", token=token, params=params)
    assert reply == {"message": "今日请求次数已超出配额", "status": -2, "data": None}

    await n.node.home_prefix(f"{PREFIX}.1", [])
    with pytest.raises(PrefixQuotaExceeded):
        await n.node.home_prefix(f"{PREFIX}.2", [])
    assert f"{PREFIX}.2" not in n.node.homed


def test_parse_quota():
    assert parse_quota("88.100.1:requests=5,subprefixes=2") == Quota("88.100.1", 5, None, 2)
    for bad in ("88.100.1", "88.100.1:colour=1", "88.100.1:requests=x"):
        with pytest.raises(ValueError):
            parse_quota(bad)


async def test_handle_rest_writes_naming_a_template_are_validated(ready):
    n, _ = ready

    def rest_value(index: int, type_: str, text: str) -> dict:
        return {"index": index, "type": type_, "data": {"format": "string", "value": text}}

    async def put(handle: str, values: list) -> tuple[int, dict]:
        r = await n.session.put(n.handle_url(handle), data=orjson.dumps({"values": values}),
                                headers={"Content-Type": "application/json", **n.auth()})
        return r.status, await r.json()

    template = rest_value(1001, "TEMPLATE", VERSION)
    status, body = await put(f"{PREFIX}/h1", [template, rest_value(2000, "URL", "x")])
    assert status == 400 and body["responseCode"] == 202
    assert "2000" in body["message"]
    assert await stored(n, f"{PREFIX}/h1") is None
    # values below 2000 are Handle housekeeping, not governed by the template
    status, _ = await put(f"{PREFIX}/h1", [template, rest_value(1, "URL", "https://x/"),
                                           rest_value(2000, "name", "ok")])
    assert status == 201
    status, body = await put(f"{PREFIX}/h2", [rest_value(1001, "TEMPLATE", "nope")])
    assert status == 400 and "模板不存在" in body["message"]
    # no template value: no check
    status, _ = await put(f"{PREFIX}/h3", [rest_value(2000, "anything", "x")])
    assert status == 201


async def test_partial_handle_rest_writes_keep_a_templated_record_valid(ready):
    """``?index=`` adds/replaces and value deletes are checked on the record they leave."""
    n, _ = ready
    handle = f"{PREFIX}/partial"

    def rest_value(index: int, type_: str, text: str) -> dict:
        return {"index": index, "type": type_, "data": {"format": "string", "value": text}}

    async def write(method: str, params: str, values: list | None = None) -> tuple[int, dict]:
        body = None if values is None else orjson.dumps({"values": values})
        r = await n.session.request(
            method, n.handle_url(handle) + params, data=body,
            headers={"Content-Type": "application/json", **n.auth()},
        )
        return r.status, await r.json()

    status, _ = await write("PUT", "", [rest_value(1001, "TEMPLATE", VERSION),
                                        rest_value(2000, "name", "ok"),
                                        rest_value(2001, "URL", "https://x/")])
    assert status == 201
    before = await stored(n, handle)
    refused = [
        ("PUT", "?index=2000", [rest_value(2000, "name", "x" * 21)]),  # too long
        ("PUT", "?index=2005", [rest_value(2005, "colour", "red")]),  # not a template item
        ("PUT", "?index=2000", [rest_value(2000, "URL", "https://y/")]),  # wrong type
        ("DELETE", "?index=2000", None),  # a required item
    ]
    for method, params, values in refused:
        status, body = await write(method, params, values)
        assert (status, body["responseCode"]) == (400, 202), (params, body)
        assert await stored(n, handle) == before
    status, _ = await write("PUT", "?index=2000", [rest_value(2000, "name", "fine")])
    assert status == 200
    status, _ = await write("DELETE", "?index=2001", None)  # optional item
    assert status == 200
    assert [v.index for v in await stored(n, handle)] == [1001, 2000]
