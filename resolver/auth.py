"""Who is asking: Handle.Net-style Basic authentication against HS_SECKEY values.

The username is ``index:handle`` (Handle.Net clients percent-encode the colon:
``300%3A88.100.1/ADMIN``); the password must match the HS_SECKEY value at that
index of that handle, which is stored hashed (``registry.credentials``).
Successful checks are remembered for a while, keyed by a digest of the
password and the stored hash, so clients that send Basic on every request
(pyhandle does) pay for PBKDF2 once, and a changed secret takes effect at once.
Other checks run PBKDF2 (~50 ms) in a thread, a few at a time, so guesses
cannot stall the event loop, and failures are throttled per address and
identity (``resolver.throttle``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from protocol.codes import RC
from protocol.errors import HandleError
from protocol.values import HS_SECKEY, HandleValue
from registry.credentials import verify_secret
from resolver.throttle import LoginThrottle

VERIFIED_TTL = 300.0
VERIFIED_MAX = 10_000
# PBKDF2 checks running at once (threads: hashlib releases the GIL); more wait.
CONCURRENT_HASH_CHECKS = 2


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    handle: str  # exactly as the client wrote it: admin matches are case-sensitive

    @property
    def text(self) -> str:
        return f"{self.index}:{self.handle}"

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``300:88.100.1/ADMIN`` (colon possibly percent-encoded)."""
        index_text, colon, handle = unquote(text).partition(":")
        if not colon or not index_text.isdigit() or not handle:
            raise AuthenticationFailed(f"Identity {text!r} is not of the form index:handle")
        return cls(int(index_text), handle)


@dataclass(frozen=True, slots=True)
class PrefixAccount:
    """An SNMS application identity: the node operator granted it one enterprise prefix.

    It may write handles under that prefix and its sub-prefixes (``88.100.1``
    covers ``88.100.1/x`` and ``88.100.1.5/x``), whatever their HS_ADMIN says:
    like a server admin, scoped to a prefix.
    """

    username: str
    prefix: str  # upper-cased

    def covers(self, prefix: str) -> bool:
        prefix = prefix.upper()
        return prefix == self.prefix or prefix.startswith(self.prefix + ".")


# Who a write is done for: a Handle identity (HS_ADMIN decides) or an SNMS account.
Principal = Identity | PrefixAccount


class AuthenticationFailed(HandleError):
    rc = RC.AUTHENTICATION_FAILED


class AuthenticationNeeded(HandleError):
    rc = RC.AUTHENTICATION_NEEDED


# handle text -> its current record (None if there is none)
RecordLookup = Callable[[str], Awaitable[Sequence[HandleValue] | None]]


class Authenticator:
    def __init__(
        self,
        lookup_record: RecordLookup,
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._lookup_record = lookup_record
        self._clock = clock
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self.throttle = throttle if throttle is not None else LoginThrottle(clock=clock)
        self._hashing = asyncio.Semaphore(CONCURRENT_HASH_CHECKS)

    async def authenticate_basic(self, header: str, address: str = "") -> Identity:
        """Check an ``Authorization: Basic ...`` header; raises AuthenticationFailed."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed(f"Unsupported authorization scheme {scheme!r}")
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthenticationFailed("Malformed Basic credentials") from exc
        # Handle.Net clients percent-encode the colon of "index:handle", so the
        # first colon ends the username (RFC 7617) and secrets may hold colons.
        username, colon, password = decoded.partition(":")
        if not colon:
            raise AuthenticationFailed("Malformed Basic credentials")
        identity = Identity.parse(username)
        await self.verify(identity, password.encode("utf-8"), address)
        return identity

    async def verify(self, identity: Identity, secret: bytes, address: str = "") -> None:
        """Raises AuthenticationFailed (or its TooManyAttempts) unless ``secret`` is right."""
        record = await self._lookup_record(identity.handle)
        stored = next(
            (v.data for v in record or () if v.index == identity.index and v.type == HS_SECKEY),
            None,
        )
        memo = hashlib.sha256(
            b"\0".join((identity.text.encode(), stored or b"", secret))
        ).digest()
        now = self._clock()
        seen = self._verified.get(memo)
        if stored is not None and seen is not None and seen > now:
            return  # the hot path: this exact secret was verified a moment ago
        self.throttle.check(identity.text, address)
        if stored is None or not await self._check_hash(stored, secret):
            self.throttle.failed(identity.text, address)
            raise AuthenticationFailed("Identity not verified")
        self.throttle.succeeded(identity.text, address)
        self._verified[memo] = now + VERIFIED_TTL
        self._verified.move_to_end(memo)
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)

    async def _check_hash(self, stored: bytes, secret: bytes) -> bool:
        async with self._hashing:
            return await asyncio.get_running_loop().run_in_executor(
                None, verify_secret, stored, secret
            )
