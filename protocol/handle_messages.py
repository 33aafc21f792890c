"""Handle binary protocol, messages: value records, message bodies and the
header + body + credential codec (handle-wire.md §2-§6, §11; Java ``Encoder``).

One body class per wire shape; the header's opCode and responseCode say which
shape to expect, so several opCodes share a class (``HandleBody`` is the body of
GET_SITE_INFO, DELETE_HANDLE, LIST_HANDLES, HOME_NA ... requests and of the
CREATE_HANDLE reply). Each class has ``to_wire``/``from_wire`` side by side.
Shapes we do not model (SESSION_SETUP, replication, unknown opCodes) decode to
:class:`OpaqueBody`, so the server can still answer them.

Decoding is as lenient as Handle.Net where that is harmless (a credential section
may be missing, bytes after a body's last field are ignored) and strict where
Java would read past the data (every length and count is checked against what is
left before anything is allocated).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Self

from protocol.codes import RC
from protocol.errors import InvalidValue, MalformedMessage
from protocol.handle_envelope import (
    FLAG_RRDG,
    HEADER_SIZE,
    MSG_INVALID_LENGTH,
    PROTOCOL_VERSION,
    HandleProtocolError,
    OpCode,
    RequestDigest,
    get_digest,
    malformed,
    msg_unknown_opcode,
    put_digest,
    version_at_least,
)
from protocol.site_info import SiteInfo, decode_site, encode_site
from protocol.values import HandleValue, ValueReference
from protocol.wire import WireReader, WireWriter

_U32 = 0xFFFFFFFF
_U32S = struct.Struct(">I")
_HEADER = struct.Struct(">IIIHBBII")

# Minimum encoded sizes, for WireReader.get_count.
_MIN_VALUE = 4 + 4 + 1 + 4 + 1 + 4 + 4 + 4
_MIN_STR = 4
_MIN_INT = 4
_MIN_REF = 8


def _get_text(r: WireReader, rc: RC = RC.PROTOCOL_ERROR) -> str:
    raw = r.get_counted_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("String is not valid UTF-8", rc) from None


def _get_handle(r: WireReader) -> str:
    return _get_text(r, RC.INVALID_HANDLE)


def _put_text(w: WireWriter, s: str) -> None:
    w.counted_bytes(s.encode("utf-8", "surrogatepass"))


# --- value records ---------------------------------------------------------------

# index · timestamp · ttlType · ttl · permissions · type length
_VALUE_HEAD = struct.Struct(">IIBIBI")
_NO_REFS = b"\x00\x00\x00\x00"


def encode_value(v: HandleValue) -> bytes:
    """One value record (handle-wire.md §4), exactly as Java's encodeHandleValue."""
    t = v.type.encode("utf-8", "surrogatepass")
    parts = [
        _VALUE_HEAD.pack(
            v.index & _U32,
            v.timestamp & _U32,
            1 if v.ttl_absolute else 0,
            v.ttl & _U32,
            v.permissions & 0x0F,
            len(t),
        ),
        t,
        _U32S.pack(len(v.data)),
        v.data,
    ]
    if v.references:
        parts.append(_U32S.pack(len(v.references)))
        for ref in v.references:
            h = ref.handle.encode("utf-8", "surrogatepass")
            parts += (_U32S.pack(len(h)), h, _U32S.pack(ref.index & _U32))
    else:
        parts.append(_NO_REFS)
    return b"".join(parts)


def get_value(r: WireReader) -> HandleValue:
    index = r.get_i32()
    timestamp = r.get_u32()
    ttl_type = r.get_u8()
    ttl = r.get_u32()
    perms = r.get_u8()
    vtype = _get_text(r, RC.INVALID_VALUE)
    data = r.get_counted_bytes()
    nrefs = r.get_count(_MIN_REF)
    refs = tuple(ValueReference(_get_handle(r), r.get_i32()) for _ in range(nrefs)) if nrefs else ()
    if ttl_type == 0:
        if ttl & 0x80000000:  # a relative ttl is a Java int
            ttl -= 1 << 32
    elif ttl_type != 1:
        raise malformed(f"Unknown ttl type {ttl_type} in value {index}", RC.INVALID_VALUE)
    return HandleValue(
        index=index,
        type=vtype,
        data=data,
        ttl=ttl,
        ttl_absolute=ttl_type == 1,
        timestamp=timestamp,
        permissions=perms & 0x0F,  # Java keeps the four bits it knows
        references=refs,
    )


def decode_value(data: bytes) -> HandleValue:
    """A single value record; trailing bytes are refused."""
    try:
        r = WireReader(data)
        v = get_value(r)
        r.expect_end()
    except HandleProtocolError:
        raise
    except MalformedMessage as exc:
        raise malformed(exc.message) from exc
    return v


def _put_values(w: WireWriter, values: tuple[HandleValue, ...]) -> None:
    w.u32(len(values))
    w.parts.extend(encode_value(v) for v in values)


def _get_values(r: WireReader) -> tuple[HandleValue, ...]:
    n = r.get_count(_MIN_VALUE)
    return tuple(get_value(r) for _ in range(n)) if n else ()


# --- bodies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """Replies without fields: DELETE, ADD/REMOVE/MODIFY_VALUE, HOME/UNHOME_NA OK."""

    def to_wire(self, w: WireWriter) -> None:
        pass

    @classmethod
    def from_wire(cls, r: WireReader) -> EmptyBody:
        return EMPTY


EMPTY = EmptyBody()


@dataclass(frozen=True, slots=True)
class HandleBody:
    """``str handle``: GET_SITE_INFO, DELETE_HANDLE, LIST_HANDLES, HOME_NA, UNHOME_NA,
    LIST_HOMED_NAS and SESSION_TERMINATE requests; the CREATE_HANDLE reply."""

    handle: str

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(_get_handle(r))


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    """RESOLUTION request: ``str handle · int4[] indexes · int4 count + str types``."""

    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)
        w.u32(len(self.indexes))
        for i in self.indexes:
            w.u32(i & _U32)
        w.u32(len(self.types))
        for t in self.types:
            _put_text(w, t)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        handle = _get_handle(r)
        n = r.get_count(_MIN_INT)
        indexes = tuple(r.get_i32() for _ in range(n)) if n else ()
        n = r.get_count(_MIN_STR)
        types = tuple(_get_text(r) for _ in range(n)) if n else ()
        return cls(handle, indexes, types)


@dataclass(frozen=True, slots=True)
class ValuesBody:
    """``str handle · int4 count · values``: CREATE_HANDLE, ADD_VALUE and MODIFY_VALUE
    requests, and the RESOLUTION reply (whose handle echoes the request's)."""

    handle: str
    values: tuple[HandleValue, ...] = ()

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)
        _put_values(w, self.values)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(_get_handle(r), _get_values(r))


@dataclass(frozen=True, slots=True)
class IndexesBody:
    """REMOVE_VALUE request: ``str handle · int4[] indexes``."""

    handle: str
    indexes: tuple[int, ...] = ()

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)
        w.u32(len(self.indexes))
        for i in self.indexes:
            w.u32(i & _U32)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        handle = _get_handle(r)
        n = r.get_count(_MIN_INT)
        return cls(handle, tuple(r.get_i32() for _ in range(n)) if n else ())


@dataclass(frozen=True, slots=True)
class HandleListBody:
    """LIST_HANDLES and LIST_HOMED_NAS replies: ``int4 count + str handles``; a CONT
    flag in the header says more messages follow."""

    handles: tuple[str, ...] = ()

    def to_wire(self, w: WireWriter) -> None:
        w.u32(len(self.handles))
        for h in self.handles:
            _put_text(w, h)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        n = r.get_count(_MIN_STR)
        return cls(tuple(_get_handle(r) for _ in range(n)) if n else ())


@dataclass(frozen=True, slots=True)
class SiteInfoReply:
    """GET_SITE_INFO reply: the HS_SITE record, kept as bytes (it is built once)."""

    record: bytes

    @classmethod
    def of(cls, site: SiteInfo) -> Self:
        return cls(encode_site(site))

    def site(self) -> SiteInfo:
        return decode_site(self.record)

    def to_wire(self, w: WireWriter) -> None:
        w.raw(self.record)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        record = r.get_bytes(r.remaining)
        try:
            decode_site(record)
        except InvalidValue as exc:
            raise malformed(exc.message) from exc
        return cls(record)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """Error replies: ``str message`` (often empty). Bytes that are not UTF-8 are
    replaced: this text is for people, and a client should still see the code."""

    message: str = ""

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.message)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        if r.remaining < 4:  # pre-2.1 servers may omit it (Java decodeErrorMessage)
            return cls()
        return cls(r.get_counted_bytes().decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class ChallengeBody:
    """RC 402 reply: ``str nonce``; the request digest precedes it (message level)."""

    nonce: bytes

    def to_wire(self, w: WireWriter) -> None:
        w.counted_bytes(self.nonce)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(r.get_counted_bytes())


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    """CHALLENGE_RESPONSE (OC 200) request: ``str authType · str idHandle · int4
    idIndex · str signedResponse`` (handle-wire.md §11; see protocol.handle_auth)."""

    auth_type: str  # "HS_SECKEY" or "HS_PUBKEY"
    id_handle: str
    id_index: int
    signed_response: bytes

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.auth_type)
        _put_text(w, self.id_handle)
        w.u32(self.id_index & _U32)
        w.counted_bytes(self.signed_response)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(_get_text(r), _get_handle(r), r.get_i32(), r.get_counted_bytes())


@dataclass(frozen=True, slots=True)
class VerifyChallengeRequest:
    """VERIFY_CHALLENGE (OC 201) request: ``str handle · int4 index · str nonce ·
    digest · str signedResponse``. Java writes the digest length-prefixed
    (algorithm 0) and reads either form."""

    handle: str
    index: int
    nonce: bytes
    request_digest: RequestDigest
    signed_response: bytes

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)
        w.u32(self.index & _U32)
        w.counted_bytes(self.nonce)
        put_digest(w, self.request_digest)
        w.counted_bytes(self.signed_response)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        handle = _get_handle(r)
        index = r.get_i32()
        nonce = r.get_counted_bytes()
        digest = get_digest(r)
        return cls(handle, index, nonce, digest, r.get_counted_bytes())


@dataclass(frozen=True, slots=True)
class VerifyChallengeReply:
    """VERIFY_CHALLENGE reply: one byte, bit 0 = valid."""

    valid: bool

    def to_wire(self, w: WireWriter) -> None:
        w.u8(1 if self.valid else 0)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(bool(r.get_u8() & 1))


@dataclass(frozen=True, slots=True)
class ReferralBody:
    """RC 302/303 referral: ``str handle`` and, if any bytes follow, ``int4 count ·
    values`` (HS_SERV / HS_SITE values of the referred-to service)."""

    handle: str
    values: tuple[HandleValue, ...] | None = None

    def to_wire(self, w: WireWriter) -> None:
        _put_text(w, self.handle)
        if self.values is not None:
            _put_values(w, self.values)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        handle = _get_handle(r)
        return cls(handle, _get_values(r) if r.remaining else None)


@dataclass(frozen=True, slots=True)
class OpaqueBody:
    """A body we do not model (SESSION_SETUP, replication, unknown opCodes or codes),
    kept as bytes so the message round-trips and the server can answer it."""

    data: bytes = b""

    def to_wire(self, w: WireWriter) -> None:
        w.raw(self.data)

    @classmethod
    def from_wire(cls, r: WireReader) -> Self:
        return cls(r.get_bytes(r.remaining))


Body = (
    EmptyBody
    | HandleBody
    | ResolutionRequest
    | ValuesBody
    | IndexesBody
    | HandleListBody
    | SiteInfoReply
    | ErrorBody
    | ChallengeBody
    | ChallengeAnswer
    | VerifyChallengeRequest
    | VerifyChallengeReply
    | ReferralBody
    | OpaqueBody
)

REQUEST_BODIES: dict[int, type[Body]] = {
    OpCode.RESOLUTION: ResolutionRequest,
    OpCode.GET_SITE_INFO: HandleBody,
    OpCode.CREATE_HANDLE: ValuesBody,
    OpCode.DELETE_HANDLE: HandleBody,
    OpCode.ADD_VALUE: ValuesBody,
    OpCode.REMOVE_VALUE: IndexesBody,
    OpCode.MODIFY_VALUE: ValuesBody,
    OpCode.LIST_HANDLES: HandleBody,
    OpCode.CHALLENGE_RESPONSE: ChallengeAnswer,
    OpCode.VERIFY_CHALLENGE: VerifyChallengeRequest,
    OpCode.HOME_NA: HandleBody,
    OpCode.UNHOME_NA: HandleBody,
    OpCode.LIST_HOMED_NAS: HandleBody,
    OpCode.SESSION_TERMINATE: HandleBody,
}

# Bodies of RC 1 replies, by opCode; CREATE_HANDLE is special-cased (handle or nothing).
SUCCESS_BODIES: dict[int, type[Body]] = {
    OpCode.RESOLUTION: ValuesBody,
    OpCode.GET_SITE_INFO: SiteInfoReply,
    OpCode.LIST_HANDLES: HandleListBody,
    OpCode.LIST_HOMED_NAS: HandleListBody,
    OpCode.VERIFY_CHALLENGE: VerifyChallengeReply,
    OpCode.DELETE_HANDLE: EmptyBody,
    OpCode.ADD_VALUE: EmptyBody,
    OpCode.REMOVE_VALUE: EmptyBody,
    OpCode.MODIFY_VALUE: EmptyBody,
    OpCode.HOME_NA: EmptyBody,
    OpCode.UNHOME_NA: EmptyBody,
    OpCode.SESSION_TERMINATE: EmptyBody,
    OpCode.SESSION_EXCHANGEKEY: EmptyBody,
    OpCode.BACKUP_SERVER: EmptyBody,
}

_KNOWN_RCS = frozenset(int(rc) for rc in RC)


# --- message ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Header (24 bytes) + body + credential; the envelope travels beside it.

    ``request_digest`` is the optional digest that starts a reply body (RRDG, every
    402). ``credential`` is the raw credential (see ``decode_credential``); b"" =
    unsigned. ``header_and_body`` holds the bytes a decoded message arrived with:
    what request digests and signatures are computed over.
    """

    op_code: int
    response_code: int = 0  # 0 = request
    op_flags: int = 0
    body: Body = EMPTY
    site_info_serial: int = 0xFFFF
    recursion_count: int = 0
    expiration: int = 0
    request_digest: RequestDigest | None = None
    credential: bytes = b""
    header_and_body: bytes = field(default=b"", compare=False, repr=False)

    @property
    def is_request(self) -> bool:
        return self.response_code == 0


def _wire_rc(rc: int, version: tuple[int, int]) -> int:
    # Java writeHeader: before 2.5, SERVER_BACKUP went out as 303 and INVALID_VALUE as 201.
    if not version_at_least(version, 2, 5):
        if rc == RC.SERVER_BACKUP:
            return int(RC.PREFIX_REFERRAL)
        if rc == RC.INVALID_VALUE:
            return int(RC.VALUE_ALREADY_EXISTS)
    return rc


def encode_header_and_body(msg: Message, version: tuple[int, int] = PROTOCOL_VERSION) -> bytes:
    """The header + body of ``msg`` as sent in ``version``: what a request digest covers."""
    w = WireWriter()
    flags = msg.op_flags
    if msg.response_code != 0:
        old_challenge = msg.response_code == RC.AUTHENTICATION_NEEDED and not version_at_least(
            version, 2, 1
        )
        d = msg.request_digest
        if old_challenge:
            # Pre-2.1 challenge: nonce, then the digest as a str; no RRDG flag.
            flags &= ~FLAG_RRDG
            msg.body.to_wire(w)
            w.counted_bytes(d.digest if d is not None else b"")
        else:
            if d is not None and version_at_least(version, 2, 1):
                flags |= FLAG_RRDG
                put_digest(w, d)
            else:
                flags &= ~FLAG_RRDG  # a reply's RRDG flag announces the digest bytes
            msg.body.to_wire(w)
    else:
        msg.body.to_wire(w)
    body = w.getvalue()
    head = _HEADER.pack(
        msg.op_code & _U32,
        _wire_rc(msg.response_code, version) & _U32,
        flags & _U32,
        msg.site_info_serial & 0xFFFF,
        msg.recursion_count & 0xFF,
        0,
        msg.expiration & _U32,
        len(body),
    )
    return head + body


def encode_message(msg: Message, version: tuple[int, int] = PROTOCOL_VERSION) -> bytes:
    """Header + body + credential (everything after the envelope)."""
    return encode_header_and_body(msg, version) + _U32S.pack(len(msg.credential)) + msg.credential


def decode_message(
    data: bytes | memoryview,
    start: int = 0,
    end: int | None = None,
    version: tuple[int, int] = PROTOCOL_VERSION,
) -> Message:
    """The message in ``data[start:end]``; ``version`` is the envelope's (it selects
    the pre-2.1 challenge layout and the pre-2.5 code mapping)."""
    if end is None:
        end = len(data)
    if end - start < HEADER_SIZE:
        raise HandleProtocolError(MSG_INVALID_LENGTH, detail=f"{end - start} bytes: no header")
    op, rc, flags, serial, recursion, _reserved, expiration, body_length = _HEADER.unpack_from(
        data, start
    )
    body_start = start + HEADER_SIZE
    body_end = body_start + body_length
    if body_end > end:
        raise malformed(f"Body length {body_length} exceeds the {end - body_start} bytes left")
    r = WireReader(data, body_start, body_end)
    digest = None
    try:
        if rc == 0:
            body = _decode_request_body(op, r)
        else:
            if rc == RC.PREFIX_REFERRAL and not version_at_least(version, 2, 5):
                rc = int(RC.SERVER_BACKUP)  # Java: 303 meant SERVER_BACKUP before 2.5
            if rc == RC.AUTHENTICATION_NEEDED and not version_at_least(version, 2, 1):
                body = ChallengeBody.from_wire(r)
                digest = RequestDigest(0, r.get_counted_bytes())
            else:
                if flags & FLAG_RRDG:
                    digest = get_digest(r)
                body = _decode_reply_body(op, rc, r)
        # The credential follows the body if there is room for its length (Java).
        # Read in place: a second WireReader costs more than the rest of this line.
        credential = b""
        if end - body_end >= 4:
            (cred_length,) = _U32S.unpack_from(data, body_end)
            if cred_length > end - body_end - 4:
                raise malformed(f"Credential length {cred_length} exceeds the message")
            credential = bytes(data[body_end + 4 : body_end + 4 + cred_length])
    except HandleProtocolError:
        raise
    except MalformedMessage as exc:  # a WireReader bounds check
        raise malformed(exc.message) from exc
    return Message(
        op,
        rc,
        flags,
        body,
        serial,
        recursion,
        expiration,
        digest,
        credential,
        bytes(data[start:body_end]),
    )


def _decode_request_body(op: int, r: WireReader) -> Body:
    if op == 0:
        raise malformed(msg_unknown_opcode(0))
    cls = REQUEST_BODIES.get(op)
    if cls is None:
        return OpaqueBody.from_wire(r)
    return cls.from_wire(r)


def _decode_reply_body(op: int, rc: int, r: WireReader) -> Body:
    if rc == RC.SUCCESS:
        if op == OpCode.CREATE_HANDLE:
            return HandleBody.from_wire(r) if r.remaining else EMPTY
        cls = SUCCESS_BODIES.get(op, OpaqueBody)
        return cls.from_wire(r)
    if rc == RC.AUTHENTICATION_NEEDED:
        return ChallengeBody.from_wire(r)
    if rc in (RC.SERVICE_REFERRAL, RC.PREFIX_REFERRAL):
        return ReferralBody.from_wire(r)
    if rc in _KNOWN_RCS:
        return ErrorBody.from_wire(r)
    return OpaqueBody.from_wire(r)


__all__ = [
    "EMPTY",
    "REQUEST_BODIES",
    "SUCCESS_BODIES",
    "Body",
    "ChallengeAnswer",
    "ChallengeBody",
    "EmptyBody",
    "ErrorBody",
    "HandleBody",
    "HandleListBody",
    "IndexesBody",
    "Message",
    "OpaqueBody",
    "ReferralBody",
    "ResolutionRequest",
    "SiteInfoReply",
    "ValuesBody",
    "VerifyChallengeReply",
    "VerifyChallengeRequest",
    "decode_message",
    "decode_value",
    "encode_header_and_body",
    "encode_message",
    "encode_value",
    "get_value",
]
