"""The baseline every performance claim is measured against: a bare aiohttp app.

One routed handler per method that returns fixed bytes, the same bytes the node
under test answers, so the ratio node/baseline says what the node costs beyond
aiohttp itself.

    python -m bench.baseline --port 9000 --get-body FILE [--get-status 200] ...
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

JSON_TYPE = "application/json;charset=utf-8"


def build_app(
    get_body: bytes, get_status: int, put_body: bytes, put_status: int
) -> web.Application:
    headers = {"Content-Type": JSON_TYPE}

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=get_body, status=get_status, headers=headers)

    async def put(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=put_body, status=put_status, headers=headers)

    app = web.Application()
    app.router.add_get("/api/handles/{handle:.*}", get)
    app.router.add_put("/api/handles/{handle:.*}", put)
    return app


async def serve(args: argparse.Namespace) -> None:
    put_body = Path(args.put_body).read_bytes() if args.put_body else b""
    app = build_app(Path(args.get_body).read_bytes(), args.get_status, put_body, args.put_status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--get-body", required=True)
    parser.add_argument("--get-status", type=int, default=200)
    parser.add_argument("--put-body")
    parser.add_argument("--put-status", type=int, default=201)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
