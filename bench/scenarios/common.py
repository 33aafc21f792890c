"""What every locust scenario shares: options, a seeded user base, and the runner's files.

Options are locust command-line arguments (``--bench-*``), so a locust master
hands them to its workers and ``locust -f bench/scenarios/X.py`` works without
the runner too. With ``--bench-out DIR`` the master (or the only process)
writes ``progress.jsonl`` every second, for the runner's progress line, and
``final.json`` when it quits: every stats entry with locust's full latency and
per-second tables, from which the runner computes its own numbers.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import secrets
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, events
from locust.env import Environment
from locust.runners import WorkerRunner

from bench.workload import handle_path, put_bodies, write_identifier

_users = itertools.count()
_env: Environment | None = None
_workers_seen = 0  # a master's workers have left by the time it quits


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--bench-prefix", default="88.100.1", help="prefix of the identifiers")
    parser.add_argument("--bench-preload", type=int, default=100_000,
                        help="identifiers <prefix>/BENCH-000000000.. that exist on the target")
    parser.add_argument("--bench-seed", type=int, default=1, help="seed of every request stream")
    parser.add_argument("--bench-zipf-s", type=float, default=1.0,
                        help="Zipf exponent of resolve-hot popularity")
    parser.add_argument("--bench-write-ratio", type=float, default=0.05,
                        help="share of registrations in the mixed scenario")
    parser.add_argument("--bench-secret", default="bench-secret",
                        help="secret of 300:<prefix>/ADMIN, for writes")
    parser.add_argument("--bench-tag", default="",
                        help="makes new handles unique per run (random if empty)")
    parser.add_argument("--bench-out", default="", help="directory for progress and final stats")
    parser.add_argument("--bench-handle-port", type=int, default=2641,
                        help="binary Handle protocol port (UDP+TCP) of the --host, "
                             "for the binary scenarios")
    parser.add_argument("--bench-timeout", type=float, default=2.0,
                        help="seconds a binary request waits for its reply (then a failure)")
    parser.add_argument("--bench-batch-size", type=int, default=2000,
                        help="identifiers per request of the batch scenarios (at most 2000)")
    parser.add_argument("--bench-snms-user", default="bench",
                        help="SNMS account (password: --bench-secret) for register-batch-snms")


def seeded(environment: Environment) -> tuple[str, int, str, random.Random]:
    """(prefix, preload, user id, rng) of a new user, whatever its transport."""
    o: Any = environment.parsed_options
    worker = max(getattr(environment.runner, "worker_index", 0), 0)
    user_id = f"{worker}-{next(_users)}"
    # Seeded per user: the same users ask the same things in the same order.
    return o.bench_prefix, o.bench_preload, user_id, random.Random(f"{o.bench_seed}/{user_id}")


class BenchUser(FastHttpUser):
    """One connection asking as fast as the target answers (closed loop)."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.prefix, self.preload, self.user_id, self.rng = seeded(self.environment)

    def get(self, handle: str, name: str) -> None:
        self.client.get(handle_path(handle), name=name)


class WritingUser(BenchUser):
    """A user that registers new handles as the prefix admin, each under a new name."""

    abstract = True

    def on_start(self) -> None:
        super().on_start()
        o = self.environment.parsed_options
        self.tag: str = o.bench_tag or _run_tag()
        login = f"300%3A{self.prefix}/ADMIN:{o.bench_secret}"
        self.write_headers = {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(login.encode()).decode(),
        }
        self.written = 0
        self.bodies = put_bodies(self.prefix)

    def register(self, name: str) -> None:
        self.written += 1
        handle = write_identifier(self.prefix, self.tag, self.user_id, self.written)
        body = self.bodies[self.written % len(self.bodies)]
        # bytes go out as they are (the annotation says str | dict only).
        self.client.put(handle_path(handle), data=body,  # type: ignore[arg-type]
                        headers=self.write_headers, name=name)


class BatchUser(WritingUser):
    """A user that registers ``--bench-batch-size`` new handles per request."""

    abstract = True

    def on_start(self) -> None:
        super().on_start()
        self.batch_size: int = self.environment.parsed_options.bench_batch_size

    def new_handles(self) -> list[str]:
        first, self.written = self.written + 1, self.written + self.batch_size
        return [write_identifier(self.prefix, self.tag, self.user_id, n)
                for n in range(first, self.written + 1)]


def post_json(url: str, body: object, headers: dict[str, str] | None = None) -> Any:
    """A setup request outside locust's statistics (gevent makes it cooperative)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as reply:
        return json.loads(reply.read())


@cache
def _run_tag() -> str:
    """One random tag per process when the runner gave none."""
    return secrets.token_hex(4)


# -- For the runner: progress while running, all stats at the end (master only) --

@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    global _env
    out = _out_dir(environment)
    if out is None or isinstance(environment.runner, WorkerRunner):
        return
    _env = environment
    out.mkdir(parents=True, exist_ok=True)
    gevent.spawn(_write_progress, environment, out / "progress.jsonl")


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    if _env is None or (out := _out_dir(_env)) is None:
        return
    stats, runner = _env.stats, _env.runner
    final = {
        "entries": [e.serialize() for e in stats.entries.values()],
        "total": stats.total.serialize(),
        "errors": list(stats.serialize_errors().values()),
        "cpu_warning": bool(runner and (runner.cpu_warning_emitted
                                        or getattr(runner, "worker_cpu_warning_emitted", False))),
        "workers": _workers_seen,
    }
    tmp = out / "final.json.tmp"
    tmp.write_text(json.dumps(final))
    tmp.replace(out / "final.json")


def _out_dir(environment: Environment) -> Path | None:
    out: str = getattr(environment.parsed_options, "bench_out", None) or ""
    return Path(out) if out else None


def _write_progress(environment: Environment, path: Path) -> None:
    global _workers_seen
    with path.open("a") as f:
        while True:
            runner, total = environment.runner, environment.stats.total
            workers = len(getattr(runner, "clients", None) or ())
            _workers_seen = max(_workers_seen, workers)
            f.write(json.dumps({
                "t": time.time(), "users": runner.user_count if runner else 0,
                "requests": total.num_requests, "failures": total.num_failures,
                "workers": workers,
            }) + "\n")
            f.flush()
            gevent.sleep(1.0)
