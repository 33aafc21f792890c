"""Handle.Net 9 REST API: /api/handles, /api/handles/{handle}, /api/prefixes.

Handlers are thin: decode the request, ask the node (resolve) or its
registrar (writes), encode the reply. Behaviour follows the reference server
as observed (shared/reference/handle-rest.md); deviations are noted inline.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

import orjson
from aiohttp import web
from multidict import MultiDict, MultiDictProxy, MultiMapping

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import (
    HandleError,
    HandleNotFound,
    MalformedMessage,
    NotResponsible,
)
from protocol.identifier import Handle, parse_prefix, prefix_handle
from protocol.record_msgpack import value_views
from protocol.rest_batch import decode_rest_batch
from protocol.values import PUBLIC_READ, AdminPerm, HandleValue, filter_values
from resolver.auth import AuthenticationNeeded, Identity
from resolver.authz import admin_records, authorise, may_read_private
from resolver.cache import CacheEntry, ResolutionCache
from resolver.cache.entry import usage_prefix
from resolver.fast_reply import PreEncodedResponse, eligible
from resolver.http_common import (
    JSON_HEADERS,
    JSON_TYPE,
    is_loopback,
    json_bytes,
    read_large_body,
)
from resolver.node import Node

HANDLES_PATH = "/api/handles/"
_CALLBACK = re.compile(r"^[A-Za-z_$][\w$.]{0,63}$")
_MINT_ATTEMPTS = 5

# Status of a cached answer on the unfiltered path, by response code.
ENTRY_STATUS = {RC.SUCCESS: 200, RC.HANDLE_NOT_FOUND: 404, RC.SERVER_NOT_RESP: 400,
                RC.SERVICE_REFERRAL: 300, RC.PREFIX_REFERRAL: 300}
REFERRALS = frozenset({RC.SERVICE_REFERRAL, RC.PREFIX_REFERRAL})
# A recursive node's answer served past its TTL because the upstream is down
# (RFC 7234's warn-code 110, plus a header of our own that is easy to test for).
STALE_HEADERS = {"Warning": '110 - "Response is Stale"', "X-Idnode-Stale": "1"}


def handle_text_from_path(raw_path: str, base: str) -> str:
    """The handle in a request path, percent-decoded as the reference does (bad UTF-8 → U+FFFD)."""
    text = raw_path[len(base) :]
    return unquote(text, errors="replace") if "%" in text else text


def cached_reply(cache: ResolutionCache, entry: CacheEntry, text: str) -> PreEncodedResponse:
    """The anonymous unfiltered reply for ``entry`` echoing ``text``, encoded once per spelling."""
    return cache.encoded(
        entry,
        text,
        lambda: PreEncodedResponse(
            unfiltered_reply(entry, text), ENTRY_STATUS.get(entry.rc, 400), JSON_TYPE,
            STALE_HEADERS if entry.stale else None,
        ),
    )


def reply_response(
    request: web.BaseRequest, reply: PreEncodedResponse, *, raw: bool
) -> web.StreamResponse:
    """``reply`` itself where its pre-built bytes fit (``raw``: no access log), else a copy."""
    if raw and eligible(request):
        return reply  # type: ignore[return-value]  # duck-typed, see fast_reply
    return web.Response(body=reply.body, status=reply.status,
                        headers={**JSON_HEADERS, **reply.headers})


def unfiltered_reply(entry: CacheEntry, text: str) -> bytes:
    """The body of an anonymous, unfiltered resolve of ``entry`` echoing ``text``."""
    return anonymous_body(entry.rc, entry.values, text)


def anonymous_body(rc: RC, values: Sequence[HandleValue] | None, text: str) -> bytes:
    """The body of an anonymous, unfiltered resolve answered ``rc``, ``values``."""
    if rc in REFERRALS:
        return rest_json.referral_reply(rc, text, values or ())
    if values is None:
        message = "That prefix doesn't live here" if rc == RC.SERVER_NOT_RESP else None
        return rest_json.error_reply(int(rc), text, message)
    public = [v for v in value_views(values) if v.permissions & PUBLIC_READ]
    if not public:
        return rest_json.values_not_found_reply(text)
    return rest_json.resolve_reply(text, public)


class RestApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        # Pre-built replies skip aiohttp's response object, and so its access log.
        self._raw_replies = not node.config.access_log

    # -- credentials -------------------------------------------------------

    def auth_possible(self, request: web.BaseRequest) -> bool:
        """Credentials count over TLS, from loopback, or everywhere if configured so."""
        return request.secure or self.node.config.allow_insecure_auth or is_loopback(request)

    async def identity(self, request: web.BaseRequest) -> Identity | None:
        header = request.headers.get("Authorization")
        if not header or not self.auth_possible(request):
            return None  # like Handle.Net over plain HTTP: credentials are ignored
        return await self.node.authenticator.authenticate_basic(header, request.remote or "")

    async def require_identity(self, request: web.BaseRequest) -> Identity:
        identity = await self.identity(request)
        if identity is None:
            raise AuthenticationNeeded()
        return identity

    # -- GET/HEAD/POST /api/handles/{handle} ----------------------------------

    async def get_handle(self, request: web.BaseRequest, text: str) -> web.StreamResponse:
        if (
            request.method == "GET"
            and "?" not in request.raw_path
            and "Authorization" not in request.headers
        ):
            return await self._resolve_anonymous(request, text)
        query = request.query
        if request.method == "POST" and request.content_type == "application/json":
            query = await _json_params(request, query)
        handle = self.node.parse(text)
        indexes = _int_params(query, "index")
        types = query.getall("type", [])
        identity = await self.identity(request)
        public_only = _bool_param(query, "publicOnly", default=identity is None)
        if not public_only and identity is None:
            raise AuthenticationNeeded()
        entry = await self.node.resolve(handle)
        self.node.usage.resolutions[entry.prefix] += 1
        if entry.rc in REFERRALS:  # where to ask instead, whatever was filtered for
            cached = cached_reply(self.node.cache, entry, text)
            return _render(cached.body, query, status=cached.status, stale=entry.stale)
        if entry.values is None:
            raise _rc_error(entry.rc)
        if public_only and not indexes and not types:
            body = cached_reply(self.node.cache, entry, text).body
        else:
            values = filter_values(entry.values, indexes, types)
            if (
                public_only
                or identity is None
                or not await may_read_private(
                    identity, handle, entry.values, self.node.server_admins, self.node.record_of
                )
            ):
                values = [v for v in values if v.public_read]
            body = (
                rest_json.resolve_reply(text, values)
                if values
                else rest_json.values_not_found_reply(text)
            )
        return _render(body, query, stale=entry.stale)

    def resolve_missed(self, text: str, key: str) -> PreEncodedResponse | None:
        """``_resolve_anonymous`` of a cache miss that ``Node.read_missed`` answers
        inline, else None. A reply the cache does not keep is rendered straight
        from the stored values, and not kept either."""
        found = self.node.read_missed(text, key)
        if found is None:
            return None
        record, entry = found
        self.node.usage.resolutions[usage_prefix(key) if entry is None else entry.prefix] += 1
        if record is None:
            raise _rc_error(RC.HANDLE_NOT_FOUND)  # as _resolve_anonymous answers it
        if entry is not None:
            return cached_reply(self.node.cache, entry, text)
        body = anonymous_body(RC.SUCCESS, record, text)
        return PreEncodedResponse(body, ENTRY_STATUS[RC.SUCCESS], JSON_TYPE, kept=False)

    async def _resolve_anonymous(self, request: web.BaseRequest, text: str) -> web.StreamResponse:
        """``get_handle`` without parameters or credentials: the reply a cache hit
        gets (``cached_reply``), kept in the entry, so the next request is a hit."""
        entry = await self.node.resolve(self.node.parse(text))
        self.node.usage.resolutions[entry.prefix] += 1
        if entry.values is None and entry.rc not in REFERRALS:
            raise _rc_error(entry.rc)
        return reply_response(request, cached_reply(self.node.cache, entry, text),
                              raw=self._raw_replies)

    # -- PUT /api/handles/{handle} -------------------------------------------

    async def put_handle(self, request: web.BaseRequest, text: str) -> web.Response:
        query = request.query
        mint = _bool_param(query, "mintNewSuffix", default=False)
        if mint and text.endswith("/") and text.count("/") == 1:
            return await self._mint(request, text)
        handle = self.node.parse(text)
        values = await self._read_values(request, handle.text)
        identity = await self.require_identity(request)
        overwrite = _bool_param(query, "overwrite", default=True)
        index_params = query.getall("index", [])
        if index_params:
            if "various" not in index_params:
                wanted = set(_int_params(query, "index"))
                if any(v.index not in wanted for v in values):
                    raise MalformedMessage("Mismatched indexes in PUT request")
            created = await self.node.registrar.add_values(
                identity, handle, values, overwrite=overwrite
            )
        else:
            created = await self.node.registrar.put_record(
                identity, handle, values, overwrite=overwrite
            )
        return json_bytes(rest_json.ok_reply(handle.text), 201 if created else 200)

    async def _mint(self, request: web.BaseRequest, text: str) -> web.Response:
        prefix = text[:-1]
        body = await request.read()
        identity = await self.require_identity(request)
        for _ in range(_MINT_ATTEMPTS):
            handle = self.node.parse(f"{prefix}/{uuid.uuid4()}")
            values = self._decode_values(request, body, handle.text)
            try:
                await self.node.registrar.put_record(identity, handle, values, overwrite=False)
            except HandleError as exc:
                if exc.rc == RC.HANDLE_ALREADY_EXISTS:
                    continue
                raise
            return json_bytes(rest_json.ok_reply(handle.text), 201)
        raise HandleError("Could not mint a new suffix", RC.ERROR)

    async def _read_values(self, request: web.BaseRequest, handle_text: str) -> list[HandleValue]:
        return self._decode_values(request, await request.read(), handle_text)

    @staticmethod
    def _decode_values(
        request: web.BaseRequest, body: bytes, handle_text: str
    ) -> list[HandleValue]:
        content_type = request.headers.get("Content-Type")
        if content_type is None or request.content_type != "application/json":
            raise MalformedMessage(f"Unsupported media type {content_type}")
        return rest_json.decode_put_body(body, handle_text)

    # -- POST /api/handles: batch registration (idnode's extension) ----------

    async def batch(self, request: web.BaseRequest) -> web.Response:
        """A JSON array (``application/json``) or NDJSON (``application/x-ndjson``) of
        ``{"handle", "values"}``: each record created (``?overwrite=false``) or created
        or replaced (the default, as PUT), all or nothing per record; results in order."""
        identity = await self.require_identity(request)
        kind = request.content_type
        if kind not in ("application/json", "application/x-ndjson", "application/jsonl"):
            raise MalformedMessage(f"Unsupported media type {kind}")
        body = await read_large_body(request)
        if body is None:
            raise HandleError("Batch too large", RC.PROTOCOL_ERROR)
        items = decode_rest_batch(
            body, ndjson=kind != "application/json", stamp=self.node.registrar.timestamp()
        )
        overwrite = _bool_param(request.query, "overwrite", default=True)
        results: list[tuple[str | None, bool | HandleError]] = []
        ready: list[tuple[Handle, Sequence[HandleValue]]] = []
        positions: list[int] = []
        for text, parsed in items:
            if not isinstance(parsed, HandleError) and text is not None:
                try:
                    ready.append((self.node.parse(text), parsed))
                    positions.append(len(results))
                except HandleError as exc:
                    parsed = exc
            results.append((text, parsed if isinstance(parsed, HandleError) else False))
        if ready:
            mode = "put" if overwrite else "create"
            written = await self.node.registrar.put_many(identity, ready, mode=mode)
            for i, result in zip(positions, written, strict=True):
                results[i] = (results[i][0], result)
        return json_bytes(rest_json.batch_reply(results))

    # -- DELETE /api/handles/{handle} ----------------------------------------

    async def delete_handle(self, request: web.BaseRequest, text: str) -> web.Response:
        handle = self.node.parse(text)
        identity = await self.require_identity(request)
        indexes = _int_params(request.query, "index")
        try:
            if indexes:
                await self.node.registrar.remove_values(identity, handle, indexes)
            else:
                await self.node.registrar.delete(identity, handle)
        except NotResponsible:
            raise HandleNotFound() from None  # what the reference answers here
        return json_bytes(rest_json.ok_reply(handle.text))

    # -- GET /api/handles?prefix= and /api/prefixes ---------------------------

    async def list_handles(self, request: web.BaseRequest) -> web.Response:
        query = request.query
        prefix_param = query.get("prefix", "")
        identity = await self.require_identity(request)
        if not prefix_param:
            raise NotResponsible()
        prefix = parse_prefix(prefix_param)
        if not self.node.serves(prefix):
            raise NotResponsible()
        admins = admin_records(await self.node.record_of(prefix_handle(prefix)) or ())
        await authorise(
            identity, AdminPerm.LIST_HANDLES, admins, self.node.server_admins, self.node.record_of
        )
        page, page_size = _paging(query)
        total = await self.node.store.count_handles(prefix)
        if page is None or page_size is None:
            handles = await self.node.store.list_handles(prefix)
        elif page_size <= 0:
            handles = []
        else:
            handles = await self.node.store.list_handles(
                prefix, offset=page * page_size, limit=page_size
            )
        body = rest_json.list_handles_reply(prefix_param, total, handles, page, page_size)
        return json_bytes(body)

    async def list_prefixes(self, request: web.BaseRequest) -> web.Response:
        await self.require_identity(request)
        prefixes = [prefix_handle(p) for p in sorted(self.node.homed)]
        page, page_size = _paging(request.query)
        shown = prefixes
        if page is not None and page_size is not None:
            shown = prefixes[page * page_size : (page + 1) * page_size] if page_size > 0 else []
        body = rest_json.list_prefixes_reply(len(prefixes), shown, page, page_size)
        return json_bytes(body)


# -- parameter parsing -------------------------------------------------------


def _rc_error(rc: RC) -> HandleError:
    """The error a negative answer ``rc`` is sent as."""
    if rc == RC.SERVER_NOT_RESP:
        return NotResponsible()
    return HandleError("", rc)


def _int_params(query: MultiMapping[str], name: str) -> list[int]:
    try:
        return [int(v) for v in query.getall(name, [])]
    except ValueError as exc:
        raise MalformedMessage(f"Invalid {name} parameter: {exc}") from None


def _bool_param(query: MultiMapping[str], name: str, *, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return value.lower() not in ("false", "0", "no")


def _java_int(text: str) -> int:
    """An int as the reference's Integer.parseInt reads it: 32-bit, else an error
    (schemathesis found page=404095076551 reaching SQLite as an overflowing offset)."""
    value = int(text)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"For input string: {text!r}")
    return value


def _paging(query: MultiMapping[str]) -> tuple[int | None, int | None]:
    """Paging applies only when both page and pageSize are given (as the reference)."""
    try:
        page = _java_int(query["page"]) if "page" in query else None
        size = _java_int(query["pageSize"]) if "pageSize" in query else None
    except ValueError as exc:
        raise MalformedMessage(f"Invalid paging parameter: {exc}") from None
    if page is not None and page < 0:
        raise MalformedMessage("page must not be negative")
    if page is None or size is None:
        return None, None
    return page, size


async def _json_params(request: web.BaseRequest, query: MultiMapping[str]) -> MultiMapping[str]:
    """POST as GET: JSON body keys act as parameters (the reference does this)."""
    try:
        params = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"Malformed JSON: {exc}") from None
    if not isinstance(params, dict):
        raise MalformedMessage("Invalid JSON parameters")
    merged: MultiDict[str] = MultiDict(query)
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            merged.add(str(key), str(item).lower() if isinstance(item, bool) else str(item))
    return MultiDictProxy(merged)


def _render(
    body: bytes, query: MultiMapping[str], *, status: int = 200, stale: bool = False
) -> web.Response:
    """Apply ?pretty and ?callback (JSONP) to a reply body."""
    if "pretty" in query:
        body = rest_json.pretty(body)
    callback = query.get("callback")
    if callback:
        if not _CALLBACK.match(callback):
            raise MalformedMessage("Invalid callback name")
        headers: Mapping[str, str] = {"Content-Type": "application/javascript;charset=utf-8"}
        body = rest_json.jsonp(body, callback)
    else:
        headers = JSON_HEADERS
    if stale:
        headers = {**headers, **STALE_HEADERS}
    return web.Response(body=body, status=status, headers=headers)
