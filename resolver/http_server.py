"""The HTTP front end: one aiohttp low-level server, a small fixed router, one error mapper.

aiohttp's routed ``Application`` costs ~20% of a cached resolve here (the
low-level ``web.Server`` answered ~1.25x the requests/s of the routed app on
identical bytes), so the node dispatches on the path itself. The hot path, an
anonymous unfiltered ``GET /api/handles/{handle}`` whose answer is cached, does
one dict lookup and returns pre-encoded bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import HandleError, InvalidHandle, NotResponsible
from resolver.admin_api import ADMIN_PATH, AdminApi
from resolver.fast_reply import eligible
from resolver.http_common import JSON_HEADERS, error_response, json_bytes
from resolver.metrics import RouteLatency
from resolver.node import Node
from resolver.proxy import proxy_resolve
from resolver.rest_api import HANDLES_PATH, RestApi, cached_reply, handle_text_from_path
from resolver.snms_api import SnmsApi, is_snms_path
from resolver.stats import REPORTS_PATH
from resolver.stats_api import STATS_PATH, StatsApi

log = logging.getLogger(__name__)

ALLOW = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class HttpFrontend:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.rest = RestApi(node)
        self.snms = SnmsApi(node)
        self.admin = AdminApi(node.applications, node.token_key, node.sealer.seal, time.time,
                              node.authenticator.throttle)
        metrics = node.requests
        self._resolve_stats = metrics.route("http", "resolve")
        self._write_stats = metrics.route("http", "write")
        self._list_stats = metrics.route("http", "list")
        self._proxy_stats = metrics.route("http", "proxy")
        self._other_stats = metrics.route("http", "other")
        self._snms_stats = metrics.route("http", "snms")
        self._tls = node.config.tls
        self._resolved = node.usage.resolutions  # per prefix, for statistics upward
        self.stats_api = StatsApi(node.store, node.reported, node.server_admins, node.parse,
                                  node.authenticator.throttle)
        # Pre-built replies skip aiohttp's response object, and so its access log.
        self._raw_replies = not node.config.access_log
        # Which worker answered, when there are several (tests, operators).
        slot = node.config.worker_slot
        self._health = (
            b'{"status":"ok"}' if slot is None
            else b'{"status":"ok","worker":%d,"pid":%d}' % (slot, os.getpid())
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        raw = request.raw_path
        path, _, query = raw.partition("?")
        method = request.method
        # Hot path: anonymous, unfiltered resolve with a cached answer.
        if (
            method == "GET"
            and not query
            and path.startswith(HANDLES_PATH)
            and "Authorization" not in request.headers
        ):
            text = handle_text_from_path(path, HANDLES_PATH)
            key = self.node.fast_key(text)
            entry = self.node.cache.peek(key) if key is not None else None
            if entry is not None:
                self._resolved[entry.prefix] += 1
                reply = cached_reply(self.node.cache, entry, text)
                self._resolve_stats.observe(reply.status, time.perf_counter() - start)
                if self._raw_replies and eligible(request):
                    return reply  # type: ignore[return-value]  # duck-typed, see fast_reply
                return web.Response(body=reply.body, status=reply.status,
                                    headers={**JSON_HEADERS, **reply.headers})
        stats, response = await self._dispatch(request, path, method)
        stats.observe(response.status, time.perf_counter() - start)
        return response

    async def _dispatch(
        self, request: web.BaseRequest, path: str, method: str
    ) -> tuple[RouteLatency, web.StreamResponse]:
        """Route, run, and map every failure to a reply: no exception leaves here."""
        stats, handle_text = self._other_stats, None
        try:
            if path.startswith(HANDLES_PATH) and len(path) > len(HANDLES_PATH):
                handle_text = handle_text_from_path(path, HANDLES_PATH)
                stats, run = self._handle_route(method, handle_text)
                return stats, await run(request)
            if path in ("/api/handles", HANDLES_PATH):
                stats = self._list_stats
                return stats, await self._handles_collection(request, path, method)
            if path == "/api/prefixes" and method in ("GET", "HEAD"):
                return stats, await self.rest.list_prefixes(request)
            if path == STATS_PATH and method in ("GET", "HEAD"):
                return stats, await self.stats_api.show(request)
            if path == REPORTS_PATH and method == "POST":
                auth_possible = self.rest.auth_possible(request)
                return stats, await self.stats_api.receive(request, auth_possible=auth_possible)
            if path.startswith(ADMIN_PATH):  # applications: Handle-style JSON, own statuses
                return stats, await self.admin.handle(request, path, method)
            if is_snms_path(path):  # SNMS v5 API: its own envelope and error mapping
                return self._snms_stats, await self.snms.handle(request, path, method)
            if path.startswith("/api/") or path == "/api":
                message = f"Unknown HTTP API endpoint {method} {path}"
                return stats, json_bytes(
                    rest_json.error_reply(RC.PROTOCOL_ERROR, None, message), 404
                )
            if path in _OPS:
                return stats, await _OPS[path](self, request)
            if method in ("GET", "HEAD") and len(path) > 1:
                stats = self._proxy_stats
                handle_text = handle_text_from_path(path, "/")
                return stats, await proxy_resolve(self.node, request, handle_text)
            if path == "/" and method in ("GET", "HEAD"):
                return stats, await self._index(request)
            return stats, json_bytes(
                rest_json.error_reply(RC.PROTOCOL_ERROR, None, f"Not found: {method} {path}"), 404
            )
        except HandleError as exc:
            return stats, self._error(request, exc, handle_text, method)
        except web.HTTPException as exc:  # aiohttp's own limits, e.g. body too large
            rc = RC.SERVER_TOO_BUSY if exc.status == 503 else RC.PROTOCOL_ERROR
            body = rest_json.error_reply(rc, handle_text, exc.reason)
            return stats, json_bytes(body, exc.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Unhandled error for %s %s", method, path)
            body = rest_json.error_reply(RC.ERROR, handle_text, "Internal server error")
            return stats, json_bytes(body, 500)

    def _handle_route(self, method: str, text: str) -> tuple[RouteLatency, Handler]:
        rest = self.rest
        if method in ("GET", "HEAD", "POST"):
            return self._resolve_stats, lambda r: rest.get_handle(r, text)
        if method == "PUT":
            return self._write_stats, lambda r: rest.put_handle(r, text)
        if method == "DELETE":
            return self._write_stats, lambda r: rest.delete_handle(r, text)
        if method == "OPTIONS":
            return self._other_stats, _options
        return self._other_stats, _unknown_method(method)

    async def _handles_collection(
        self, request: web.BaseRequest, path: str, method: str
    ) -> web.StreamResponse:
        """``/api/handles`` itself: the listing, and the reference's answers to an empty handle."""
        if method in ("GET", "HEAD") and "prefix" in request.query:
            return await self.rest.list_handles(request)
        if method == "POST" and path == "/api/handles":
            return await self.rest.batch(request)
        if method == "PUT":
            raise NotResponsible()
        if method == "DELETE":
            raise HandleError("", RC.HANDLE_NOT_FOUND)
        raise InvalidHandle("Empty handle invalid")

    def _error(
        self, request: web.BaseRequest, exc: HandleError, handle_text: str | None, method: str
    ) -> web.Response:
        if exc.rc == RC.ERROR:
            log.warning("%s %s failed: %s", method, request.path, exc.message)
        return error_response(
            exc,
            handle_text,
            method=method,
            auth_possible=self.rest.auth_possible(request),
            tls=self._tls,
        )

    async def _index(self, request: web.BaseRequest) -> web.Response:
        info = {
            "node": "idnode",
            "role": self.node.config.role,
            "prefixes": sorted(self.node.homed),
            "api": ["/api/handles/{handle}", "/api/handles?prefix=", "/api/prefixes"],
        }
        return web.json_response(info)

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        if self.node.before_scrape is not None:
            await self.node.before_scrape()
        body = generate_latest(self.node.metrics_view)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return json_bytes(self._health)

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        try:
            await self.node.store.count_handles(next(iter(self.node.homed), "0.NA"))
        except Exception as exc:
            log.warning("Not ready: %s", exc)
            return json_bytes(b'{"status":"unavailable"}', 503)
        return json_bytes(b'{"status":"ready"}')


_OPS: dict[str, Callable[[HttpFrontend, web.BaseRequest], Awaitable[web.StreamResponse]]] = {
    "/metrics": HttpFrontend.metrics,
    "/healthz": HttpFrontend.healthz,
    "/readyz": HttpFrontend.readyz,
}


async def _options(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(status=200, headers={"Allow": ALLOW})


def _unknown_method(method: str) -> Handler:
    async def unknown(request: web.BaseRequest) -> web.StreamResponse:
        body = rest_json.error_reply(RC.PROTOCOL_ERROR, None, f"Unknown method {method}")
        return json_bytes(body, 501)

    return unknown
