"""The CLI's client side: resolve, register and delete on a node over its REST API."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

import aiohttp
import orjson

from protocol import rest_json
from protocol.codes import RC
from protocol.errors import HandleError
from resolver import handle_client
from resolver.admin_tasks import CommandError


def _url(server: str, handle: str) -> str:
    return f"{server.rstrip('/')}/api/handles/{quote(handle, safe='/')}"


def _auth(args: argparse.Namespace) -> dict[str, str]:
    if not args.secret:
        raise CommandError("no secret: pass --secret or set IDNODE_SECRET")
    # Handle.Net clients percent-encode the colon of index:handle.
    return {"Authorization": aiohttp.encode_basic_auth(quote(args.auth, safe="/"), args.secret)}


async def _show(response: aiohttp.ClientResponse) -> int:
    body = await response.read()
    try:
        print(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode())
    except orjson.JSONDecodeError:
        print(body.decode(errors="replace"))
    return 0 if response.status < 400 else 1


async def resolve(server: str, handle: str, types: list[str], indexes: list[int]) -> int:
    params = [("type", t) for t in types] + [("index", str(i)) for i in indexes]
    async with aiohttp.ClientSession() as session, session.get(
        _url(server, handle), params=params
    ) as response:
        return await _show(response)


def _values_from_args(args: argparse.Namespace) -> list[dict[str, object]]:
    if args.json:
        with open(args.json, "rb") as f:
            body = orjson.loads(f.read())
        return body["values"] if isinstance(body, dict) else body
    values: list[dict[str, object]] = []
    for number, spec in enumerate(args.value, 1):
        head, eq, data = spec.partition("=")
        if not eq:
            raise CommandError(f"--value {spec!r}: expected TYPE=DATA or INDEX:TYPE=DATA")
        index_text, colon, type_ = head.partition(":")
        index = int(index_text) if colon else number
        values.append({"index": index, "type": type_ if colon else head,
                       "data": {"format": "string", "value": data}})
    if not values:
        raise CommandError("give values with --value or --json")
    return values


async def register(args: argparse.Namespace) -> int:
    body = orjson.dumps({"values": _values_from_args(args)})
    params = {"overwrite": "false"} if args.no_overwrite else {}
    connector = aiohttp.TCPConnector(ssl=False) if args.insecure else None
    async with aiohttp.ClientSession(connector=connector) as session, session.put(
        _url(args.server, args.handle), data=body, params=params,
        headers={"Content-Type": "application/json", **_auth(args)},
    ) as response:
        return await _show(response)


async def delete(args: argparse.Namespace) -> int:
    params = [("index", str(i)) for i in args.index]
    connector = aiohttp.TCPConnector(ssl=False) if args.insecure else None
    async with aiohttp.ClientSession(connector=connector) as session, session.delete(
        _url(args.server, args.handle), params=params, headers=_auth(args)
    ) as response:
        return await _show(response)




async def resolve_binary(args: argparse.Namespace) -> int:
    """``idnode resolve --udp|--tcp``: print the reply as the REST API would show it."""
    host, _, port_text = (args.server or "127.0.0.1:2641").rpartition(":")
    if not host or not port_text.isdigit():
        raise CommandError(f"--server {args.server!r}: expected HOST:PORT")
    resolve = handle_client.resolve_udp if args.udp else handle_client.resolve_tcp
    try:
        result = await resolve(host.strip("[]"), int(port_text), args.handle,
                               types=tuple(args.type), indexes=tuple(args.index))
    except (OSError, TimeoutError, HandleError) as exc:
        raise CommandError(f"{args.server}: {exc or type(exc).__name__}") from None
    if result.rc == RC.SUCCESS:
        body = rest_json.resolve_reply(result.handle, result.values)
    else:
        body = rest_json.error_reply(result.rc, args.handle, result.message or None)
    print(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode())
    print(f"({result.transport})", file=sys.stderr)
    return 0 if result.rc == RC.SUCCESS else 1
