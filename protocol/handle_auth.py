"""Handle challenge-response authentication, pure functions (handle-wire.md §8, §11).

A 402 reply carries a nonce and a digest of the challenged request; the client
answers with a CHALLENGE_RESPONSE (OC 200) whose ``signedResponse`` proves it holds
the identity's key. For HS_SECKEY identities the first byte picks the scheme
(Java ``Util.doMac`` / ``SecretKeyAuthenticationInfo``; ``data`` = nonce ‖ digest)::

    0x22 PBKDF2-HMAC-SHA1  str salt · int4 iterations · int4 keyBits · str mac
                           dk = PBKDF2-HMAC-SHA1(key, salt, iterations, keyBits/8)
                           mac = HMAC-SHA1(dk, data)           (Java 9.x clients, ≥ 2.7)
    0x13 / 0x12            HMAC-SHA256 / HMAC-SHA1(key, data)
    0x03 / 0x02 / 0x01     SHA-256 / SHA-1 / MD5(key ‖ data ‖ key)  (2.1-era)
    0x00                   MD5 as 0x01 (Java treats HASH_CODE_MD5_OLD_FORMAT so)
    version < 2.1          raw MD5(key ‖ data ‖ key), no scheme byte

The server recomputes with the answer's own parameters and compares in constant
time. PBKDF2's cost is chosen by the client, so it is capped: see
:data:`MAX_PBKDF2_WORK`.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from protocol.errors import MalformedMessage
from protocol.handle_envelope import PROTOCOL_VERSION, version_at_least
from protocol.wire import WireReader, WireWriter

SCHEME_MD5_OLD = 0x00
SCHEME_MD5 = 0x01
SCHEME_SHA1 = 0x02
SCHEME_SHA256 = 0x03
SCHEME_HMAC_SHA1 = 0x12
SCHEME_HMAC_SHA256 = 0x13
SCHEME_PBKDF2_HMAC_SHA1 = 0x22

AUTH_SECRET_KEY = "HS_SECKEY"
AUTH_PUBLIC_KEY = "HS_PUBKEY"

# Java client defaults for 0x22 (Util.doPbkdf2HmacSHA1).
PBKDF2_DEFAULT_ITERATIONS = 10_000
PBKDF2_DEFAULT_KEY_BITS = 160
PBKDF2_SALT_BYTES = 16

#: Most PBKDF2 work one answer may ask for, in HMAC-SHA1 block iterations
#: (iterations × ceil(keyBits / 160)). The Java client asks for 10,000 × 1; an
#: answer above the cap is refused (403) without computing anything. 100,000 is ten
#: times the client default and costs 35-70 ms of one core here (1,000,000 would
#: cost 0.35-0.7 s per answer, an easy way to burn a 2-core server). Callers may
#: pass ``max_work`` to allow more.
MAX_PBKDF2_WORK = 100_000
#: Longest derived key accepted (bits); Java sends 160.
MAX_PBKDF2_KEY_BITS = 1024

_DIGESTS = {
    SCHEME_MD5_OLD: hashlib.md5,
    SCHEME_MD5: hashlib.md5,
    SCHEME_SHA1: hashlib.sha1,
    SCHEME_SHA256: hashlib.sha256,
}
_HMACS = {SCHEME_HMAC_SHA1: "sha1", SCHEME_HMAC_SHA256: "sha256"}


def _is_legacy(version: tuple[int, int]) -> bool:
    return not version_at_least(version, 2, 1)


def _java_pbkdf2_password(key: bytes) -> bytes:
    # Java widens each key byte to a char (b & 0xFF) for PBEKeySpec, and SunJCE's
    # PBKDF2 encodes the chars as UTF-8: bytes ≥ 0x80 become two bytes.
    return key.decode("latin-1").encode("utf-8")


def pbkdf2_key(key: bytes, salt: bytes, iterations: int, key_bits: int) -> bytes:
    """The derived key of scheme 0x22 (``keyBits // 8`` bytes, as Java)."""
    return hashlib.pbkdf2_hmac("sha1", _java_pbkdf2_password(key), salt, iterations, key_bits // 8)


def _pbkdf2_encoding(salt: bytes, iterations: int, key_bits: int, mac: bytes) -> bytes:
    w = WireWriter()
    w.counted_bytes(salt)
    w.u32(iterations & 0xFFFFFFFF)
    w.u32(key_bits & 0xFFFFFFFF)
    w.counted_bytes(mac)
    return w.getvalue()


def _plain_mac(scheme: int, key: bytes, data: bytes) -> bytes | None:
    digest = _DIGESTS.get(scheme)
    if digest is not None:
        return digest(key + data + key).digest()
    alg = _HMACS.get(scheme)
    if alg is not None:
        return hmac.new(key, data, alg).digest()
    return None


def verify_secret_key_answer(
    key: bytes,
    nonce: bytes,
    request_digest: bytes,
    signed_response: bytes,
    *,
    version: tuple[int, int] = PROTOCOL_VERSION,
    max_work: int = MAX_PBKDF2_WORK,
) -> bool:
    """True if ``signed_response`` proves knowledge of ``key`` (HS_SECKEY data).

    ``request_digest`` is the raw digest the 402 carried (no algorithm byte);
    ``version`` the answer's reply version (pre-2.1 answers are raw MD5). Never
    raises on hostile input: anything unparsable, an unknown scheme, an empty key
    or PBKDF2 parameters over the cap simply fail.
    """
    if not key:
        return False  # Java cannot MAC with an empty key; never let one authenticate
    data = nonce + request_digest
    if _is_legacy(version):
        expected = hashlib.md5(key + data + key).digest()
        return hmac.compare_digest(expected, signed_response)
    if not signed_response:
        return False
    scheme = signed_response[0]
    rest = signed_response[1:]
    if scheme == SCHEME_PBKDF2_HMAC_SHA1:
        return _verify_pbkdf2(key, data, rest, max_work)
    computed = _plain_mac(scheme, key, data)
    return computed is not None and hmac.compare_digest(computed, rest)


def _verify_pbkdf2(key: bytes, data: bytes, params: bytes, max_work: int) -> bool:
    try:
        r = WireReader(params)
        salt = r.get_counted_bytes()
        iterations = r.get_i32()
        key_bits = r.get_i32()
        mac = r.get_counted_bytes()
        r.expect_end()  # Java compares whole encodings: trailing bytes fail
    except MalformedMessage:
        return False
    dklen = key_bits // 8
    if not salt or iterations < 1 or not 1 <= dklen <= MAX_PBKDF2_KEY_BITS // 8:
        return False
    blocks = -(-dklen // 20)
    if iterations * blocks > max_work:
        return False
    dk = pbkdf2_key(key, salt, iterations, key_bits)
    return hmac.compare_digest(hmac.new(dk, data, "sha1").digest(), mac)


def answer_secret_key_challenge(
    key: bytes,
    nonce: bytes,
    request_digest: bytes,
    *,
    scheme: int = SCHEME_PBKDF2_HMAC_SHA1,
    version: tuple[int, int] = PROTOCOL_VERSION,
    salt: bytes | None = None,
    iterations: int = PBKDF2_DEFAULT_ITERATIONS,
    key_bits: int = PBKDF2_DEFAULT_KEY_BITS,
) -> bytes:
    """The client side: the ``signedResponse`` for a 402 (what Java 9.x sends by
    default for 2.7+). ``salt`` defaults to 16 random bytes."""
    data = nonce + request_digest
    if _is_legacy(version):
        return hashlib.md5(key + data + key).digest()
    if scheme == SCHEME_PBKDF2_HMAC_SHA1:
        if salt is None:
            salt = os.urandom(PBKDF2_SALT_BYTES)
        dk = pbkdf2_key(key, salt, iterations, key_bits)
        mac = hmac.new(dk, data, "sha1").digest()
        return bytes([scheme]) + _pbkdf2_encoding(salt, iterations, key_bits, mac)
    plain = _plain_mac(scheme, key, data)
    if plain is None:
        raise ValueError(f"Unknown secret-key scheme {scheme:#x}")
    return bytes([scheme]) + plain


def hashed_secret_key(password: bytes) -> bytes:
    """Java ``SecretKeyAuthenticationInfo(..., hash=true)``: the key is the lower-case
    hex SHA-1 of the password, and that text is what HS_SECKEY must hold."""
    return hashlib.sha1(password).hexdigest().encode("ascii")


# --- public-key answers ---------------------------------------------------------


def parse_public_key_answer(signed_response: bytes) -> tuple[bytes, bytes]:
    """HS_PUBKEY answers: ``str hashAlg · str signature`` over nonce ‖ digest
    (Java HandleServer.authenticateUser). Returns (hash algorithm id, signature);
    raises MalformedMessage. Verifying needs an RSA/DSA library, which protocol/
    does not carry."""
    r = WireReader(signed_response)
    return r.get_counted_bytes(), r.get_counted_bytes()


# --- signatures (CERT) --------------------------------------------------------------


def signature_input(
    header_and_body: bytes,
    *,
    version: tuple[int, int],
    suggested: tuple[int, int] = PROTOCOL_VERSION,
    session_id: int = 0,
    request_id: int = 0,
    session_counter: int = 0,
) -> bytes:
    """The bytes an HS_SIGNED credential signs (Java ``signMessage(Signature)``):
    from 2.8 ``major minor suggMajor suggMinor · int4 sessionId · int4 requestId ·
    int4 sessionCounter`` + header + body; 2.7 without the suggested pair; < 2.6
    header + body only. 2.6 keeps Java's overlapping writes ("painful bug"): the
    request id is overwritten and the last six bytes stay zero."""
    if not version_at_least(version, 2, 6):
        return header_and_body
    prefix = bytearray([version[0] & 0xFF, version[1] & 0xFF])
    if version_at_least(version, 2, 8):
        prefix += bytes([suggested[0] & 0xFF, suggested[1] & 0xFF])
    ids = [session_id, request_id, session_counter]
    if version_at_least(version, 2, 7):
        for v in ids:
            prefix += (v & 0xFFFFFFFF).to_bytes(4, "big")
    else:
        buf = bytearray(prefix) + bytes(12)
        buf[2:6] = (session_id & 0xFFFFFFFF).to_bytes(4, "big")
        buf[4:8] = (request_id & 0xFFFFFFFF).to_bytes(4, "big")
        buf[4:8] = (session_counter & 0xFFFFFFFF).to_bytes(4, "big")
        prefix = buf
    return bytes(prefix) + header_and_body
