"""A periodic tick on the event loop, finer than its timers: a Linux timerfd.

asyncio's and uvloop's timers have whole-millisecond resolution, and a
``sleep(0.0002)`` either rounds up to 1-2 ms or, at 0, spins a core. An
open-loop generator that sends only at millisecond ticks adds up to that
much to every latency it times from a request's due time. A periodic timerfd
(CLOCK_MONOTONIC) read by the loop wakes it every ``interval`` with tens of
microseconds of jitter, for a few µs of CPU per tick. The standard library
wraps timerfd only from Python 3.13, hence ctypes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return libc if hasattr(libc, "timerfd_create") else None


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


def _timespec(seconds: float) -> _Timespec:
    whole = int(seconds)
    return _Timespec(whole, round((seconds - whole) * 1e9))


class Pacer:
    """Call ``tick()`` on the running loop every ``interval`` seconds until ``stop``."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        if _LIBC is None:
            raise OSError("timerfd is not available here")
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._tick = tick
        self._loop = asyncio.get_running_loop()
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        spec = _Itimerspec(_timespec(interval), _timespec(interval))
        if _LIBC.timerfd_settime(fd, 0, ctypes.byref(spec), None) < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            os.read(self._fd, 8)  # expirations since the last read; one tick covers them
        except BlockingIOError:
            return
        self._tick()

    def stop(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
