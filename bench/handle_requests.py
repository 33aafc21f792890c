"""Binary Handle protocol requests for the load scenarios, built with protocol/'s codecs.

A RESOLUTION request is encoded once per identifier (a template) and sent with
its request id and expiration patched in place, so a load user spends its time
on the exchange, not on encoding. No locust here: tests import it freely.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from protocol.codes import RC
from protocol.handle_wire import (
    ENVELOPE_SIZE,
    FLAG_PUBL,
    FLAG_RECU,
    Envelope,
    Message,
    OpCode,
    ResolutionRequest,
    ValuesBody,
    encode_packet,
)

U32 = struct.Struct(">I")
REQUEST_ID_OFFSET = 8  # envelope: versions (4), sessionId (4), requestId (4)
EXPIRATION_OFFSET = ENVELOPE_SIZE + 16  # header: opCode, RC, opFlags, serial, recursion...


class HandleError(Exception):
    """A reply that is not the answer asked for (locust shows its text)."""


@lru_cache(maxsize=65536)
def resolution_template(handle: str) -> bytes:
    """A public RESOLUTION request for ``handle`` (PUBL, RECU), request id and expiration 0."""
    message = Message(OpCode.RESOLUTION, 0, FLAG_PUBL | FLAG_RECU, ResolutionRequest(handle))
    return encode_packet(Envelope(), message)


def addressed(template: bytes, request_id: int, expiration: int) -> bytes:
    """The template with its request id and expiration (Unix seconds) set."""
    packet = bytearray(template)
    U32.pack_into(packet, REQUEST_ID_OFFSET, request_id)
    U32.pack_into(packet, EXPIRATION_OFFSET, expiration)
    return bytes(packet)


def reply_request_id(data: bytes) -> int | None:
    """The request id a reply (or reply fragment) answers; None if too short to say."""
    return U32.unpack_from(data, REQUEST_ID_OFFSET)[0] if len(data) >= ENVELOPE_SIZE else None


def check_reply(msg: Message, handle: str) -> None:
    """Raise :class:`HandleError` unless ``msg`` is a successful answer for ``handle``."""
    if msg.response_code != RC.SUCCESS:
        text = getattr(msg.body, "message", "")
        raise HandleError(f"RC {msg.response_code} {text}".rstrip())
    if not isinstance(msg.body, ValuesBody) or msg.body.handle != handle:
        raise HandleError(f"RC 1 without the values of {handle}")
