"""Secrets at rest: HS_SECKEY values are stored as a salted PBKDF2 hash, never as given.

Stored form (the value's data bytes)::

    idnode-pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>

A value already in that form (e.g. from an export) is stored unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = b"idnode-pbkdf2-sha256"
ITERATIONS = 100_000  # ~50 ms per check here; verified credentials are cached by the node
SALT_BYTES = 16


def is_hashed(data: bytes) -> bool:
    return data.startswith(SCHEME + b"$")


def hash_secret(secret: bytes, *, iterations: int = ITERATIONS) -> bytes:
    if is_hashed(secret):
        return secret
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    return b"$".join(
        (SCHEME, str(iterations).encode(), base64.b64encode(salt), base64.b64encode(digest))
    )


def verify_secret(stored: bytes, secret: bytes) -> bool:
    """Constant-time check of ``secret`` against a stored hash; False for any other form."""
    try:
        scheme, iterations, salt, digest = stored.split(b"$")
        if scheme != SCHEME:
            return False
        n = int(iterations)
        if not 1 <= n <= 10_000_000:
            return False
        expected = base64.b64decode(digest, validate=True)
        candidate = hashlib.pbkdf2_hmac("sha256", secret, base64.b64decode(salt), n)
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected)


def generate_secret() -> str:
    return secrets.token_urlsafe(24)
