"""``idnode``: run a node, administer its store, and talk to a node as a client.

    idnode init     --store PATH|URL --prefix 88.100.1 [--admin-secret S] [--master-key FILE]
    idnode serve    --store PATH|URL [--host H] [--port 8000] [--workers N] [--cache-size B] ...
    idnode migrate  --store PATH|URL   (apply pending schema migrations, e.g. postgresql://...)
    idnode resolve  HANDLE [--server URL] [--type T] [--index N]
    idnode trace    HANDLE [--server URL] [--max-depth N] [--json]
    idnode register HANDLE (--value TYPE=DATA ... | --json FILE) --auth 300:P/ADMIN [--secret S]
    idnode delete   HANDLE [--index N] --auth 300:P/ADMIN [--secret S]
    idnode prefix   add|list ...
    idnode delegate PREFIX --store PATH [--secret S]   (top-level: register a secondary)
    idnode unhome   --home-at URL --home-auth 300:0.NA/P [--home-secret S]  (secondary moved away)
    idnode simulate [--secondaries N] [--enterprises E] [--ids-per-enterprise K] [--seed S]
    idnode account add USERNAME --prefix 88.100.1 [--password P] | revoke USERNAME
    idnode application list|approve ID --parent 88.118|reject ID --reason R
    idnode import   --store PATH FILE.jsonl|FILE.csv|-   idnode export --store PATH [--prefix P]
    idnode bench    run|compare|worker|... (load tests: python -m bench.runner)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import aiohttp

from protocol.errors import HandleError
from registry.credentials import MasterKeyError
from resolver import admin_tasks, bulk_import, client, trace
from resolver.config import DEFAULT_STORE, NodeConfig
from resolver.roles import ROLES

DEFAULT_SERVER = "http://127.0.0.1:8000"
# Instance, not class: slotted dataclass fields are descriptors on the class.
_DEFAULTS = NodeConfig()


def _size(text: str) -> int:
    """``256M``, ``1G``, ``65536``: bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idnode", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create a store and home a prefix with its admin handle")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--prefix", required=True, help="e.g. 88.100.1")
    p.add_argument("--admin-secret", help="secret of <prefix>/ADMIN (generated if omitted)")
    p.add_argument("--if-new", action="store_true", help="do nothing if the prefix is homed")
    _master_key(p, "created if it does not exist")

    p = sub.add_parser("migrate", help="bring a store's schema up to this idnode's version")
    p.add_argument("--store", default=str(DEFAULT_STORE))

    p = sub.add_parser("serve", help="run the node")
    p.add_argument("--store", default=str(DEFAULT_STORE),
                   help="SQLite file, LMDB directory (PATH.lmdb), or "
                   "postgresql://user@host:5432/db[?search_path=schema]")
    _master_key(p, "must exist")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--handle-port", type=int, default=_DEFAULTS.handle_port,
                   help="binary Handle protocol port, UDP and TCP (0 = any free port)")
    p.add_argument("--no-handle-protocol", action="store_true",
                   help="serve only HTTP, no binary Handle protocol")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes sharing the ports (default: one per core; "
                        "1 = a single process, no supervisor)")
    p.add_argument("--role", choices=ROLES, default="secondary")
    p.add_argument("--cache-size", type=_size, default=_DEFAULTS.cache_bytes,
                   help="cache bound in bytes (256M, 1G...)")
    p.add_argument("--cache-max-ttl", type=float, default=_DEFAULTS.cache_max_ttl)
    p.add_argument("--cache-negative-ttl", type=float, default=_DEFAULTS.cache_negative_ttl)
    p.add_argument("--case-sensitive", action="store_true",
                   help="compare suffixes case-sensitively (prefixes never are)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--access-log", action="store_true", help="log every request (slow)")
    p.add_argument("--idle-timeout", type=float, default=_DEFAULTS.idle_timeout,
                   help="seconds before an idle or trickling HTTP connection is closed")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--allow-insecure-auth", action="store_true",
                   help="accept credentials over plain HTTP from any address, not only loopback")
    p.add_argument("--server-admin", action="append", default=[],
                   help="index:handle allowed everything (repeatable)")
    p.add_argument("--quota", action="append", default=[],
                   help="PREFIX:requests=N,identifiers=N,subprefixes=N (per day / total; "
                        "repeatable)")
    p.add_argument("--sync", choices=("NORMAL", "FULL"), default="NORMAL",
                   help="embedded store durability (SQLite, LMDB): NORMAL survives a process "
                   "crash, FULL power loss")
    p.add_argument("--max-inflight", type=int, default=_DEFAULTS.max_inflight,
                   help="HTTP requests in handlers at once; more get 503 RC 3 at once")
    p.add_argument("--shed-lag", type=float, default=_DEFAULTS.shed_lag,
                   help="refuse (503 RC 3) a request that waited more than this many seconds "
                        "between its bytes being read and its handler starting; 0 = off")
    p.add_argument("--max-body", type=_size, default=_DEFAULTS.max_body,
                   help="request body bytes (batches: 32M); more get 413")
    p.add_argument("--write-queue", type=int, default=_DEFAULTS.write_queue,
                   help="queued store writes; past it writes fail at once with RC 3 / 503")
    p.add_argument("--sqlite-cache", type=_size, default=_DEFAULTS.sqlite_cache_bytes,
                   metavar="BYTES", help="SQLite page cache of the lookup connection "
                                         "(default 64M); counts in the node's RSS")
    p.add_argument("--sqlite-mmap", type=_size, default=_DEFAULTS.sqlite_mmap_bytes,
                   metavar="BYTES", help="memory-map up to this much of the store for lookups "
                                         "(e.g. 32G; default 0 = off)")
    p.add_argument("--lmdb-populate", action=argparse.BooleanOptionalAction,
                   default=_DEFAULTS.lmdb_populate,
                   help="an LMDB store: map all its pages at start, in the background, when "
                        "the file fits in 90%% of the available memory (default: on)")
    p.add_argument("--sqlite-snapshot", type=_seconds, default=_DEFAULTS.sqlite_read_snapshot,
                   metavar="SECONDS",
                   help="lookups share one read transaction, renewed after every write the "
                        "node makes or hears of and at least this often (default 0.1; "
                        "0 = one per lookup; not with --redis)")
    r = p.add_argument_group("recursive role")
    r.add_argument("--top-level", action="append", default=[], metavar="HOST:PORT",
                   help="binary Handle endpoint of the top-level node (repeatable)")
    r.add_argument("--upstream-timeout", type=float, default=_DEFAULTS.upstream_timeout,
                   help="seconds to wait for an upstream server")
    r.add_argument("--stale-window", type=float, default=_DEFAULTS.stale_window,
                   help="seconds past expiry an answer may be served while its upstream is down")
    h = p.add_argument_group("secondary role: homing at the top-level")
    h.add_argument("--home-at", metavar="URL", help="the top-level's HTTP(S) base URL")
    h.add_argument("--home-auth", metavar="300:0.NA/PREFIX",
                   help="identity the top-level registered for this node (idnode delegate)")
    h.add_argument("--home-secret", default=os.environ.get("IDNODE_HOME_SECRET"),
                   help="its secret (or $IDNODE_HOME_SECRET)")
    h.add_argument("--home-refresh", type=float, default=_DEFAULTS.home_refresh,
                   help="seconds between re-writes of this node's site")
    rd = p.add_argument_group("several nodes: shared cache and invalidations (Redis)")
    rd.add_argument("--redis", metavar="URL",
                    help="redis://host:port/db: shared cache and invalidations between nodes "
                         "(needs the redis extra)")
    rd.add_argument("--redis-prefix", default=_DEFAULTS.redis_prefix,
                    help="namespace of every Redis key and channel (one per deployment)")
    rd.add_argument("--redis-timeout", type=float, default=_DEFAULTS.redis_timeout,
                    help="seconds a Redis read may take before the store is asked instead")
    rd.add_argument("--redis-lease", type=float, default=_DEFAULTS.redis_lease,
                    help="seconds a node that stops answering delays writes elsewhere")
    p.add_argument("--stats-upstream", metavar="URL",
                   help="send usage statistics to this (top-level) node, e.g. https://tl:8000")
    p.add_argument("--stats-interval", type=float, default=_DEFAULTS.stats_interval,
                   help="seconds per statistics report")
    p.add_argument("--stats-identity", metavar="INDEX:HANDLE",
                   help="this node's identity at the upstream, e.g. 300:0.NA/88.118; secret "
                        "from $IDNODE_STATS_SECRET or --stats-secret-file")
    p.add_argument("--stats-secret-file", help="file holding the --stats-identity secret")
    p.add_argument("--stats-spool", metavar="DIR",
                   help="unacknowledged reports (default: STORE.stats-spool)")
    p.add_argument("--stats-max-reports", type=int, default=_DEFAULTS.stats_max_reports,
                   help="spool bound; when full the current interval grows instead")
    p.add_argument("--enterprise-parent",
                   help="allocate approved enterprise prefixes as PARENT.<n> (e.g. 88.118)")

    p = sub.add_parser("resolve", help="resolve a handle (HTTP, or the binary Handle protocol)")
    p.add_argument("handle")
    p.add_argument("--server", default=None,
                   help=f"HTTP: a URL (default {DEFAULT_SERVER}); --udp/--tcp: HOST:PORT "
                        "(default 127.0.0.1:2641)")
    wire = p.add_mutually_exclusive_group()
    wire.add_argument("--udp", action="store_true",
                      help="binary Handle protocol over UDP (TCP if the reply is truncated)")
    wire.add_argument("--tcp", action="store_true", help="binary Handle protocol over TCP")
    p.add_argument("--type", action="append", default=[])
    p.add_argument("--index", action="append", type=int, default=[])

    p = sub.add_parser("trace", help="walk an identifier's traceability links, print the tree")
    p.add_argument("handle")
    p.add_argument("--server", default=DEFAULT_SERVER,
                   help="node whose REST API resolves every link (the recursive node in a "
                        f"hierarchy; default {DEFAULT_SERVER})")
    p.add_argument("--max-depth", type=_non_negative, default=trace.DEFAULT_MAX_DEPTH)
    p.add_argument("--max-nodes", type=_non_negative, default=trace.DEFAULT_MAX_NODES,
                   help="resolve at most this many identifiers")
    p.add_argument("--concurrency", type=_non_negative, default=trace.DEFAULT_CONCURRENCY,
                   help="resolutions in flight at once")
    p.add_argument("--timeout", type=float, default=trace.DEFAULT_TIMEOUT,
                   help="seconds per resolution")
    p.add_argument("--json", action="store_true", help="print the tree as JSON")

    p = sub.add_parser("register", help="create or replace a handle on a node")
    p.add_argument("handle")
    p.add_argument("--value", action="append", default=[],
                   help="TYPE=DATA or INDEX:TYPE=DATA (repeatable)")
    p.add_argument("--json", help="file with the values as Handle REST JSON")
    p.add_argument("--no-overwrite", action="store_true", help="fail if the handle exists")
    _client_auth(p)

    p = sub.add_parser("delete", help="delete a handle, or some of its values")
    p.add_argument("handle")
    p.add_argument("--index", action="append", type=int, default=[])
    _client_auth(p)

    p = sub.add_parser("prefix", help="home prefixes in a store")
    psub = p.add_subparsers(dest="prefix_command", required=True)
    pa = psub.add_parser("add", help="home a prefix (a running node notices within seconds)")
    pa.add_argument("prefix")
    pa.add_argument("--store", default=str(DEFAULT_STORE))
    pa.add_argument("--admin", help="index:handle administering the prefix")
    pl = psub.add_parser("list", help="list homed prefixes")
    pl.add_argument("--store", default=str(DEFAULT_STORE))

    p = sub.add_parser("delegate", help="top-level: register the secondary serving a prefix")
    p.add_argument("prefix", help="industry prefix, e.g. 88.118")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--secret", help="the secondary's secret (generated if omitted)")

    p = sub.add_parser("unhome", help="remove a secondary's site from the top-level's "
                                      "0.NA/<prefix> record")
    p.add_argument("--home-at", required=True, metavar="URL", help="the top-level's base URL")
    p.add_argument("--home-auth", required=True, metavar="300:0.NA/PREFIX")
    p.add_argument("--home-secret", default=os.environ.get("IDNODE_HOME_SECRET"),
                   help="its secret (or $IDNODE_HOME_SECRET)")

    p = sub.add_parser("simulate", help="run a whole hierarchy on loopback (top-level, "
                                        "secondaries, recursive) with generated enterprises")
    from resolver.simulate import add_arguments

    add_arguments(p)

    p = sub.add_parser("account", help="SNMS application identities (token logins)")
    asub = p.add_subparsers(dest="account_command", required=True)
    aa = asub.add_parser("add", help="create an account, or reset its password (revokes tokens)")
    aa.add_argument("username")
    aa.add_argument("--prefix", help="its enterprise prefix, e.g. 88.100.1 (enterprise and "
                    "readonly accounts; applicants, auditors and node admins have none)")
    aa.add_argument("--password", help="generated and printed once if omitted")
    aa.add_argument("--role", default="enterprise", choices=admin_tasks.ACCOUNT_ROLES)
    aa.add_argument("--store", default=str(DEFAULT_STORE))
    _master_key(aa, "must exist")
    ar = asub.add_parser("revoke", help="revoke every token issued to an account so far")
    ar.add_argument("username")
    ar.add_argument("--store", default=str(DEFAULT_STORE))

    p = sub.add_parser("application", help="enterprise prefix applications (operators)")
    bsub = p.add_subparsers(dest="application_command", required=True)
    bl = bsub.add_parser("list", help="list applications")
    bl.add_argument("--state", choices=("pending", "approved", "rejected"))
    bl.add_argument("--json", action="store_true")
    bl.add_argument("--store", default=str(DEFAULT_STORE))
    for name, text in (("approve", "allocate <parent>.<n>, home it, create its admin"),
                       ("reject", "reject with a reason")):
        bd = bsub.add_parser(name, help=text)
        bd.add_argument("id", type=int)
        bd.add_argument("--reason", required=name == "reject")
        bd.add_argument("--by", default="operator", help="recorded as the decider")
        bd.add_argument("--store", default=str(DEFAULT_STORE))
        if name == "approve":
            bd.add_argument("--parent", required=True,
                            help="the node's --enterprise-parent, e.g. 88.118")

    p = sub.add_parser("reporter", help="nodes allowed to report usage statistics here")
    rsub = p.add_subparsers(dest="reporter_command", required=True)
    ra = rsub.add_parser("add", help="create or reset the identity 300:0.NA/PREFIX")
    ra.add_argument("prefix", help="the reporting node's prefix, e.g. 88.118")
    ra.add_argument("--secret", help="generated and printed once if omitted")
    ra.add_argument("--store", default=str(DEFAULT_STORE))

    p = sub.add_parser("import", help="bulk-load handles from JSONL or CSV into a store")
    p.add_argument("file", help="JSONL ({\"handle\": ..., \"values\": [...]} per line) or CSV "
                                "(handle,index,type,data[,format][,ttl] rows); - = stdin")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--format", choices=("jsonl", "csv"),
                   help="input format (default: csv for *.csv, else jsonl)")
    p.add_argument("--batch", type=_positive, default=100_000,
                   help="identifiers per transaction (default 100000)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parse processes (default: one per core; 0 = parse inline)")
    p.add_argument("--skip-errors", action="store_true",
                   help="report bad lines and import the rest (default: stop at the first)")
    p.add_argument("--progress", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between progress lines on stderr (0 = none)")
    _master_key(p, "must exist")

    p = sub.add_parser("export", help="stream a store's handles as JSONL or CSV")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--prefix")
    p.add_argument("--output", default="-")
    p.add_argument("--format", choices=("jsonl", "csv"),
                   help="output format (default: csv for *.csv, else jsonl)")

    # Only for --help: main() hands `idnode bench ...` to the bench runner untouched.
    sub.add_parser("bench", help="load tests (python -m bench.runner; needs the bench extra)",
                   add_help=False)
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _master_key(p: argparse.ArgumentParser, when_missing: str) -> None:
    p.add_argument("--master-key", metavar="FILE",
                   help="the node's master key file (default: $IDNODE_MASTER_KEY, else "
                        f"<store>.key beside a file store; {when_missing}); needed for a "
                        "postgresql:// store, the same file on every node sharing it")


def _client_auth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_SERVER)
    p.add_argument("--auth", required=True, help="identity index:handle, e.g. 300:88.100.1/ADMIN")
    p.add_argument("--secret", default=os.environ.get("IDNODE_SECRET"),
                   help="the identity's secret (or $IDNODE_SECRET)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")


def _stats_secret(args: argparse.Namespace) -> str | None:
    """The secret of ``--stats-identity`` (a file, or $IDNODE_STATS_SECRET)."""
    if args.stats_upstream and not args.stats_identity:
        raise admin_tasks.CommandError(
            "--stats-upstream needs --stats-identity (the upstream accepts reports only from "
            "a known node identity; see idnode reporter add)"
        )
    if args.stats_secret_file:
        with open(args.stats_secret_file, encoding="utf-8") as f:
            return f.read().strip()
    secret = os.environ.get("IDNODE_STATS_SECRET")
    if args.stats_identity and not secret:
        raise admin_tasks.CommandError(
            "--stats-identity needs its secret: $IDNODE_STATS_SECRET or --stats-secret-file"
        )
    return secret


def _bench(argv: list[str]) -> NoReturn:
    """Become ``python -m bench.runner``: bench/ is a separate tool, never imported here."""
    os.execv(sys.executable, [sys.executable, "-m", "bench.runner", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        _bench(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except admin_tasks.CommandError as exc:
        print(f"idnode: {exc}", file=sys.stderr)
        return 2
    except aiohttp.ClientError as exc:  # the client commands: node down, TLS, ...
        print(f"idnode: {exc}", file=sys.stderr)
        return 2
    except (MasterKeyError, ValueError) as exc:  # serve: bad key file, unsupported --store
        print(f"idnode: {exc}", file=sys.stderr)
        return 2
    except HandleError as exc:  # serve: the store cannot be opened (unreachable, newer schema)
        print(f"idnode: {exc.message}", file=sys.stderr)
        return 2


async def _unhome(args: argparse.Namespace) -> int:
    from protocol.errors import HandleError
    from resolver.auth import Identity
    from resolver.homing import Homing, HomingError

    if not args.home_secret:
        raise admin_tasks.CommandError("--home-secret (or $IDNODE_HOME_SECRET) is required")
    try:
        homing = Homing(args.home_at, Identity.parse(args.home_auth), args.home_secret)
        await homing.unhome()
    except (ValueError, HandleError, HomingError) as exc:
        raise admin_tasks.CommandError(str(exc)) from None
    print(f"{homing.prefix}: site removed from {homing.record_url}")
    return 0


def _run(args: argparse.Namespace) -> int:
    command = args.command
    if command == "serve":
        from resolver.server import run
        from resolver.upstream import parse_endpoint
        from resolver.workers import default_workers, supervise

        workers = default_workers() if args.workers is None else args.workers
        if workers < 1:
            raise admin_tasks.CommandError("--workers must be at least 1")
        if args.role == "recursive" and not args.top_level:
            raise admin_tasks.CommandError("--role recursive needs --top-level HOST:PORT")
        try:
            for endpoint in args.top_level:
                parse_endpoint(endpoint)
        except ValueError as exc:
            raise admin_tasks.CommandError(str(exc)) from None
        if args.home_at and not (args.home_auth and args.home_secret):
            raise admin_tasks.CommandError("--home-at needs --home-auth and --home-secret")
        config = NodeConfig(
            store=args.store, host=args.host, port=args.port, role=args.role,
            handle_port=None if args.no_handle_protocol else args.handle_port,
            cache_bytes=args.cache_size, cache_max_ttl=args.cache_max_ttl,
            cache_negative_ttl=args.cache_negative_ttl, case_sensitive=args.case_sensitive,
            access_log=args.access_log, idle_timeout=args.idle_timeout,
            log_level=args.log_level,
            tls_cert=args.tls_cert, tls_key=args.tls_key,
            allow_insecure_auth=args.allow_insecure_auth,
            server_admins=tuple(args.server_admin), sqlite_synchronous=args.sync,
            max_inflight=args.max_inflight, shed_lag=args.shed_lag, max_body=args.max_body,
            write_queue=args.write_queue,
            sqlite_mmap_bytes=args.sqlite_mmap,
            sqlite_cache_bytes=args.sqlite_cache,
            sqlite_read_snapshot=args.sqlite_snapshot,
            lmdb_populate=args.lmdb_populate,
            quotas=tuple(args.quota), top_level=tuple(args.top_level),
            upstream_timeout=args.upstream_timeout, stale_window=args.stale_window,
            home_at=args.home_at, home_auth=args.home_auth, home_secret=args.home_secret,
            home_refresh=args.home_refresh, enterprise_parent=args.enterprise_parent,
            redis=args.redis, redis_prefix=args.redis_prefix,
            redis_timeout=args.redis_timeout, redis_lease=args.redis_lease,
            stats_upstream=args.stats_upstream, stats_interval=args.stats_interval,
            stats_identity=args.stats_identity, stats_secret=_stats_secret(args),
            stats_spool=args.stats_spool, stats_max_reports=args.stats_max_reports,
            master_key=args.master_key,
        )
        if workers > 1:
            return supervise(config, workers)
        run(config)
        return 0
    if command == "delegate":
        return asyncio.run(admin_tasks.delegate(args.store, args.prefix, args.secret))
    if command == "unhome":
        return asyncio.run(_unhome(args))
    if command == "simulate":
        from resolver.simulate import simulate

        return simulate(args)
    if command == "init":
        return asyncio.run(admin_tasks.init(
            args.store, args.prefix, args.admin_secret, args.if_new, master_key=args.master_key
        ))
    if command == "migrate":
        return asyncio.run(admin_tasks.migrate(args.store))
    if command == "prefix":
        if args.prefix_command == "add":
            return asyncio.run(admin_tasks.prefix_add(args.store, args.prefix, args.admin))
        return asyncio.run(admin_tasks.prefix_list(args.store))
    if command == "account":
        if args.account_command == "add":
            return asyncio.run(admin_tasks.account_add(
                args.store, args.username, args.prefix, args.password, args.role,
                master_key=args.master_key,
            ))
        return asyncio.run(admin_tasks.account_revoke(args.store, args.username))
    if command == "application":
        if args.application_command == "list":
            return asyncio.run(admin_tasks.application_list(args.store, args.state, args.json))
        return asyncio.run(admin_tasks.application_decide(
            args.store, args.id, approve=args.application_command == "approve",
            parent=getattr(args, "parent", None), by=args.by, reason=args.reason,
        ))
    if command == "reporter":
        return asyncio.run(admin_tasks.reporter_add(args.store, args.prefix, args.secret))
    if command == "import":
        options = bulk_import.ImportOptions(
            file=args.file, format=bulk_import.format_for(args.file, args.format),
            batch=args.batch, jobs=bulk_import.default_jobs() if args.jobs is None else args.jobs,
            skip_errors=args.skip_errors, progress_every=args.progress,
            master_key=args.master_key,
        )
        return asyncio.run(bulk_import.import_file(args.store, options))
    if command == "export":
        fmt = bulk_import.format_for(args.output, args.format)
        return asyncio.run(bulk_import.export_file(args.store, args.prefix, args.output, fmt))
    if command == "resolve":
        if args.udp or args.tcp:
            return asyncio.run(client.resolve_binary(args))
        return asyncio.run(
            client.resolve(args.server or DEFAULT_SERVER, args.handle, args.type, args.index)
        )
    if command == "trace":
        return asyncio.run(trace.trace_command(
            args.server, args.handle, max_depth=args.max_depth, max_nodes=args.max_nodes,
            concurrency=args.concurrency, timeout=args.timeout, as_json=args.json,
        ))
    if command == "register":
        return asyncio.run(client.register(args))
    if command == "delete":
        return asyncio.run(client.delete(args))
    raise AssertionError(command)


if __name__ == "__main__":
    sys.exit(main())
