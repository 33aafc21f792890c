"""``idnode trace``: link extraction, the walk, and a chain across two prefixes on a live node."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket

import aiohttp
import orjson
import pytest
from aiohttp import web
from live import OTHER_ADMIN, OTHER_PREFIX, OTHER_SECRET, PREFIX, LiveNode

from protocol.trace_links import Link, links_of, trace_relation, trace_targets
from protocol.values import HandleValue, ValueReference
from resolver import trace
from resolver.cli import main as cli_main
from resolver.trace import Fetched, walk

# -- links --------------------------------------------------------------------------


def test_links_from_references_and_typed_trace_values() -> None:
    values = [
        HandleValue(1, "URL", b"https://x", references=(ValueReference("88.1/a", 1),)),
        HandleValue(2, "TRACE.component", b'["88.1/b", "88.2/c", 7, " "]'),
        HandleValue(3, "TRACE.batch", b"88.2/d, 88.2/e\n88.2/f"),
        HandleValue(4, "TRACE", b"88.1/g"),
        HandleValue(5, "TRACE.", b"88.1/not-a-trace-type"),
        HandleValue(6, "EMAIL", b"88.1/not-a-link"),
        HandleValue(7, "TRACE.parent", b"no-slash"),
    ]
    assert links_of(values) == [
        Link("88.1/a", "reference", 1, "URL"),
        Link("88.1/b", "component", 2, "TRACE.component"),
        Link("88.2/c", "component", 2, "TRACE.component"),
        Link("88.2/d", "batch", 3, "TRACE.batch"),
        Link("88.2/e", "batch", 3, "TRACE.batch"),
        Link("88.2/f", "batch", 3, "TRACE.batch"),
        Link("88.1/g", "trace", 4, "TRACE"),
        Link("no-slash", "parent", 7, "TRACE.parent", valid=False),
    ]
    assert trace_relation("URL") is None and trace_relation("TRACE.x") == "x"
    assert trace_targets(b"[not json") == ["[not", "json"]
    assert trace_targets(b"") == []


# -- the walk --------------------------------------------------------------------------


def graph_fetch(graph: dict[str, list[str]], inflight: list[int] | None = None):
    """Resolve from a dict: handle -> linked handles (TRACE values); absent = not found."""

    async def fetch(handle: str) -> Fetched:
        if inflight is not None:
            inflight[0] += 1
            inflight[1] = max(inflight[1], inflight[0])
        await asyncio.sleep(0.01)
        if inflight is not None:
            inflight[0] -= 1
        targets = graph.get(handle)
        if targets is None:
            return Fetched(trace.NOT_FOUND)
        return Fetched(trace.OK, (HandleValue(1, "TRACE.part", orjson.dumps(targets)),))

    return fetch


def shape(node: trace.TraceNode) -> tuple:
    return (node.handle, node.status, tuple(shape(c) for c in node.children))


async def test_walk_marks_cycles_repeats_and_limits_in_tree_order() -> None:
    graph = {"1/a": ["1/b", "1/c"], "1/b": ["1/a", "1/c", "1/gone"], "1/c": ["1/d"],
             "1/d": ["1/e"], "1/e": []}
    tree = await walk("1/a", graph_fetch(graph), max_depth=2)
    assert shape(tree) == ("1/a", "ok", (
        ("1/b", "ok", (("1/a", "cycle", ()), ("1/c", "repeat", ()), ("1/gone", "not-found", ()))),
        ("1/c", "ok", (("1/d", "ok", (("1/e", "depth-limit", ()),)),)),
    ))
    tree = await walk("1/A", graph_fetch({"1/A": ["1/a"]}), max_depth=0)
    assert shape(tree) == ("1/A", "ok", (("1/a", "cycle", ()),))  # case-insensitive
    tree = await walk("1/a", graph_fetch(graph), max_nodes=2)
    assert [c.status for c in tree.children] == ["ok", "node-limit"]


async def test_walk_resolves_a_level_concurrently_but_bounded() -> None:
    graph = {"1/root": [f"1/leaf{i}" for i in range(20)]}
    inflight = [0, 0]
    tree = await walk("1/root", graph_fetch(graph, inflight), concurrency=4)
    assert len(tree.children) == 20 and inflight[1] == 4


async def test_fetcher_reports_timeouts_and_unreachable_servers() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/handles/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            fetched = await trace.http_fetcher(session, f"http://127.0.0.1:{port}", 0.2)("1/x")
            assert fetched.status == trace.TIMEOUT
            fetched = await trace.http_fetcher(session, f"http://127.0.0.1:{closed}", 1)("1/x")
            assert fetched.status == trace.UNREACHABLE
    finally:
        await runner.cleanup()


# -- live ------------------------------------------------------------------------------


def text_value(index: int, type_: str, text: str, **extra: object) -> dict:
    return {"index": index, "type": type_, "data": {"format": "string", "value": text}, **extra}


async def put(n: LiveNode, handle: str, *values: dict) -> None:
    other = handle.startswith(OTHER_PREFIX)
    headers = n.auth(OTHER_ADMIN, OTHER_SECRET) if other else n.auth()
    r = await n.session.put(n.handle_url(handle), json={"values": list(values)}, headers=headers)
    assert r.status in (200, 201), await r.text()


@pytest.fixture
async def chain(live_node: LiveNode) -> LiveNode:
    """A car (prefix 1) made of an engine (prefix 2) from a batch; a cycle and dangling links."""
    car, engine = f"{PREFIX}/car-1", f"{OTHER_PREFIX}/engine-7"
    batch, ghost = f"{OTHER_PREFIX}/batch-3", f"{OTHER_PREFIX}/batch-404"
    await put(live_node, car, text_value(1, "URL", "https://cars.example/1"),
              text_value(10, "TRACE.component", orjson.dumps([engine, "77.7/elsewhere"]).decode()),
              text_value(11, "TRACE.batch", f"{batch}, {ghost}"))
    await put(live_node, engine, text_value(1, "TRACE.batch", batch),
              text_value(2, "URL", "https://engines.example/7",
                         references=[{"handle": car, "index": 1}]))
    await put(live_node, batch, text_value(1, "TRACE.part", "not a handle"))
    return live_node


async def test_trace_command_prints_the_tree_across_prefixes(chain: LiveNode) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await trace.trace_command(chain.url, f"{PREFIX}/car-1", max_depth=5,
                                         max_nodes=100, concurrency=4, timeout=5, as_json=False)
    assert code == 0
    assert out.getvalue().splitlines() == [
        f"{PREFIX}/car-1",
        f"├── component (10:TRACE.component) → {OTHER_PREFIX}/engine-7",
        f"│   ├── batch (1:TRACE.batch) → {OTHER_PREFIX}/batch-3  [repeat]",
        f"│   └── reference (2:URL) → {PREFIX}/car-1  [cycle]",
        "├── component (10:TRACE.component) → 77.7/elsewhere  "
        "[not-responsible: That prefix doesn't live here]",
        f"├── batch (11:TRACE.batch) → {OTHER_PREFIX}/batch-3",
        "│   ├── part (1:TRACE.part) → not  [invalid]",
        "│   ├── part (1:TRACE.part) → a  [invalid]",
        "│   └── part (1:TRACE.part) → handle  [invalid]",
        f"└── batch (11:TRACE.batch) → {OTHER_PREFIX}/batch-404  [not-found]",
    ]


async def test_trace_cli_json_and_an_unresolvable_root(chain: LiveNode) -> None:
    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main(["trace", *argv, "--server", chain.url])
        return code, out.getvalue()

    code, text = await asyncio.to_thread(run, f"{PREFIX}/car-1", "--json", "--max-depth", "1")
    tree = orjson.loads(text)
    assert code == 0 and tree["status"] == "ok"
    engine = tree["children"][0]
    assert (engine["relation"], engine["via"], engine["status"]) == (
        "component", "10:TRACE.component", "ok")
    assert [c["status"] for c in engine["children"]] == ["repeat", "cycle"]
    code, text = await asyncio.to_thread(run, f"{PREFIX}/nothing-here")
    assert code == 1 and "[not-found]" in text
