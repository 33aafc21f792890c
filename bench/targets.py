"""What load is sent to: a node the runner starts, the bare baseline, or a URL given.

A target the runner started has a pid, so its CPU time per request can be
compared across targets even when the load generator, not the server, limits
throughput. Whether it has idnode's /metrics is found out by scraping.
"""

from __future__ import annotations

import base64
import random
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.preload import PreloadedStore
from bench.processes import free_port, free_udp_tcp_port, idnode, listening, pinned, wait_for_port
from bench.scenarios import Scenario
from bench.workload import handle_path, identifier, missing_identifier, put_bodies


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pid: int | None = None  # a local server whose CPU time is counted
    handle_port: int | None = None  # binary Handle protocol (UDP+TCP), for binary scenarios


def _one_worker_unless_asked(extra_args: list[str]) -> list[str]:
    # The node's CPU time is read from its pid: one process unless asked.
    asked = any(a.startswith("--workers") for a in extra_args)
    return extra_args if asked else [*extra_args, "--workers", "1"]


@contextmanager
def node(store: PreloadedStore, log: Path, cpu: int | None,
         extra_args: list[str]) -> Iterator[Target]:
    """``idnode serve`` on the preloaded store: a fresh process, so a cold cache."""
    port = free_port()
    # Binary Handle protocol on a free port (no clash with a node already on 2641),
    # chosen here so the binary scenarios know where to send.
    handle_port = free_udp_tcp_port()
    argv = pinned(cpu, idnode("serve", "--store", str(store.path), "--port", str(port),
                              "--handle-port", str(handle_port), "--log-level", "WARNING",
                              *_one_worker_unless_asked(extra_args)))
    with listening(argv, port, log) as proc:
        wait_for_port(proc, handle_port, log)  # it opens after HTTP
        yield Target("idnode", f"http://127.0.0.1:{port}", proc.pid, handle_port)


@dataclass(frozen=True)
class Replies:
    """The subject's own reply bytes, for the baseline to answer with."""

    get_body: bytes
    get_status: int
    put_body: bytes | None = None
    put_status: int = 201


@contextmanager
def baseline(replies: Replies, work: Path, log: Path, cpu: int | None) -> Iterator[Target]:
    """bench.baseline (bare aiohttp) answering exactly the subject's bytes."""
    port = free_port()
    (work / "get.body").write_bytes(replies.get_body)
    argv = [sys.executable, "-m", "bench.baseline", "--port", str(port),
            "--get-body", str(work / "get.body"), "--get-status", str(replies.get_status)]
    if replies.put_body is not None:
        (work / "put.body").write_bytes(replies.put_body)
        argv += ["--put-body", str(work / "put.body"), "--put-status", str(replies.put_status)]
    with listening(pinned(cpu, argv), port, log) as proc:
        yield Target("baseline", f"http://127.0.0.1:{port}", proc.pid)


def _request(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe(url: str, scenario: Scenario, prefix: str, secret: str, seed: int) -> Replies:
    """Ask the subject once what the scenario asks, and check the preload is there."""
    rng = random.Random(seed)
    if scenario.baseline_get == "found":
        status, body = _request("GET", url + handle_path(identifier(prefix, 0)))
        if status != 200:
            raise RuntimeError(f"{url} does not hold the preloaded {identifier(prefix, 0)} "
                               f"(HTTP {status}): preload it first")
    else:
        status, body = _request("GET", url + handle_path(missing_identifier(prefix, rng)))
    if not scenario.writes:
        return Replies(body, status)
    login = base64.b64encode(f"300%3A{prefix}/ADMIN:{secret}".encode()).decode()
    handle = f"{prefix}/LOAD-PROBE-{secrets.token_hex(4)}"
    put_status, put_body = _request(
        "PUT", url + handle_path(handle), put_bodies(prefix)[0],
        {"Content-Type": "application/json", "Authorization": f"Basic {login}"})
    if put_status != 201:
        raise RuntimeError(f"{url} refused a registration (HTTP {put_status}): {put_body[:200]!r}")
    return Replies(body, status, put_body, put_status)
