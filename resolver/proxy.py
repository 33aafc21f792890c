"""Proxy-style resolution like hdl.handle.net: ``GET /{handle}`` redirects to its URL."""

from __future__ import annotations

import html
from collections.abc import Sequence

from aiohttp import web

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import HandleError, NotResponsible
from protocol.values import URL, HandleValue
from resolver.node import Node
from resolver.rest_api import unfiltered_reply


def first_url(values: Sequence[HandleValue]) -> str | None:
    for v in sorted(values, key=lambda v: v.index):
        if v.public_read and v.type.upper() == URL:
            try:
                return v.data.decode("utf-8")
            except UnicodeDecodeError:
                continue
    return None


async def proxy_resolve(node: Node, request: web.BaseRequest, text: str) -> web.StreamResponse:
    handle = node.parse(text)
    entry = await node.resolve(handle)
    node.usage.resolutions[entry.prefix] += 1
    if entry.rc != RC.SUCCESS or entry.values is None:  # referrals too: no record here
        raise NotResponsible() if entry.rc == RC.SERVER_NOT_RESP else HandleError("", entry.rc)
    if "noredirect" not in request.query:
        url = first_url(entry.values)
        if url is not None:
            return web.Response(status=302, headers={"Location": url})
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=_html(text, entry.values), content_type="text/html")
    return web.Response(body=unfiltered_reply(entry, text), content_type="application/json")


def _html(text: str, values: Sequence[HandleValue]) -> str:
    rows = []
    for v in values:
        if not v.public_read:
            continue
        shown = rest_json.value_to_json(v)["data"]["value"]
        rows.append(
            f"<tr><td>{v.index}</td><td>{html.escape(v.type)}</td>"
            f"<td>{html.escape(str(shown))}</td><td>{v.ttl}</td></tr>"
        )
    title = html.escape(text)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><table border='1'><tr><th>Index</th><th>Type</th>"
        f"<th>Data</th><th>TTL</th></tr>{''.join(rows)}</table></body></html>"
    )
