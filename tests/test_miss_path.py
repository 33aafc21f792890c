"""A resolve that misses the cache: the short way (``Node.read_missed``) answers
exactly as the general path, the cache and a refused miss do."""

from __future__ import annotations

import orjson
from live import PREFIX, LiveNode

ADMIN = {"index": 100, "type": "HS_ADMIN",
         "data": {"format": "admin", "value": {"handle": f"{PREFIX}/ADMIN", "index": 300,
                                               "permissions": "011111110011"}}}
RECORDS = {
    f"{PREFIX}/Plain": [{"index": 1, "type": "URL", "data": "https://example.com/p"}, ADMIN],
    f"{PREFIX}/Mixed": [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://e/m"},
         "ttl": "2031-02-03T04:05:06Z"},
        {"index": 2, "type": "EMAIL", "data": "hidden@example.com", "permissions": "1100"},
        {"index": 3, "type": "BLOB", "data": {"format": "base64", "value": "AAECAw=="}},
        {"index": 4, "type": "DESC", "data": "说明 text", "permissions": "1111",
         "references": [{"handle": f"{PREFIX}/Plain", "index": 1}]},
        ADMIN,
    ],
    f"{PREFIX}/Hidden": [{"index": 1, "type": "EMAIL", "data": "x@y", "permissions": "1100"},
                         {**ADMIN, "permissions": "1100"}],
}


async def _fetch(n: LiveNode, handle: str) -> tuple[int, str, bytes]:
    r = await n.session.get(n.handle_url(handle))
    return r.status, r.headers["Content-Type"], await r.read()


async def _all(n: LiveNode) -> dict[str, tuple[int, str, bytes]]:
    # Another spelling than was written: the reply echoes the request's.
    return {h: await _fetch(n, h.lower()) for h in RECORDS}


def _store_gets(node) -> float:
    value = node.registry.get_sample_value(
        "idnode_store_duration_seconds_count", {"operation": "get"})
    return value or 0.0


async def test_every_way_of_answering_a_resolve_gives_the_same_reply(live_node: LiveNode):
    for handle, values in RECORDS.items():
        r = await live_node.session.put(live_node.handle_url(handle),
                                        data=orjson.dumps({"values": values}),
                                        headers={"Content-Type": "application/json",
                                                 **live_node.auth()})
        assert r.status == 201, await r.text()
    node, cache = live_node.node, live_node.node.cache

    read_now, node._read_now = node._read_now, None  # the general path: parse, chain
    cache.clear()
    general = await _all(live_node)
    node._read_now = read_now

    cache.clear()
    kept = await _all(live_node)  # misses, read the short way, kept
    assert len(cache) == len(RECORDS)
    hits_before = cache.hits
    hits = await _all(live_node)
    assert cache.hits == hits_before + len(RECORDS)

    cache.clear()
    cache.max_bytes = 0  # full: a key's first miss is not kept
    refused_before, misses_before = cache.refused, cache.misses
    refused = await _all(live_node)
    assert cache.refused == refused_before + len(RECORDS) and len(cache) == 0
    assert cache.misses == misses_before + len(RECORDS)

    assert general == kept == hits == refused
    status, content_type, body = refused[f"{PREFIX}/Mixed"]
    assert status == 200 and content_type == "application/json;charset=utf-8"
    shown = orjson.loads(body)
    assert shown["handle"] == f"{PREFIX}/mixed"
    assert [v["index"] for v in shown["values"]] == [1, 3, 4, 100]  # 2 is not public
    assert shown["values"][0]["ttl"] == "2031-02-03T04:05:06Z"
    assert shown["values"][1]["data"] == {"format": "base64", "value": "AAECAw=="}
    assert shown["values"][2]["references"] == [{"handle": f"{PREFIX}/Plain", "index": 1}]
    assert orjson.loads(refused[f"{PREFIX}/Hidden"][2]) == {
        "responseCode": 200, "values": [], "handle": f"{PREFIX}/hidden"}


async def test_a_short_way_miss_is_counted_like_any_other(live_node: LiveNode):
    node = live_node.node
    handle = f"{PREFIX}/Counted"
    r = await live_node.session.put(
        live_node.handle_url(handle), data=orjson.dumps({"values": RECORDS[f"{PREFIX}/Plain"]}),
        headers={"Content-Type": "application/json", **live_node.auth()})
    assert r.status == 201
    node.cache.clear()

    gets, resolutions, misses = _store_gets(node), node.usage.resolutions[PREFIX], node.cache.misses
    assert (await _fetch(live_node, handle))[0] == 200
    assert _store_gets(node) == gets + 1
    assert node.usage.resolutions[PREFIX] == resolutions + 1
    assert node.cache.misses == misses + 1


async def test_an_absent_handle_is_read_once_and_answered_as_before(live_node: LiveNode):
    node = live_node.node

    read_now, node._read_now = node._read_now, None  # the general path
    general = await _fetch(live_node, f"{PREFIX}/absent-1")
    node._read_now = read_now
    node.cache.clear()
    gets = _store_gets(node)
    assert await _fetch(live_node, f"{PREFIX}/absent-1") == general
    assert _store_gets(node) == gets + 1
    assert general[0] == 404 and orjson.loads(general[2]) == {
        "responseCode": 100, "handle": f"{PREFIX}/absent-1"}
    node.cache.clear()
    node.cache.max_bytes = 0  # refused: answered all the same
    assert await _fetch(live_node, f"{PREFIX}/absent-1") == general
    # Not a handle at all: parsed, and refused as the general path refuses it.
    status, _, body = await _fetch(live_node, f"{PREFIX}/a%00b")
    assert status == 400 and orjson.loads(body)["responseCode"] == 102


async def test_what_the_short_way_does_not_answer_takes_the_general_path(live_node: LiveNode):
    # Not in the store, not homed here, a prefix record: answered as before.
    assert (await _fetch(live_node, f"{PREFIX}/absent"))[0] == 404
    status, _, body = await _fetch(live_node, "99.9/x")
    assert status == 400 and orjson.loads(body)["responseCode"] == 301
    status, _, body = await _fetch(live_node, f"0.NA/{PREFIX}")
    assert status == 200 and orjson.loads(body)["handle"] == f"0.NA/{PREFIX}"
