"""``idnode trace HANDLE``: walk traceability links through a node's REST API and print the tree.

The walk goes level by level: every link of one depth is resolved
concurrently (at most ``concurrency`` requests in flight), then the next
depth. Before anything is fetched each link is classified in tree order, so
the output does not depend on which answer came first:

- ``cycle``: the handle is an ancestor of this link (it is not followed);
- ``repeat``: the handle is expanded elsewhere in the tree, where it occurs
  first in level order (its shallowest occurrence);
- ``depth-limit``: deeper than ``max_depth`` (not resolved);
- ``invalid``: the link does not name a handle.

A link that cannot be resolved is shown with why (``not-found``,
``not-responsible``, ``no-values``, ``error``, ``timeout``, ``unreachable``),
and the walk goes on. Handles compare case-insensitively, as the node does.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import HandleError
from protocol.trace_links import links_of
from protocol.values import HandleValue

DEFAULT_MAX_DEPTH: Final = 10
DEFAULT_MAX_NODES: Final = 1000
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_TIMEOUT: Final = 5.0

# Statuses of a tree node.
OK, CYCLE, REPEAT, DEPTH_LIMIT, NODE_LIMIT, INVALID = (
    "ok", "cycle", "repeat", "depth-limit", "node-limit", "invalid")
NOT_FOUND, NOT_RESPONSIBLE, NO_VALUES, ERROR, TIMEOUT, UNREACHABLE = (
    "not-found", "not-responsible", "no-values", "error", "timeout", "unreachable")


@dataclass(frozen=True, slots=True)
class Fetched:
    """A resolution attempt: values, or why there are none."""

    status: str
    values: tuple[HandleValue, ...] = ()
    message: str | None = None


Fetch = Callable[[str], Awaitable[Fetched]]


@dataclass(slots=True)
class TraceNode:
    handle: str
    status: str = OK
    relation: str | None = None  # how the parent links here
    via: str | None = None  # "<index>:<type>" of the parent's value
    message: str | None = None
    children: list[TraceNode] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"handle": self.handle, "status": self.status}
        if self.relation is not None:
            out["relation"] = self.relation
            out["via"] = self.via
        if self.message:
            out["message"] = self.message
        out["children"] = [c.to_json() for c in self.children]
        return out


async def walk(
    root: str,
    fetch: Fetch,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> TraceNode:
    """The trace tree under ``root`` (``max_depth`` 0 resolves only the root)."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def bounded(handle: str) -> Fetched:
        async with gate:
            return await fetch(handle)

    tree = TraceNode(root)
    seen = {_norm(root)}
    # (node to resolve, normalised handles of its ancestors and itself)
    level: list[tuple[TraceNode, frozenset[str]]] = [(tree, frozenset({_norm(root)}))]
    resolved = 0
    depth = 0
    while level:
        results = await asyncio.gather(*(bounded(node.handle) for node, _ in level))
        resolved += len(level)
        next_level: list[tuple[TraceNode, frozenset[str]]] = []
        for (node, path), result in zip(level, results, strict=True):
            node.status, node.message = result.status, result.message
            for link in links_of(result.values):
                child = TraceNode(link.target, relation=link.relation,
                                  via=f"{link.index}:{link.type}")
                node.children.append(child)
                key = _norm(link.target)
                if not link.valid:
                    child.status = INVALID
                elif key in path:
                    child.status = CYCLE
                elif key in seen:
                    child.status = REPEAT
                elif depth + 1 > max_depth:
                    child.status = DEPTH_LIMIT
                elif resolved + len(next_level) >= max_nodes:
                    child.status = NODE_LIMIT
                else:
                    seen.add(key)
                    next_level.append((child, path | {key}))
        level = next_level
        depth += 1
    return tree


def _norm(handle: str) -> str:
    return handle.upper()


def http_fetcher(session: aiohttp.ClientSession, server: str, timeout: float) -> Fetch:
    """Resolve over ``server``'s Handle REST API (as anyone: public values only)."""
    base = server.rstrip("/") + "/api/handles/"
    limit = aiohttp.ClientTimeout(total=timeout)

    async def fetch(handle: str) -> Fetched:
        try:
            async with session.get(base + quote(handle, safe="/"), timeout=limit) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            return Fetched(TIMEOUT, message=f"no answer within {timeout:g} s")
        except aiohttp.ClientError as exc:
            return Fetched(UNREACHABLE, message=str(exc) or type(exc).__name__)
        return _fetched(status, body)

    return fetch


def _fetched(status: int, body: bytes) -> Fetched:
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Fetched(ERROR, message=f"HTTP {status}, not JSON")
    if not isinstance(reply, dict):
        return Fetched(ERROR, message=f"HTTP {status}, unexpected reply")
    rc = reply.get("responseCode")
    message = reply.get("message") if isinstance(reply.get("message"), str) else None
    if rc == RC.SUCCESS:
        try:
            values = tuple(rest_json.decode_values(reply.get("values") or []))
        except HandleError as exc:
            return Fetched(ERROR, message=f"undecodable values: {exc.message}")
        return Fetched(OK, values)
    named = {RC.HANDLE_NOT_FOUND: NOT_FOUND, RC.SERVER_NOT_RESP: NOT_RESPONSIBLE,
             RC.VALUES_NOT_FOUND: NO_VALUES}
    if isinstance(rc, int) and rc in named:
        return Fetched(named[RC(rc)], message=message)
    return Fetched(ERROR, message=f"HTTP {status}, responseCode {rc}" + (
        f": {message}" if message else ""))


# -- output ----------------------------------------------------------------------------


def render(tree: TraceNode) -> str:
    lines = [_label(tree)]

    def children(node: TraceNode, indent: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(f"{indent}{'└── ' if last else '├── '}{_label(child)}")
            children(child, indent + ("    " if last else "│   "))

    children(tree, "")
    return "\n".join(lines)


def _label(node: TraceNode) -> str:
    text = node.handle
    if node.relation is not None:
        text = f"{node.relation} ({node.via}) → {text}"
    if node.status != OK:
        text += f"  [{node.status}{': ' + node.message if node.message else ''}]"
    return text


def count(tree: TraceNode, status: str) -> int:
    return (tree.status == status) + sum(count(c, status) for c in tree.children)


async def trace_command(
    server: str, handle: str, *, max_depth: int, max_nodes: int, concurrency: int,
    timeout: float, as_json: bool,
) -> int:
    """Print the tree; exit 0 if the root resolved (dangling links are shown, not
    failures), 1 if it did not."""
    async with aiohttp.ClientSession() as session:
        tree = await walk(handle, http_fetcher(session, server, timeout),
                          max_depth=max_depth, max_nodes=max_nodes, concurrency=concurrency)
    if as_json:
        sys.stdout.write(orjson.dumps(tree.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(tree))
    return 0 if tree.status == OK else 1
