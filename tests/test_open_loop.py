"""bench's open-loop generator: replies parsed as they come, latency timed from due times."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import pacer
from bench.open_loop import FAILED, Phase, Recorded, drive, due_times, get_requests, request_bytes
from bench.reply_parser import ReplyError, ReplyParser, parse_head

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\nRetry-After: 1\r\n\r\n"
        b'{"responseCode":3}')
EMPTY = b"HTTP/1.1 204 No Content\r\n\r\n"
STREAM = OK + BUSY + EMPTY + OK


def test_pipelined_replies_in_one_read() -> None:
    assert ReplyParser().feed(STREAM) == [200, 503, 204, 200]


def test_replies_byte_by_byte() -> None:
    parser = ReplyParser()
    statuses = [s for i in range(len(STREAM)) for s in parser.feed(STREAM[i : i + 1])]
    assert statuses == [200, 503, 204, 200]
    assert parser.pending == 0


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_replies(cuts: list[int]) -> None:
    parser = ReplyParser()
    bounds = [0, *sorted(cuts), len(STREAM)]
    statuses = [s for a, b in itertools.pairwise(bounds)
                for s in parser.feed(STREAM[a:b])]
    assert statuses == [200, 503, 204, 200]


def test_a_reply_cut_inside_its_body_waits_for_the_rest() -> None:
    parser = ReplyParser()
    assert parser.feed(OK[:-1]) == []
    assert parser.pending == len(OK) - 1
    assert parser.feed(OK[-1:] + BUSY[:10]) == [200]
    assert parser.feed(BUSY[10:]) == [503]


@pytest.mark.parametrize("head, message", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", "chunked"),
    (b"HTTP/1.1 200 OK\r\nServer: x", "without Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1", "bad Content-Length"),
    (b"HTTP/1.1 2x0 OK\r\nContent-Length: 1", "bad status"),
    (b"SSH-2.0-OpenSSH", "not an HTTP"),
])
def test_what_is_not_a_length_delimited_reply_is_refused(head: bytes, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        parse_head(head)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(ReplyError, match="too long"):
        ReplyParser().feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000)


def test_requests_are_encoded_whole() -> None:
    assert get_requests("h:1", ["/a"]) == [b"GET /a HTTP/1.1\r\nHost: h:1\r\n\r\n"]
    put = request_bytes("PUT", "/b", "h", {"Authorization": "Basic x"}, b"{}")
    assert put == (b"PUT /b HTTP/1.1\r\nHost: h\r\nAuthorization: Basic x\r\n"
                   b"Content-Length: 2\r\n\r\n{}")
    assert due_times([Phase(0.5, 400), Phase(1, 0), Phase(0.5, 200)]) == [
        (0.0, 1 / 400, 200), (0.5, 0.0, 0), (1.5, 1 / 200, 100)]


class StallingServer:
    """An HTTP server on its own thread and loop: answers each request with OK, and
    can block its loop (``stall_at`` s after the first request, for ``stall`` s) or
    close each connection instead of answering its ``close_after``-th request."""

    def __init__(self, stall_at: float = -1, stall: float = 0, close_after: int = 0) -> None:
        self.stall_at, self.stall, self.close_after = stall_at, stall, close_after
        self.first: float | None = None
        self.requests = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Answer(self), "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> StallingServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class _Answer(asyncio.Protocol):
    def __init__(self, server: StallingServer) -> None:
        self.server, self.buffer, self.count = server, b"", 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        server = self.server
        self.buffer += data
        *requests, self.buffer = self.buffer.split(b"\r\n\r\n")
        for _ in requests:
            now = time.perf_counter()
            if server.first is None:
                server.first = now
            if server.stall and now - server.first >= server.stall_at:
                time.sleep(server.stall)  # the whole server stops, as a busy loop would
                server.stall = 0
            self.count += 1
            if server.close_after and self.count >= server.close_after:
                self.transport.close()  # this request, and any behind it, unanswered
                return
            server.requests += 1
            self.transport.write(OK)  # type: ignore[attr-defined]


async def test_a_stall_delays_every_request_due_during_it() -> None:
    """Coordinated omission avoided: requests keep going out (and being timed from their
    due time) while the server answers nothing; a closed loop on 4 connections would
    time at most 4 requests as slow."""
    with StallingServer(stall_at=0.3, stall=0.3) as server:
        request = get_requests("x", ["/"])[0]
        recorded = await drive("127.0.0.1", server.port, [Phase(1.0, 1000)], lambda n: request,
                               connections=4)
    assert len(recorded) == 1000 and set(recorded.status) == {200}
    dues = list(recorded.due)
    assert sorted(dues) == pytest.approx([i / 1000 for i in range(1000)])
    slow = sum(1 for latency in recorded.latency if latency > 0.1)
    assert slow > 150, slow  # ~200 were due in the stall's first 0.2 s
    assert max(recorded.latency) > 0.25


async def test_phases_change_the_rate() -> None:
    with StallingServer() as server:
        request = get_requests("x", ["/"])[0]
        recorded = await drive("127.0.0.1", server.port, [Phase(0.4, 500), Phase(0.4, 100)],
                               lambda n: request, connections=3)
    dues = sorted(recorded.due)
    assert len(dues) == 240
    assert sum(1 for d in dues if d < 0.399) == 200
    assert server.requests == 240


async def test_a_lost_connection_fails_its_requests_and_is_reopened() -> None:
    with StallingServer(close_after=50) as server:
        request = get_requests("x", ["/"])[0]
        recorded = await drive("127.0.0.1", server.port, [Phase(1.0, 400)], lambda n: request,
                               connections=2)
    statuses = list(recorded.status)
    assert len(statuses) == 400
    assert statuses.count(200) >= 150  # answered on the first and later connections
    assert statuses.count(FAILED) > 0  # pipelined behind a close: never answered
    assert statuses.count(200) + statuses.count(FAILED) == 400


@pytest.mark.skipif(not pacer.available(), reason="no timerfd")
async def test_the_pacer_ticks_finer_than_a_millisecond() -> None:
    ticks: list[float] = []
    ticker = pacer.Pacer(0.0002, lambda: ticks.append(time.perf_counter()))
    await asyncio.sleep(0.2)
    ticker.stop()
    ticker.stop()  # idempotent
    assert len(ticks) > 300  # ~1000 on an idle machine; a 1 ms timer gives <= 200
    gaps = sorted(b - a for a, b in itertools.pairwise(ticks))
    assert gaps[len(gaps) // 2] < 0.0008


def test_windows_split_admitted_shed_and_errors_by_due_time() -> None:
    from bench.overload import completed_per_second, window

    recorded = Recorded()
    for i in range(100):  # second 0: 90 admitted at 1..90 ms, 10 shed at 0.5 ms
        recorded.add(i / 100, 0.0005 if i % 10 == 0 else (i + 1) / 1000, 503 if i % 10 == 0
                     else 200)
    recorded.add(1.2, 3.0, FAILED)  # second 1: a request never answered, and a 500
    recorded.add(1.5, 0.001, 500)
    first = window(recorded, 0, 1)
    assert (first.requests, first.admitted, first.shed, first.errors) == (100, 90, 10, 0)
    assert first.admitted_p99_ms == 100.0 and first.shed_p99_ms == 0.5
    assert first.statuses == {"200": 90, "503": 10}
    second = window(recorded, 1, 2)
    assert (second.requests, second.errors, second.admitted_p99_ms) == (2, 2, None)
    assert second.statuses == {"500": 1, "none": 1}
    # Completions: by when the reply came (due + latency), failures excluded; the
    # admitted requests due from 0.91 s on were answered after 1 s.
    assert completed_per_second(recorded, 0, 1) == 91
    assert completed_per_second(recorded, 1, 2) == 9 + 1
