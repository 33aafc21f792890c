"""The node: store, cache, role chain, authentication and the write path, wired once.

Transports (the REST API, and later the binary protocol and the SNMS API)
hold a ``Node`` and call ``resolve`` and the ``Registrar`` on it; none of them
talks to the store directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry

from protocol.codes import RC
from protocol.errors import HandleError
from protocol.identifier import PREFIX_NA, Handle, parse_handle, parse_prefix, prefix_handle
from protocol.values import HandleValue
from registry.backends import open_store_at
from registry.credentials import SecretSealer, load_master_key
from registry.store import RecordView, Store
from resolver.admission import Admission
from resolver.applications import ApplicationDesk
from resolver.auth import Authenticator, Identity
from resolver.cache import CacheEntry, Resolution, ResolutionCache
from resolver.coherence import Coherence, ExternalWritesWatch, Peers
from resolver.config import NodeConfig
from resolver.metrics import GaugeCollector, RequestMetrics, StoreLatency
from resolver.quotas import QuotaBook, parse_quota
from resolver.recursive import RecursiveResolver
from resolver.registrar import Registrar
from resolver.roles import chain_for_role
from resolver.snms_tokens import token_key
from resolver.stats import StatsReporter, StatsSpool, UsageCounter
from resolver.stats_api import ReportedTotals, identity_scope
from resolver.template_check import TemplateChecker
from resolver.upstream import HandleUpstream, UpstreamUnavailable, parse_endpoint

if TYPE_CHECKING:
    from resolver.redis_tier import RedisTier

log = logging.getLogger(__name__)

HOMED_REFRESH_SECONDS = 5.0


def open_store(config: NodeConfig) -> Store:
    """The backend named by ``--store``: a file path means the embedded SQLite store,
    a ``*.lmdb`` directory the embedded LMDB store, a ``postgresql://`` (or
    ``postgres://``) URL the PostgreSQL store (``registry.backends``)."""
    # The node tells every cache of its writes (resolver.coherence), so they
    # do not count as unannounced.
    return open_store_at(
        config.store,
        sqlite_synchronous=config.sqlite_synchronous,
        announces_writes=True,
        max_pending=config.write_queue,
        busy_when_full=True,  # a node sheds writes past the bound (RC 3); tools wait
        mmap_mb=config.sqlite_mmap_bytes >> 20,
        lookup_cache_mb=max(1, config.sqlite_cache_bytes >> 20),
        # With a Redis tier the node may lose the broadcast that tells it of
        # other nodes' writes (it then stops trusting its cache and reads the
        # store each time), so its reads must not come from a held snapshot.
        read_snapshot_seconds=0.0 if config.redis else config.sqlite_read_snapshot,
        lmdb_populate=config.lmdb_populate,
    )


def _redis_tier(url: str, config: NodeConfig, cache: ResolutionCache) -> RedisTier:
    from resolver.redis_tier import RedisTier  # redis-py is an optional extra

    return RedisTier(
        url, cache, prefix=config.redis_prefix, timeout=config.redis_timeout,
        lease=config.redis_lease, max_ttl=config.cache_max_ttl,
        negative_ttl=config.cache_negative_ttl,
    )


def stats_reporter(config: NodeConfig, usage: UsageCounter) -> StatsReporter:
    """The reporter of ``--stats-upstream``: spool beside a file store unless told."""
    assert config.stats_upstream
    spool_dir = config.stats_spool
    if spool_dir is None and "://" not in config.store:
        spool_dir = config.store + ".stats-spool"
    if spool_dir is not None and config.worker_slot is not None:
        # Each worker counts and reports its own share (the top-level sums
        # reports); one spool each, so no two deliver or delete the same file.
        spool_dir = str(Path(spool_dir) / f"worker-{config.worker_slot}")
    authorization = None
    node_name = ""
    if config.stats_identity:
        identity = Identity.parse(config.stats_identity)
        node_name = identity_scope(identity)
        # Handle.Net clients percent-encode the colon of index:handle.
        login = quote(config.stats_identity, safe="/")
        authorization = aiohttp.encode_basic_auth(login, config.stats_secret or "")
    return StatsReporter(
        usage,
        StatsSpool(Path(spool_dir) if spool_dir else None, config.stats_max_reports),
        upstream=config.stats_upstream,
        node_name=node_name,
        authorization=authorization,
        interval=config.stats_interval,
    )


class Node:
    def __init__(
        self, config: NodeConfig, store: Store | None = None, peers: Sequence[Peers] = ()
    ) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config)
        self.homed: set[str] = set()
        recursive = config.role == "recursive"
        self.cache = ResolutionCache(
            max_bytes=config.cache_bytes,
            max_ttl=config.cache_max_ttl,
            negative_ttl=config.cache_negative_ttl,
            stale_window=config.stale_window if recursive else 0.0,
            stale_on=(UpstreamUnavailable,),
        )
        self.upstream: HandleUpstream | None = None
        self.recursive: RecursiveResolver | None = None
        if recursive:
            self.upstream = HandleUpstream(timeout=config.upstream_timeout)
            self.recursive = RecursiveResolver(
                self.upstream,
                [parse_endpoint(text) for text in config.top_level],
                ResolutionCache(
                    max_bytes=max(config.cache_bytes // 16, 1 << 20),
                    max_ttl=config.cache_max_ttl,
                    negative_ttl=config.cache_negative_ttl,
                    stale_window=config.stale_window,
                    stale_on=(UpstreamUnavailable,),
                ),
            )
        self._lookup, lookup_now = chain_for_role(
            config.role, store=self.store, homed=self.homed,
            forward=self.recursive.resolve if self.recursive else None,
        )
        # Other nodes sharing a Redis: an L2 cache behind ours, and a peer tier.
        self.redis = (
            _redis_tier(config.redis, config, self.cache) if config.redis else None
        )
        self._load = self._timed_lookup if self.redis is None else self._shared_lookup
        # Inline lookups (SQLite, no Redis tier): a miss costs no task or await.
        self._lookup_now = lookup_now if self.redis is None else None
        # ... and a miss of a plain handle reads the store directly (read_missed).
        self._read_now = self.store.inline_reader() if self._lookup_now is not None else None
        # Writes reach every cache before they are acknowledged: sibling
        # workers and other nodes through ``peers`` (and Redis).
        tiers = [*peers, self.redis] if self.redis is not None else list(peers)
        self.coherence = Coherence(self.cache, self.reload_homed, tiers,
                                   refresh_reads=self.store.refresh_reads)
        self.external_writes = ExternalWritesWatch(self.store, self.cache, self.reload_homed)
        self.authenticator = Authenticator(self.record_of)
        self.server_admins = frozenset(Identity.parse(a) for a in config.server_admins)
        # HS_SECKEY values are kept hashed (HTTP Basic) and sealed under this
        # node's master key (binary challenge-response needs the key itself).
        master_key = load_master_key(config.store, config.master_key)
        self.sealer = SecretSealer(master_key)
        self.token_key = token_key(master_key.key)  # SNMS API tokens
        self.quotas = QuotaBook(
            [parse_quota(q) for q in config.quotas], store=self.store, homed=self.homed,
        )
        # Usage statistics: counted here (hot paths index these dicts), sent
        # upward by the reporter; reports other nodes sent us, summed.
        self.usage = UsageCounter(time.time())
        self.reported = ReportedTotals()
        self.reporter: StatsReporter | None = None
        self.registrar = Registrar(
            store=self.store,
            invalidate=self.coherence.invalidate,
            serves=self.serves_handle,
            record_of=self.record_of,
            server_admins=self.server_admins,
            seal=self.sealer.seal,
            quotas=self.quotas,
            check_template=TemplateChecker(self.store),
            check_writable=self.redis.check_writable if self.redis is not None else None,
            registrations=self.usage.registrations,
        )
        self.applications = ApplicationDesk(
            self.store,
            parent=config.enterprise_parent,
            seal=self.sealer.seal,
            after_approval=self._prefix_allocated,
            invalidate=self.coherence.invalidate,
        )
        self.registry = CollectorRegistry()
        # What /metrics renders, after awaiting ``before_scrape``: this
        # process's registry, or the whole node's (resolver.worker_metrics).
        self.metrics_view = self.registry
        self.before_scrape: Callable[[], Awaitable[None]] | None = None
        self.requests = RequestMetrics()
        self.store_latency = StoreLatency()
        self.registry.register(self.store_latency)  # type: ignore[arg-type]
        self._get_latency = self.store_latency.operation("get")  # bound once: per lookup
        self._register_metrics()
        if self.redis is not None:
            self.registry.register(self.redis.metrics())  # type: ignore[arg-type]
        self._refresher: asyncio.Task[None] | None = None
        self.admission = Admission(config.max_inflight, config.shed_lag)

    async def start(self) -> None:
        if self.upstream is not None:
            await self.upstream.start()
        await self.store.open()
        # Peers' messages are acknowledged unapplied until here: harmless,
        # nothing has been cached yet.
        await self.coherence.start()
        await self.reload_homed()
        await self.reported.load(self.store)
        await self.external_writes.start()
        self._refresher = asyncio.create_task(self._refresh_homed_forever())
        if self.config.stats_upstream:
            self.reporter = stats_reporter(self.config, self.usage)
            await self.reporter.start()

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.upstream is not None:
            await self.upstream.stop()
        if self.reporter is not None:
            await self.reporter.stop()
        await self.external_writes.stop()
        await self.coherence.stop()
        await self.store.close()

    # -- resolution --------------------------------------------------------

    def parse(self, text: str) -> Handle:
        return parse_handle(text, case_sensitive=self.config.case_sensitive)

    def fast_key(self, text: str) -> str | None:
        """The cache key of ``text`` without a full parse, when that is safe.

        For ASCII, upper-casing keeps length and characters, so a key found in
        the cache proves the text valid: only parsed handles get cached.
        """
        if self.config.case_sensitive or not text.isascii():
            return None
        return text.upper()

    async def resolve(self, handle: Handle) -> CacheEntry:
        if self._lookup_now is not None:
            entry = self.cache.get_now(handle.key, lambda: self._timed_lookup_now(handle))
            if entry is not None:
                return entry
        return await self.cache.get(handle.key, lambda: self._load(handle))

    def read_missed(
        self, text: str, key: str
    ) -> tuple[RecordView | None, CacheEntry | None] | None:
        """The stored record of ``text`` (cache key ``key``, from ``fast_key``)
        after a cache miss, read inline, or None if there is none; and the entry
        the cache made for the answer (None where the cache would not keep it,
        so a caller renders its reply straight from the record, as most misses
        of a load spread over a large store are).

        The short way for what every store-backed role's chain answers for a
        plain handle under a prefix homed here (``resolver.roles``): its
        record, RC 1, or RC 100 if it has none. None, having read and cached
        nothing, for everything else (not inline, not homed, ``0.NA/``, a
        lookup in flight): ``resolve`` answers those. A key found in the store
        was parsed when it was written; one not found is parsed here
        (``InvalidHandle``), so a miss is read once either way.
        """
        read = self._read_now
        if read is None or self.cache.loading(key):
            return None
        prefix = key.partition("/")[0]
        if prefix not in self.homed or prefix == PREFIX_NA:
            return None
        start = time.perf_counter()
        try:
            record = read(key)
        finally:
            self._get_latency.observe(time.perf_counter() - start)
        if record is None:
            self.parse(text)  # RC 100 only for a handle; else InvalidHandle, as resolve says
            return None, self.cache.offer(key, RC.HANDLE_NOT_FOUND, None)
        return record, self.cache.offer(key, RC.SUCCESS, record)

    def _timed_lookup_now(self, handle: Handle) -> Resolution:
        assert self._lookup_now is not None
        start = time.perf_counter()
        try:
            return self._lookup_now(handle)
        finally:
            self._get_latency.observe(time.perf_counter() - start)

    async def _shared_lookup(self, handle: Handle) -> Resolution:
        assert self.redis is not None
        return await self.redis.load(handle.key, lambda: self._timed_lookup(handle))

    async def _timed_lookup(self, handle: Handle) -> Resolution:
        start = time.perf_counter()
        try:
            return await self._lookup(handle)
        finally:
            self._get_latency.observe(time.perf_counter() - start)

    async def record_of(self, handle_text: str) -> Sequence[HandleValue] | None:
        """The record of a handle, through the cache (None if absent or not a handle).

        For credentials and admin lists: hot (every write of a prefix reads
        the same ones) and safe to cache, since every write invalidates its key.
        """
        try:
            handle = self.parse(handle_text)
        except HandleError:
            return None
        return (await self.resolve(handle)).values

    def serves(self, prefix: str) -> bool:
        return prefix.upper() in self.homed

    def serves_handle(self, handle: Handle) -> bool:
        """May ``handle`` be written here? A top-level holds every ``0.NA/`` record."""
        if handle.is_prefix_handle:
            return self.config.role == "top-level" or self.serves(handle.suffix)
        return self.serves(handle.prefix)

    # -- prefixes ----------------------------------------------------------

    async def reload_homed(self) -> None:
        """Re-read the homed prefixes (this process only; ``coherence.reload_homed`` tells all)."""
        current = set(await self.store.homed_prefixes())
        if current != self.homed:
            self.homed.clear()
            self.homed.update(current)
            self.cache.clear()  # answers "not responsible" may now be wrong

    async def _refresh_homed_forever(self) -> None:
        # Prefixes are homed offline too (``idnode prefix add``): notice them.
        while True:
            await asyncio.sleep(HOMED_REFRESH_SECONDS)
            try:
                await self.reload_homed()
            except Exception:
                log.exception("Could not reload homed prefixes")

    async def _prefix_allocated(self, prefix: str) -> None:
        # Serve it now, not at the next refresh, in every worker.
        await self.coherence.reload_homed()

    async def home_prefix(self, prefix: str, admin_values: list[HandleValue]) -> None:
        """Home ``prefix`` here and write its ``0.NA/`` record (admins of the prefix)."""
        prefix = parse_prefix(prefix)
        self.quotas.check_sub_prefix(prefix)
        await self.store.home_prefix(prefix)
        if admin_values:
            key = self.parse(prefix_handle(prefix)).key
            await self.store.put(key, admin_values)
            await self.coherence.invalidate((key,))
        await self.coherence.reload_homed()

    async def unhome_prefix(self, prefix: str) -> None:
        """Stop serving ``prefix`` here (its records stay in the store)."""
        await self.store.unhome_prefix(parse_prefix(prefix))
        await self.coherence.reload_homed()

    # -- metrics -----------------------------------------------------------

    def _recursive_metrics(self) -> dict[str, tuple[str, str, Callable[[], float]]]:
        if self.recursive is None or self.upstream is None:
            return {}
        upstream, sites = self.upstream, self.recursive.prefix_cache
        return {
            "idnode_upstream_requests": ("counter", "Requests sent to other servers",
                                         lambda: upstream.requests),
            "idnode_upstream_failures": ("counter", "Upstream requests without an answer",
                                         lambda: upstream.failures),
            "idnode_prefix_cache_hits": ("counter", "Prefix-to-site cache hits",
                                         lambda: sites.hits),
            "idnode_prefix_cache_misses": ("counter", "Prefix-to-site lookups at the top-level",
                                           lambda: sites.misses),
        }

    def _register_metrics(self) -> None:
        cache = self.cache
        self.registry.register(self.requests)  # type: ignore[arg-type]
        self.registry.register(self.reported)  # type: ignore[arg-type]
        self.registry.register(
            GaugeCollector(  # type: ignore[arg-type]
                {
                    "idnode_cache_hits": ("counter", "Cache hits", lambda: cache.hits),
                    "idnode_cache_misses": ("counter", "Cache misses (store lookups)",
                                            lambda: cache.misses),
                    "idnode_cache_coalesced": ("counter", "Misses that joined a lookup in flight",
                                               lambda: cache.coalesced),
                    "idnode_cache_evictions": ("counter", "Entries evicted for space",
                                               lambda: cache.evictions),
                    "idnode_cache_refused": (
                        "counter", "Answers served but not kept: the cache was full and "
                        "the key had not missed recently", lambda: cache.refused),
                    "idnode_cache_entries": ("gauge", "Entries in the cache", lambda: len(cache)),
                    "idnode_cache_bytes": ("gauge", "Bytes charged to the cache",
                                           lambda: cache.bytes),
                    "idnode_homed_prefixes": ("gauge", "Prefixes served here",
                                              lambda: len(self.homed)),
                    "idnode_cache_stale_served": (
                        "counter", "Replies served stale because an upstream was down",
                        lambda: cache.stale_hits),
                    **self._recursive_metrics(),
                }
            )
        )
