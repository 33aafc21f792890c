"""Handle binary protocol, outer layers: constants, the 20-byte envelope, version
rules, the credential section and request digests.

Layouts are handle-wire.md §1, §2, §7, §8 (Handle.Net 9.3.1, protocol 2.11);
facts taken from Handle.Net's ``Encoder``, ``MessageEnvelope``, ``AbstractMessage``
and ``Common`` are marked "Java" below.

Errors: everything undecodable raises :class:`HandleProtocolError`, a
:class:`MalformedMessage` (rc 4 unless stated) that also carries what an error
reply needs: ``rc`` (the h11 ``error_status_hint``), ``message`` (the text Handle.Net
sends), ``op_code`` to put in the reply, and the request's envelope flags.

    HandleError
    └── MalformedMessage            rc 4
        └── HandleProtocolError     rc 4, or 2 / 102 / 202 / 500 / 501 where Handle.Net answers so
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from protocol.codes import RC
from protocol.errors import MalformedMessage
from protocol.wire import WireReader, WireWriter

# --- sizes and versions -------------------------------------------------------

ENVELOPE_SIZE = 20
HEADER_SIZE = 24
MAX_MESSAGE_LENGTH = 262144  # Java Common.MAX_MESSAGE_LENGTH; larger envelopes draw RC 2
MAX_UDP_PACKET = 512  # Java's receive buffer; also the largest datagram we send
MAX_UDP_DATA = MAX_UDP_PACKET - ENVELOPE_SIZE  # 492 message bytes per fragment

PROTOCOL_VERSION: tuple[int, int] = (2, 11)
# Java's COMPATIBILITY version: messages built without a request (early errors) carry it.
COMPATIBILITY_VERSION: tuple[int, int] = (2, 3)
EXPIRATION_SECONDS = 43200  # replies expire now + 12 h (Java AbstractMessage)
SERVER_SITE_SERIAL = 1
NO_SITE_SERIAL = 0xFFFF  # requests, and replies built without a request

_U32 = 0xFFFFFFFF


class OpCode(IntEnum):
    RESERVED = 0
    RESOLUTION = 1
    GET_SITE_INFO = 2
    CREATE_HANDLE = 100
    DELETE_HANDLE = 101
    ADD_VALUE = 102
    REMOVE_VALUE = 103
    MODIFY_VALUE = 104
    LIST_HANDLES = 105
    CHALLENGE_RESPONSE = 200  # the client's answer to a 402
    VERIFY_CHALLENGE = 201
    HOME_NA = 300
    UNHOME_NA = 301
    LIST_HOMED_NAS = 302
    SESSION_SETUP = 400
    SESSION_TERMINATE = 401
    SESSION_EXCHANGEKEY = 402
    GET_NEXT_TXN_ID = 1000
    RETRIEVE_TXN_LOG = 1001
    DUMP_HANDLES = 1002
    BACKUP_SERVER = 1003


# Java Interface.canProcessMsg: refused on an interface without the admin bit
# ("Received admin request on non-admin interface", RC 4, opCode echoed).
ADMIN_OPCODES = frozenset({100, 101, 102, 103, 104, 105, 300, 301, 302, 1000, 1001, 1002, 1003})
QUERY_OPCODES = frozenset({1})

# opFlags (header offset 8). Plain ints: IntFlag arithmetic is slow on the hot path.
FLAG_AUTH = 0x80000000  # authoritative; always set in our replies
FLAG_CERT = 0x40000000  # sign the reply
FLAG_ENCR = 0x20000000  # encrypt the reply (needs a session)
FLAG_RECU = 0x10000000  # recursion allowed; always set in our replies
FLAG_CACR = 0x08000000  # cache should certify
FLAG_CONT = 0x04000000  # more messages follow (LIST_HANDLES over TCP)
FLAG_KPAL = 0x02000000  # keep-alive; never honoured, never echoed
FLAG_PUBL = 0x01000000  # public values only
FLAG_RRDG = 0x00800000  # return the request digest
FLAG_OVRW = 0x00400000  # overwrite when exists (create/add)
FLAG_MINT = 0x00200000  # mint a new suffix (create)
FLAG_DNRF = 0x00100000  # do not refer

# Java AbstractMessage.takeValuesFrom: what a reply copies from its request. The fact
# sheet saw CERT, CACR, PUBL, RRDG echoed; ENCR and DNRF are copied too by the source.
ECHOED_FLAGS = FLAG_CERT | FLAG_ENCR | FLAG_CACR | FLAG_PUBL | FLAG_RRDG | FLAG_DNRF
REPLY_FLAGS = FLAG_AUTH | FLAG_RECU
# Flags of a reply built without a request (Java defaults: recursive, cacheCertify,
# ignoreRestrictedValues): the 0x19000000 of every early error.
EARLY_ERROR_FLAGS = FLAG_RECU | FLAG_CACR | FLAG_PUBL

# Envelope byte 2: flags in the high bits, suggested major version in the low 2.
ENV_COMPRESSED = 0x80
ENV_ENCRYPTED = 0x40
ENV_TRUNCATED = 0x20  # "TC": one fragment of a multi-datagram message
_ENV_FLAG_MASK = ENV_COMPRESSED | ENV_ENCRYPTED | ENV_TRUNCATED

# Request digest algorithms (first body byte of a reply with RRDG, and of every 402).
DIGEST_MD5_OLD = 0  # pre-2.1: the digest is an int4-length-prefixed MD5 instead
DIGEST_MD5 = 1
DIGEST_SHA1 = 2
DIGEST_SHA256 = 3
_DIGEST_SIZES = {DIGEST_MD5: 16, DIGEST_SHA1: 20, DIGEST_SHA256: 32}
_DIGEST_FUNCS = {
    DIGEST_MD5_OLD: hashlib.md5,
    DIGEST_MD5: hashlib.md5,
    DIGEST_SHA1: hashlib.sha1,
    DIGEST_SHA256: hashlib.sha256,
}

# Texts Handle.Net puts in error replies (handle-wire.md §5, §11).
MSG_INVALID_LENGTH = "Invalid message length"
MSG_SERVER_ERROR = "Server error processing request, see server logs"
MSG_ADMIN_ON_NON_ADMIN = "Received admin request on non-admin interface"
MSG_QUERY_ON_NON_QUERY = "Received query request on non-query interface"
MSG_INVALID_SESSION = "Invalid session id or session time out. Please try again."
MSG_DECRYPT_NO_SESSION = (
    "Session information not available or time out. Unable to decrypt request message."
)
MSG_DECRYPT_BAD_SESSION = "Invalid session id. Unable to decrypt request message."


def msg_unknown_opcode(op_code: int) -> str:
    return f"Unknown opCode in message: {op_code}"


def msg_short_message(expected: int, received: int) -> str:
    return f"Expecting {expected} bytes, only received {received}"


# --- errors -------------------------------------------------------------------


class HandleProtocolError(MalformedMessage):
    """Undecodable or refused wire input.

    ``rc`` is the code Handle.Net answers with (h11's ``error_status_hint``),
    ``message`` the reply text, ``op_code`` the opCode of that reply (0 before a
    request is decoded, as Handle.Net), ``env_flags`` byte 2's flag bits of what was
    received (a TC request gets a TC reply), ``envelope`` the decoded envelope if
    any (its ids, for a reply that echoes them) and ``detail`` a log line.
    """

    def __init__(
        self,
        message: str,
        rc: RC | int = RC.PROTOCOL_ERROR,
        *,
        op_code: int = 0,
        env_flags: int = 0,
        envelope: Envelope | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message, rc)
        self.op_code = op_code
        self.env_flags = env_flags & _ENV_FLAG_MASK
        self.envelope = envelope
        self.detail = detail or message

    def __str__(self) -> str:
        return self.detail

    def with_envelope(self, envelope: Envelope) -> HandleProtocolError:
        self.envelope = envelope
        self.env_flags = envelope.flags
        return self


def malformed(detail: str, rc: RC | int = RC.PROTOCOL_ERROR) -> HandleProtocolError:
    """An error whose reply text is the detail itself."""
    return HandleProtocolError(detail, rc)


# --- versions -----------------------------------------------------------------


def version_at_least(version: tuple[int, int], major: int, minor: int) -> bool:
    """Java ``hasEqualOrGreaterVersion``, quirk included: a 5.x peer is a very old
    client that sent 5 by mistake and only ranks against other 5.x versions."""
    vmajor, vminor = version
    if vmajor == 5:
        return major == 5 and vminor >= minor
    if major == 5:
        return True
    return (vmajor, vminor) >= (major, minor)


def digest_algorithm(version: tuple[int, int]) -> int:
    """Request digest algorithm for a reply of ``version`` (Java takeDigestOfRequest)."""
    if not version_at_least(version, 2, 1):
        return DIGEST_MD5_OLD
    if version_at_least(version, 2, 7):
        return DIGEST_SHA256
    return DIGEST_SHA1


# --- envelope -----------------------------------------------------------------

_ENVELOPE = struct.Struct(">BBBBIIII")


class Envelope(NamedTuple):
    """The 20 bytes before every message (and every UDP fragment).

    Immutable like the message dataclasses, but a NamedTuple: one is built per
    packet and a 9-field frozen dataclass costs four times as much to construct.
    ``suggested_major``/``suggested_minor`` are kept as sent (major 0 means "same as
    the envelope", see :attr:`suggested_version`) so a decoded envelope re-encodes
    byte for byte; ``message_length`` is recomputed by the encoders.
    """

    major: int = PROTOCOL_VERSION[0]
    minor: int = PROTOCOL_VERSION[1]
    suggested_major: int = PROTOCOL_VERSION[0]
    suggested_minor: int = PROTOCOL_VERSION[1]
    flags: int = 0  # ENV_COMPRESSED | ENV_ENCRYPTED | ENV_TRUNCATED
    session_id: int = 0
    request_id: int = 0
    message_id: int = 0
    message_length: int = 0

    @property
    def version(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def suggested_version(self) -> tuple[int, int]:
        # Java decodeEnvelope: a zero suggested major falls back to the envelope version.
        if self.suggested_major == 0:
            return (self.major, self.minor)
        return (self.suggested_major, self.suggested_minor)

    @property
    def reply_version(self) -> tuple[int, int]:
        """The version to answer in: the suggested one, capped at 2.11 (Java
        setSupportedProtocolVersion)."""
        suggested = self.suggested_version
        if version_at_least(suggested, *PROTOCOL_VERSION):
            return PROTOCOL_VERSION
        return suggested

    @property
    def truncated(self) -> bool:
        return bool(self.flags & ENV_TRUNCATED)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & ENV_ENCRYPTED)

    @property
    def compressed(self) -> bool:
        return bool(self.flags & ENV_COMPRESSED)


def encode_envelope(env: Envelope, message_length: int | None = None) -> bytes:
    length = env.message_length if message_length is None else message_length
    return _ENVELOPE.pack(
        env.major & 0xFF,
        env.minor & 0xFF,
        (env.flags & _ENV_FLAG_MASK) | (env.suggested_major & 0x03),
        env.suggested_minor & 0xFF,
        env.session_id & _U32,
        env.request_id & _U32,
        env.message_id & _U32,
        length & _U32,
    )


def decode_envelope(
    data: bytes | bytearray | memoryview, max_message_length: int = MAX_MESSAGE_LENGTH
) -> Envelope:
    """The envelope at the start of ``data``.

    Fewer than 20 bytes: RC 4 "Invalid message length". A messageLength over the
    limit: RC 2 "Server error processing request" (Java throws in decodeEnvelope and
    answers whatever it cannot decode with RC 2).
    """
    if len(data) < ENVELOPE_SIZE:
        flags = data[2] if len(data) > 2 else 0
        raise HandleProtocolError(
            MSG_INVALID_LENGTH,
            env_flags=flags,
            detail=f"{len(data)} bytes: shorter than an envelope",
        )
    major, minor, b2, sminor, session_id, request_id, message_id, length = _ENVELOPE.unpack_from(
        data, 0
    )
    env = Envelope(
        major,
        minor,
        b2 & 0x03,
        sminor,
        b2 & _ENV_FLAG_MASK,
        session_id,
        request_id,
        message_id,
        length,
    )
    if length > max_message_length:
        raise HandleProtocolError(
            MSG_SERVER_ERROR,
            RC.ERROR,
            envelope=env,
            env_flags=env.flags,
            detail=f"Invalid message length: {length} exceeds {max_message_length}",
        )
    return env


# --- request digest -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestDigest:
    """A digest of a request's header + body (handle-wire.md §7).

    ``algorithm`` 1/2/3 is written as that byte and the raw digest; 0 (Java
    HASH_CODE_MD5_OLD_FORMAT) as an int4-length-prefixed digest, whose first byte
    is then the 0 of the length. VERIFY_CHALLENGE requests use the same codec.
    """

    algorithm: int
    digest: bytes


def compute_request_digest(
    header_and_body: bytes, version: tuple[int, int] = PROTOCOL_VERSION
) -> RequestDigest:
    alg = digest_algorithm(version)
    return RequestDigest(alg, _DIGEST_FUNCS[alg](header_and_body).digest())


def put_digest(w: WireWriter, d: RequestDigest) -> None:
    if d.algorithm == DIGEST_MD5_OLD:
        w.counted_bytes(d.digest)
    else:
        w.u8(d.algorithm)
        w.raw(d.digest)


def get_digest(r: WireReader) -> RequestDigest:
    alg = r.get_u8()
    if alg == DIGEST_MD5_OLD:
        r.pos -= 1  # the byte was the high byte of an int4 length
        return RequestDigest(DIGEST_MD5_OLD, r.get_counted_bytes())
    size = _DIGEST_SIZES.get(alg)
    if size is None:
        raise malformed(f"Unrecognized request hash type: {alg}")
    return RequestDigest(alg, r.get_bytes(size))


# --- credential section ----------------------------------------------------------

CREDENTIAL_SIGNED = "HS_SIGNED"  # RSA/DSA signature with the server's key
CREDENTIAL_MAC = "HS_MAC"  # session MAC
CREDENTIAL_OLD_SIGNED = "HS_DSAPUBKEY"


@dataclass(frozen=True, slots=True)
class Credential:
    """The credential after a message body (handle-wire.md §8; Java signMessage):

    ``u8 version · u8 reserved · u16 flags · str signerHandle · int4 signerIndex
    (the session counter) · str type · int4 sectionLength · section``, where the
    section of every known type is ``str digestAlg · str signature``.
    """

    type: str
    digest_alg: bytes  # b"SHA-256", b"HMAC-SHA256"; a single code byte before 2.6
    signature: bytes
    signer_handle: str = ""
    session_counter: int = 0
    version: int = 0
    flags: int = 0


def encode_credential(c: Credential) -> bytes:
    section = WireWriter()
    section.counted_bytes(c.digest_alg)
    section.counted_bytes(c.signature)
    sec = section.getvalue()
    w = WireWriter()
    w.u8(c.version)
    w.u8(0)
    w.u16(c.flags)
    w.str(c.signer_handle)
    w.u32(c.session_counter & _U32)
    w.str(c.type)
    w.counted_bytes(sec)
    return w.getvalue()


def decode_credential(raw: bytes) -> Credential:
    """Parse a message's credential bytes (without their int4 length)."""
    try:
        r = WireReader(raw)
        version = r.get_u8()
        r.get_u8()  # reserved
        flags = r.get_u16()
        signer = r.get_str()
        counter = r.get_u32()
        ctype = r.get_str()
        section_length = r.get_u32()
        if section_length != r.remaining:
            raise malformed(f"Credential section length {section_length} != {r.remaining}")
        alg = r.get_counted_bytes()
        signature = r.get_counted_bytes()
        r.expect_end()
    except HandleProtocolError:
        raise
    except MalformedMessage as exc:
        raise malformed(f"Malformed credential: {exc.message}") from exc
    return Credential(ctype, alg, signature, signer, counter, version, flags)
