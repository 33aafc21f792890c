"""Run a node: open the store, start the HTTP front end, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from typing import Any

from aiohttp import web

from protocol.handle_wire import SiteInfoReply
from resolver.arrival import StampedRequest, StampingServer
from resolver.auth import Identity
from resolver.config import NodeConfig
from resolver.gc_policy import settle_for_serving
from resolver.handle_service import HandleService
from resolver.handle_site import node_site
from resolver.handle_transport import start_handle_servers
from resolver.homing import Homing
from resolver.http_server import HttpFrontend
from resolver.node import Node

log = logging.getLogger(__name__)


class RunningNode:
    """A started node and its listening sockets (tests start several in one process)."""

    def __init__(self, config: NodeConfig, node: Node | None = None) -> None:
        self.config = config
        self.node = node or Node(config)
        self.frontend = HttpFrontend(self.node)
        self._runner: web.ServerRunner | None = None
        self.port = config.port
        self.handle_port: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.homing: Homing | None = None
        if config.home_at:
            if not (config.home_auth and config.home_secret):
                raise ValueError("--home-at needs --home-auth and --home-secret")
            self.homing = Homing(config.home_at, Identity.parse(config.home_auth),
                                 config.home_secret, refresh=config.home_refresh)

    async def start(self) -> None:
        await self.node.start()
        max_body, loop = self.config.max_body, asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any
                         ) -> web.BaseRequest:
            # aiohttp's default factory fixes client_max_size at 1 MiB.
            request = StampedRequest(message, payload, protocol, writer, task, loop,
                                     client_max_size=max_body)
            request.arrived = protocol.take_arrival()  # for admission (resolver/arrival)
            return request

        server = StampingServer(
            self.frontend.handle,
            request_factory=make_request,
            # No access log unless asked: it halves throughput.
            access_log=logging.getLogger("idnode.access") if self.config.access_log else None,
            keepalive_timeout=self.config.idle_timeout,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=self._ssl_context(),
            reuse_port=self.config.reuse_port or None,
        )
        await site.start()
        if self._runner.addresses:  # the real port when port 0 was asked
            self.port = self._runner.addresses[0][1]
        if self.config.handle_port is not None:
            await self._start_handle_protocol()
        if self.homing is not None:
            if self.handle_port is None:
                raise ValueError("Homing at a top-level needs the binary Handle protocol")
            self.homing.start(node_site(self.config.host, self.handle_port, self.port,
                                        tls=self.config.tls))
        scheme = "https" if self.config.tls else "http"
        log.info(
            "idnode %s node serving %s on %s://%s:%d%s",
            self.config.role, ", ".join(sorted(self.node.homed)) or "no prefixes",
            scheme, self.config.host, self.port,
            f", Handle protocol on udp+tcp port {self.handle_port}" if self.handle_port else "",
        )

    async def _start_handle_protocol(self) -> None:
        assert self.config.handle_port is not None
        site = node_site(self.config.host, self.config.handle_port or 0, self.port,
                         tls=self.config.tls)
        service = HandleService(self.node, site, self.node.sealer.unseal)
        self._udp, self._tcp = await start_handle_servers(
            self.node, service, self.config.host, self.config.handle_port,
            reuse_port=self.config.reuse_port,
        )
        self.handle_port = self._udp.get_extra_info("sockname")[1]
        if not self.config.handle_port:  # asked for any port: describe the real one
            service.site_reply = SiteInfoReply.of(
                node_site(self.config.host, self.handle_port, self.port, tls=self.config.tls)
            )

    async def stop(self) -> None:
        if self.homing is not None:
            await self.homing.stop()  # the site stays homed: a restart is not a move
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.node.stop()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)  # type: ignore[arg-type]
        return context


async def serve_forever(config: NodeConfig) -> None:
    running = RunningNode(config)
    await running.start()
    settle_for_serving()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("Stopping")
        await running.stop()


def run(config: NodeConfig) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform
        asyncio.run(serve_forever(config))
    else:
        uvloop.run(serve_forever(config))
