"""Server-level fuzz of the binary Handle protocol: hostile packets at a live node.

    python -m bench.handle_fuzz [-n 1000000] [--seed 1] [--window 32] [--tcp-share 0.01]

Starts a node (subprocess, its own store) with two registered identifiers, then
sends N packets over UDP (and a share over TCP, one connection each): mutants
of valid requests (RESOLUTION with and without PUBL, filters, RRDG, old
versions; GET_SITE_INFO; CREATE/ADD/MODIFY/REMOVE/DELETE; CHALLENGE_RESPONSE to
a live challenge; LIST_HANDLES, SESSION_SETUP, fragments of a large request),
with lengths re-fixed half the time so mutations reach the body decoders.

Every packet's reply is predicted from protocol/ alone (:func:`expect_udp`,
:func:`expect_tcp`: what the codec makes of the bytes, and the server rules of
handle-wire.md §5 and §10) and checked by :func:`check_reply`: it must decode,
echo the right ids, opCode and version, and carry a response code that request
may legitimately draw (RC 4 or 2 for undecodable input, exactly as the codec
says). Valid probes are interleaved (``--probe-every``) and must get exactly
the right answer. At the end: replies by response code, packets/s, problems by
category with examples (packet hex), whether the node is still up and
answering, and any ERROR or traceback in its log. Exit status 1 on any problem
but the open bugs listed in :data:`KNOWN` (which must show exactly as described).

Only protocol/ is imported (bench/ rule); the node is driven as a subprocess
and its identifiers registered over REST.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import random
import re
import selectors
import socket
import struct
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.codes import RC
from protocol.handle_wire import (
    ADMIN_OPCODES,
    COMPATIBILITY_VERSION,
    ENV_TRUNCATED,
    FLAG_PUBL,
    FLAG_RECU,
    FLAG_RRDG,
    MSG_ADMIN_ON_NON_ADMIN,
    MSG_INVALID_SESSION,
    MSG_SERVER_ERROR,
    NEED_DATA,
    ChallengeAnswer,
    ChallengeBody,
    Envelope,
    ErrorBody,
    HandleBody,
    HandleProtocolError,
    IndexesBody,
    Message,
    OpaqueBody,
    OpCode,
    ResolutionRequest,
    SiteInfoReply,
    TcpFramer,
    UdpReassembler,
    ValuesBody,
    answer_secret_key_challenge,
    decode_request,
    decode_response,
    encode_packet,
    reply_cache_key,
    split_datagrams,
)
from protocol.values import HandleValue

U32 = 0xFFFFFFFF
PUBLIC_URL = b"https://example.com/fuzz"
_INT4 = struct.Struct(">I")
_KNOWN_OPS = frozenset(int(op) for op in OpCode)

# Divergences from handle-wire.md and server bugs this fuzzer found, fixed since
# (19dc3aa unless noted): a reply that matches the old behaviour is reported as a
# regression, by name.
FIXED = {
    "tc-refused": "a TC datagram the reassembler refuses gets no reply (the "
                  "HandleProtocolError escapes UdpServer.datagram_received) instead of "
                  "an early error with TC set (§5)",
    "unknown-opcode": "an unknown opCode is answered RC 2 in the request's form (opCode "
                      "and requestId echoed, version 2.11) instead of the early-error "
                      "form with opCode 0 (§5)",
    "oversized": "a datagram over 512 bytes without TC is decoded and answered "
                 "instead of RC 2 (§10)",
    "fast-path-lenient": "a cached resolution is answered from its stored reply although "
                         "the request's credential section is malformed (decode_request "
                         "refuses the same bytes with RC 4 when they miss the cache)",
    # fixed in 7c7eb63:
    "short-resolution": "a RESOLUTION datagram of 44-47 bytes that passes reply_cache_key "
                        "(bodyLength 0-3) makes UdpServer._cached read the handle length "
                        "at offset 44 past the end: struct.error escapes "
                        "datagram_received (ERROR traceback), no reply instead of RC 4",
}
# Open bugs, reported: a reply (or silence) matching exactly the buggy behaviour is
# counted apart instead of failing the run; anything else still fails.
KNOWN: dict[str, str] = {}  # none open
KNOWN_LOG_SIGNATURES: dict[str, tuple[str, str]] = {}


# --- corpus ----------------------------------------------------------------------


@dataclass(frozen=True)
class Handles:
    prefix: str
    public: str  # one URL value, public: resolves with RC 1
    restricted: str  # a public URL and a non-public HS_SECKEY: 402 without PUBL


def handles_for(prefix: str) -> Handles:
    return Handles(prefix, f"{prefix}/FUZZ-PUBLIC", f"{prefix}/FUZZ-RESTRICTED")


def rest_records(h: Handles) -> dict[str, list[dict[str, object]]]:
    """What to register over REST before fuzzing (Handle REST JSON values)."""
    url = {"index": 1, "type": "URL", "data": PUBLIC_URL.decode()}
    return {h.public: [url], h.restricted: [url, {"index": 300, "type": "HS_SECKEY",
                                                  "data": "s"}]}


def packet(msg: Message, request_id: int = 7, *, session_id: int = 0,
           version: tuple[int, int] = (2, 11)) -> bytes:
    env = Envelope(version[0], version[1], version[0], version[1], 0, session_id, request_id)
    return encode_packet(env, msg)


def resolution(handle: str, request_id: int, *, flags: int = FLAG_PUBL | FLAG_RECU,
               indexes: tuple[int, ...] = (), types: tuple[str, ...] = ()) -> bytes:
    return packet(Message(OpCode.RESOLUTION, 0, flags,
                          ResolutionRequest(handle, indexes, types)), request_id)


def challenge_answer(session_id: int, nonce: bytes, digest: bytes, request_id: int = 7,
                     secret: bytes = b"not-the-secret", id_handle: str = "") -> bytes:
    signed = answer_secret_key_challenge(secret, nonce, digest, scheme=0x13)
    body = ChallengeAnswer("HS_SECKEY", id_handle, 300, signed)
    return packet(Message(OpCode.CHALLENGE_RESPONSE, 0, FLAG_RECU, body), request_id,
                  session_id=session_id)


def build_corpus(h: Handles) -> list[bytes]:
    """Valid requests of every shape the server handles, for this node's identifiers."""
    admin = f"{h.prefix}/ADMIN"
    values = (
        HandleValue(1, "URL", b"https://example.org/new"),
        HandleValue(2, "EMAIL", b"a@b.example", permissions=0x0C),
        HandleValue(100, "HS_ADMIN", b"\x0f\xff" + _INT4.pack(len(admin)) + admin.encode()
                    + _INT4.pack(300)),
    )
    new = f"{h.prefix}/FUZZ-NEW"
    big = Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU,
                  ValuesBody(new, tuple(HandleValue(i, "NOTE", b"n" * 120) for i in range(1, 9))))
    corpus = [
        resolution(h.public, 1),
        resolution(h.public, 2, indexes=(1,), types=("URL", "HS_")),
        resolution(h.restricted, 3, flags=FLAG_RECU),  # 402: restricted values, no PUBL
        resolution(h.public, 4, flags=FLAG_PUBL | FLAG_RRDG),
        resolution(f"{h.prefix}/FUZZ-MISSING", 5),
        resolution("FOO/bar", 6),
        packet(Message(OpCode.RESOLUTION, 0, FLAG_PUBL, ResolutionRequest(h.public)), 8,
               version=(2, 1)),
        packet(Message(OpCode.GET_SITE_INFO, 0, 0, HandleBody("/")), 9),
        packet(Message(OpCode.CREATE_HANDLE, 0, FLAG_RECU, ValuesBody(new, values)), 10),
        packet(Message(OpCode.ADD_VALUE, 0, FLAG_RECU, ValuesBody(h.public, values[1:2])), 11),
        packet(Message(OpCode.MODIFY_VALUE, 0, FLAG_RECU, ValuesBody(h.public, values[:1])), 12),
        packet(Message(OpCode.REMOVE_VALUE, 0, FLAG_RECU, IndexesBody(h.public, (1, 2))), 13),
        packet(Message(OpCode.DELETE_HANDLE, 0, FLAG_RECU, HandleBody(h.public)), 14),
        packet(Message(OpCode.LIST_HANDLES, 0, 0, HandleBody(f"0.NA/{h.prefix}")), 15),
        packet(Message(OpCode.SESSION_SETUP, 0, 0x59800000, OpaqueBody(b"\x00\x04dh\x00")), 16),
        challenge_answer(12345, bytes(16), bytes(32), 17, id_handle=admin),
    ]
    corpus += split_datagrams(packet(big, 18))  # TC fragments of a 1 KB request
    return corpus


# --- mutation ----------------------------------------------------------------------

# Offsets of the int4 fields a decoder trusts: sessionId, requestId, messageId,
# messageLength; opCode, responseCode, opFlags, expiration, bodyLength; the first
# body field (a handle or string length); the credential length is at the end.
_FIELD_OFFSETS = (4, 8, 12, 16, 20, 24, 28, 36, 40, 44, 48)
_EDGES = (0, 1, 2, 3, 4, 19, 20, 24, 100, 492, 512, 0x7FFF, 0x8000, 0xFFFF,
          262144, 262145, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def _set_int4(buf: bytearray, at: int, value: int) -> None:
    if at + 4 <= len(buf):
        buf[at:at + 4] = _INT4.pack(value & U32)


def mutate(rng: random.Random, base: bytes) -> bytes:
    """One to three mutations of ``base``; half the time the envelope's messageLength
    and the header's bodyLength are made consistent again afterwards, so the
    mutation is judged by the body decoders rather than the length checks."""
    buf = bytearray(base)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(10)
        if not buf:
            buf += rng.randbytes(rng.randrange(1, 60))
        elif kind == 0:  # bit flips
            for _ in range(rng.randint(1, 3)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # a byte anywhere
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x20, 0x7F, 0x80, 0xFF,
                                                       rng.randrange(256)))
        elif kind == 2:  # a trusted int4 field to an edge value
            at = rng.choice(_FIELD_OFFSETS)
            _set_int4(buf, at, rng.choice((*_EDGES, rng.randrange(1 << 32),
                                           len(buf) - at, rng.randrange(64))))
        elif kind == 3:  # any int4 to an edge value (counts and lengths in the body)
            at = rng.randrange(max(1, len(buf) - 3))
            _set_int4(buf, at, rng.choice((*_EDGES, len(buf) - at - 4, rng.randrange(64))))
        elif kind == 4:  # the version / flags bytes
            at = rng.randrange(min(4, len(buf)))
            buf[at] = rng.choice((0, 1, 2, 3, 5, 11, 0x20, 0x22, 0x40, 0x42, 0x80, 0x82, 0xFF,
                                  rng.randrange(256)))
        elif kind == 5:  # opCode swap: another operation with this body
            _set_int4(buf, 20, rng.choice((0, 1, 2, 100, 101, 102, 103, 104, 105, 200, 201,
                                           300, 400, 1000, 9999, rng.randrange(1 << 32))))
        elif kind == 6:  # truncate
            del buf[rng.randrange(len(buf) + 1):]
        elif kind == 7:  # append junk
            buf += rng.randbytes(rng.randrange(1, 80))
        elif kind == 8:  # repeat a slice in place
            i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
            buf[i:i] = buf[i:j]
        else:  # cut a slice out
            i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
            del buf[i:j]
    if rng.random() < 0.5 and len(buf) >= 48:
        _set_int4(buf, 16, len(buf) - 20)
        body_length = int.from_bytes(buf[40:44], "big")
        if 44 + body_length > len(buf):
            _set_int4(buf, 40, max(0, len(buf) - 48))  # leave room for a credential length
    return bytes(buf)


# --- the oracle --------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What the server must send for one request.

    ``kind``: "early" (the codec refuses it: an early error built from ``error``),
    "answer" (it decodes: a reply to ``env``/``msg``) or "none" (a fragment the
    server keeps, waiting for the rest). Where the server is known to diverge
    from the fact sheet, ``tag`` names the divergence (:data:`KNOWN`, :data:`FIXED`) and
    ``alt`` is what it does instead: a reply matching ``alt`` is counted as that
    known divergence, one matching neither is a problem.
    """

    kind: str
    error: HandleProtocolError | None = None
    env: Envelope | None = None
    msg: Message | None = None
    tag: str = ""
    alt: Expect | None = None

    @property
    def may_be_silent(self) -> bool:
        return self.kind == "none" or (self.alt is not None and self.alt.kind == "none")


def _answer(env: Envelope, msg: Message) -> Expect:
    if msg.op_code in _KNOWN_OPS:
        return Expect("answer", env=env, msg=msg)
    # Handle.Net answers an unknown opCode like undecodable input: RC 2, opCode 0.
    refused = HandleProtocolError(MSG_SERVER_ERROR, RC.ERROR, env_flags=env.flags)
    return Expect("early", refused, tag="unknown-opcode",
                  alt=Expect("answer", env=env, msg=msg))


def _from_decoded(data: bytes, *, udp: bool = False) -> Expect:
    try:
        env, msg = decode_request(data)
    except HandleProtocolError as exc:
        alt = _fast_path(data) if udp else None
        return Expect("early", exc, tag="fast-path-lenient" if alt else "", alt=alt)
    return _answer(env, msg)


def _fast_path(data: bytes) -> Expect | None:
    """The answer the UDP hot path gives an undecodable packet that still has a
    reply_cache_key (only header and body are checked; the credential is not):
    that of the same request with an empty credential."""
    if reply_cache_key(data) is None:
        return None
    body_end = 44 + int.from_bytes(data[40:44], "big")
    fixed = bytearray(data[:body_end] + b"\0\0\0\0")
    _set_int4(fixed, 16, len(fixed) - 20)
    try:
        env, msg = decode_request(bytes(fixed))
    except HandleProtocolError:
        return None
    return Expect("answer", env=env, msg=msg)


def expect_udp(data: bytes) -> Expect:
    """The server's reply to one datagram from a source with nothing pending."""
    if len(data) > 2 and data[2] & ENV_TRUNCATED:
        try:
            whole = UdpReassembler().add("peer", data, 0.0)
        except HandleProtocolError as exc:
            return Expect("early", exc, tag="tc-refused", alt=Expect("none"))
        if whole is None:
            return Expect("none")
        return _from_decoded(whole, udp=True)
    decoded = _from_decoded(data, udp=True)
    if len(data) > 512:  # Java's 512-byte receive buffer: RC 2 (§10; UdpReassembler's rule)
        try:
            UdpReassembler().add("peer", data, 0.0)
        except HandleProtocolError as exc:
            return Expect("early", exc, tag="oversized", alt=decoded)
    if len(data) < 48 and reply_cache_key(data) is not None and data[23] == OpCode.RESOLUTION:
        return Expect(decoded.kind, decoded.error, decoded.env, decoded.msg,
                      tag="short-resolution", alt=Expect("none"))
    return decoded


def expect_tcp(data: bytes) -> Expect:
    """The server's reply to ``data`` on a new connection, then half-close."""
    framer = TcpFramer()
    framer.receive_data(data)
    try:
        event = framer.next_message()
        if event is NEED_DATA:
            framer.receive_data(b"")
            event = framer.next_message()
    except HandleProtocolError as exc:
        return Expect("early", exc)
    if not isinstance(event, tuple):
        return Expect("none")  # nothing sent at all
    return _answer(*event)


_RESOLUTION_RCS = {1, 100, 102, 200, 301, 402}
_AFTER_CHALLENGE_RCS = {1, 100, 101, 102, 200, 201, 202, 301, 400, 401, 403, 405}
_CHALLENGED_OPS = {OpCode.RESOLUTION, OpCode.CHALLENGE_RESPONSE, *ADMIN_OPCODES}
# Served admin operations: the handle operations and, since nodes home their
# prefixes over the protocol, HOME_NA / UNHOME_NA / LIST_HOMED_NAS (a malformed
# prefix is refused with 102 before the challenge, as a malformed handle is).
_CHALLENGED_ADMIN = {OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE,
                     OpCode.REMOVE_VALUE, OpCode.MODIFY_VALUE, OpCode.HOME_NA,
                     OpCode.UNHOME_NA, OpCode.LIST_HOMED_NAS}


def legitimate_rcs(op: int, *, udp: bool) -> set[int]:
    """Response codes a decoded request with this opCode may draw."""
    if udp and op in ADMIN_OPCODES:
        return {RC.PROTOCOL_ERROR}
    if op == OpCode.RESOLUTION:
        return _RESOLUTION_RCS
    if op == OpCode.GET_SITE_INFO:
        return {RC.SUCCESS}
    if op == OpCode.CHALLENGE_RESPONSE:
        return {RC.ERROR, RC.PROTOCOL_ERROR} | _AFTER_CHALLENGE_RCS
    if op in _CHALLENGED_ADMIN:  # TCP: refused before a challenge, or challenged
        return {RC.PROTOCOL_ERROR, 100, 101, 102, 202, 301, 402}
    # Every other known opCode: part of the protocol, not served by this node
    # (LIST_HANDLES, SESSION_*, VERIFY_CHALLENGE, replication 1000-1003).
    return {RC.OPERATION_NOT_SUPPORTED}


@dataclass(frozen=True)
class Finding:
    category: str
    detail: str
    tag: str = ""


def _text(msg: Message) -> str | None:
    return msg.body.message if isinstance(msg.body, ErrorBody) else None


def check_reply(exp: Expect, reply: bytes | None, *, udp: bool) -> tuple[int | None, list[Finding]]:
    """(the reply's response code, what is wrong with it) for one expectation."""
    rc, problems = _check(exp, reply, udp)
    if problems and exp.alt is not None:
        alt_rc, alt_problems = _check(exp.alt, reply, udp)
        if not alt_problems and exp.tag in KNOWN:
            return alt_rc, [Finding("known bug", KNOWN[exp.tag], exp.tag)]
        if not alt_problems:
            return alt_rc, [Finding(f"regression [{exp.tag}]", FIXED.get(exp.tag, ""))]
    return rc, problems


def _check(exp: Expect, reply: bytes | None, udp: bool) -> tuple[int | None, list[Finding]]:
    if reply is None:
        if exp.kind == "none":
            return None, []
        return None, [Finding("no reply", f"expected {exp.kind}")]
    try:
        renv, rmsg = decode_response(reply)
    except HandleProtocolError as exc:
        return None, [Finding("undecodable reply", str(exc))]
    rc = rmsg.response_code
    if exp.kind == "none":
        return rc, [Finding("unexpected reply", f"rc {rc} to a fragment")]
    got_tc = bool(reply[2] & ENV_TRUNCATED)
    problems = []
    if exp.kind == "early":
        err = exp.error
        assert err is not None
        # Early errors go out in version 2.3, where Java writes 202 as 201 (and 7 as
        # 303, which decodes back to 7).
        want_rc = RC.VALUE_ALREADY_EXISTS if err.rc == RC.INVALID_VALUE else int(err.rc)
        want = (U32, want_rc, err.op_code, err.message, COMPATIBILITY_VERSION,
                bool(err.env_flags & ENV_TRUNCATED))
        got = (renv.request_id, rc, rmsg.op_code, _text(rmsg), renv.version, got_tc)
        names = ("requestId", "rc", "opCode", "message", "version", "TC")
        for name, w, g in zip(names, want, got, strict=True):
            if w != g:
                problems.append(Finding(f"wrong {name}", f"early error: want {w!r} got {g!r}"))
        return rc, problems
    env, msg = exp.env, exp.msg
    assert env is not None and msg is not None
    op = msg.op_code
    if renv.request_id != env.request_id:
        problems.append(Finding("wrong requestId", f"{renv.request_id:#x} != "
                                f"{env.request_id:#x}"))
    # The final reply to a challenge answer is the original request's (§11).
    if rmsg.op_code != op and not (op == OpCode.CHALLENGE_RESPONSE
                                   and rmsg.op_code in _CHALLENGED_OPS):
        problems.append(Finding("wrong opCode", f"{rmsg.op_code} != {op}"))
    if renv.version != env.reply_version and op != OpCode.CHALLENGE_RESPONSE:
        problems.append(Finding("wrong version", f"{renv.version} != {env.reply_version}"))
    if rc not in legitimate_rcs(op, udp=udp):
        problems.append(Finding("wrong rc", f"opCode {op}: rc {rc} "
                                f"{_text(rmsg) or type(rmsg.body).__name__}"))
    elif rc == RC.ERROR and _text(rmsg) not in (MSG_INVALID_SESSION, MSG_SERVER_ERROR):
        problems.append(Finding("wrong rc", f"RC 2 with {_text(rmsg)!r}"))
    elif rc == RC.PROTOCOL_ERROR and udp and op in ADMIN_OPCODES and (
            _text(rmsg) != MSG_ADMIN_ON_NON_ADMIN):
        problems.append(Finding("wrong message", f"admin over UDP: {_text(rmsg)!r}"))
    elif rc == RC.SUCCESS and op == OpCode.RESOLUTION:
        body, asked = rmsg.body, msg.body
        if not (isinstance(body, ValuesBody) and isinstance(asked, ResolutionRequest)
                and body.handle == asked.handle):
            problems.append(Finding("wrong body", "resolution reply does not echo the handle"))
    elif rc == RC.SUCCESS and op == OpCode.GET_SITE_INFO and not isinstance(
            rmsg.body, SiteInfoReply):
        problems.append(Finding("wrong body", "site info reply without a site"))
    return rc, problems


def check_probe(kind: str, reply: bytes | None, h: Handles) -> str | None:
    """Exactly the right answer to one of the valid probes, else what is wrong."""
    if reply is None:
        return "no reply"
    try:
        _, msg = decode_response(reply)
    except HandleProtocolError as exc:
        return f"undecodable: {exc}"
    body = msg.body
    if kind == "public":
        ok = (msg.response_code == RC.SUCCESS and isinstance(body, ValuesBody)
              and body.handle == h.public
              and [(v.index, v.type, v.data) for v in body.values] == [(1, "URL", PUBLIC_URL)])
    elif kind == "site":
        ok = msg.response_code == RC.SUCCESS and isinstance(body, SiteInfoReply)
    elif kind == "restricted":
        ok = msg.response_code == RC.AUTHENTICATION_NEEDED and isinstance(body, ChallengeBody)
    else:  # missing
        ok = msg.response_code == RC.HANDLE_NOT_FOUND
    return None if ok else f"rc {msg.response_code} {body!r:.120}"


PROBE_KINDS = ("public", "public", "site", "restricted", "missing")
# The probe sent after a packet that may rightly get no reply. Not a resolution: the
# server answers those from its cache at once, possibly before the packet's own
# (slow-path) reply; site info is always answered by a task, queued after the
# packet's, so the packet's reply, if any, comes first.
FOLLOW_PROBE = "site"


def probe_packet(kind: str, h: Handles, request_id: int) -> bytes:
    if kind == "public":
        return resolution(h.public, request_id)
    if kind == "site":
        return packet(Message(OpCode.GET_SITE_INFO, 0, 0, HandleBody("/")), request_id)
    if kind == "restricted":
        return resolution(h.restricted, request_id, flags=FLAG_RECU)
    return resolution(f"{h.prefix}/FUZZ-MISSING", request_id)


# --- the run against a node ----------------------------------------------------------


@dataclass
class FuzzReport:
    packets: int = 0
    udp: int = 0
    tcp: int = 0
    probes: int = 0
    seconds: float = 0.0
    rcs: Counter[str] = field(default_factory=Counter)
    no_reply_expected: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    probe_failures: int = 0

    def note(self, finding: Finding, data: bytes, reply: bytes | None, keep: int = 3) -> None:
        key = f"{finding.category} [{finding.tag}]" if finding.tag else finding.category
        (self.known if finding.tag in KNOWN else self.problems)[key] += 1
        examples = self.examples.setdefault(key, [])
        if len(examples) < keep:
            examples.append(f"{finding.detail}: packet {data.hex()} reply "
                            f"{reply.hex() if reply is not None else None}")

    @property
    def rate(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


@dataclass
class _Slot:
    sock: socket.socket
    data: bytes = b""
    expect: Expect | None = None
    probe: str = ""  # the probe kind when this exchange is a probe
    follow: int | None = None  # requestId of the probe sent after a possibly silent packet
    reply: bytes | None = None
    follow_reply: bytes | None = None
    deadline: float = 0.0
    reassembler: UdpReassembler = field(default_factory=UdpReassembler)
    busy: bool = False
    retire: bool = False  # new socket after this exchange (a fragment may be pending)


class UdpFuzzer:
    """A window of sockets, one exchange in flight on each: replies are matched by
    socket, since early errors carry requestId FFFFFFFF. A packet that may rightly
    get no reply (a kept fragment) is followed on its socket by a valid probe
    (:data:`FOLLOW_PROBE`): the probe's answer proves the packet was handled, and
    whatever came before it was the packet's reply. A socket that sent a TC
    datagram is replaced afterwards and TC datagrams get unique requestIds, so no
    fragment the server holds can meet another: each datagram is judged as if
    from a source with nothing pending."""

    def __init__(self, host: str, port: int, h: Handles, report: FuzzReport, *,
                 window: int = 32, timeout: float = 2.0) -> None:
        self.addr = (host, port)
        self.h = h
        self.report = report
        self.timeout = timeout
        self.sel = selectors.DefaultSelector()
        self.slots = [self._open() for _ in range(window)]
        self.seq = 0

    def _open(self) -> _Slot:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(self.addr)
        slot = _Slot(sock)
        self.sel.register(sock, selectors.EVENT_READ, slot)
        return slot

    def close(self) -> None:
        for slot in self.slots:
            self.sel.unregister(slot.sock)
            slot.sock.close()
        self.sel.close()

    def idle(self) -> list[_Slot]:
        return [s for s in self.slots if not s.busy]

    @property
    def busy(self) -> bool:
        return any(s.busy for s in self.slots)

    def send(self, slot: _Slot, data: bytes, *, probe: str = "") -> None:
        if len(data) >= 12 and data[2] & ENV_TRUNCATED:
            # The server keeps fragments by (source, requestId) for 5 s, and a new
            # socket may get the port of one retired moments ago: a requestId of its
            # own keeps each fragment apart.
            self.seq += 1
            data = data[:8] + _INT4.pack(0xFD000000 | (self.seq & 0xFFFFFF)) + data[12:]
        slot.data, slot.probe = data, probe
        slot.expect = None if probe else expect_udp(data)
        slot.reply = slot.follow_reply = None
        slot.follow = None
        slot.busy = True
        slot.retire = bool(len(data) > 2 and data[2] & ENV_TRUNCATED)
        slot.deadline = time.monotonic() + self.timeout
        slot.reassembler = UdpReassembler()
        with contextlib.suppress(OSError):  # counted as lost when nothing comes back
            slot.sock.send(data)
        if slot.expect is not None and slot.expect.may_be_silent:
            self.seq += 1
            slot.follow = 0xFE000000 | (self.seq & 0xFFFFFF)
            with contextlib.suppress(OSError):
                slot.sock.send(probe_packet(FOLLOW_PROBE, self.h, slot.follow))

    def poll(self, wait: float) -> None:
        for key, _ in self.sel.select(wait):
            slot: _Slot = key.data
            while slot.sock.fileno() >= 0:  # not retired while we read
                try:
                    datagram = slot.sock.recv(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self._datagram(slot, datagram)
        now = time.monotonic()
        for slot in self.slots:
            if slot.busy and now > slot.deadline:
                self._finish(slot)

    def _datagram(self, slot: _Slot, datagram: bytes) -> None:
        if not slot.busy:
            self.report.note(Finding("reply after the exchange ended", ""), slot.data, datagram)
            return
        if len(datagram) > 2 and datagram[2] & ENV_TRUNCATED:
            try:
                whole = slot.reassembler.add("server", datagram, time.monotonic())
            except HandleProtocolError as exc:
                self.report.note(Finding("undecodable reply", f"bad fragment: {exc}"),
                                 slot.data, datagram)
                return
            if whole is None:
                return
            datagram = whole
        if slot.follow is not None and datagram[8:12] == _INT4.pack(slot.follow):
            slot.follow_reply = datagram
            self._finish(slot)
        elif slot.reply is not None:
            self.report.note(Finding("more than one reply", ""), slot.data, datagram)
        else:
            slot.reply = datagram
            if slot.follow is None:
                self._finish(slot)

    def _finish(self, slot: _Slot) -> None:
        report, reply = self.report, slot.reply
        if slot.probe:
            report.probes += 1
            problem = check_probe(slot.probe, reply, self.h)
            if problem:
                report.probe_failures += 1
                report.note(Finding("probe failed", f"{slot.probe}: {problem}"), slot.data,
                            reply)
        else:
            assert slot.expect is not None
            rc, problems = check_reply(slot.expect, reply, udp=True)
            report.rcs[f"udp {rc if rc is not None else 'no reply'}"] += 1
            if reply is None and not problems:
                report.no_reply_expected += 1
            for p in problems:
                report.note(p, slot.data, reply)
            if slot.follow is not None:
                report.probes += 1
                problem = check_probe(FOLLOW_PROBE, slot.follow_reply, self.h)
                if problem:
                    report.probe_failures += 1
                    report.note(Finding("probe failed", f"after a silent packet: {problem}"),
                                slot.data, slot.follow_reply)
        slot.busy = False
        if slot.retire:
            self.sel.unregister(slot.sock)
            slot.sock.close()
            self.slots[self.slots.index(slot)] = self._open()


def tcp_exchange(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes | None:
    """One connection: send, half-close, read to EOF. None if nothing came back."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        with contextlib.suppress(OSError):  # the server may close before we finish
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks) or None


def fuzz_tcp_one(host: str, port: int, data: bytes, report: FuzzReport) -> None:
    exp = expect_tcp(data)
    try:
        reply = tcp_exchange(host, port, data)
    except TimeoutError:
        reply = None
    rc, problems = check_reply(exp, reply, udp=False)
    report.rcs[f"tcp {rc if rc is not None else 'no reply'}"] += 1
    for p in problems:
        report.note(p, data, reply)


def fresh_challenge(host: str, port: int, h: Handles) -> bytes | None:
    """A CHALLENGE_RESPONSE (wrong secret) to a challenge the server has pending."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(resolution(h.restricted, 0x5EED, flags=FLAG_RECU), (host, port))
        try:
            env, msg = decode_response(s.recv(4096))
        except (TimeoutError, HandleProtocolError):
            return None
    if not isinstance(msg.body, ChallengeBody) or msg.request_digest is None:
        return None
    return challenge_answer(env.session_id, msg.body.nonce, msg.request_digest.digest,
                            id_handle=f"{h.prefix}/ADMIN")


def run_fuzz(host: str, port: int, h: Handles, n: int, *, seed: int = 1, window: int = 32,
             tcp_share: float = 0.01, probe_every: int = 50, progress: bool = False
             ) -> FuzzReport:
    rng = random.Random(seed)
    corpus = build_corpus(h)
    answer_at = next(i for i, p in enumerate(corpus)
                     if p[20:24] == _INT4.pack(OpCode.CHALLENGE_RESPONSE))
    report = FuzzReport()
    fuzzer = UdpFuzzer(host, port, h, report, window=window)
    started = time.perf_counter()
    last_print = started
    try:
        while report.packets < n:
            idle = fuzzer.idle()
            for slot in idle:
                if report.packets >= n:
                    break
                report.packets += 1
                if report.packets % probe_every == 0:
                    kind = PROBE_KINDS[report.packets // probe_every % len(PROBE_KINDS)]
                    fuzzer.send(slot, probe_packet(kind, h, report.packets & U32), probe=kind)
                    continue
                if report.packets % 997 == 0:  # a live challenge to answer, now and then
                    answer = fresh_challenge(host, port, h)
                    if answer is not None:
                        corpus[answer_at] = answer
                data = mutate(rng, rng.choice(corpus))
                if rng.random() < tcp_share:
                    report.tcp += 1
                    fuzz_tcp_one(host, port, data, report)
                else:
                    report.udp += 1
                    fuzzer.send(slot, data)
            fuzzer.poll(0.0 if fuzzer.idle() else 0.05)
            if progress and time.perf_counter() - last_print > 10:
                last_print = time.perf_counter()
                rate = report.packets / (last_print - started)
                print(f"  {report.packets:,} packets, {rate:,.0f}/s, "
                      f"problems {sum(report.problems.values())}, "
                      f"known {sum(report.known.values())}", flush=True)
        while fuzzer.busy:
            fuzzer.poll(0.05)
    finally:
        fuzzer.close()
    report.seconds = time.perf_counter() - started
    return report


# --- command line: a node of our own ----------------------------------------------------


def _register(url: str, handle: str, values: list[dict[str, object]], admin: str,
              secret: str) -> None:
    login = base64.b64encode(f"{admin.replace(':', '%3A', 1)}:{secret}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/handles/{handle}", data=json.dumps({"values": values}).encode(),
        method="PUT", headers={"Content-Type": "application/json",
                               "Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        if r.status not in (200, 201):
            raise RuntimeError(f"PUT {handle}: {r.status}")


def _rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


_LOG_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ", re.M)


def log_errors(text: str) -> tuple[list[str], list[str]]:
    """The node log's ERROR/CRITICAL entries (each with its traceback), split into
    (those of a known open bug, see KNOWN_LOG_SIGNATURES; everything else)."""
    starts = [m.start() for m in _LOG_ENTRY.finditer(text)] + [len(text)]
    known, other = [], []
    for a, b in itertools.pairwise(starts):
        entry = text[a:b]
        level = _LOG_ENTRY.match(entry)
        if level is None or level.group(1) not in ("ERROR", "CRITICAL"):
            continue
        last = entry.rstrip().splitlines()[-1]
        is_known = any(last.startswith(exc) and f"in {func}" in entry
                       for exc, func in KNOWN_LOG_SIGNATURES.values())
        (known if is_known else other).append(entry)
    return known, other


def main(argv: Sequence[str] | None = None) -> int:
    from bench.preload import PREFIX, SECRET, prepare_store
    from bench.processes import free_port, idnode, listening

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, default=32, help="UDP exchanges in flight")
    parser.add_argument("--tcp-share", type=float, default=0.01)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--replay", nargs="+", metavar="HEX",
                        help="send these packets (hex) over UDP and TCP, show what came back")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="idnode-fuzz-"))
    store = prepare_store(work, 0).path
    http_port = free_port()
    log = work / "node.log"
    h = handles_for(PREFIX)
    argv_node = idnode("serve", "--store", str(store), "--port", str(http_port),
                       "--handle-port", "0", "--workers", "1")
    with listening(argv_node, http_port, log) as node:
        found = None
        while found is None:
            found = re.search(r"udp\+tcp port (\d+)", log.read_text())
            time.sleep(0.05)
        port = int(found.group(1))
        url = f"http://127.0.0.1:{http_port}"
        for handle, values in rest_records(h).items():
            _register(url, handle, values, f"300:{PREFIX}/ADMIN", SECRET)
        if args.replay:
            for text in args.replay:
                replay("127.0.0.1", port, bytes.fromhex(text))
            known_log, other_log = log_errors(log.read_text(errors="replace"))
            print(f"node log: {len(known_log)} ERROR entries of known bugs, {len(other_log)} "
                  "other ERROR entries")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
            return 0
        rss_before = _rss_kb(node.pid)
        print(f"node pid {node.pid}, Handle port {port}: fuzzing with {args.packets:,} "
              f"packets, seed {args.seed}", flush=True)
        report = run_fuzz("127.0.0.1", port, h, args.packets, seed=args.seed,
                          window=args.window, tcp_share=args.tcp_share,
                          probe_every=args.probe_every, progress=True)
        alive = node.poll() is None
        final = [check_probe(k, _udp_once("127.0.0.1", port, probe_packet(k, h, 1)), h)
                 for k in ("public", "site", "missing")]
        final_tcp = check_probe("public", tcp_exchange("127.0.0.1", port,
                                                       probe_packet("public", h, 2)), h)
        rss_after = _rss_kb(node.pid)
    known_log, other_log = log_errors(log.read_text(errors="replace"))
    still_ok = alive and not any(final) and final_tcp is None
    print(f"\n{report.packets:,} packets ({report.udp:,} mutants over UDP, {report.tcp:,} over "
          f"TCP, {report.probes:,} valid probes interleaved) in {report.seconds:.1f} s: "
          f"{report.rate:,.0f} packets/s")
    print("replies by response code:")
    for key, count in sorted(report.rcs.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>9,}  {key}")
    print(f"fragments kept without reply (correct): {report.no_reply_expected:,}")
    print(f"probes failed: {report.probe_failures}")
    print(f"node alive: {alive}; answers correctly after the run: UDP "
          f"{'yes' if not any(final) else final}, TCP {final_tcp or 'yes'}; "
          f"RSS {rss_before} kB -> {rss_after} kB")
    print(f"node log: {len(other_log)} ERROR entries"
          + (f", and {len(known_log):,} of known open bugs ({', '.join(KNOWN)})"
             if KNOWN else ""))
    for entry in (known_log[:1] + other_log[:3]):
        print("  | " + entry.rstrip().replace("\n", "\n  | "))
    for title, counter in (("problems", report.problems), ("known open bugs", report.known)):
        print(f"{title}: {sum(counter.values()):,}")
        for key, count in counter.most_common():
            print(f"  {count:>9,}  {key}")
            for example in report.examples.get(key, [])[:2]:
                print(f"             e.g. {example[:400]}")
    if args.output:
        args.output.write_text(json.dumps({
            "packets": report.packets, "udp": report.udp, "tcp": report.tcp,
            "probes": report.probes, "seconds": report.seconds, "rate": report.rate,
            "rcs": dict(report.rcs), "problems": dict(report.problems),
            "known": dict(report.known), "examples": report.examples,
            "probe_failures": report.probe_failures, "alive": alive, "still_ok": still_ok,
            "log_errors_known": len(known_log), "log_errors_other": other_log[:20],
            "rss_kb": [rss_before, rss_after],
        }, indent=2))
    failed = report.problems or report.probe_failures or other_log
    return 0 if still_ok and not failed else 1


def replay(host: str, port: int, data: bytes) -> None:
    """One packet over UDP (fresh socket) and over TCP: expectation, reply, verdict."""
    print(f"packet {data.hex()}")
    for transport, exp, reply in (
        ("udp", expect_udp(data), _udp_once(host, port, data)),
        ("tcp", expect_tcp(data), tcp_exchange(host, port, data)),
    ):
        rc, problems = check_reply(exp, reply, udp=transport == "udp")
        detail = exp.error.message if exp.error else (exp.msg.op_code if exp.msg else "")
        print(f"  {transport}: expected {exp.kind} {detail!r} tag {exp.tag!r}; reply rc {rc}: "
              f"{reply.hex() if reply else None}")
        for p in problems:
            print(f"    {p.category}: {p.detail}")


def _udp_once(host: str, port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, (host, port))
        try:
            return s.recv(65536)
        except TimeoutError:
            return None


if __name__ == "__main__":
    sys.exit(main())
