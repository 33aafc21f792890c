"""When each HTTP request's bytes were read: the stamp admission control sheds on.

A request's wait is the time from its bytes being read off the socket to its
handler starting. aiohttp parses a read into messages at once
(``RequestHandler.data_received``) but starts each one's handler later, one
at a time per connection and a loop pass or two each: under overload that
queue, not the handler, is where the time goes. ``StampingHandler`` stamps
every message its ``data_received`` queues with the read's time, in a deque
kept parallel to aiohttp's message queue, and ``take_arrival`` hands the
stamp to the request built from it (``request_factory``).

This reaches into aiohttp internals, pinned by
tests/test_overload.py::test_aiohttp_internals_the_arrival_stamps_rely_on, which
fails loudly if aiohttp changes them:

- ``RequestHandler._messages``: the deque ``data_received`` appends parsed
  (message, payload) pairs to, and ``start()`` pops from the left just before
  calling the request factory with no await in between;
- ``RequestHandler._buffer_paused``: set while the queue is full; the parser
  then holds back bytes already read and emits them in later
  ``data_received(b"")`` calls, which get the time of the read that filled the
  queue, not their own (later) time.

Messages aiohttp queues elsewhere (the tail after a declined upgrade) arrive
unstamped, at the queue's head; their requests are stamped when built.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import repeat
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

_clock = time.perf_counter


class StampingHandler(RequestHandler):
    """aiohttp's connection protocol, noting when each queued request was read."""

    __slots__ = ("_arrivals", "_held_since")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrivals: deque[float] = deque()  # parallel to self._messages' tail
        self._held_since: float | None = None  # read time of bytes the parser holds back

    def data_received(self, data: bytes) -> None:
        messages = self._messages
        before = len(messages)
        _queue_messages(self, data)
        added = len(messages) - before
        if data:
            stamp = _clock()
            if self._buffer_paused and self._held_since is None:
                self._held_since = stamp  # the parser may be holding back part of this read
        else:  # a re-parse of held-back bytes: they were read when the queue filled
            stamp = self._held_since if self._held_since is not None else _clock()
            if not self._buffer_paused:
                self._held_since = None
        if added == 1:
            self._arrivals.append(stamp)
        elif added:
            self._arrivals.extend(repeat(stamp, added))

    def take_arrival(self) -> float:
        """The stamp of the message ``start()`` just popped (call from the request factory)."""
        arrivals = self._arrivals
        excess = len(arrivals) - len(self._messages)
        if excess == 1:  # in step: the popped message's stamp is the oldest
            return arrivals.popleft()
        if excess < 1:  # it was queued unstamped
            return _clock()
        for _ in range(excess - 1):  # messages dropped without a request (never seen)
            arrivals.popleft()
        return arrivals.popleft()


_queue_messages = RequestHandler.data_received  # called directly: cheaper than super()


class StampingServer(web.Server):
    """``web.Server`` whose connections are ``StampingHandler``s."""

    def __call__(self) -> RequestHandler:
        return StampingHandler(self, loop=self._loop, **self._kwargs)


class StampedRequest(web.BaseRequest):
    """A request carrying ``arrived``: ``time.perf_counter()`` when its bytes were read."""

    ATTRS = web.BaseRequest.ATTRS | frozenset(["arrived"])
    arrived: float = 0.0
