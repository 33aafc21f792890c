"""Incremental HTTP/1.1 response parser for pipelined replies: status codes only.

The open-loop generator (bench/open_loop.py) pipelines requests on raw
sockets and needs, per reply, just its status and where it ends. Bytes arrive
in arbitrary pieces (a reply split across reads, several replies in one read);
``feed`` takes each piece and returns the statuses of the replies it completed,
in order. Bodies are skipped by Content-Length. Chunked bodies, replies that
end at connection close and replies to HEAD are outside what the generator
sends or the node answers, and are refused with ``ReplyError`` rather than
misparsed. Interim 1xx replies are not expected either (no ``Expect``).
"""

from __future__ import annotations

from typing import Final

MAX_HEAD: Final = 16 * 1024  # a status line and headers longer than this are not a reply
_LENGTH: Final = b"\r\ncontent-length:"
_CHUNKED: Final = b"\r\ntransfer-encoding:"


class ReplyError(ValueError):
    """Bytes that are not a complete-by-length HTTP/1.1 reply."""


class ReplyParser:
    """Feed it the bytes of one connection; get each completed reply's status."""

    __slots__ = ("_buffer", "_need")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = 0  # bytes the buffer must hold before the next reply can end

    def feed(self, data: bytes) -> list[int]:
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._need:
            return []  # inside a known-length reply: nothing new to look at
        statuses: list[int] = []
        pos, end = 0, len(buffer)
        need = 0
        while pos < end:
            head_end = buffer.find(b"\r\n\r\n", pos)
            if head_end < 0:
                if end - pos > MAX_HEAD:
                    raise ReplyError("reply head too long")
                break
            status, length = parse_head(bytes(buffer[pos:head_end]))
            reply_end = head_end + 4 + length
            if reply_end > end:
                need = reply_end - pos  # counted from where the kept bytes will start
                break
            statuses.append(status)
            pos = reply_end
        self._need = need
        if pos:
            del buffer[:pos]
        return statuses

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a completed reply."""
        return len(self._buffer)


def parse_head(head: bytes) -> tuple[int, int]:
    """(status, body length) of a reply head (status line and headers, no blank line)."""
    if not head.startswith(b"HTTP/1.") or len(head) < 12 or head[12:13] not in (b" ", b"\r", b""):
        raise ReplyError(f"not an HTTP/1.x status line: {head[:40]!r}")
    digits = head[9:12]
    if not digits.isdigit():
        raise ReplyError(f"bad status code: {head[:40]!r}")
    status = int(digits)
    lowered = head.lower()
    at = lowered.find(_LENGTH)
    if at < 0:
        if lowered.find(_CHUNKED) >= 0:
            raise ReplyError("chunked replies are not supported")
        if status in (204, 304) or status < 200:
            return status, 0
        raise ReplyError(f"reply {status} without Content-Length")
    start = at + len(_LENGTH)
    stop = lowered.find(b"\r\n", start)
    value = lowered[start:] if stop < 0 else lowered[start:stop]
    value = value.strip()
    if not value.isdigit():
        raise ReplyError(f"bad Content-Length: {value!r}")
    return status, int(value)
