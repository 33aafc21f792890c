"""Receiving usage reports (the top-level node) and showing their aggregates.

    POST /api/stats/reports   msgpack report (protocol.stats_report), Basic-authenticated
                              as the reporting node; 200 {"responseCode":1,"reportId",
                              "duplicate"} once it is durably counted (or was before)
    GET  /api/stats[?node=&prefix=&since=&intervals=true]
                              totals per node and prefix (JSON); with intervals=true
                              also each interval

The reporter's identity decides what it may report: ``300:0.NA/88.118`` (or
``300:88.118/...``) may report ``88.118`` and prefixes under it, and its counts
are kept under node ``88.118``; a server admin may report any prefix. Counts
of other prefixes are left out (named in ``refused``; a report with nothing
else is 403). Each report counts once per (node, report id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from protocol import stats_report
from protocol.errors import HandleError, MalformedMessage
from protocol.identifier import Handle
from protocol.values import HandleValue
from registry.store import StatsCount, Store
from resolver.auth import AuthenticationNeeded, Authenticator, Identity
from resolver.authz import PermissionDenied
from resolver.http_common import JSON_HEADERS, read_large_body
from resolver.throttle import LoginThrottle

STATS_PATH = "/api/stats"


def identity_scope(identity: Identity) -> str:
    """The prefix a node identity speaks for: ``0.NA/X`` -> X, ``X/suffix`` -> X."""
    head, _, tail = identity.handle.partition("/")
    return (tail if head.upper() == "0.NA" and tail else head).upper()


class ReportedTotals:
    """Sums of every accepted report per (node, prefix), for /metrics (a collector)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], list[int]] = {}

    def add(self, node: str, prefix: str, registrations: int, resolutions: int) -> None:
        pair = self.totals.setdefault((node, prefix), [0, 0])
        pair[0] += registrations
        pair[1] += resolutions

    async def load(self, store: Store) -> None:
        self.totals.clear()
        for c in await store.stats_counts():
            self.add(c.node, c.prefix, c.registrations, c.resolutions)

    def collect(self) -> Iterator[Metric]:
        registrations = CounterMetricFamily(
            "idnode_reported_registrations", "Handles registered, as reported by nodes",
            labels=["node", "prefix"],
        )
        resolutions = CounterMetricFamily(
            "idnode_reported_resolutions", "Resolutions answered, as reported by nodes",
            labels=["node", "prefix"],
        )
        for (node, prefix), (reg, res) in sorted(self.totals.items()):
            registrations.add_metric([node, prefix], reg)
            resolutions.add_metric([node, prefix], res)
        yield registrations
        yield resolutions


class StatsApi:
    def __init__(
        self,
        store: Store,
        totals: ReportedTotals,
        server_admins: frozenset[Identity],
        parse: Callable[[str], Handle],
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.totals = totals
        self.server_admins = server_admins
        self._parse = parse
        self._clock = clock
        # Node identities are records in this node's store whether or not it
        # serves their prefix (a top-level node keeps 0.NA/<prefix> of the
        # prefixes it delegates): read them from the store, not the chain.
        self._authenticator = Authenticator(self._stored_record, throttle=throttle)

    async def _stored_record(self, text: str) -> tuple[HandleValue, ...] | None:
        try:
            key = self._parse(text).key
        except HandleError:
            return None
        return await self.store.get(key)

    async def receive(self, request: web.BaseRequest, *, auth_possible: bool) -> web.Response:
        header = request.headers.get("Authorization")
        if not header or not auth_possible:
            raise AuthenticationNeeded()
        identity = await self._authenticator.authenticate_basic(header, request.remote or "")
        if request.content_type not in (stats_report.CONTENT_TYPE, "application/x-msgpack"):
            raise MalformedMessage(f"Unsupported media type {request.content_type}")
        body = await read_large_body(request, stats_report.MAX_REPORT_BYTES)
        if body is None:
            raise MalformedMessage("Report too large")
        report = stats_report.decode_report(body)
        node = identity_scope(identity)
        # Counts for prefixes this node may not speak for are left out and
        # named in the answer (refusing the whole report would make the
        # reporter retry it for ever).
        admin = identity in self.server_admins
        accepted, refused = [], []
        for c in report.counts:
            prefix = c.prefix.upper()
            if admin or prefix == node or prefix.startswith(node + "."):
                accepted.append(StatsCount(node, prefix, report.start, report.end - report.start,
                                           c.registrations, c.resolutions))
            else:
                refused.append(c.prefix)
        if refused and not accepted:
            raise PermissionDenied(f"{identity.text} may not report prefix {refused[0]}")
        new = await self.store.add_stats_report(node, report.report_id, int(self._clock()),
                                                accepted)
        if new:
            for row in accepted:
                self.totals.add(node, row.prefix, row.registrations, row.resolutions)
        reply: dict[str, object] = {
            "responseCode": 1, "reportId": report.report_id, "duplicate": not new,
        }
        if refused:
            reply["refused"] = refused
        return web.Response(body=orjson.dumps(reply), headers=JSON_HEADERS)

    async def show(self, request: web.BaseRequest) -> web.Response:
        query = request.query
        try:
            since = int(query["since"]) if "since" in query else None
        except ValueError:
            raise MalformedMessage("since must be Unix seconds") from None
        node, prefix = query.get("node") or None, query.get("prefix") or None
        rows = await self.store.stats_counts(
            node=node.upper() if node else None, prefix=prefix.upper() if prefix else None,
            since=since,
        )
        totals: dict[tuple[str, str], list[int]] = {}
        for c in rows:
            pair = totals.setdefault((c.node, c.prefix), [0, 0])
            pair[0] += c.registrations
            pair[1] += c.resolutions
        out: dict[str, object] = {
            "responseCode": 1,
            "nodes": sorted({n for n, _ in totals}),
            "totals": [
                {"node": n, "prefix": p, "registrations": reg, "resolutions": res}
                for (n, p), (reg, res) in sorted(totals.items())
            ],
        }
        if query.get("intervals", "").lower() in ("true", "1", "yes"):
            out["intervals"] = [
                {"node": c.node, "prefix": c.prefix, "start": c.interval_start,
                 "seconds": c.interval_seconds, "registrations": c.registrations,
                 "resolutions": c.resolutions}
                for c in rows
            ]
        return web.Response(body=orjson.dumps(out), headers=JSON_HEADERS)

