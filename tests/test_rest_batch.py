"""POST /api/handles: batch registration on the Handle REST side (idnode's extension)."""

from __future__ import annotations

import orjson
from live import OTHER_PREFIX, PREFIX, LiveNode

URL = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/"}}


async def post(n: LiveNode, body: bytes, *, kind="application/json", params=None, auth=True):
    headers = {"Content-Type": kind, **(n.auth() if auth else {})}
    r = await n.session.post(f"{n.url}/api/handles", data=body, headers=headers, params=params)
    return r.status, await r.json(content_type=None)


async def test_json_array_per_item_results(live_node: LiveNode):
    n = live_node
    items = [
        {"handle": f"{PREFIX}/B1", "values": [URL]},
        {"handle": f"{PREFIX}/B2", "values": [{"index": 1, "type": "URL"}]},  # no data
        {"handle": f"{OTHER_PREFIX}/B3", "values": [URL]},  # not this admin's prefix
        {"handle": f"{PREFIX}/B4", "values": [URL], "colour": "red"},
    ]
    status, body = await post(n, orjson.dumps(items))
    assert status == 200 and body["responseCode"] == 1
    codes = [(r["handle"], r["responseCode"]) for r in body["results"]]
    assert codes[0] == (f"{PREFIX}/B1", 1) and body["results"][0]["created"] is True
    assert codes[1][1] != 1 and codes[2][1] == 400 and codes[3][1] == 4
    r = await n.session.get(n.handle_url(f"{PREFIX}/B1"))
    assert r.status == 200
    for handle in (f"{PREFIX}/B2", f"{OTHER_PREFIX}/B3", f"{PREFIX}/B4"):
        assert (await n.session.get(n.handle_url(handle))).status == 404
    # replaced by default; create-only with overwrite=false
    _, body = await post(n, orjson.dumps(items[:1]))
    assert body["results"][0] == {"handle": f"{PREFIX}/B1", "responseCode": 1, "created": False}
    _, body = await post(n, orjson.dumps(items[:1]), params={"overwrite": "false"})
    assert body["results"][0]["responseCode"] == 101


async def test_ndjson_and_limits(live_node: LiveNode):
    n = live_node
    lines = b"\n".join([
        orjson.dumps({"handle": f"{PREFIX}/N1", "values": [URL]}),
        b"{broken",
        orjson.dumps({"handle": f"{PREFIX}/N2", "values": [URL]}),
    ])
    status, body = await post(n, lines, kind="application/x-ndjson")
    assert status == 200
    assert [r["responseCode"] for r in body["results"]] == [1, 4, 1]
    too_many = orjson.dumps([{"handle": f"{PREFIX}/M{i}", "values": [URL]} for i in range(2001)])
    status, body = await post(n, too_many)
    assert status == 400 and body["responseCode"] == 4
    assert (await n.session.get(n.handle_url(f"{PREFIX}/M0"))).status == 404
    status, _ = await post(n, b"{not json")
    assert status == 400
    status, _ = await post(n, orjson.dumps([]), auth=False)
    assert status == 401


async def test_unserved_prefixes_fail_item_by_item(live_node: LiveNode):
    """Served-ness and authorisation are decided once per prefix; each item gets its answer."""
    n = live_node
    items = [
        {"handle": f"{PREFIX}/U1", "values": [URL]},
        {"handle": "99.999/U2", "values": [URL]},
        {"handle": "99.999/U3", "values": [URL]},
        {"handle": f"{PREFIX.lower()}/U4", "values": [URL]},
        {"handle": f"{OTHER_PREFIX}/U5", "values": [URL]},
        {"handle": f"{OTHER_PREFIX}/U6", "values": [URL]},
    ]
    status, body = await post(n, orjson.dumps(items))
    assert status == 200
    codes = [r["responseCode"] for r in body["results"]]
    assert codes[0] == 1 and codes[3] == 1
    assert codes[1] == codes[2] != 1 and codes[4] == codes[5] == 400
    for handle in ("99.999/U2", "99.999/U3", f"{OTHER_PREFIX}/U5", f"{OTHER_PREFIX}/U6"):
        assert (await n.session.get(n.handle_url(handle))).status != 200


async def test_replacing_in_a_batch_is_decided_by_the_records_own_admins(live_node: LiveNode):
    """New handles are created without a read; taken ones are replaced only as their
    HS_ADMIN allows, even for an admin of the prefix."""
    n = live_node
    foreign_admin = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": f"{PREFIX}/SOMEONE-ELSE", "index": 300, "permissions": "111111111111"}}}
    status, body = await post(n, orjson.dumps([
        {"handle": f"{PREFIX}/R1", "values": [URL, foreign_admin]},
        {"handle": f"{PREFIX}/R2", "values": [URL]},
    ]))
    assert [r["created"] for r in body["results"]] == [True, True]
    changed = {**URL, "data": {"format": "string", "value": "https://changed/"}}
    status, body = await post(n, orjson.dumps([
        {"handle": f"{PREFIX}/R1", "values": [changed]},  # its own admin is someone else
        {"handle": f"{PREFIX}/R2", "values": [changed]},
        {"handle": f"{PREFIX}/R3", "values": [changed]},
    ]))
    assert status == 200
    r1, r2, r3 = body["results"]
    assert r1["responseCode"] == 400 and "created" not in r1
    assert r2 == {"handle": f"{PREFIX}/R2", "responseCode": 1, "created": False}
    assert r3 == {"handle": f"{PREFIX}/R3", "responseCode": 1, "created": True}
    reply = await (await n.session.get(n.handle_url(f"{PREFIX}/R1"))).json(content_type=None)
    assert reply["values"][0]["data"]["value"] == "https://example.com/"
    reply = await (await n.session.get(n.handle_url(f"{PREFIX}/R2"))).json(content_type=None)
    assert reply["values"][0]["data"]["value"] == "https://changed/"
