"""The scenario registry: every load scenario the runner knows, by name.

A scenario is a locustfile next to this module plus what the runner needs to
know around it: which node latency histogram (transport, routes) measures it,
and what the bare baseline must answer to stand in for the node. The binary
Handle protocol scenarios have no baseline: a bare aiohttp app does not speak
it, so ``compare`` measures the node alone for them; nor for the batch
registrations, whose identifiers/s are read beside resolve-hot's rate from the
same invocation. A resolver hierarchy registers here the same way when the
node speaks it.

This module does not import locust: the runner reads the registry without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: Path
    description: str
    # The node's idnode_request_duration_seconds labels that time these requests.
    transport: str = "http"
    node_routes: tuple[str, ...] = ("resolve",)
    # What the baseline answers a GET with: a preloaded record's bytes or the 404 bytes.
    baseline_get: Literal["found", "missing"] = "found"
    writes: bool = False  # PUTs, so the baseline also needs the node's 201 bytes
    node_args: tuple[str, ...] = ()  # `idnode serve` options when the runner starts the node
    # False for the binary protocol: the baseline and HTTP peers cannot answer it;
    # and for batch registrations, whose figure is identifiers/s beside resolve-hot's.
    baseline: bool = True
    batched: bool = False  # --batch-size identifiers per request: report identifiers/s


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("resolve-hot", HERE / "resolve_hot.py",
                 "GET preloaded identifiers with Zipf popularity (a few are most of the load)"),
        # A cache far smaller than the preload keeps every repetition cold, as on a
        # node whose identifiers outnumber its cache many times (~2,000 records fit).
        Scenario("resolve-cold", HERE / "resolve_cold.py",
                 "GET preloaded identifiers uniformly; the node's cache holds ~2,000 records, "
                 "so nearly every request is a store lookup",
                 node_args=("--cache-size", "1M")),
        Scenario("resolve-missing", HERE / "resolve_missing.py",
                 "GET identifiers that do not exist (404, negative cache)",
                 baseline_get="missing"),
        Scenario("register-single", HERE / "register_single.py",
                 "PUT a new identifier per request (REST, admin credentials)",
                 node_routes=("write",), writes=True),
        Scenario("mixed", HERE / "mixed.py",
                 "Zipf resolves with a share of new registrations (--write-ratio)",
                 node_routes=("resolve", "write"), writes=True),
        # The node times UDP resolutions answered from its cache as route "resolve",
        # the others (cache misses) as "other"; TCP has one route for every request.
        Scenario("binary-udp", HERE / "binary_udp.py",
                 "Binary Handle protocol RESOLUTION over UDP, Zipf popularity as resolve-hot "
                 "(no baseline: bare aiohttp does not speak it)",
                 transport="udp", node_routes=("resolve", "other"), baseline=False),
        Scenario("binary-tcp", HERE / "binary_tcp.py",
                 "Binary Handle protocol RESOLUTION over TCP, one connection per request, "
                 "Zipf popularity (no baseline)",
                 transport="tcp", node_routes=("request",), baseline=False),
        # POST /api/handles is timed as the node's "list" route (the handles collection).
        Scenario("register-batch", HERE / "register_batch.py",
                 "POST a batch of --batch-size new identifiers per request to /api/handles "
                 "(REST, admin credentials; no baseline)",
                 node_routes=("list",), baseline=False, batched=True),
        Scenario("register-batch-snms", HERE / "register_batch_snms.py",
                 "SNMS batchCreate of --batch-size new identifiers per request (bearer token "
                 "of the runner's SNMS account; no baseline)",
                 node_routes=("snms",), baseline=False, batched=True),
    )
}


def locustfiles(names: list[str] | None = None) -> str:
    """Comma-separated locustfiles, as ``locust -f`` takes several (a worker serving all)."""
    chosen = [SCENARIOS[n] for n in names] if names else list(SCENARIOS.values())
    return ",".join(str(s.locustfile) for s in chosen)
