"""The recursive role's last stage: find who serves a prefix, then ask it.

For ``P/S`` the node needs the sites of prefix ``P``: it asks the top-level
(``--top-level HOST:PORT``) for ``0.NA/P`` and reads its HS_SITE values.
When the top-level only knows a parent (``0.NA/88.118`` for ``88.118.5``) it
answers RC 303 (prefix referral) with the parent's HS_SITE.PREFIX values;
the node then asks ``0.NA/P`` at the referred site, as Handle.Net's resolver
does, and takes its HS_SITE values, or, when that record has none, the
referred site itself (an idnode secondary serves the enterprise prefixes it
allocates). A record naming a service handle (HS_SERV) instead has it
resolved at the top-level for the HS_SITE values (only there: a service
handle under the prefix it describes could never be found). Then it asks a
site of ``P`` for ``P/S``, following RC 302 (service referral) the same way.

Two caches: prefix → sites here (``prefix_cache``, TTLs of the HS_SITE
values, with the decoded endpoints kept in the entry), records in the node's
cache in front of the chain. A prefix whose ``0.NA`` record names no site
(delegated, homed nowhere) is a negative answer, like a missing one. Both
caches coalesce concurrent misses, cache negative answers for the negative
TTL, and serve stale entries for a bounded window when an upstream does not
answer (``resolver.cache``). ``MAX_REFERRALS``
bounds the hops of one resolution, so referral loops end (RC 6 when hit).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.codes import RC
from protocol.handle_wire import ErrorBody, ReferralBody, ValuesBody
from protocol.identifier import PREFIX_NA, Handle, prefix_handle
from protocol.values import HS_SERV, HS_SITE, HS_SITE_PREFIX, HandleValue
from resolver.cache import Resolution, ResolutionCache
from resolver.upstream import (
    Endpoint,
    HandleUpstream,
    RecursionTooDeep,
    UpstreamUnavailable,
    endpoints,
    sites_of,
)

MAX_REFERRALS = 4
_ENDPOINTS = "endpoints"  # the prefix-cache entry's decoded sites

# Codes a site answers about the handle itself: passed on and cached (briefly if negative).
_ANSWERS = frozenset({RC.HANDLE_NOT_FOUND, RC.INVALID_HANDLE, RC.SERVER_NOT_RESP})


class RecursiveResolver:
    def __init__(
        self, upstream: HandleUpstream, root: Sequence[Endpoint], prefix_cache: ResolutionCache
    ) -> None:
        self.upstream = upstream
        self.root = tuple(root)
        self.prefix_cache = prefix_cache

    async def resolve(self, handle: Handle) -> Resolution:
        """The chain's last stage: the record of ``handle`` from the site serving it."""
        if handle.prefix_key == PREFIX_NA:
            sites = self.root
        else:
            sites = await self.sites_for(handle.prefix_key)
            if not sites:
                return RC.HANDLE_NOT_FOUND, None  # no such prefix anywhere
        rc, values = await self._resolve_at(sites, handle.text, 0)
        if rc == RC.SERVER_NOT_RESP:
            # The site named for the prefix does not serve it: for whoever
            # asks a recursive node, no server holds the handle.
            return RC.HANDLE_NOT_FOUND, None
        return rc, values

    async def sites_for(self, prefix: str) -> tuple[Endpoint, ...]:
        """Endpoints serving ``prefix`` (empty if the prefix does not exist), cached."""
        key = prefix_handle(prefix).upper()
        entry = await self.prefix_cache.get(key, lambda: self._load_sites(key))
        if entry.values is None:
            return ()
        return self.prefix_cache.encoded(
            entry, _ENDPOINTS, lambda: endpoints(sites_of(entry.values or ()))
        )

    async def _load_sites(self, na_handle: str) -> Resolution:
        """``0.NA/P`` resolved from the root, reduced to the values naming P's sites."""
        rc, values, referral = await self._resolve_following(self.root, na_handle, 0)
        if rc != RC.SUCCESS or values is None:
            return RC.HANDLE_NOT_FOUND, None
        site_values = [v for v in values if v.type.upper() == HS_SITE]
        if not site_values:
            for serv in (v for v in values if v.type.upper() == HS_SERV):
                # HS_SERV: a service handle holds the HS_SITE values.
                rc, serv_values, _ = await self._resolve_following(
                    self.root, serv.data.decode("utf-8", "replace"), 1)
                if rc == RC.SUCCESS and serv_values:
                    site_values = [v for v in serv_values if v.type.upper() == HS_SITE]
                    break
        if not site_values and referral:
            # Reached through a prefix referral and the record names no site:
            # the referred site serves the prefix (see module docstring).
            site_values = [HandleValue(v.index, HS_SITE, v.data, ttl=v.ttl,
                                       ttl_absolute=v.ttl_absolute) for v in referral]
        if not site_values:
            # Delegated but homed nowhere (yet): no server holds its handles. A
            # negative answer, cached like one, so that asking again does not send
            # every request to the top-level (an error would not be cached).
            return RC.HANDLE_NOT_FOUND, None
        return RC.SUCCESS, tuple(site_values)

    async def _resolve_at(self, sites: Sequence[Endpoint], handle: str, depth: int) -> Resolution:
        rc, values, _ = await self._resolve_following(sites, handle, depth)
        return rc, values

    async def _resolve_following(
        self, sites: Sequence[Endpoint], handle: str, depth: int
    ) -> tuple[RC, tuple[HandleValue, ...] | None, tuple[HandleValue, ...]]:
        """Ask ``sites`` for ``handle``, following referrals.

        Also returns the HS_SITE.PREFIX values of the last prefix referral followed.
        """
        referral: tuple[HandleValue, ...] = ()
        while True:
            reply = await self.upstream.resolve(sites, handle)
            rc = reply.response_code
            body = reply.body
            if rc == RC.SUCCESS and isinstance(body, ValuesBody):
                return RC.SUCCESS, body.values, referral
            if rc == RC.VALUES_NOT_FOUND:  # every value private: nothing public to give
                return RC.SUCCESS, (), referral
            if rc in (RC.SERVICE_REFERRAL, RC.PREFIX_REFERRAL) and isinstance(body, ReferralBody):
                depth += 1
                if depth > MAX_REFERRALS:
                    raise RecursionTooDeep(f"Too many referrals resolving {handle}")
                prefix_referral = rc == RC.PREFIX_REFERRAL
                wanted = HS_SITE_PREFIX if prefix_referral else HS_SITE
                named = tuple(v for v in body.values or () if v.type.upper() == wanted)
                sites = endpoints(sites_of(named, prefix_referral=prefix_referral))
                if not sites:
                    raise UpstreamUnavailable(f"referral for {handle} names no usable site")
                if prefix_referral:
                    referral = named
                continue
            if rc in _ANSWERS:
                return RC(rc), None, referral
            if rc == RC.RECURSION_COUNT_TOO_HIGH:  # passed on, not retried elsewhere
                raise RecursionTooDeep(f"Recursion count too high resolving {handle}")
            message = body.message if isinstance(body, ErrorBody) else ""
            raise UpstreamUnavailable(f"RC {rc} {message}".strip())
