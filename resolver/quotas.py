"""Per-enterprise-prefix quotas: requests per day, identifiers registered, sub-prefixes.

Configured with ``idnode serve --quota 88.100.1:requests=100000,identifiers=1000000,
subprefixes=10`` (any subset of the three). A quota covers its prefix and the
prefix's sub-prefixes (``88.100.1.5``); the longest configured prefix wins.
Exceeding one is ``HandleError`` rc 603 (requests), 604 (identifiers) or 605
(sub-prefixes), as Teleinfo's servers answer; HTTP 429 on the REST API, status
-2 with a Chinese message on the SNMS API. A refused request writes nothing.

Counting, kept in memory by the node:
- requests: SNMS calls (by the account's prefix) and Handle writes (by the
  handle's prefix), per calendar day in UTC+8; a restart resets the day's count.
- identifiers: handles under the prefix and its homed sub-prefixes, counted
  from the store on first use, then kept up to date by this node's writes
  (writes by another process, e.g. ``idnode import``, are seen after a
  restart). A batch reserves one per item before writing (so a batch that
  would pass the limit is refused whole), and gives back what it did not create.
- sub-prefixes: homed prefixes under the prefix, checked when a prefix is homed
  through the node (``Node.home_prefix``); the offline ``idnode prefix add`` is
  the operator's own tool and is not limited.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from protocol.codes import RC
from protocol.errors import HandleError

_TZ_CHINA = datetime.timezone(datetime.timedelta(hours=8))


class QuotaExceeded(HandleError):
    rc = RC.QUOTA_REQUESTS_EXCEEDED


class RequestQuotaExceeded(QuotaExceeded):
    rc = RC.QUOTA_REQUESTS_EXCEEDED


class IdentifierQuotaExceeded(QuotaExceeded):
    rc = RC.QUOTA_IDENTIFIERS_EXCEEDED


class PrefixQuotaExceeded(QuotaExceeded):
    rc = RC.QUOTA_PREFIXES_EXCEEDED


@dataclass(frozen=True, slots=True)
class Quota:
    prefix: str  # upper-cased
    requests_per_day: int | None = None
    identifiers: int | None = None
    sub_prefixes: int | None = None

    def covers(self, prefix: str) -> bool:
        prefix = prefix.upper()
        return prefix == self.prefix or prefix.startswith(self.prefix + ".")


_KEYS = {
    "requests": "requests_per_day", "identifiers": "identifiers", "subprefixes": "sub_prefixes"
}


def parse_quota(text: str) -> Quota:
    """``88.100.1:requests=100,identifiers=1000,subprefixes=5``."""
    prefix, colon, rest = text.partition(":")
    if not colon or not prefix.strip():
        raise ValueError(f"quota {text!r}: expected PREFIX:name=N[,name=N]")
    limits: dict[str, int] = {}
    for part in rest.split(","):
        name, eq, number = part.strip().partition("=")
        if name not in _KEYS or not eq or not number.isdigit():
            raise ValueError(f"quota {text!r}: unknown or malformed {part!r} "
                             f"(names: {', '.join(_KEYS)})")
        limits[_KEYS[name]] = int(number)
    return Quota(prefix.strip().upper(), **limits)


# prefix -> number of handles under it (Store.count_handles)
Counter = Callable[[str], Awaitable[int]]


class QuotaBook:
    def __init__(
        self,
        quotas: Iterable[Quota],
        *,
        count: Counter,
        homed: set[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._quotas = sorted(quotas, key=lambda q: len(q.prefix), reverse=True)
        self._count = count
        self._homed = homed
        self._clock = clock
        self._day = ""
        self._requests: dict[str, int] = {}
        self._identifiers: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def __bool__(self) -> bool:
        return bool(self._quotas)

    def quota_for(self, prefix: str) -> Quota | None:
        for quota in self._quotas:
            if quota.covers(prefix):
                return quota
        return None

    def charge_request(self, prefix: str) -> None:
        quota = self.quota_for(prefix)
        if quota is None or quota.requests_per_day is None:
            return
        day = datetime.datetime.fromtimestamp(self._clock(), _TZ_CHINA).date().isoformat()
        if day != self._day:
            self._day, self._requests = day, {}
        used = self._requests.get(quota.prefix, 0)
        if used >= quota.requests_per_day:
            raise RequestQuotaExceeded(
                f"Prefix {quota.prefix} used its {quota.requests_per_day} requests for today"
            )
        self._requests[quota.prefix] = used + 1

    async def reserve_identifiers(self, prefixes: Iterable[str]) -> list[str | None]:
        """Reserve one identifier per entry (a handle's prefix), all or none.

        Returns, per entry, the quota prefix charged or None (give back with
        ``release``)."""
        wanted: dict[str, int] = {}
        charged: list[str | None] = []
        for prefix in prefixes:
            quota = self.quota_for(prefix)
            if quota is not None and quota.identifiers is not None:
                wanted[quota.prefix] = wanted.get(quota.prefix, 0) + 1
                charged.append(quota.prefix)
            else:
                charged.append(None)
        if not wanted:
            return charged
        async with self._lock:  # the first count of a prefix runs once
            for name, n in wanted.items():
                current = await self._current(name)
                limit = self.quota_for(name).identifiers  # type: ignore[union-attr]
                assert limit is not None
                if current + n > limit:
                    raise IdentifierQuotaExceeded(
                        f"Prefix {name} may hold {limit} identifiers; it has {current}, "
                        f"this request adds up to {n}"
                    )
            for name, n in wanted.items():
                self._identifiers[name] += n
        return charged

    def release(self, quota_prefixes: Iterable[str | None]) -> None:
        """Give back reservations that did not create a handle, or count deletions."""
        for name in quota_prefixes:
            if name is not None and name in self._identifiers:
                self._identifiers[name] -= 1

    def deleted(self, prefix: str) -> None:
        quota = self.quota_for(prefix)
        if quota is not None:
            self.release([quota.prefix])

    async def _current(self, name: str) -> int:
        if name not in self._identifiers:
            prefixes = [p for p in self._homed if p == name or p.startswith(name + ".")] or [name]
            self._identifiers[name] = sum([await self._count(p) for p in prefixes])
        return self._identifiers[name]

    def check_sub_prefix(self, prefix: str) -> None:
        """Before homing ``prefix``: refuse it if its enterprise prefix has enough sub-prefixes."""
        prefix = prefix.upper()
        quota = self.quota_for(prefix)
        if quota is None or quota.sub_prefixes is None or prefix == quota.prefix:
            return
        subs = {p for p in self._homed if p.startswith(quota.prefix + ".")}
        if prefix not in subs and len(subs) >= quota.sub_prefixes:
            raise PrefixQuotaExceeded(
                f"Prefix {quota.prefix} may have {quota.sub_prefixes} sub-prefixes"
            )
