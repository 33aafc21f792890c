"""Per-enterprise-prefix quotas: requests per day, identifiers registered, sub-prefixes.

Configured with ``idnode serve --quota 88.100.1:requests=100000,identifiers=1000000,
subprefixes=10`` (any subset of the three). A quota covers its prefix and the
prefix's sub-prefixes (``88.100.1.5``); the longest configured prefix wins.
Exceeding one is ``HandleError`` rc 603 (requests), 604 (identifiers) or 605
(sub-prefixes), as Teleinfo's servers answer; HTTP 429 on the REST API, status
-2 with a Chinese message on the SNMS API. A refused request writes nothing.

Counting is in the store (``Store.add_usage``), shared by every worker of a
node and every node of one store, and charged before the work is done; only
writes and SNMS calls pay for it, resolution never does. The charge is one
store write, synchronous: measured one after another on the shared test VM,
SQLite 0.26-0.42 ms (about a put, through the writer thread's group commit),
PostgreSQL 1.1-2.4 ms (about a get: committed without waiting for the WAL
flush, see registry/pg_apps.py), so no local batching and no overshoot.
What is exact and what is bounded:
- requests: SNMS calls (by the account's prefix) and Handle writes (by the
  handle's prefix), one counter per prefix and calendar day in UTC+8. Exact:
  each call is one atomic add that refuses to pass the limit, whichever
  worker or node takes it; a refused call is not counted. Bounded: a crash
  of the PostgreSQL server may forget the counts of its last ~0.6 s.
- identifiers: handles under the prefix and its homed sub-prefixes. The
  counter is seeded from ``Store.count_handles`` on first use (insert if
  absent: racing workers agree on one value); a batch then reserves its
  possible creations in one atomic add per quota prefix (refused whole if it
  would pass the limit), and gives back what it did not create; a deletion
  gives one back. Exact for writes made through nodes. Writes made without
  nodes (``idnode import``) are not counted, so the counter is keyed by
  ``Store.unannounced_writes``: after such a write the next reservation
  seeds a fresh counter from the store. Bounded: a reservation in flight
  while that happens can be missed by the new count (at most the writes in
  flight at that moment). Backends that do not count unannounced writes
  keep one counter for good. A reservation costs one more point read (the
  generation). Past counters (one row per quota prefix and day, and per
  generation) are not pruned: a few dozen bytes each.
- sub-prefixes: homed prefixes under the prefix, checked when a prefix is homed
  through the node (``Node.home_prefix``) against the homed prefixes every
  worker reloads; two homings at the same moment may both pass. The offline
  ``idnode prefix add`` is the operator's own tool and is not limited.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocol.codes import RC
from protocol.errors import HandleError
from registry.store import Store

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


class QuotaBook:
    def __init__(
        self,
        quotas: Iterable[Quota],
        *,
        store: Store,
        homed: set[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._quotas = sorted(quotas, key=lambda q: len(q.prefix), reverse=True)
        self._store = store
        self._homed = homed
        self._clock = clock
        self._seeded: set[str] = set()  # identifier counters known to exist

    def __bool__(self) -> bool:
        return bool(self._quotas)

    def quota_for(self, prefix: str) -> Quota | None:
        for quota in self._quotas:
            if quota.covers(prefix):
                return quota
        return None

    async def charge_request(self, prefix: str) -> None:
        """Count one request of ``prefix`` today; RequestQuotaExceeded (nothing counted) if full."""
        quota = self.quota_for(prefix)
        if quota is None or quota.requests_per_day is None:
            return
        day = datetime.datetime.fromtimestamp(self._clock(), _TZ_CHINA).date().isoformat()
        counter = f"requests/{quota.prefix}/{day}"
        if await self._store.add_usage(counter, 1, limit=quota.requests_per_day) is None:
            raise RequestQuotaExceeded(
                f"Prefix {quota.prefix} used its {quota.requests_per_day} requests for today"
            )

    async def reserve_identifiers(self, prefixes: Iterable[str]) -> list[str | None]:
        """Reserve one identifier per entry (a handle's prefix), all or none.

        Returns, per entry, the counter charged or None (give back with ``release``)."""
        wanted: dict[str, int] = {}
        charged: list[str | None] = []
        names: dict[str, str] = {}  # quota prefix -> its counter
        for prefix in prefixes:
            quota = self.quota_for(prefix)
            if quota is not None and quota.identifiers is not None:
                if quota.prefix not in names:
                    names[quota.prefix] = await self._identifier_counter(quota.prefix)
                counter = names[quota.prefix]
                wanted[counter] = wanted.get(counter, 0) + 1
                charged.append(counter)
            else:
                charged.append(None)
        taken: list[tuple[str, int]] = []
        try:
            for name, counter in sorted(names.items()):
                n = wanted[counter]
                limit = self.quota_for(name).identifiers  # type: ignore[union-attr]
                if await self._store.add_usage(counter, n, limit=limit) is None:
                    raise IdentifierQuotaExceeded(
                        f"Prefix {name} may hold {limit} identifiers; this request adds up to {n}"
                    )
                taken.append((counter, n))
        except BaseException:
            # A batch over several quota prefixes: give back the ones already taken.
            for counter, n in taken:
                await self._store.add_usage(counter, -n)
            raise
        return charged

    async def release(self, counters: Iterable[str | None]) -> None:
        """Give back reservations that did not create a handle."""
        given: dict[str, int] = {}
        for counter in counters:
            if counter is not None:
                given[counter] = given.get(counter, 0) + 1
        for counter, n in given.items():
            await self._store.add_usage(counter, -n)

    async def before_delete(self, prefix: str) -> str | None:
        """The counter a deletion under ``prefix`` gives back to (``deleted``), seeded now:
        a count taken after the deletion would leave it out already."""
        quota = self.quota_for(prefix)
        if quota is None or quota.identifiers is None:
            return None
        return await self._identifier_counter(quota.prefix)

    async def deleted(self, counter: str | None) -> None:
        await self.release([counter])

    async def _identifier_counter(self, name: str) -> str:
        generation = await self._store.unannounced_writes()
        counter = f"identifiers/{name}/{generation or 0}"
        if counter not in self._seeded:
            prefixes = [p for p in self._homed if p == name or p.startswith(name + ".")] or [name]
            count = sum([await self._store.count_handles(p) for p in prefixes])
            await self._store.seed_usage(counter, count)
            self._seeded.add(counter)
        return counter
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
