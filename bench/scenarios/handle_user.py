"""A locust user speaking the binary Handle protocol (RFC 3652) with protocol/'s codecs.

Not HTTP, so a plain locust ``User`` that fires locust's request events itself
(request_type ``UDP`` or ``TCP``): locust's statistics, the runner's reports
and plots treat these requests like any other. A request fails on a timeout
(``--bench-timeout``), a reply that does not decode, or an RC other than 1.

Sockets are the standard library's, which locust's gevent has monkey-patched:
a blocking ``recv`` yields to the other users. UDP uses one connected socket
per user and matches replies by request id (a late reply to an earlier,
timed-out request is skipped); TCP opens one connection per request, as the
protocol's clients do.
"""

from __future__ import annotations

import itertools
import socket
import time
from urllib.parse import urlsplit

from locust import User, constant

from bench.handle_requests import (
    HandleError,
    addressed,
    check_reply,
    reply_request_id,
    resolution_template,
)
from bench.scenarios.common import seeded
from protocol.handle_wire import (
    CLOSED,
    ENV_TRUNCATED,
    NEED_DATA,
    HandleProtocolError,
    Message,
    TcpFramer,
    UdpReassembler,
    decode_response,
)

_request_ids = itertools.count(1)


class HandleUser(User):
    """One closed-loop client of the node's Handle port (``--bench-handle-port``)."""

    abstract = True
    wait_time = constant(0)
    request_type = "UDP"

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.prefix, self.preload, self.user_id, self.rng = seeded(self.environment)
        host = urlsplit(self.host or "").hostname or "127.0.0.1"
        self.address = (host, o.bench_handle_port)
        self.timeout: float = o.bench_timeout

    def resolution(self, handle: str, name: str) -> None:
        request_id = next(_request_ids) & 0xFFFFFFFF or 1
        packet = addressed(resolution_template(handle), request_id, int(time.time()))
        start = time.perf_counter()
        length = 0
        error: Exception | None = None
        try:
            length, reply = self.exchange(packet, request_id)
            check_reply(reply, handle)
        except HandleProtocolError as exc:
            error = HandleError(f"undecodable reply: {exc}")
        except (OSError, HandleError) as exc:  # socket.timeout is an OSError
            error = exc
        self.environment.events.request.fire(
            request_type=self.request_type, name=name,
            response_time=(time.perf_counter() - start) * 1000, response_length=length,
            exception=error, context={})

    def exchange(self, packet: bytes, request_id: int) -> tuple[int, Message]:
        """Send ``packet``, return the reply's length in bytes and its decoded message."""
        raise NotImplementedError


class UdpUser(HandleUser):
    abstract = True
    request_type = "UDP"

    def on_start(self) -> None:
        super().on_start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.address)  # only the node's datagrams arrive
        self.reassembler = UdpReassembler()

    def on_stop(self) -> None:
        self.sock.close()

    def exchange(self, packet: bytes, request_id: int) -> tuple[int, Message]:
        self.sock.send(packet)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no UDP reply in {self.timeout:g} s")
            self.sock.settimeout(left)
            data = self.sock.recv(65535)
            if reply_request_id(data) != request_id:
                continue  # a late reply to a request that already timed out (or a runt)
            if data[2] & ENV_TRUNCATED:  # a reply over 512 bytes comes in fragments
                whole = self.reassembler.add(self.address, data, time.monotonic())
                if whole is None:
                    continue
                data = whole
            return len(data), decode_response(data)[1]


class TcpUser(HandleUser):
    abstract = True
    request_type = "TCP"

    def exchange(self, packet: bytes, request_id: int) -> tuple[int, Message]:
        # One request per connection, as Handle clients do (the node closes after replying).
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.sendall(packet)
            framer = TcpFramer(decode=decode_response)
            length = 0
            while True:
                chunk = sock.recv(65536)
                length += len(chunk)
                framer.receive_data(chunk)
                event = framer.next_message()
                if event is CLOSED:
                    raise HandleError("connection closed before a reply")
                if event is not NEED_DATA:
                    return length, event[1]  # type: ignore[index]
