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
from protocol.errors import HandleError, HandleNotFound, InvalidHandle, NotResponsible
from resolver import admin_api, openapi
from resolver.admin_api import ADMIN_PATH, AdminApi
from resolver.admission import BUSY_BODY
from resolver.fast_reply import PreEncodedResponse, eligible
from resolver.http_common import JSON_HEADERS, JSON_TYPE, error_response, json_bytes
from resolver.metrics import RouteLatency
from resolver.node import Node
from resolver.proxy import proxy_resolve
from resolver.rest_api import (
    HANDLES_PATH,
    RestApi,
    cached_reply,
    handle_text_from_path,
    reply_response,
)
from resolver.snms_api import SnmsApi, is_snms_path, snms_routes
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
        self._shed_stats = metrics.route("http", "shed")
        self._admission = node.admission
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
        key = None
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
        admission = self._admission
        # Waited since its bytes were read (resolver/arrival): past the bound, refused.
        if path not in _NEVER_SHED and admission.refuse(start - getattr(request, "arrived", start)):
            self._shed_stats.observe(503, time.perf_counter() - start)
            return self._busy(request, method)
        if key is not None:  # the same resolve, missed: the short way if it applies
            try:
                missed = self.rest.resolve_missed(text, key)
            except HandleError as exc:  # the store's: busy, closed, damaged
                error = self._error(request, exc, text, method)
                self._resolve_stats.observe(error.status, time.perf_counter() - start)
                return error
            if missed is not None:
                self._resolve_stats.observe(missed.status, time.perf_counter() - start)
                return reply_response(request, missed, raw=self._raw_replies)
        admission.inflight += 1
        try:
            stats, response = await self._dispatch(request, path, method)
        finally:
            admission.inflight -= 1
        stats.observe(response.status, time.perf_counter() - start)
        return response

    def _busy(self, request: web.BaseRequest, method: str) -> web.StreamResponse:
        """503, RC 3, Retry-After: 1; pre-encoded where the fast path's would be."""
        if self._raw_replies and eligible(request):
            return _BUSY_HEAD if method == "HEAD" else _BUSY  # type: ignore[return-value]
        return web.Response(body=BUSY_BODY, status=503, headers=_BUSY_HEADERS)

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
            if method in _READS and path in _OPS:
                return stats, await _OPS[path](self, request)
            elif method == "POST" and path in _POSTS:
                return stats, await _POSTS[path](self, request)
            elif path in _OPS:
                return stats, _not_allowed(method, path, "GET, HEAD")
            elif path in _POSTS:
                return stats, _not_allowed(method, path, "POST")
            if path.startswith(ADMIN_PATH):  # applications: Handle-style JSON, own statuses
                return stats, await self.admin.handle(request, path, method)
            if is_snms_path(path):  # SNMS v5 API: its own envelope and error mapping
                return self._snms_stats, await self.snms.handle(request, path, method)
            if path.startswith("/api/") or path == "/api":
                message = f"Unknown HTTP API endpoint {method} {path}"
                return stats, json_bytes(
                    rest_json.error_reply(RC.PROTOCOL_ERROR, None, message), 404
                )
            if method in _READS and len(path) > 1:
                stats = self._proxy_stats
                handle_text = handle_text_from_path(path, "/")
                return stats, await proxy_resolve(self.node, request, handle_text)
            return stats, _not_allowed(method, path, "GET, HEAD")
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
        route = _HANDLE_ROUTES.get(method)
        if route is None:
            return self._other_stats, _unknown_method(method)
        kind, run = route
        stats = self._write_stats if kind == "write" else self._resolve_stats
        rest = self.rest
        return stats, lambda r: run(rest, r, text)

    async def _handles_collection(
        self, request: web.BaseRequest, path: str, method: str
    ) -> web.StreamResponse:
        """``/api/handles`` itself: the listing, and the reference's answers to an empty handle."""
        if method in _READS and "prefix" in request.query:
            return await _COLLECTION_ROUTES["GET"](self.rest, request)
        if method == "POST" and path == "/api/handles":
            return await _COLLECTION_ROUTES["POST"](self.rest, request)
        if method in _EMPTY_HANDLE_ERRORS:
            raise _EMPTY_HANDLE_ERRORS[method]()
        if method not in _READS and method != "POST":
            return _not_allowed(method, path, "GET, HEAD, POST, PUT, DELETE")
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

    async def index(self, request: web.BaseRequest) -> web.Response:
        info = {
            "node": "idnode",
            "role": self.node.config.role,
            "prefixes": sorted(self.node.homed),
            "api": ["/api/openapi.json"],
        }
        return web.json_response(info)

    async def openapi(self, request: web.BaseRequest) -> web.Response:
        return json_bytes(openapi.encoded())

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        if self.node.before_scrape is not None:
            await self.node.before_scrape()
        body = generate_latest(self.node.metrics_view)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return json_bytes(self._health)

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        # A query of the small prefixes table: the store answers, at a cost that
        # does not grow with it (counting a prefix's handles, as before, read
        # its whole index: 55 ms at 1M handles vs 6 us).
        try:
            await self.node.store.homed_prefixes()
        except Exception as exc:
            log.warning("Not ready: %s", exc)
            return json_bytes(b'{"status":"unavailable"}', 503)
        if self.node.store.warming():  # serves, but slowly: keep the load away
            return json_bytes(b'{"status":"warming"}', 503)
        return json_bytes(b'{"status":"ready"}')


_READS = frozenset({"GET", "HEAD"})
_NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})  # watching an overload must work
_BUSY_HEADERS = {**JSON_HEADERS, "Retry-After": "1"}
_BUSY = PreEncodedResponse(BUSY_BODY, 503, JSON_TYPE, {"Retry-After": "1"})
_BUSY_HEAD = PreEncodedResponse(b"", 503, JSON_TYPE, {"Retry-After": "1"})
RestRoute = Callable[[RestApi, web.BaseRequest, str], Awaitable[web.StreamResponse]]


async def _options(rest: RestApi, request: web.BaseRequest, text: str) -> web.StreamResponse:
    return web.Response(status=200, headers={"Allow": ALLOW})


# The route tables. ``served_routes()`` reads them, and tests/test_openapi.py holds
# them equal to the operations resolver/openapi.py documents.
_HANDLE_ROUTES: dict[str, tuple[str, RestRoute]] = {  # /api/handles/{handle}, by method
    "GET": ("resolve", RestApi.get_handle),
    "HEAD": ("resolve", RestApi.get_handle),
    "POST": ("resolve", RestApi.get_handle),  # resolves, as the reference does
    "PUT": ("write", RestApi.put_handle),
    "DELETE": ("write", RestApi.delete_handle),
    "OPTIONS": ("other", _options),
}
_COLLECTION_ROUTES: dict[str, Callable[[RestApi, web.BaseRequest], Awaitable[web.Response]]] = {
    "GET": RestApi.list_handles,  # needs ?prefix=
    "POST": RestApi.batch,
}
# What the reference answers to writes of an empty handle (/api/handles or /api/handles/).
_EMPTY_HANDLE_ERRORS: dict[str, Callable[[], HandleError]] = {
    "PUT": NotResponsible,
    "DELETE": HandleNotFound,
}
_OPS: dict[str, Callable[[HttpFrontend, web.BaseRequest], Awaitable[web.StreamResponse]]] = {
    "/api/prefixes": lambda frontend, request: frontend.rest.list_prefixes(request),
    "/api/openapi.json": HttpFrontend.openapi,
    STATS_PATH: lambda frontend, request: frontend.stats_api.show(request),
    "/metrics": HttpFrontend.metrics,
    "/healthz": HttpFrontend.healthz,
    "/readyz": HttpFrontend.readyz,
    "/": HttpFrontend.index,
}
_POSTS: dict[str, Callable[[HttpFrontend, web.BaseRequest], Awaitable[web.StreamResponse]]] = {
    REPORTS_PATH: lambda frontend, request: frontend.stats_api.receive(
        request, auth_possible=frontend.rest.auth_possible(request)
    ),
}
PROXY_PATH = "/{handle}"  # GET (HEAD) of any other path not under /api/


def served_routes() -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the dispatcher serves.

    HEAD is answered wherever GET is; it is listed only where a table names it.
    """
    routes = {(method, HANDLES_PATH + "{handle}") for method in _HANDLE_ROUTES}
    routes |= {(method, "/api/handles") for method in (*_COLLECTION_ROUTES, *_EMPTY_HANDLE_ERRORS)}
    routes |= {("GET", path) for path in _OPS}
    routes |= {("POST", path) for path in _POSTS}
    routes |= set(admin_api.ROUTES)
    routes |= set(snms_routes())
    routes.add(("GET", PROXY_PATH))
    return routes


def _not_allowed(method: str, path: str, allow: str) -> web.Response:
    body = rest_json.error_reply(RC.PROTOCOL_ERROR, None, f"Method {method} not allowed on {path}")
    return web.Response(body=body, status=405, headers={**JSON_HEADERS, "Allow": allow})


def _unknown_method(method: str) -> Handler:
    async def unknown(request: web.BaseRequest) -> web.StreamResponse:
        body = rest_json.error_reply(RC.PROTOCOL_ERROR, None, f"Unknown method {method}")
        return json_bytes(body, 501)

    return unknown
