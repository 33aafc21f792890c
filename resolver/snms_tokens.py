"""SNMS API tokens: issue and verify (HS256 JWTs signed with a key derived from the master key).

Format: a compact JWT, ``base64url(header).base64url(payload).base64url(sig)``,
header ``{"alg":"HS256","typ":"JWT"}`` (real SNMS tokens look the same), payload
``{"sub": username, "prefix": enterprise prefix, "role": role, "gen": account
generation, "iat": issued, "exp": expires}`` (Unix seconds). The key is
HMAC-SHA256(master key, ``TOKEN_KEY_LABEL``), so it is stable across restarts
and never the master key itself.

Revocation: each account has a generation counter (``registry.store.Account``);
a token is valid only while its ``gen`` equals the account's current one, so
``idnode account add`` (new password) or ``idnode account revoke`` ends every
token issued before. Tokens are checked against the account on every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

import orjson

TOKEN_LIFETIME: Final = 24 * 3600
TOKEN_KEY_LABEL: Final = b"idnode SNMS token HS256 v1"
_HEADER: Final = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
MAX_TOKEN: Final = 2048


def token_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, TOKEN_KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    prefix: str
    role: str
    generation: int
    issued: int
    expires: int


class InvalidToken(Exception):
    """Malformed, forged, or expired."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def issue(key: bytes, claims: TokenClaims) -> str:
    payload = _b64(
        orjson.dumps(
            {
                "sub": claims.username,
                "prefix": claims.prefix,
                "role": claims.role,
                "gen": claims.generation,
                "iat": claims.issued,
                "exp": claims.expires,
            }
        )
    )
    signing_input = _HEADER + b"." + payload
    signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def verify(key: bytes, token: str, now: float) -> TokenClaims:
    """The claims of a genuine, unexpired token; InvalidToken otherwise."""
    if len(token) > MAX_TOKEN or not token.isascii():
        raise InvalidToken("malformed")
    raw = token.encode()
    signing_input, dot, signature = raw.rpartition(b".")
    header, dot2, payload = signing_input.partition(b".")
    if not dot or not dot2 or header != _HEADER:
        raise InvalidToken("malformed")
    expected = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("bad signature")
    try:
        body = orjson.loads(_unb64(payload))
        claims = TokenClaims(
            str(body["sub"]), str(body["prefix"]), str(body["role"]),
            int(body["gen"]), int(body["iat"]), int(body["exp"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidToken("malformed") from None
    if now >= claims.expires:
        raise InvalidToken("expired")
    return claims


def bearer(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; a bare token is accepted too."""
    if not header:
        return None
    scheme, space, rest = header.strip().partition(" ")
    if space and scheme.lower() == "bearer":
        return rest.strip() or None
    return None if space else header.strip()
