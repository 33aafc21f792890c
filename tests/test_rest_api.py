"""The Handle REST API against a live node, status by status (shared/reference/handle-rest.md)."""

from __future__ import annotations

import orjson
import pytest
from live import OTHER_ADMIN, OTHER_SECRET, PREFIX, LiveNode

from protocol.values import HS_SECKEY
from registry.credentials import is_hashed

JSON = {"Content-Type": "application/json"}
URL_VALUE = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/x"}}
ADMIN_VALUE = {
    "index": 100, "type": "HS_ADMIN",
    "data": {"format": "admin", "value": {"handle": f"{PREFIX}/ADMIN", "index": 300,
                                          "permissions": "011111110011"}},
}


async def put(n: LiveNode, handle: str, values, *, params=None, auth=True, headers=JSON):
    body = values if isinstance(values, bytes) else orjson.dumps({"values": values})
    credentials = n.auth() if auth is True else (auth or {})
    return await n.session.put(
        n.handle_url(handle), data=body, params=params or {}, headers={**headers, **credentials}
    )


async def get(n: LiveNode, handle: str, **params):
    r = await n.session.get(n.handle_url(handle), params=params)
    return r.status, await r.json()


async def test_create_resolve_echoes_spelling(live_node: LiveNode):
    r = await put(live_node, f"{PREFIX}/Item-1", [URL_VALUE, ADMIN_VALUE])
    assert r.status == 201
    assert await r.json() == {"responseCode": 1, "handle": f"{PREFIX}/Item-1"}
    status, body = await get(live_node, f"{PREFIX}/item-1")
    assert status == 200
    assert body["responseCode"] == 1 and body["handle"] == f"{PREFIX}/item-1"
    assert [v["index"] for v in body["values"]] == [1, 100]
    assert body["values"][0]["data"] == URL_VALUE["data"]
    assert body["values"][0]["timestamp"].endswith("Z")
    # Cached now: the same spelling is served the same bytes, another spelling its own.
    assert (await get(live_node, f"{PREFIX}/ITEM-1"))[1]["handle"] == f"{PREFIX}/ITEM-1"


async def test_missing_not_homed_and_bad_handles(live_node: LiveNode):
    assert await get(live_node, f"{PREFIX}/nothere") == (
        404, {"responseCode": 100, "handle": f"{PREFIX}/nothere"})
    status, body = await get(live_node, "FOO/bar")
    assert status == 400 and body["responseCode"] == 301
    assert body["message"] == "That prefix doesn't live here"
    r = await live_node.session.get(f"{live_node.url}/api/handles/")
    assert r.status == 400 and (await r.json())["responseCode"] == 102
    r = await live_node.session.get(f"{live_node.url}/api/nonsense")
    assert r.status == 404 and (await r.json())["responseCode"] == 4
    r = await live_node.session.patch(live_node.handle_url(f"{PREFIX}/x"))
    assert r.status == 501 and (await r.json())["responseCode"] == 4
    status, body = await get(live_node, f"{PREFIX}/a%00b")
    assert status == 400 and body["responseCode"] == 102


async def test_filters(live_node: LiveNode):
    values = [URL_VALUE,
              {"index": 2, "type": "URL.alt", "data": "https://alt"},
              {"index": 3, "type": "EMAIL", "data": "a@b.c"}, ADMIN_VALUE]
    assert (await put(live_node, f"{PREFIX}/f", values)).status == 201
    idx = lambda b: [v["index"] for v in b["values"]]  # noqa: E731
    assert idx((await get(live_node, f"{PREFIX}/f", type="url"))[1]) == [1]
    assert idx((await get(live_node, f"{PREFIX}/f", type="URL."))[1]) == [1, 2]
    r = await live_node.session.get(live_node.handle_url(f"{PREFIX}/f"),
                                    params=[("index", "1"), ("type", "EMAIL")])
    assert idx(await r.json()) == [1, 3]
    r = await live_node.session.get(live_node.handle_url(f"{PREFIX}/f") + "?type=NOPE")
    assert r.status == 200
    assert await r.read() == b'{"responseCode":200,"values":[],"handle":"88.100.1/f"}'
    status, body = await get(live_node, f"{PREFIX}/f", index="abc")
    assert status == 400 and body["responseCode"] == 4


async def test_put_semantics(live_node: LiveNode):
    h = f"{PREFIX}/p"
    assert (await put(live_node, h, [URL_VALUE, ADMIN_VALUE])).status == 201
    r = await put(live_node, h, [URL_VALUE, ADMIN_VALUE], params={"overwrite": "false"})
    assert r.status == 409 and (await r.json())["responseCode"] == 101
    # Replace drops values left out.
    email = {"index": 3, "type": "EMAIL", "data": "a@b.c"}
    assert (await put(live_node, h, [email, ADMIN_VALUE])).status == 200
    assert [v["index"] for v in (await get(live_node, h))[1]["values"]] == [3, 100]
    # ?index= adds or replaces only those.
    assert (await put(live_node, h, [URL_VALUE], params={"index": "1"})).status == 201
    assert (await put(live_node, h, [URL_VALUE], params={"index": "1"})).status == 200
    r = await put(live_node, h, [URL_VALUE], params={"index": "1", "overwrite": "false"})
    assert r.status == 409 and (await r.json())["responseCode"] == 201
    r = await put(live_node, h, [URL_VALUE], params={"index": "4"})
    assert r.status == 400 and "Mismatched indexes" in (await r.json())["message"]
    r = await put(live_node, f"{PREFIX}/absent", [URL_VALUE], params={"index": "1"})
    assert r.status == 404
    assert [v["index"] for v in (await get(live_node, h))[1]["values"]] == [1, 3, 100]


@pytest.mark.parametrize(
    ("body", "headers", "status", "rc"),
    [
        (b'{"values":[{"index":1,"type":"URL","data":"a"},{"index":1,"type":"X","data":"b"}]}',
         JSON, 409, 201),
        (b'{"values":[{"index":-1,"type":"URL","data":"a"}]}', JSON, 400, 202),
        (b'{"values":[{"type":"URL","data":"a"}]}', JSON, 400, 4),
        (b'{"values": [', JSON, 400, 4),
        (b'{"foo":1}', JSON, 400, 4),
        (b'{"handle":"88.100.1/other","values":[]}', JSON, 400, 4),
        (b'{"values":[]}', {"Content-Type": "text/plain"}, 400, 4),
        (b'{"values":[{"index":1,"type":"URL","data":{"format":"nope","value":"x"}}]}', JSON,
         400, 4),
    ],
)
async def test_put_rejections_change_nothing(live_node: LiveNode, body, headers, status, rc):
    r = await put(live_node, f"{PREFIX}/bad", body, headers=headers)
    assert r.status == status
    assert (await r.json())["responseCode"] == rc
    assert await live_node.node.store.get(f"{PREFIX}/BAD") is None


async def test_put_outside_homed_prefix(live_node: LiveNode):
    r = await put(live_node, "FOO/x", [URL_VALUE])
    assert r.status == 400 and (await r.json())["responseCode"] == 301


async def test_mint_new_suffix(live_node: LiveNode):
    r = await put(live_node, f"{PREFIX}/", [URL_VALUE], params={"mintNewSuffix": "true"})
    assert r.status == 201
    minted = (await r.json())["handle"]
    assert minted.startswith(f"{PREFIX}/") and len(minted) == len(PREFIX) + 1 + 36
    assert (await get(live_node, minted))[0] == 200


async def test_delete(live_node: LiveNode):
    h = f"{PREFIX}/d"
    three = {"index": 3, "type": "EMAIL", "data": "a@b.c"}
    six = {"index": 6, "type": "EMAIL", "data": "d@e.f"}
    await put(live_node, h, [URL_VALUE, three, six, ADMIN_VALUE])
    auth = live_node.auth()
    r = await live_node.session.delete(live_node.handle_url(h), params={"index": "3"}, headers=auth)
    assert r.status == 200
    r = await live_node.session.delete(live_node.handle_url(h), params={"index": "3"}, headers=auth)
    assert r.status == 400 and (await r.json())["responseCode"] == 200
    r = await live_node.session.delete(
        live_node.handle_url(h), params=[("index", "99"), ("index", "6")], headers=auth)
    assert r.status == 400
    assert 6 in [v["index"] for v in (await get(live_node, h))[1]["values"]]  # all or nothing
    r = await live_node.session.delete(live_node.handle_url(h), headers=auth)
    assert r.status == 200 and await r.json() == {"responseCode": 1, "handle": h}
    assert (await get(live_node, h))[0] == 404
    r = await live_node.session.delete(live_node.handle_url(h), headers=auth)
    assert r.status == 404
    r = await live_node.session.delete(live_node.handle_url("FOO/x"), headers=auth)
    assert r.status == 404 and (await r.json())["responseCode"] == 100


async def test_authentication(live_node: LiveNode):
    h = f"{PREFIX}/auth"
    r = await put(live_node, h, [URL_VALUE], auth=None)
    assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="handle"'
    assert (await r.json())["responseCode"] == 402
    r = await put(live_node, h, [URL_VALUE], auth=live_node.auth(secret="wrong"))
    assert r.status == 401 and (await r.json())["responseCode"] == 403
    # The admin match is case-sensitive, as on the reference server.
    r = await put(live_node, h, [URL_VALUE], auth=live_node.auth(identity="300:88.100.1/admin"))
    assert r.status == 403 and (await r.json())["responseCode"] == 400
    assert await live_node.node.store.get(f"{PREFIX}/AUTH") is None


async def test_credentials_over_plain_http_need_loopback(live_node: LiveNode, monkeypatch):
    monkeypatch.setattr("resolver.rest_api.is_loopback", lambda request: False)
    r = await put(live_node, f"{PREFIX}/remote", [URL_VALUE])
    assert r.status == 403 and (await r.json())["responseCode"] == 402


async def test_no_write_outside_own_prefix(live_node: LiveNode):
    r = await put(live_node, "88.200.1/mine", [URL_VALUE])  # 88.100.1's admin
    assert r.status == 403 and (await r.json())["responseCode"] == 400
    other = live_node.auth(OTHER_ADMIN, OTHER_SECRET)
    assert (await put(live_node, "88.200.1/mine", [URL_VALUE], auth=other)).status == 201
    # Nor modify or delete a handle someone else administers.
    await put(live_node, f"{PREFIX}/owned", [URL_VALUE, ADMIN_VALUE])
    assert (await put(live_node, f"{PREFIX}/owned", [URL_VALUE], auth=other)).status == 403
    r = await live_node.session.delete(live_node.handle_url(f"{PREFIX}/owned"), headers=other)
    assert r.status == 403


async def test_secret_values_hashed_and_hidden(live_node: LiveNode):
    h = f"{PREFIX}/user"
    seckey = {"index": 300, "type": HS_SECKEY, "data": "s3cret", "permissions": "1110"}
    self_admin = {"index": 101, "type": "HS_ADMIN",
                  "data": {"format": "admin", "value": {"handle": h, "index": 300}}}
    self_admin["data"]["value"]["permissions"] = "011111110011"
    assert (await put(live_node, h, [URL_VALUE, seckey, ADMIN_VALUE, self_admin])).status == 201
    stored = {v.index: v for v in await live_node.node.store.get(f"{PREFIX}/USER")}
    assert is_hashed(stored[300].data) and b"s3cret" not in stored[300].data
    assert not stored[300].public_read  # forced private
    assert [v["index"] for v in (await get(live_node, h))[1]["values"]] == [1, 100, 101]
    status, body = await get(live_node, h, publicOnly="false")
    assert status == 401 and body["responseCode"] == 402
    r = await live_node.session.get(live_node.handle_url(h), headers=live_node.auth())
    shown = {v["index"]: v for v in (await r.json())["values"]}
    assert shown[300]["permissions"] == "1100"
    # The new secret logs in.
    user = live_node.auth(f"300:{h}", "s3cret")
    r = await put(live_node, h, [{"index": 2, "type": "EMAIL", "data": "x@y"}],
                  params={"index": "2"}, auth=user)
    assert r.status == 201


async def test_write_invalidates_cache(live_node: LiveNode):
    h = f"{PREFIX}/cached"
    await put(live_node, h, [URL_VALUE, ADMIN_VALUE])
    await get(live_node, h)
    await get(live_node, h)
    new_url = {"index": 1, "type": "URL", "data": "https://example.com/new"}
    await put(live_node, h, [new_url], params={"index": "1"})
    assert (await get(live_node, h))[1]["values"][0]["data"]["value"] == "https://example.com/new"
    auth = live_node.auth()
    await live_node.session.delete(live_node.handle_url(h), headers=auth)
    assert (await get(live_node, h))[0] == 404


async def test_listing_and_prefixes(live_node: LiveNode):
    for n in range(5):
        await put(live_node, f"{PREFIX}/L{n}", [URL_VALUE])
    url = f"{live_node.url}/api/handles"
    r = await live_node.session.get(url, params={"prefix": PREFIX})
    assert r.status == 401
    r = await live_node.session.get(url, params={"prefix": PREFIX}, headers=live_node.auth())
    body = await r.json()
    assert body["totalCount"] == "6" and body["handles"][0] == f"{PREFIX}/ADMIN"
    r = await live_node.session.get(
        url, params={"prefix": PREFIX, "page": "1", "pageSize": "2"}, headers=live_node.auth())
    body = await r.json()
    assert body["handles"] == [f"{PREFIX}/L1", f"{PREFIX}/L2"] and body["page"] == 1
    r = await live_node.session.get(url, params={"prefix": "FOO"}, headers=live_node.auth())
    assert r.status == 400 and (await r.json())["responseCode"] == 301
    r = await live_node.session.get(f"{live_node.url}/api/prefixes", headers=live_node.auth())
    assert (await r.json())["prefixes"] == ["0.NA/88.100.1", "0.NA/88.200.1"]


async def test_proxy_redirect(live_node: LiveNode):
    await put(live_node, f"{PREFIX}/web", [URL_VALUE])
    r = await live_node.session.get(f"{live_node.url}/{PREFIX}/web", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "https://example.com/x"
    r = await live_node.session.get(f"{live_node.url}/{PREFIX}/web?noredirect")
    assert r.status == 200 and (await r.json())["values"][0]["index"] == 1
    r = await live_node.session.get(f"{live_node.url}/{PREFIX}/web?noredirect",
                                    headers={"Accept": "text/html"})
    assert "text/html" in r.headers["Content-Type"] and "example.com/x" in await r.text()
    r = await live_node.session.get(f"{live_node.url}/{PREFIX}/none", allow_redirects=False)
    assert r.status == 404


async def test_ops_endpoints(live_node: LiveNode):
    await get(live_node, f"{PREFIX}/nothere")
    r = await live_node.session.get(f"{live_node.url}/metrics")
    text = await r.text()
    assert 'idnode_requests_total{route="resolve",status="404",transport="http"}' in text
    assert "idnode_cache_misses_total" in text
    assert (await live_node.session.get(f"{live_node.url}/healthz")).status == 200
    assert (await live_node.session.get(f"{live_node.url}/readyz")).status == 200


async def test_odd_requests_get_protocol_answers_not_500(live_node: LiveNode):
    await put(live_node, f"{PREFIX}/odd", [URL_VALUE])
    r = await live_node.session.head(live_node.handle_url(f"{PREFIX}/odd"))
    assert r.status == 200 and await r.read() == b""
    r = await live_node.session.options(live_node.handle_url(f"{PREFIX}/odd"))
    assert r.status == 200 and "PUT" in r.headers["Allow"]
    # Percent-escapes: %2F is a slash, bad UTF-8 becomes U+FFFD, a bad escape stays literal.
    assert (await get(live_node, f"{PREFIX}%2Fodd"))[0] == 200
    status, body = await get(live_node, f"{PREFIX}/odd%C3%28")
    assert status == 404 and body["handle"] == f"{PREFIX}/odd\ufffd("
    assert (await get(live_node, f"{PREFIX}/odd%ZZ"))[0] == 404
    # A body over the limit is refused before it is parsed.
    r = await put(live_node, f"{PREFIX}/big", b'{"values":[' + b" " * (2 << 20) + b"]}")
    assert r.status == 413 and (await r.json())["responseCode"] == 4
    r = await live_node.session.get(
        live_node.handle_url(f"{PREFIX}/odd"), params={"callback": "cb"})
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert (await r.text()).startswith("cb(")
    r = await live_node.session.get(
        live_node.handle_url(f"{PREFIX}/odd"), params={"callback": "<script>"})
    assert r.status in (200, 400) and "<script>" not in await r.text()


async def test_post_behaves_as_get_with_json_parameters(live_node: LiveNode):
    values = [URL_VALUE, {"index": 3, "type": "EMAIL", "data": "a@b.c"}]
    await put(live_node, f"{PREFIX}/post", values)
    r = await live_node.session.post(live_node.handle_url(f"{PREFIX}/post"),
                                     json={"type": "EMAIL"})
    assert r.status == 200 and [v["index"] for v in (await r.json())["values"]] == [3]
