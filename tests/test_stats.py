"""Usage statistics upward: the report codec, the spool, and live secondaries reporting
to a live top-level node that goes down and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import MalformedMessage
from protocol.stats_report import PrefixCounts, StatsReport, decode_report, encode_report
from registry.sqlite_store import SQLiteStore
from resolver import admin_tasks, handle_client
from resolver.config import NodeConfig
from resolver.server import RunningNode
from resolver.stats import StatsSpool, UsageCounter

INTERVAL = 0.3
SECRETS = {"88.118": "node-118-secret", "88.119": "node-119-secret"}
ADMIN_SECRET = "admin-secret"

# -- codec ---------------------------------------------------------------------------

prefixes = st.from_regex(r"88\.[0-9]{1,3}(\.[0-9]{1,4}){0,2}", fullmatch=True)
counts = st.integers(min_value=0, max_value=2**63 - 1)


@given(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=1, max_value=10**6),
    st.dictionaries(prefixes, st.tuples(counts, counts), max_size=20),
)
def test_report_round_trips(report_id: str, start: int, length: int, rows: dict) -> None:
    report = StatsReport(report_id, "88.118", start, start + length,
                         tuple(PrefixCounts(p, r, s) for p, (r, s) in rows.items()))
    assert decode_report(encode_report(report)) == report


def _packed(**changes: object) -> bytes:
    obj: dict[str, object] = {"v": 1, "id": "r1", "node": "n", "start": 0, "end": 60,
                              "counts": [["88.118.1", 1, 2]]}
    obj.update(changes)
    return msgpack.packb(obj)


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb([1, 2]), _packed(v=2), _packed(id=""),
    _packed(id="a b"), _packed(start=60, end=60), _packed(start=-1), _packed(end="60"),
    _packed(start=True), _packed(counts={"88.118.1": 1}), _packed(counts=[["88.118.1", 1]]),
    _packed(counts=[["88.118.1", -1, 0]]), _packed(counts=[["88.118.1", 1, 2**64 - 1]]),
    _packed(counts=[["a/b", 1, 1]]), _packed(counts=[["", 1, 1]]),
    _packed(counts=[["88.1", 1, 1], ["88.1", 1, 1]]), _packed(counts=[[1, 1, 1]]),
    _packed(node=None), msgpack.packb({1: 2}), _packed() + b"\x00",
])
def test_malformed_reports_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_report(data)


# -- counting and the spool --------------------------------------------------------


def test_usage_counter_takes_and_restarts_in_place() -> None:
    usage = UsageCounter(100.0)
    resolved = usage.resolutions  # hot paths hold the dict itself
    resolved["88.118.1"] += 2
    resolved[""] += 5  # answers for prefixes not served here: never reported
    usage.registrations["88.118.2"] += 1
    assert usage.take(160.0) == (100, {"88.118.1": (0, 2), "88.118.2": (1, 0)})
    resolved["88.118.1"] += 1
    assert usage.take(220.0) == (160, {"88.118.1": (0, 1)})


async def test_spool_on_disk_survives_reopen_and_is_bounded(tmp_path: Path) -> None:
    spool = StatsSpool(tmp_path / "spool", max_reports=2)
    first = StatsReport("a", "n", 0, 60, (PrefixCounts("88.1", 1, 1),))
    second = StatsReport("b", "n", 60, 120, (PrefixCounts("88.1", 2, 2),))
    await spool.add(second)
    await spool.add(first)
    assert spool.full
    (tmp_path / "spool" / ".tmp-torn.msgpack").write_bytes(b"\x00")  # a crash mid-write
    reopened = StatsSpool(tmp_path / "spool", max_reports=2)
    assert len(reopened) == 2 and not (tmp_path / "spool" / ".tmp-torn.msgpack").exists()
    name, data = await reopened.oldest()  # type: ignore[misc]
    assert decode_report(data) == first
    await reopened.remove(name)
    name, data = await reopened.oldest()  # type: ignore[misc]
    assert decode_report(data) == second and not reopened.full


# -- live nodes ------------------------------------------------------------------------


async def start(config: NodeConfig) -> RunningNode:
    running = RunningNode(config)
    await running.start()
    return running


async def top_level_store(path: Path) -> None:
    """A top-level store holding each secondary's identity 300:0.NA/<prefix>."""
    with contextlib.redirect_stdout(io.StringIO()):
        await admin_tasks.init(str(path), "88", ADMIN_SECRET, False)
        await admin_tasks.prefix_add(str(path), "88.119", "300:88.119/ADMIN")  # has a record
        for prefix, secret in SECRETS.items():
            await admin_tasks.reporter_add(str(path), prefix, secret)
    async with SQLiteStore(path) as store:
        record = await store.get("0.NA/88.119")
        assert record is not None and {v.type for v in record} >= {"HS_ADMIN", "HS_SECKEY"}


async def secondary(tmp_path: Path, node: str, prefix: str, upstream: str,
                    *, handle_port: int | None = None) -> RunningNode:
    path = tmp_path / f"{node}.db"
    if not path.exists():
        with contextlib.redirect_stdout(io.StringIO()):
            await admin_tasks.init(str(path), prefix, ADMIN_SECRET, False)
    return await start(NodeConfig(
        store=str(path), port=0, handle_port=handle_port, stats_upstream=upstream,
        stats_interval=INTERVAL, stats_identity=f"300:0.NA/{node}", stats_secret=SECRETS[node],
    ))


async def register(session: aiohttp.ClientSession, node: RunningNode, handle: str) -> None:
    prefix = handle.partition("/")[0]
    auth = aiohttp.encode_basic_auth(f"300%3A{prefix}/ADMIN", ADMIN_SECRET)
    r = await session.put(f"http://127.0.0.1:{node.port}/api/handles/{handle}",
                          json={"values": [{"index": 1, "type": "URL",
                                            "data": {"format": "string", "value": "x"}}]},
                          headers={"Authorization": auth})
    assert r.status == 201, await r.text()


async def resolve(session: aiohttp.ClientSession, node: RunningNode, handle: str,
                  status: int = 200) -> None:
    r = await session.get(f"http://127.0.0.1:{node.port}/api/handles/{handle}")
    assert r.status == status
    await r.read()


async def totals(session: aiohttp.ClientSession, port: int) -> dict[tuple[str, str], tuple]:
    r = await session.get(f"http://127.0.0.1:{port}/api/stats")
    body = await r.json()
    return {(t["node"], t["prefix"]): (t["registrations"], t["resolutions"])
            for t in body["totals"]}


async def eventually(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_two_secondaries_report_and_the_top_level_aggregates(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    await top_level_store(tmp_path / "top.db")
    top = await start(NodeConfig(store=str(tmp_path / "top.db"), port=0, handle_port=None))
    upstream = f"http://127.0.0.1:{top.port}"
    b = await secondary(tmp_path, "88.118", "88.118.1", upstream, handle_port=0)
    c = await secondary(tmp_path, "88.119", "88.119.1", upstream)
    try:
        for i in range(3):
            await register(session, b, f"88.118.1/item-{i}")
        for _ in range(4):  # a miss, then cached fast-path answers
            await resolve(session, b, "88.118.1/item-0")
        await resolve(session, b, "88.118.1/missing", 404)  # answered: counts
        await resolve(session, b, "77.1/elsewhere", 400)  # not served here: does not
        assert b.handle_port is not None
        for _ in range(2):  # binary UDP: decoded once, then the byte-exact shortcut
            result = await handle_client.resolve_udp("127.0.0.1", b.handle_port,
                                                     "88.118.1/item-1")
            assert result.values
        await register(session, c, "88.119.1/a")
        await resolve(session, c, "88.119.1/a")
        expected = {("88.118", "88.118.1"): (3, 7), ("88.119", "88.119.1"): (1, 1)}
        await eventually(lambda: _equals(totals(session, top.port), expected))
        await asyncio.sleep(3 * INTERVAL)  # later (empty) intervals add nothing
        assert await totals(session, top.port) == expected

        r = await session.get(f"{upstream}/api/stats?node=88.118&intervals=true")
        body = await r.json()
        assert body["nodes"] == ["88.118"]
        assert sum(i["resolutions"] for i in body["intervals"]) == 7
        assert all(i["seconds"] > 0 for i in body["intervals"])
        metrics = await (await session.get(f"{upstream}/metrics")).text()
        assert 'idnode_reported_registrations_total{node="88.118",prefix="88.118.1"} 3.0' \
            in metrics
        assert 'idnode_reported_resolutions_total{node="88.119",prefix="88.119.1"} 1.0' \
            in metrics
    finally:
        for node in (b, c, top):
            await node.stop()


async def _equals(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_reports_wait_out_a_top_level_outage_and_count_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    await top_level_store(tmp_path / "top.db")
    top_config = NodeConfig(store=str(tmp_path / "top.db"), port=0, handle_port=None)
    top = await start(top_config)
    port = top.port
    upstream = f"http://127.0.0.1:{port}"
    b = await secondary(tmp_path, "88.118", "88.118.1", upstream)
    try:
        await register(session, b, "88.118.1/before")
        await eventually(lambda: _equals(totals(session, port), {("88.118", "88.118.1"): (1, 0)}))
        await top.stop()  # the top-level goes down ...
        for i in range(3):
            await register(session, b, f"88.118.1/during-{i}")
            await resolve(session, b, f"88.118.1/during-{i}")
            await asyncio.sleep(INTERVAL)
        reporter = b.node.reporter
        assert reporter is not None
        await eventually(lambda: reporter.failures > 0 and len(reporter.spool) >= 2)
        spooled = sorted(p.name for p in reporter.spool.directory.iterdir())  # type: ignore[union-attr]
        assert spooled and all(n.endswith(".msgpack") for n in spooled)
        # ... and this secondary restarts meanwhile: its spool is on disk.
        await b.stop()
        b = await secondary(tmp_path, "88.118", "88.118.1", upstream)
        await resolve(session, b, "88.118.1/before")
        top = await start(dataclass_replace(top_config, port=port))  # ... and comes back
        expected = {("88.118", "88.118.1"): (4, 4)}
        await eventually(lambda: _equals(totals(session, port), expected), timeout=20)
        await eventually(lambda: len(b.node.reporter.spool) == 0)  # type: ignore[union-attr]
        await asyncio.sleep(3 * INTERVAL)
        assert await totals(session, port) == expected
    finally:
        await b.stop()
        await top.stop()


def dataclass_replace(config: NodeConfig, **changes: object) -> NodeConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


async def test_report_endpoint_authenticates_scopes_and_deduplicates(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    await top_level_store(tmp_path / "top.db")
    top = await start(NodeConfig(store=str(tmp_path / "top.db"), port=0, handle_port=None))
    url = f"http://127.0.0.1:{top.port}/api/stats/reports"

    def headers(node: str = "88.118", secret: str | None = None) -> dict[str, str]:
        auth = aiohttp.encode_basic_auth(f"300%3A0.NA/{node}", secret or SECRETS[node])
        return {"Authorization": auth, "Content-Type": "application/msgpack"}

    report = encode_report(StatsReport("r-1", "88.118", 0, 60, (
        PrefixCounts("88.118.1", 2, 5), PrefixCounts("88.119.9", 1, 1))))
    try:
        r = await session.post(url, data=report, headers=headers())
        body = await r.json()
        assert r.status == 200 and body["duplicate"] is False and body["refused"] == ["88.119.9"]
        r = await session.post(url, data=report, headers=headers())  # a retry: acked, not added
        assert r.status == 200 and (await r.json())["duplicate"] is True
        assert await totals(session, top.port) == {("88.118", "88.118.1"): (2, 5)}
        # The same report id from another node is that node's own report.
        other = encode_report(StatsReport("r-1", "88.119", 0, 60,
                                          (PrefixCounts("88.119.9", 1, 1),)))
        r = await session.post(url, data=other, headers=headers("88.119"))
        assert r.status == 200 and (await r.json())["duplicate"] is False
        # Only other nodes' prefixes: refused whole.
        r = await session.post(url, data=other, headers=headers("88.118"))
        assert r.status == 403
        r = await session.post(url, data=report, headers=headers(secret="wrong"))
        assert r.status == 401
        r = await session.post(url, data=report,
                               headers={"Content-Type": "application/msgpack"})
        assert r.status == 401
        r = await session.post(url, data=b"\xc1garbage", headers=headers())
        assert r.status == 400 and (await r.json())["responseCode"] == 4
        r = await session.post(url, data=orjson.dumps({}), headers={
            **headers(), "Content-Type": "application/json"})
        assert r.status == 400
        r = await session.get(f"http://127.0.0.1:{top.port}/api/stats?since=x")
        assert r.status == 400
        assert await totals(session, top.port) == {("88.118", "88.118.1"): (2, 5),
                                                   ("88.119", "88.119.9"): (1, 1)}
    finally:
        await top.stop()
    # The aggregates, and the memory of which reports were counted, survive a restart.
    top = await start(NodeConfig(store=str(tmp_path / "top.db"), port=0, handle_port=None))
    try:
        url = f"http://127.0.0.1:{top.port}/api/stats/reports"
        r = await session.post(url, data=report, headers=headers())
        assert (await r.json())["duplicate"] is True
        metrics = await (await session.get(f"http://127.0.0.1:{top.port}/metrics")).text()
        assert 'idnode_reported_resolutions_total{node="88.118",prefix="88.118.1"} 5.0' \
            in metrics
    finally:
        await top.stop()


def test_serve_refuses_a_stats_upstream_without_identity_or_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from resolver.cli import main

    monkeypatch.delenv("IDNODE_STATS_SECRET", raising=False)
    assert main(["serve", "--stats-upstream", "http://127.0.0.1:1"]) == 2
    assert "needs --stats-identity" in capsys.readouterr().err
    assert main(["serve", "--stats-upstream", "http://127.0.0.1:1",
                 "--stats-identity", "300:0.NA/88.118"]) == 2
    assert "needs its secret" in capsys.readouterr().err
