"""Bounds-checked big-endian reader and writer shared by the binary codecs.

Every ``get_*`` checks the remaining length first and raises
:class:`MalformedMessage`; counted items are checked against what is left
before anything is allocated, so a hostile length can never make us reserve
memory it did not send.
"""

from __future__ import annotations

import struct

from protocol.errors import MalformedMessage

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")


class WireReader:
    __slots__ = ("_buf", "_end", "pos")

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self._buf = memoryview(data)
        self.pos = start
        self._end = len(self._buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def _need(self, n: int) -> int:
        if n < 0 or n > self._end - self.pos:
            raise MalformedMessage(f"Expecting {n} bytes, only {self._end - self.pos} left")
        start = self.pos
        self.pos += n
        return start

    def get_u8(self) -> int:
        return _U8.unpack_from(self._buf, self._need(1))[0]

    def get_u16(self) -> int:
        return _U16.unpack_from(self._buf, self._need(2))[0]

    def get_u32(self) -> int:
        return _U32.unpack_from(self._buf, self._need(4))[0]

    def get_i32(self) -> int:
        return _I32.unpack_from(self._buf, self._need(4))[0]

    def get_bytes(self, n: int) -> bytes:
        start = self._need(n)
        return bytes(self._buf[start : start + n])

    def get_counted_bytes(self) -> bytes:
        return self.get_bytes(self.get_u32())

    def get_str(self) -> str:
        try:
            return self.get_counted_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("String is not valid UTF-8") from exc

    def get_count(self, min_item_size: int) -> int:
        """An int4 item count, refused if the items could not fit in what is left."""
        count = self.get_u32()
        if count * min_item_size > self.remaining:
            raise MalformedMessage(f"Count {count} exceeds the remaining {self.remaining} bytes")
        return count

    def expect_end(self) -> None:
        if self.pos != self._end:
            raise MalformedMessage(f"{self._end - self.pos} trailing bytes")


class WireWriter:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(_U8.pack(v))

    def u16(self, v: int) -> None:
        self.parts.append(_U16.pack(v))

    def u32(self, v: int) -> None:
        self.parts.append(_U32.pack(v))

    def i32(self, v: int) -> None:
        self.parts.append(_I32.pack(v))

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def counted_bytes(self, b: bytes) -> None:
        self.parts.append(_U32.pack(len(b)))
        self.parts.append(b)

    def str(self, s: str) -> None:
        self.counted_bytes(s.encode("utf-8"))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)
