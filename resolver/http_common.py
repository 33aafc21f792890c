"""Response helpers shared by the HTTP handlers: one place builds JSON and error replies."""

from __future__ import annotations

import ipaddress
from typing import Final

from aiohttp import web

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import HandleError
from resolver.throttle import TooManyAttempts

JSON_TYPE: Final = "application/json;charset=utf-8"
JSON_HEADERS: Final = {"Content-Type": JSON_TYPE}
CHALLENGE_HEADERS: Final = {"Content-Type": JSON_TYPE, "WWW-Authenticate": 'Basic realm="handle"'}


def json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


def error_response(
    exc: HandleError,
    handle_text: str | None,
    *,
    method: str,
    auth_possible: bool,
    tls: bool,
) -> web.Response:
    """The reply for a failed request, in the REST API's terms (status + JSON body)."""
    rc = int(exc.rc)
    body = rest_json.error_reply(rc, handle_text, exc.message or None)
    if rc == RC.AUTHENTICATION_NEEDED:
        # Ask for credentials only where we would accept them (TLS, or loopback).
        if auth_possible:
            return web.Response(body=body, status=401, headers=CHALLENGE_HEADERS)
        return json_bytes(body, 403)
    if isinstance(exc, TooManyAttempts):
        headers = {"Content-Type": JSON_TYPE, "Retry-After": str(exc.retry_after)}
        return web.Response(body=body, status=429, headers=headers)
    if rc == RC.AUTHENTICATION_FAILED:
        return web.Response(body=body, status=401, headers=CHALLENGE_HEADERS)
    return json_bytes(body, rest_json.http_status(rc, method=method, tls=tls))


def is_loopback(request: web.BaseRequest) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False  # a Unix socket path, etc.


# Batches (2000 records) pass aiohttp's default 1 MiB request limit.
MAX_BATCH_BODY: Final = 32 * 1024 * 1024


async def read_large_body(request: web.BaseRequest, limit: int = MAX_BATCH_BODY) -> bytes | None:
    """The whole body, up to ``limit`` bytes; None if it is longer."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
