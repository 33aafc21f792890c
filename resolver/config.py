"""Node configuration: one frozen object built once from CLI flags (and env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STORE = Path("var/idnode.db")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    # A SQLite file path, or a postgresql:// URL (registry.backends).
    store: str = str(DEFAULT_STORE)
    host: str = "127.0.0.1"
    port: int = 8000
    # Binary Handle protocol, UDP and TCP on one port (0 = any free port, None = off).
    handle_port: int | None = 2641
    role: str = "secondary"
    # Cache: bytes of encoded replies + records it may hold, and TTL bounds.
    cache_bytes: int = 256 * 1024 * 1024
    cache_max_ttl: float = 3600.0
    cache_negative_ttl: float = 5.0
    case_sensitive: bool = False
    access_log: bool = False
    # Seconds a connection may sit idle, or trickle an unfinished request
    # (slow-loris), before it is closed; aiohttp's own default is an hour.
    idle_timeout: float = 60.0
    log_level: str = "INFO"
    tls_cert: str | None = None
    tls_key: str | None = None
    # Credentials sent over plain HTTP are honoured only from loopback clients
    # unless this is set (Handle.Net ignores them over HTTP altogether).
    allow_insecure_auth: bool = False
    # "index:handle" identities allowed everything on this node.
    server_admins: tuple[str, ...] = field(default=())
    sqlite_synchronous: str = "NORMAL"
    # SQLite memory-maps this much of the store file (0 = off): lookups read
    # pages straight from the OS page cache, without a read() each (bench/README.md).
    sqlite_mmap_bytes: int = 0
    # SQLite's page cache of the lookup connection: what of the handles B-tree
    # it holds a lookup does not read from the OS. Its interior pages are 5.3%
    # of the file (1.1 GB at 100M identifiers: a WITHOUT ROWID table keeps
    # whole rows in them), so the default holds the upper levels only and a
    # cold lookup reads two pages (bench/README.md).
    sqlite_cache_bytes: int = 64 << 20
    # Lookups share one SQLite read transaction for up to this many seconds
    # (0: one each), renewed after every write this node makes or hears of
    # (registry.sqlite_snapshot): fewer locks and syscalls per cold lookup.
    sqlite_read_snapshot: float = 0.1
    # An LMDB store's map is populated at start, in the background, when the
    # file fits in 90 % of the available memory (registry.lmdb_map): lookups
    # then take no page fault each.
    lmdb_populate: bool = True
    # File holding the master key (registry.credentials.load_master_key): needed
    # for a URL store, unless $IDNODE_MASTER_KEY is set; default <store>.key.
    master_key: str | None = None
    # Per-prefix quotas, "PREFIX:requests=N,identifiers=N,subprefixes=N" (resolver.quotas).
    quotas: tuple[str, ...] = field(default=())
    # Shared L2 cache and invalidations between nodes (resolver.redis_tier):
    # redis://host:port/db, or None. Names start with the prefix.
    redis: str | None = None
    redis_prefix: str = "idnode:"
    # A slower read falls through to the store. Measured on the event loop, so it
    # includes waiting behind other requests: a few ms only suit an idle node.
    redis_timeout: float = 0.02
    redis_lease: float = 3.0  # a silent node is waited for this long by writers
    # Secondary node: enterprise prefixes are allocated as <parent>.<n> on approval.
    enterprise_parent: str | None = None
    # Usage statistics sent upward (resolver.stats): the top-level node's base
    # URL, the period, this node's identity there ("300:0.NA/88.118") and its
    # secret, and where unacknowledged reports wait (default: beside the store).
    stats_upstream: str | None = None
    stats_interval: float = 60.0
    stats_identity: str | None = None
    stats_secret: str | None = None
    stats_spool: str | None = None
    stats_max_reports: int = 1440
    # Set by ``idnode serve --workers N`` (resolver.workers) in each worker:
    # its slot, and SO_REUSEPORT so the workers share the ports.
    worker_slot: int | None = None
    reuse_port: bool = False

    # Recursive role: the top-level's binary Handle endpoints ("host:port"),
    # how long to wait for an upstream, and how long past expiry an answer
    # may be served when its upstream is down.
    top_level: tuple[str, ...] = field(default=())
    upstream_timeout: float = 2.0
    stale_window: float = 300.0
    # Secondary role: keep this node's site in the top-level's 0.NA/<prefix>
    # record (resolver.homing). URL of the top-level's REST API, the identity
    # "300:0.NA/<prefix>" it registered for this node, and its secret.
    home_at: str | None = None
    home_auth: str | None = None
    home_secret: str | None = None
    home_refresh: float = 300.0

    # Overload bounds (resolver.admission): past them requests get 503 / RC 3 at once.
    max_inflight: int = 512  # HTTP requests inside handlers at once (cached resolves exempt)
    shed_lag: float = 0.5  # refuse requests that waited this long since read (s); 0 = off
    max_body: int = 1024 * 1024  # request body bytes (a batch, POST /api/handles, may be 32 MiB)
    write_queue: int = 10_000  # queued store writes; past it writes fail with RC 3

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)
