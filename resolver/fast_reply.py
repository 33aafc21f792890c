"""Hot-path replies written as one pre-built buffer.

aiohttp finishes a handler's response by calling ``prepare(request)`` and
``write_eof()`` on it and then reading ``keep_alive``. Building a
``web.Response`` and letting aiohttp serialise its headers costs several µs per
request, a large share of a cached resolve; the status line, fixed headers and
body of a cached answer never change, so they are encoded once (and kept in the
cache entry) and only the Date header is added per request. aiohttp still
parses every request: one port, one HTTP stack.

Used only for keep-alive HTTP/1.1 requests with no body and no access log;
everything else takes the ordinary ``web.Response`` path.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from functools import lru_cache
from typing import Final

from aiohttp import web

from resolver.cache.entry import exact_bytes

_REASONS: Final = {200: b"OK", 300: b"Multiple Choices", 400: b"Bad Request",
                   404: b"Not Found", 503: b"Service Unavailable"}
_date_second = 0
_date_line = b""


def date_line() -> bytes:
    """``Date: ...\\r\\n``, formatted once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        _date_second = now
    return _date_line


def encode_head(
    status: int, content_type: str, body_length: int, extra_headers: dict[str, str] | None = None
) -> bytes:
    """Status line and fixed headers; the Date line and blank line follow per request."""
    if not extra_headers:
        return _plain_head(status, content_type, body_length)
    return _format_head(status, content_type, body_length, extra_headers)


@lru_cache(maxsize=4096)  # every miss makes a head; replies of a store share few lengths
def _plain_head(status: int, content_type: str, body_length: int) -> bytes:
    return _format_head(status, content_type, body_length, None)


def _format_head(
    status: int, content_type: str, body_length: int, extra_headers: dict[str, str] | None
) -> bytes:
    reason = _REASONS.get(status, b"")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (extra_headers or {}).items()).encode()
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nServer: idnode\r\n%s"
        % (status, reason, content_type.encode(), body_length, extra)
    )


class PreEncodedResponse:
    """Quacks like the ``StreamResponse`` aiohttp's request handler finishes."""

    __slots__ = ("_head", "body", "headers", "status")
    keep_alive = True
    __http_exception__ = False

    def __init__(
        self, body: bytes, status: int, content_type: str,
        extra_headers: dict[str, str] | None = None, *, kept: bool = True,
    ) -> None:
        self._head = encode_head(status, content_type, len(body), extra_headers)
        self.body = exact_bytes(body) if kept else body  # kept: in the cache, see exact_bytes
        self.status = status
        self.headers = extra_headers or {}  # beyond Content-Type (for the slow path)

    def __len__(self) -> int:
        """Bytes it holds (what a cache charges for keeping it)."""
        return len(self._head) + len(self.body)

    @property
    def body_length(self) -> int:
        return len(self.body)

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.write(b"".join((self._head, date_line(), b"\r\n", self.body)))

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def eligible(request: web.BaseRequest) -> bool:
    """Keep-alive HTTP/1.1 without a body: the only case a pre-built buffer fits."""
    return request.version == (1, 1) and request.keep_alive and not request.body_exists
