"""Slows down password guessing without locking legitimate users out.

Failed logins are counted per client address, per (identity, address) pair and
per identity, in windows that forget after ``WINDOW`` seconds. Past a few
free failures a key is refused for a backoff that doubles with every further
failure (capped), and answers come at once, without spending a password hash.

Locking a whole identity after N failures would let anyone lock its owner out
just by guessing. So the per-identity count only closes the identity to
addresses it has never succeeded from: while an identity is under a spread-out
attack, its owner keeps logging in from addresses that worked before, and a
new address waits until the attack stops. A success clears the pair's count
and remembers the address for that identity.

State is bounded (least recently used keys are forgotten first) and kept per
process: several workers each allow their own free failures, which multiplies
the attempts an attacker gets by the number of workers, not more.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from protocol.codes import RC
from protocol.errors import HandleError

WINDOW = 900.0  # failures older than this are forgotten
MAX_BACKOFF = 900.0
FREE_FAILURES_PER_PAIR = 5
FREE_FAILURES_PER_ADDRESS = 20
FREE_FAILURES_PER_IDENTITY = 50
TRUST_SECONDS = 30 * 86400.0  # how long a successful address stays trusted
MAX_KEYS = 100_000


class TooManyAttempts(HandleError):
    """Refused without checking the secret; retry after ``retry_after`` seconds."""

    rc = RC.AUTHENTICATION_FAILED

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many failed authentications; retry after {self.retry_after} s"
        )


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    blocked_until: float


class _FailureBook:
    """Failures per key with exponential backoff past ``free`` of them."""

    def __init__(self, free: int) -> None:
        self.free = free
        self._keys: OrderedDict[object, _Failures] = OrderedDict()

    def blocked_for(self, key: object, now: float) -> float:
        entry = self._live(key, now)
        return 0.0 if entry is None else max(0.0, entry.blocked_until - now)

    def count(self, key: object, now: float) -> int:
        entry = self._live(key, now)
        return 0 if entry is None else entry.count

    def fail(self, key: object, now: float) -> None:
        entry = self._live(key, now)
        if entry is None:
            entry = self._keys[key] = _Failures(0, now, 0.0)
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        entry.count += 1
        entry.last = now
        excess = entry.count - self.free  # after ``free`` failures, each one waits
        if excess >= 0:
            entry.blocked_until = now + min(MAX_BACKOFF, 2.0**excess)
        self._keys.move_to_end(key)

    def clear(self, key: object) -> None:
        self._keys.pop(key, None)

    def clear_all(self) -> None:
        self._keys.clear()

    def _live(self, key: object, now: float) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry.last > WINDOW and entry.blocked_until <= now:
            del self._keys[key]
            return None
        return entry


class LoginThrottle:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pairs = _FailureBook(FREE_FAILURES_PER_PAIR)
        self._addresses = _FailureBook(FREE_FAILURES_PER_ADDRESS)
        self._identities = _FailureBook(FREE_FAILURES_PER_IDENTITY)
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    def check(self, identity: str, address: str) -> None:
        """Before checking a secret: raises TooManyAttempts if this attempt must wait."""
        now = self._clock()
        wait = max(
            self._pairs.blocked_for((identity, address), now),
            self._addresses.blocked_for(address, now),
        )
        if wait <= 0 and not self._is_trusted(identity, address, now):
            wait = self._identities.blocked_for(identity, now)
        if wait > 0:
            raise TooManyAttempts(wait)

    def failed(self, identity: str, address: str) -> None:
        now = self._clock()
        self._pairs.fail((identity, address), now)
        self._addresses.fail(address, now)
        self._identities.fail(identity, now)

    def forget_failures(self) -> None:
        """Clear every failure count and backoff (trusted addresses stay trusted)."""
        for book in (self._pairs, self._addresses, self._identities):
            book.clear_all()

    def succeeded(self, identity: str, address: str) -> None:
        self._pairs.clear((identity, address))
        key = (identity, address)
        self._trusted[key] = self._clock() + TRUST_SECONDS
        self._trusted.move_to_end(key)
        while len(self._trusted) > MAX_KEYS:
            self._trusted.popitem(last=False)

    def _is_trusted(self, identity: str, address: str, now: float) -> bool:
        until = self._trusted.get((identity, address))
        return until is not None and until > now
