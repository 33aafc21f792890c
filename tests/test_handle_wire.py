"""Binary Handle protocol codec: the captured traffic of handle-wire.md byte for byte,
reply rules, framing (TCP, UDP), challenge answers, patch_reply and hostile input."""

from __future__ import annotations

import hashlib
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.wire_fuzz import build_corpus, exercise, fuzz
from protocol.codes import RC
from protocol.errors import MalformedMessage
from protocol.handle_auth import pbkdf2_key
from protocol.handle_wire import (
    CLOSED,
    DIGEST_MD5_OLD,
    DIGEST_SHA1,
    DIGEST_SHA256,
    EMPTY,
    ENV_TRUNCATED,
    FLAG_CACR,
    FLAG_CERT,
    FLAG_CONT,
    FLAG_KPAL,
    FLAG_PUBL,
    FLAG_RECU,
    FLAG_RRDG,
    MSG_ADMIN_ON_NON_ADMIN,
    MSG_INVALID_LENGTH,
    MSG_SERVER_ERROR,
    NEED_DATA,
    SCHEME_HMAC_SHA1,
    SCHEME_HMAC_SHA256,
    SCHEME_MD5,
    SCHEME_MD5_OLD,
    SCHEME_PBKDF2_HMAC_SHA1,
    SCHEME_SHA1,
    SCHEME_SHA256,
    ChallengeAnswer,
    ChallengeBody,
    Credential,
    Envelope,
    ErrorBody,
    HandleBody,
    HandleListBody,
    HandleProtocolError,
    IndexesBody,
    Message,
    OpaqueBody,
    OpCode,
    ReferralBody,
    RequestDigest,
    ResolutionRequest,
    SiteInfoReply,
    TcpFramer,
    UdpReassembler,
    ValuesBody,
    VerifyChallengeReply,
    VerifyChallengeRequest,
    answer_secret_key_challenge,
    compute_request_digest,
    decode_credential,
    decode_packet,
    decode_request,
    decode_response,
    decode_value,
    encode_credential,
    encode_early_error,
    encode_header_and_body,
    encode_packet,
    encode_reply,
    encode_value,
    hashed_secret_key,
    interface_refusal,
    parse_public_key_answer,
    patch_reply,
    reply_cache_key,
    reply_op_flags,
    signature_input,
    split_datagrams,
    unknown_opcode_error,
    verify_secret_key_answer,
)
from protocol.site_info import decode_site
from protocol.values import HandleValue, ValueReference

EXP = 43200


def wire(spec: str) -> bytes:
    """A dump as written in handle-wire.md: hex groups, "quoted text", | separators."""
    out = bytearray()
    for tok in re.findall(r'"[^"]*"|[0-9a-fA-F]+', spec):
        out += tok[1:-1].encode() if tok.startswith('"') else bytes.fromhex(tok)
    return bytes(out)


# --- §3 RESOLUTION -------------------------------------------------------------------

ITEM1_REQ = wire("""
    020b020b 00000000 01020304 00000000 00000032
    00000001 00000000 00000000 ffff 00 00 70000000 00000016
    0000000a 544553542f6974656d31  00000000  00000000  00000000
""")
ITEM1_RSP = wire("""
    020b020b 00000000 01020304 00000000 00000096
    00000001 00000001 90000000 0001 00 00 6b052eb8 0000007a
    0000000a 544553542f6974656d31 00000002
    00000001 6b04802b 00 00015180 0e 00000003 55524c 00000015
        68747470733a2f2f6578616d706c652e636f6d2f78 00000000
    00000064 6b04802b 00 00015180 0e 00000008 48535f41444d494e 00000014
        0fff 0000000a 544553542f41444d494e 0000012c 00000000
    00000000
""")
ITEM1_VALUES = (
    HandleValue(1, "URL", b"https://example.com/x", timestamp=0x6B04802B),
    HandleValue(100, "HS_ADMIN", wire('0fff 0000000a "TEST/ADMIN" 0000012c'), timestamp=0x6B04802B),
)

# --- §5 errors -------------------------------------------------------------------------

RC100_RSP = wire("""
    020b020b 00000000 01020306 00000000 00000020 |
    00000001 00000064 90000000 0001 00 00 6b052eb9 00000004 | 00000000 | 00000000
""")
RC301_RSP = wire("""
    020b020b 00000000 01020307 00000000 0000003d |
    00000001 0000012d 90000000 0001 00 00 6b052eb9 00000021
    0000001d "That prefix doesn't live here" | 00000000
""")
RC4_EARLY = wire("""
    0203020b 00000000 ffffffff 00000000 00000036 |
    00000000 00000004 19000000 ffff 00 00 6b052ee3 0000001a
    00000016 "Invalid message length" | 00000000
""")

# --- §6 GET_SITE_INFO (the modulus is elided in the dump: rebuilt around its ends) -------

_RNG = random.Random(20261123)
MODULUS = b"\x00\xb5\x5b\xbf" + bytes(_RNG.randrange(256) for _ in range(250)) + b"\x2c\x4d\x69"
RSA_KEY = wire('0000000b "RSA_PUB_KEY" 0000 00000003 010001 00000101') + MODULUS + bytes(4)
SITE_BODY = (
    wire("""
    0001 020b 0001 80 02 00000000 00000001 00000004 "desc" 0000000b "test-server"
    00000001 00000001 00000000 00000000 00000000 c0000202
""")
    + wire("00000121")
    + RSA_KEY
    + wire("00000003 03 01 00003161 02 00 00003161 03 02 00004650")
)
SITE_REQ = wire("""
    020b020b 00000000 0a0b0c01 00000000 00000021 |
    00000002 00000000 00000000 ffff 00 00 70000000 00000005 | 00000001 2f | 00000000
""")
SITE_RSP = (
    wire("""020b020b 00000000 0a0b0c01 00000000 00000196 |
            00000002 00000001 90000000 0001 00 00 6b052ec4 0000017a""")
    + SITE_BODY
    + wire("00000000")
)

# --- §11 admin operation with HS_SECKEY --------------------------------------------------

CREATE_REQ = wire("""
    020b020b 00000000 1f246918 00000000 0000009c
    00000064 00000000 19000000 0001 00 00 6b052f34 00000080
    00000011 "TEST/wire-create1" 00000002
    00000001 6b048674 00 00015180 0e 00000003 "URL" 00000014 "http://example.org/w" 00000000
    00000064 6b048674 00 00015180 0e 00000008 "HS_ADMIN" 00000014 0fff 0000000a "TEST/ADMIN"
        0000012c 00000000
    00000000
""")
CHALLENGE_RSP = wire("""
    020b020b 00000007 1f246918 00000000 00000051
    00000064 00000192 99800000 0001 00 00 6b052f34 00000035
    03 eade306f2e47db06ce40583c998c96bd27f4f1ae617f4e177c9c11e92d6848af
    00000010 13c47222efa00df3c1544bee224c8020 | 00000000
""")
ANSWER_REQ = wire("""
    020b020b 00000007 2204cd49 00000000 00000074
    000000c8 00000000 19000000 ffff 00 00 6b052f35 00000058
    00000009 "HS_SECKEY" 0000000a "TEST/ADMIN" 0000012c
    00000035 22 | 00000010 4314963f00e3bead5d4a264c28f08a53 | 00002710 | 000000a0
        | 00000014 882cd0c23b24ec1de2293615e666121130972948
    00000000
""")
CREATE_OK_RSP = wire("""
    020b020b 00000000 2204cd49 00000000 00000031
    00000064 00000001 99000000 0001 00 00 6b052f35 00000015
    00000011 "TEST/wire-create1" | 00000000
""")
NONCE = bytes.fromhex("13c47222efa00df3c1544bee224c8020")
CREATE_DIGEST = bytes.fromhex("eade306f2e47db06ce40583c998c96bd27f4f1ae617f4e177c9c11e92d6848af")
SALT = bytes.fromhex("4314963f00e3bead5d4a264c28f08a53")

CAPTURES = {
    "item1_req": ITEM1_REQ,
    "item1_rsp": ITEM1_RSP,
    "rc100": RC100_RSP,
    "rc301": RC301_RSP,
    "rc4_early": RC4_EARLY,
    "site_req": SITE_REQ,
    "site_rsp": SITE_RSP,
    "create_req": CREATE_REQ,
    "challenge": CHALLENGE_RSP,
    "answer": ANSWER_REQ,
    "create_ok": CREATE_OK_RSP,
}
REQUESTS = {"item1_req", "site_req", "create_req", "answer"}


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_round_trips_byte_for_byte(name: str) -> None:
    data = CAPTURES[name]
    env, msg = decode_request(data) if name in REQUESTS else decode_response(data)
    assert env.message_length == len(data) - 20
    assert encode_packet(env, msg) == data
    assert msg.header_and_body == data[20:-4]  # every capture is unsigned: cred length 0


def test_item1_decodes_to_the_model() -> None:
    env, req = decode_request(ITEM1_REQ)
    assert (env.version, env.suggested_version, env.request_id) == ((2, 11), (2, 11), 0x01020304)
    assert req.op_code == OpCode.RESOLUTION and req.is_request
    assert req.body == ResolutionRequest("TEST/item1")
    assert (req.site_info_serial, req.expiration, req.credential) == (0xFFFF, 0x70000000, b"")
    _, rsp = decode_response(ITEM1_RSP)
    assert rsp.body == ValuesBody("TEST/item1", ITEM1_VALUES)
    assert (rsp.response_code, rsp.op_flags, rsp.site_info_serial) == (1, 0x90000000, 1)


def test_item1_reply_is_built_exactly() -> None:
    env, req = decode_request(ITEM1_REQ)
    out = encode_reply(
        env, req, RC.SUCCESS, ValuesBody("TEST/item1", ITEM1_VALUES), now=0x6B052EB8 - EXP
    )
    assert out == ITEM1_RSP


def test_error_replies_are_built_exactly() -> None:
    env, req = decode_request(ITEM1_REQ)
    now = 0x6B052EB9 - EXP
    not_found = encode_reply(
        env, req, RC.HANDLE_NOT_FOUND, ErrorBody(), now=now, request_id=0x01020306
    )
    assert not_found == RC100_RSP
    not_here = encode_reply(
        env,
        req,
        RC.SERVER_NOT_RESP,
        ErrorBody("That prefix doesn't live here"),
        now=now,
        request_id=0x01020307,
    )
    assert not_here == RC301_RSP
    assert decode_response(RC301_RSP)[1].body == ErrorBody("That prefix doesn't live here")


def test_early_error_is_built_exactly() -> None:
    err = HandleProtocolError(MSG_INVALID_LENGTH)
    assert encode_early_error(err, now=0x6B052EE3 - EXP) == RC4_EARLY
    # TC in what was received comes back (junk with 0x20 in byte 2 → 02 03 22 0b).
    with pytest.raises(HandleProtocolError) as info:
        decode_request(b"\x47\x45\x20" + bytes(7))
    assert info.value.rc == RC.PROTOCOL_ERROR and info.value.message == MSG_INVALID_LENGTH
    assert encode_early_error(info.value, now=0)[:4] == bytes.fromhex("0203220b")


def test_site_info_exchange() -> None:
    env, req = decode_request(SITE_REQ)
    assert req.body == HandleBody("/")
    _, rsp = decode_response(SITE_RSP)
    assert rsp.body == SiteInfoReply(SITE_BODY)
    site = rsp.body.site()
    assert site.primary and site.attribute("desc") == "test-server"
    out = encode_reply(
        env, req, RC.SUCCESS, SiteInfoReply.of(decode_site(SITE_BODY)), now=0x6B052EC4 - EXP
    )
    assert out == SITE_RSP


def test_admin_exchange_section_11() -> None:
    env, create = decode_request(CREATE_REQ)
    assert create.op_flags == FLAG_RECU | FLAG_CACR | FLAG_PUBL
    assert create.body == ValuesBody(
        "TEST/wire-create1",
        (
            HandleValue(1, "URL", b"http://example.org/w", timestamp=0x6B048674),
            HandleValue(100, "HS_ADMIN", ITEM1_VALUES[1].data, timestamp=0x6B048674),
        ),
    )
    # The 402: sessionId 7 = challenge id, RRDG set, SHA-256 of the create's header+body.
    challenge = encode_reply(
        env,
        create,
        RC.AUTHENTICATION_NEEDED,
        ChallengeBody(NONCE),
        now=0x6B052F34 - EXP,
        session_id=7,
    )
    assert challenge == CHALLENGE_RSP
    _, ch = decode_response(CHALLENGE_RSP)
    assert ch.request_digest == RequestDigest(DIGEST_SHA256, CREATE_DIGEST)
    assert ch.request_digest == compute_request_digest(create.header_and_body)
    assert ch.body == ChallengeBody(NONCE)
    # The answer, on a new connection: same session, new requestId.
    aenv, answer = decode_request(ANSWER_REQ)
    assert (aenv.session_id, aenv.request_id) == (7, 0x2204CD49)
    body = answer.body
    assert isinstance(body, ChallengeAnswer)
    assert (body.auth_type, body.id_handle, body.id_index) == ("HS_SECKEY", "TEST/ADMIN", 300)
    assert verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, body.signed_response)
    assert not verify_secret_key_answer(b"Secret", NONCE, CREATE_DIGEST, body.signed_response)
    # The final reply: the answer's requestId, session 0, flags of the original request.
    ok = encode_reply(
        env,
        create,
        RC.SUCCESS,
        HandleBody("TEST/wire-create1"),
        now=0x6B052F35 - EXP,
        request_id=aenv.request_id,
    )
    assert ok == CREATE_OK_RSP


def test_pbkdf2_values_of_the_capture() -> None:
    dk = pbkdf2_key(b"secret", SALT, 10000, 160)
    assert dk.hex() == "029ed776466f8eb7a29f2304fe9b28513a369324"
    ours = answer_secret_key_challenge(b"secret", NONCE, CREATE_DIGEST, salt=SALT)
    assert ours == decode_request(ANSWER_REQ)[1].body.signed_response  # type: ignore[union-attr]


# --- §1 versions, §7 digests ------------------------------------------------------------


def _item1(envelope_head: str, flags: int = 0) -> bytes:
    body = ResolutionRequest("TEST/item1")
    msg = Message(OpCode.RESOLUTION, 0, flags, body, expiration=0x70000000)
    head = bytes.fromhex(envelope_head)
    env = Envelope(head[0], head[1], head[2] & 3, head[3], head[2] & 0xE0, 0, 0x01020304)
    return encode_packet(env, msg)


@pytest.mark.parametrize(
    ("request_head", "reply_head"),
    [
        ("020b020b", "020b020b"),
        ("02010201", "0201020b"),
        ("020b0000", "020b020b"),
        ("02070207", "0207020b"),
        ("020c020c", "020b020b"),
        ("0201020b", "020b020b"),
    ],
)
def test_reply_version_follows_the_suggestion(request_head: str, reply_head: str) -> None:
    data = _item1(request_head)
    assert data[:4] == bytes.fromhex(request_head)  # suggested bytes kept as sent
    env, req = decode_request(data)
    assert encode_reply(env, req, RC.SUCCESS, ValuesBody("TEST/item1"), now=0)[:4] == bytes.fromhex(
        reply_head
    )


def test_rrdg_digest_by_version() -> None:
    env, req = decode_request(_item1("020b020b", FLAG_RRDG))
    assert len(req.header_and_body) == 46
    reply = encode_reply(env, req, RC.SUCCESS, ValuesBody("TEST/item1"), now=0)
    body = reply[44:]
    assert body[:4] == bytes.fromhex("035ff845") and body[30:33] == bytes.fromhex("86a81b")
    _, rsp = decode_response(reply)
    assert rsp.request_digest is not None and rsp.request_digest.algorithm == DIGEST_SHA256
    assert rsp.op_flags & FLAG_RRDG and rsp.body == ValuesBody("TEST/item1")
    # A 2.1 request gets SHA-1: "02 f6e91a47..96f6".
    env, req = decode_request(_item1("02010201", FLAG_RRDG))
    reply = encode_reply(env, req, RC.SUCCESS, ValuesBody("TEST/item1"), now=0)
    assert reply[44:49] == bytes.fromhex("02f6e91a47") and reply[63:65] == bytes.fromhex("96f6")
    assert decode_response(reply)[1].request_digest.algorithm == DIGEST_SHA1  # type: ignore[union-attr]


def test_pre_2_1_challenge_uses_the_old_layout() -> None:
    env, req = decode_request(_item1("02000200"))
    reply = encode_reply(env, req, RC.AUTHENTICATION_NEEDED, ChallengeBody(NONCE), now=0)
    renv, rsp = decode_response(reply)
    assert renv.version == (2, 0) and not rsp.op_flags & FLAG_RRDG
    assert rsp.body == ChallengeBody(NONCE)
    assert rsp.request_digest == RequestDigest(
        DIGEST_MD5_OLD, hashlib.md5(req.header_and_body).digest()
    )
    digest = rsp.request_digest.digest
    assert reply[44:] == wire("00000010") + NONCE + wire("00000010") + digest + bytes(4)


def test_reply_flags() -> None:
    every = 0xFFF00000
    assert reply_op_flags(every) == every & ~(FLAG_CONT | FLAG_KPAL | 0x00600000)
    assert reply_op_flags(0) == 0x90000000
    assert reply_op_flags(FLAG_CERT | FLAG_KPAL) == 0xD0000000


def test_pre_2_5_code_mapping() -> None:
    env, req = decode_request(_item1("02040204"))
    reply = encode_reply(env, req, RC.INVALID_VALUE, ErrorBody(), now=0)
    assert reply[24:28] == bytes.fromhex("000000c9")  # 202 goes out as 201 before 2.5


# --- §8 credential -------------------------------------------------------------------------


def test_hs_signed_credential_layout() -> None:
    sig = bytes(range(256))
    cred = Credential("HS_SIGNED", b"SHA-256", sig)
    raw = encode_credential(cred)
    expect = wire("""00 00 0000 00000000 00000000 00000009 "HS_SIGNED" 0000010f
                      00000007 "SHA-256" 00000100""")
    assert raw == expect + sig and len(raw) == 0x12C
    assert decode_credential(raw) == cred
    env, req = decode_request(ITEM1_REQ)
    signed = encode_packet(env, Message(1, 0, 0, req.body, credential=raw))
    assert decode_request(signed)[1].credential == raw
    with pytest.raises(HandleProtocolError):
        decode_credential(raw[:-1])


def test_signature_input_by_version() -> None:
    hb = b"HB"

    def sig(version: tuple[int, int]) -> bytes:
        return signature_input(
            hb,
            version=version,
            session_id=0x11111111,
            request_id=0x22222222,
            session_counter=0x33333333,
        )

    assert sig((2, 11)) == (bytes.fromhex("020b020b 11111111 22222222 33333333") + hb)
    assert sig((2, 7)) == (bytes.fromhex("0207 11111111 22222222 33333333") + hb)
    assert sig((2, 6)) == (bytes.fromhex("0206 1111 33333333 000000000000") + hb)
    assert sig((2, 5)) == hb


# --- bodies ------------------------------------------------------------------------------

VALUE = HandleValue(
    7,
    "URL.alt",
    "é".encode(),
    ttl=-5,
    timestamp=0xFFFFFFFF,
    permissions=0x0A,
    references=(ValueReference("TEST/ref", 3),),
)
ABS_VALUE = HandleValue(8, "EMAIL", b"x@y", ttl=0xF0000000, ttl_absolute=True)

SAMPLES: list[Message] = [
    Message(1, 0, FLAG_PUBL, ResolutionRequest("TEST/é", (1, -2, 300), ("URL", "HS_"))),
    Message(2, 0, 0, HandleBody("/")),
    Message(100, 0, 0x00600000, ValuesBody("TEST/x", (VALUE, ABS_VALUE))),
    Message(101, 0, 0, HandleBody("TEST/x")),
    Message(102, 0, 0, ValuesBody("TEST/x", (VALUE,))),
    Message(103, 0, 0, IndexesBody("TEST/x", (1, 2, 3))),
    Message(104, 0, 0, ValuesBody("TEST/x", (ABS_VALUE,))),
    Message(105, 0, 0, HandleBody("0.NA/TEST")),
    Message(200, 0, 0, ChallengeAnswer("HS_SECKEY", "TEST/ADMIN", 300, b"\x13" + bytes(32))),
    Message(
        201,
        0,
        0,
        VerifyChallengeRequest("TEST/ADMIN", 300, NONCE, RequestDigest(0, bytes(32)), b"\x01abc"),
    ),
    Message(
        201, 0, 0, VerifyChallengeRequest("TEST/ADMIN", 0, NONCE, RequestDigest(3, bytes(32)), b"")
    ),
    Message(300, 0, 0, HandleBody("0.NA/TEST")),
    Message(301, 0, 0, HandleBody("0.NA/TEST")),
    Message(302, 0, 0, HandleBody("")),
    Message(400, 0, 0x59800000, OpaqueBody(b"\x00\x04dh-stuff")),
    Message(9999, 0, 0, OpaqueBody(b"junk")),
    Message(1, 1, 0x90800000, ValuesBody("TEST/x", (VALUE,)), 1, 0, 5, RequestDigest(1, bytes(16))),
    Message(100, 1, 0x90000000, HandleBody("TEST/x"), 1),
    Message(100, 1, 0x90000000, EMPTY, 1),
    Message(101, 1, 0x90800000, EMPTY, 1, request_digest=RequestDigest(2, bytes(20))),
    Message(105, 1, 0x94000000, HandleListBody(("TEST/A", "TEST/B")), 1),
    Message(302, 1, 0x90000000, HandleListBody(("TEST",)), 1),
    Message(201, 1, 0x90000000, VerifyChallengeReply(True), 1),
    Message(2, 1, 0x90000000, SiteInfoReply(SITE_BODY), 1),
    Message(1, 302, 0x90000000, ReferralBody("TEST/x", (VALUE,)), 1),
    Message(1, 302, 0x90000000, ReferralBody("TEST/x"), 1),
    Message(
        100, 402, 0x99800000, ChallengeBody(NONCE), 1, request_digest=RequestDigest(3, bytes(32))
    ),
    Message(0, 4, 0x19000000, ErrorBody(MSG_INVALID_LENGTH)),
    Message(1, 200, 0x90000000, ErrorBody(""), 1, credential=b"\x00" * 9),
    Message(1, 603, 0x90000000, ErrorBody("quota"), 1),
    Message(1, 777, 0x90000000, OpaqueBody(b"??"), 1),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: f"oc{m.op_code}-rc{m.response_code}")
def test_bodies_round_trip(msg: Message) -> None:
    env = Envelope(session_id=3, request_id=0xFFFFFFFF)
    data = encode_packet(env, msg)
    env2, back = decode_packet(data)
    assert back == msg
    assert env2 == Envelope(session_id=3, request_id=0xFFFFFFFF, message_length=len(data) - 20)
    assert encode_packet(env2, back) == data
    assert back.header_and_body == encode_header_and_body(msg)


def test_value_record_codec() -> None:
    raw = encode_value(VALUE)
    assert decode_value(raw) == VALUE
    assert raw[:14] == bytes.fromhex("00000007 ffffffff 00 fffffffb 0a")
    assert decode_value(encode_value(ABS_VALUE)).ttl == 0xF0000000
    with pytest.raises(HandleProtocolError) as info:
        decode_value(raw[:8] + b"\x02" + raw[9:])  # ttlType 2
    assert info.value.rc == RC.INVALID_VALUE
    with pytest.raises(HandleProtocolError):
        decode_value(raw + b"\x00")


def test_lenient_where_handle_net_is() -> None:
    _, req = decode_request(ITEM1_REQ)
    # No credential section at all, or bytes after it: Java reads the credential "if there is room".
    no_cred = ITEM1_REQ[:16] + (46).to_bytes(4, "big") + ITEM1_REQ[20:-4]
    assert decode_request(no_cred)[1] == req
    assert decode_request(ITEM1_REQ + b"pad")[1] == req
    # Bytes after the last field of a body are skipped.
    extra = bytearray(ITEM1_REQ)
    extra[19] += 2
    extra[43] += 2
    extra[-4:-4] = b"zz"
    assert decode_request(bytes(extra))[1] == req


@pytest.mark.parametrize(
    ("data", "rc", "text"),
    [
        (b"", RC.PROTOCOL_ERROR, MSG_INVALID_LENGTH),
        (bytes(19), RC.PROTOCOL_ERROR, MSG_INVALID_LENGTH),
        (bytes(20), RC.PROTOCOL_ERROR, MSG_INVALID_LENGTH),  # messageLength 0 < 24
        (ITEM1_REQ[:16] + (262145).to_bytes(4, "big"), RC.ERROR, MSG_SERVER_ERROR),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", RC.ERROR, MSG_SERVER_ERROR),
        (
            ITEM1_REQ[:20] + bytes(4) + ITEM1_REQ[24:],
            RC.PROTOCOL_ERROR,
            "Unknown opCode in message: 0",
        ),
        (ITEM1_REQ[:-10], RC.PROTOCOL_ERROR, "Expecting 50 bytes, only received 40"),
        (ITEM1_REQ[:24] + b"\x00\x00\x00\x01" + ITEM1_REQ[28:], RC.ERROR, MSG_SERVER_ERROR),
        (
            ITEM1_REQ[:2] + b"\x42" + ITEM1_REQ[3:],
            RC.SESSION_FAILED,
            "Invalid session id. Unable to decrypt request message.",
        ),
    ],
    ids=["empty", "19", "len0", "too-long", "ascii", "opcode0", "short", "rc-set", "encrypted"],
)
def test_refusals_follow_the_fact_sheet(data: bytes, rc: int, text: str) -> None:
    with pytest.raises(HandleProtocolError) as info:
        decode_request(data)
    assert (info.value.rc, info.value.message, info.value.op_code) == (rc, text, 0)


def test_opcode_zero_wins_over_a_response_code() -> None:
    with pytest.raises(HandleProtocolError) as info:
        decode_request(RC4_EARLY)  # opCode 0, RC 4: a reply sent back at us
    assert (info.value.rc, info.value.message) == (
        RC.PROTOCOL_ERROR,
        "Unknown opCode in message: 0",
    )


def test_handle_longer_than_body_is_refused() -> None:
    data = bytearray(ITEM1_REQ)
    data[47] = 0x20  # handle length 32 > the 22-byte body (Handle.Net reads past it: RC 100)
    with pytest.raises(HandleProtocolError) as info:
        decode_request(bytes(data))
    assert info.value.rc == RC.PROTOCOL_ERROR and info.value.envelope is not None
    assert info.value.envelope.request_id == 0x01020304


def test_unknown_opcodes_are_representable() -> None:
    data = encode_packet(Envelope(request_id=5), Message(9999, 0, 0, OpaqueBody(b"x")))
    env, msg = decode_request(data)
    assert msg.op_code == 9999 and msg.body == OpaqueBody(b"x")
    err = unknown_opcode_error(env, msg)
    assert (err.rc, err.message, err.op_code) == (RC.ERROR, MSG_SERVER_ERROR, 0)
    refusal = interface_refusal(OpCode.CREATE_HANDLE, queries=True, admin=False)
    assert refusal == MSG_ADMIN_ON_NON_ADMIN
    assert interface_refusal(OpCode.RESOLUTION, queries=True, admin=False) is None
    assert interface_refusal(OpCode.CHALLENGE_RESPONSE, queries=False, admin=False) is None


def test_non_utf8_handle_is_invalid_handle() -> None:
    data = encode_packet(Envelope(), Message(1, 0, 0, ResolutionRequest("TEST/ab")))
    bad = data.replace(b"TEST/ab", b"TEST/\xff\xfe")
    with pytest.raises(HandleProtocolError) as info:
        decode_request(bad)
    assert info.value.rc == RC.INVALID_HANDLE


# --- TCP framing (h11 tr() style) ------------------------------------------------------


def _feed(framer: TcpFramer, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        while (ev := framer.next_message()) is not NEED_DATA:
            events.append(ev)
            if ev is CLOSED:
                break
    return events


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_tcp_framer_whole_bytewise_and_trailing(name: str) -> None:
    data = CAPTURES[name]
    expected = decode_request(data)
    assert _feed(TcpFramer(), [data, b""]) == [expected, CLOSED]
    assert _feed(TcpFramer(), [data[i : i + 1] for i in range(len(data))] + [b""]) == [
        expected,
        CLOSED,
    ]
    # Trailing bytes stay buffered for the next message (a pipelined request).
    framer = TcpFramer()
    assert _feed(framer, [data + data[:7]]) == [expected]
    assert framer.buffered == 7
    assert _feed(framer, [data[7:]]) == [expected]
    assert _feed(framer, [data + data]) == [expected, expected]


def test_tcp_framer_reads_responses_and_cont_series() -> None:
    parts = [
        encode_packet(Envelope(request_id=9), Message(105, 1, flags, HandleListBody((h,)), 1))
        for flags, h in ((0x94000000, "A/1"), (0x90000000, "A/2"))
    ]
    events = _feed(TcpFramer(decode_response), [b"".join(parts), b""])
    assert [e[1].op_flags & FLAG_CONT for e in events[:2]] == [FLAG_CONT, 0]  # type: ignore[index]
    assert events[2] is CLOSED


def test_tcp_framer_half_close_errors() -> None:
    framer = TcpFramer()
    framer.receive_data(ITEM1_REQ[:10])
    framer.receive_data(b"")
    with pytest.raises(HandleProtocolError) as info:
        framer.next_message()
    assert info.value.message == MSG_INVALID_LENGTH
    framer = TcpFramer()
    framer.receive_data(ITEM1_REQ[:60])
    assert framer.next_message() is NEED_DATA
    framer.receive_data(b"")
    with pytest.raises(HandleProtocolError) as info:
        framer.next_message()
    assert info.value.message == "Expecting 50 bytes, only received 40"
    with pytest.raises(HandleProtocolError):  # sticky
        framer.next_message()


def test_tcp_framer_refuses_oversize_before_buffering() -> None:
    framer = TcpFramer()
    framer.receive_data(ITEM1_REQ[:16] + (262145).to_bytes(4, "big"))
    framer.receive_data(bytes(100_000))
    assert framer.buffered == 0
    with pytest.raises(HandleProtocolError) as info:
        framer.next_message()
    assert info.value.rc == RC.ERROR and info.value.message == MSG_SERVER_ERROR


def test_tcp_framer_bounds_its_buffer() -> None:
    framer = TcpFramer(max_message_length=1000, max_extra=100)
    framer.receive_data(ITEM1_REQ[:16] + (1000).to_bytes(4, "big") + bytes(1200))
    assert framer.buffered == 0
    with pytest.raises(HandleProtocolError):
        framer.next_message()


def test_tcp_framer_undecodable_message_is_not_sticky() -> None:
    bad = bytearray(ITEM1_REQ)
    bad[47] = 0x20
    framer = TcpFramer()
    framer.receive_data(bytes(bad) + ITEM1_REQ)
    with pytest.raises(HandleProtocolError):
        framer.next_message()
    assert framer.next_message() == decode_request(ITEM1_REQ)


# --- UDP -------------------------------------------------------------------------------


def _big_reply(size: int = 1028) -> bytes:
    """A RESOLUTION reply whose message is ``size`` bytes (§10 saw a 1028-byte one)."""
    values = [HandleValue(i, "URL", b"u" * 160) for i in range(1, 6)]

    def build() -> bytes:
        msg = Message(1, 1, 0x90000000, ValuesBody("TEST/big", tuple(values)), 1)
        return encode_packet(Envelope(request_id=0x0A0B0C0D), msg)

    short = size - (len(build()) - 20)
    values[-1] = HandleValue(5, "URL", b"u" * (160 + short))
    data = build()
    assert len(data) - 20 == size
    return data


def test_udp_split_matches_capture() -> None:
    data = _big_reply()
    parts = split_datagrams(data)
    assert [len(p) for p in parts] == [512, 512, 64]
    for n, part in enumerate(parts):
        assert part[:4] == bytes.fromhex("020b220b")
        assert part[12:20] == n.to_bytes(4, "big") + bytes.fromhex("00000404")
    assert b"".join(p[20:] for p in parts) == data[20:]
    assert split_datagrams(ITEM1_RSP) == [ITEM1_RSP]


def test_udp_reassembly_round_trip_in_any_order() -> None:
    data = _big_reply()
    reply_body = decode_response(data)[1].body
    assert isinstance(reply_body, ValuesBody)
    request = Message(100, 0, 0, ValuesBody("TEST/big", reply_body.values))
    packet = encode_packet(Envelope(request_id=77), request)
    parts = split_datagrams(packet)
    assert len(parts) > 2
    rng = random.Random(5)
    for _ in range(5):
        order = parts[:]
        rng.shuffle(order)
        reasm = UdpReassembler()
        results = [reasm.add(("10.0.0.1", 9), p, now=1.0) for p in order]
        assert results[:-1] == [None] * (len(parts) - 1)
        whole = results[-1]
        assert whole is not None and len(reasm) == 0 and reasm.buffered_bytes == 0
        env, msg = decode_request(whole)
        assert env.truncated and env.message_id == 0 and env.request_id == 77
        assert msg == request
        # The reply keeps TC although it fits one datagram (§10).
        assert encode_reply(env, msg, RC.SUCCESS, HandleBody("TEST/big"), now=0)[2] & ENV_TRUNCATED


def test_udp_reassembler_limits_and_timeout() -> None:
    packet = encode_packet(Envelope(request_id=1), Message(100, 0, 0, OpaqueBody(bytes(1500))))
    parts = split_datagrams(packet)
    reasm = UdpReassembler(timeout=5, max_pending=3, max_per_source=2, max_bytes=5000)
    assert reasm.add("a", parts[0], now=0) is None
    assert reasm.add("a", parts[0], now=0) is None  # duplicate
    assert reasm.add("b", parts[0], now=1) is None
    assert len(reasm) == 2
    assert reasm.expire(now=5.5) == 1 and len(reasm) == 1  # "a" timed out
    # Per source: a third pending message from one source is dropped.
    big = Message(100, 0, 0, OpaqueBody(bytes(1500)))
    other = [split_datagrams(encode_packet(Envelope(request_id=i), big))[0] for i in (2, 3, 4)]
    reasm.add("b", other[0], now=2)
    before = reasm.dropped
    assert reasm.add("b", other[1], now=2) is None and reasm.dropped == before + 1
    # Global: the oldest pending message goes first.
    reasm.add("c", other[2], now=3)
    reasm.add("d", other[2], now=3)
    assert len(reasm) == 3 and reasm.buffered_bytes <= 5000
    # Everything expires with time alone.
    reasm.expire(now=100)
    assert len(reasm) == 0 and reasm.buffered_bytes == 0


def test_udp_reassembler_refusals() -> None:
    reasm = UdpReassembler()
    parts = split_datagrams(_big_reply())
    with pytest.raises(HandleProtocolError):  # fragment number beyond the message
        reasm.add("a", parts[0][:12] + (9).to_bytes(4, "big") + parts[0][16:], now=0)
    with pytest.raises(HandleProtocolError):  # short middle fragment
        reasm.add("a", parts[0][:-1], now=0)
    assert reasm.add("a", parts[0], now=0) is None
    with pytest.raises(HandleProtocolError):  # messageLength changed mid-way
        reasm.add("a", parts[1][:16] + (1100).to_bytes(4, "big") + parts[1][20:], now=0)
    with pytest.raises(HandleProtocolError) as info:  # an unfragmented datagram over 512 bytes
        reasm.add("a", _big_reply(), now=0)
    assert info.value.rc == RC.ERROR
    assert reasm.add("a", ITEM1_REQ, now=0) == ITEM1_REQ
    single = split_datagrams(ITEM1_REQ)[0]
    tc = single[:2] + bytes([single[2] | ENV_TRUNCATED]) + single[3:]
    assert reasm.add("a", tc, now=0) == tc  # a one-fragment TC message is complete at once
    with pytest.raises(HandleProtocolError):  # fragmented, but shorter than a header
        reasm.add("a", tc[:16] + bytes([0, 0, 0, 10]) + tc[20:30], now=0)


def test_udp_reassembler_bounds_bytes() -> None:
    reasm = UdpReassembler(max_bytes=1000)
    for i in range(3):
        packet = encode_packet(Envelope(request_id=i), Message(100, 0, 0, OpaqueBody(bytes(1500))))
        reasm.add("a", split_datagrams(packet)[0], now=0)
        assert reasm.buffered_bytes <= 1000
    assert len(reasm) == 2 and reasm.dropped == 1


# --- challenge answers -------------------------------------------------------------------

SCHEMES = [
    SCHEME_PBKDF2_HMAC_SHA1,
    SCHEME_HMAC_SHA256,
    SCHEME_HMAC_SHA1,
    SCHEME_SHA256,
    SCHEME_SHA1,
    SCHEME_MD5,
    SCHEME_MD5_OLD,
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_secret_key_schemes(scheme: int) -> None:
    ans = answer_secret_key_challenge(
        b"secret", NONCE, CREATE_DIGEST, scheme=scheme, iterations=1000
    )
    assert ans[0] == scheme
    assert verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, ans)
    assert not verify_secret_key_answer(b"secreT", NONCE, CREATE_DIGEST, ans)
    assert not verify_secret_key_answer(b"secret", NONCE[::-1], CREATE_DIGEST, ans)
    assert not verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, ans[:-1])
    assert not verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, ans + b"\x00")


def test_secret_key_scheme_formulas() -> None:
    data = NONCE + CREATE_DIGEST
    key = b"secret"
    sha1 = answer_secret_key_challenge(key, NONCE, CREATE_DIGEST, scheme=SCHEME_SHA1)
    assert sha1 == b"\x02" + hashlib.sha1(key + data + key).digest()
    legacy = answer_secret_key_challenge(key, NONCE, CREATE_DIGEST, version=(2, 0))
    assert legacy == hashlib.md5(key + data + key).digest()
    assert verify_secret_key_answer(key, NONCE, CREATE_DIGEST, legacy, version=(2, 0))
    assert not verify_secret_key_answer(key, NONCE, CREATE_DIGEST, legacy)


def test_secret_key_refusals_are_cheap() -> None:
    hostile = answer_secret_key_challenge(b"secret", NONCE, CREATE_DIGEST, salt=SALT, iterations=1)
    body = bytearray(hostile)
    body[1 + 4 + 16 : 1 + 4 + 16 + 4] = (10_000_000).to_bytes(4, "big")
    started = time.perf_counter()
    assert not verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, bytes(body))
    body[1 + 4 + 16 : 1 + 4 + 16 + 4] = (60_000).to_bytes(4, "big")
    body[1 + 4 + 16 + 4 : 1 + 4 + 16 + 8] = (1024).to_bytes(4, "big")  # 7 blocks × 60k > cap
    assert not verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, bytes(body))
    assert time.perf_counter() - started < 0.05
    for bad in (b"", b"\x22", b"\x22" + bytes(3), b"\x7f" + bytes(20), b"\x22" + b"\xff" * 40):
        assert not verify_secret_key_answer(b"secret", NONCE, CREATE_DIGEST, bad)
    empty_key = answer_secret_key_challenge(b"", NONCE, CREATE_DIGEST)
    assert not verify_secret_key_answer(b"", NONCE, CREATE_DIGEST, empty_key)


def test_auth_helpers() -> None:
    assert hashed_secret_key(b"pw") == hashlib.sha1(b"pw").hexdigest().encode()
    # Java feeds PBKDF2 the key bytes as chars, UTF-8 encoded.
    expected = hashlib.pbkdf2_hmac("sha1", b"\xc3\xa9", SALT, 2, 20)
    assert pbkdf2_key(b"\xe9", SALT, 2, 160) == expected
    raw = wire('00000007 "SHA-256" 00000003 010203')
    assert parse_public_key_answer(raw) == (b"SHA-256", b"\x01\x02\x03")
    with pytest.raises(MalformedMessage):
        parse_public_key_answer(raw[:-1])


# --- patch_reply --------------------------------------------------------------------------


def test_patch_reply_matches_a_fresh_encoding() -> None:
    env, req = decode_request(ITEM1_REQ)
    body = ValuesBody("TEST/item1", ITEM1_VALUES)
    template = encode_reply(env, req, RC.SUCCESS, body, now=1000)
    keep = bytes(template)
    patched = patch_reply(template, 0xDEADBEEF, 42, expiration=5000 + EXP)
    fresh = encode_reply(env, req, RC.SUCCESS, body, now=5000, request_id=0xDEADBEEF, session_id=42)
    assert patched == fresh and template == keep
    assert patch_reply(template, 0x01020304) == template
    assert patch_reply(ITEM1_RSP, 0x01020304, expiration=0x6B052EB8) == ITEM1_RSP


def _resolution(
    handle: str = "TEST/item1",
    *,
    flags: int = 0,
    request_id: int = 1,
    head: str = "020b020b",
    **kw: object,
) -> bytes:
    h = bytes.fromhex(head)
    env = Envelope(h[0], h[1], h[2] & 3, h[3], h[2] & 0xE0, 0, request_id)
    msg = Message(1, 0, flags, ResolutionRequest(handle), **kw)  # type: ignore[arg-type]
    return encode_packet(env, msg)


def test_reply_cache_key() -> None:
    key = reply_cache_key(ITEM1_REQ)
    assert key is not None and key.endswith(ITEM1_REQ[44:66])
    # Ids, expiration, site serial and the credential do not change the reply.
    same = _resolution(request_id=99, expiration=5, site_info_serial=1, credential=b"sig")
    assert reply_cache_key(same) == key
    assert reply_cache_key(_resolution(head="0202020c")) == key  # suggests 2.12: answered in 2.11
    # What the reply echoes does.
    assert reply_cache_key(_resolution("test/ITEM1")) != key
    assert reply_cache_key(_resolution(flags=FLAG_PUBL)) != key
    assert reply_cache_key(_resolution(recursion_count=1)) != key
    assert reply_cache_key(_resolution(flags=FLAG_KPAL)) == key  # never echoed
    # Not cacheable: digests, signatures, old versions, fragments, writes, junk.
    for data in (
        _resolution(flags=FLAG_RRDG),
        _resolution(flags=FLAG_CERT),
        _resolution(head="02010201"),
        _resolution(head="05000500"),
        _resolution(head="020b220b"),
        CREATE_REQ,
        ITEM1_RSP,
        ITEM1_REQ[:-10],
        ITEM1_REQ[:30],
        b"",
    ):
        assert reply_cache_key(data) is None
    assert reply_cache_key(SITE_REQ) is not None


def test_cached_template_serves_other_requests() -> None:
    env, req = decode_request(ITEM1_REQ)
    template = encode_reply(env, req, RC.SUCCESS, ValuesBody("TEST/item1", ITEM1_VALUES), now=0)
    other = _resolution(request_id=0x0BADCAFE, expiration=7, flags=FLAG_KPAL)
    assert reply_cache_key(other) == reply_cache_key(ITEM1_REQ)
    oenv, oreq = decode_request(other)
    fresh = encode_reply(oenv, oreq, RC.SUCCESS, ValuesBody("TEST/item1", ITEM1_VALUES), now=50)
    assert patch_reply(template, oenv.request_id, oenv.session_id, 50 + EXP) == fresh


# --- hostile input ---------------------------------------------------------------------------

CORPUS = [*CAPTURES.values()] + [
    encode_packet(Envelope(request_id=i), m) for i, m in enumerate(SAMPLES)
]


def _decode_any(data: bytes) -> None:
    exercise(data, UdpReassembler(), 0)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.data())
def test_truncated_and_extended_input(base: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(base)))
    _decode_any(base[:cut])
    _decode_any(base + data.draw(st.binary(max_size=64)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CORPUS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_input(base: bytes, edits: list[tuple[int, int]]) -> None:
    buf = bytearray(base)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    _decode_any(bytes(buf))


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode_any(data)
    framer = TcpFramer()
    framer.receive_data(data)
    framer.receive_data(b"")
    try:
        while framer.next_message() is not CLOSED:
            pass
    except HandleProtocolError:
        pass


def test_mutation_loop() -> None:
    """20,000 mutations over every valid packet: nothing but HandleProtocolError escapes."""
    report = fuzz(CORPUS + build_corpus(), 20_000, seed=1)
    assert report.unexpected == []
    assert report.outcomes["decoded"] > 1000 and len(report.outcomes) >= 5
