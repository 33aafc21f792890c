"""Immutable cache entries and the bytes they are charged for."""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field

from protocol.codes import RC
from protocol.values import HandleValue

# Rough per-entry overhead of the Python objects around the payload.
ENTRY_OVERHEAD = 200


@dataclass(slots=True)
class CacheEntry:
    """One resolved key. ``values`` is None for a negative answer (``rc`` says which)."""

    key: str
    values: tuple[HandleValue, ...] | None
    expires: float
    rc: RC = RC.SUCCESS
    # Encodings made on first use, keyed by the encoder's own key (e.g. the
    # handle spelling a reply echoes). Entries are shared by concurrent
    # requests, so an encoding is only ever added, never changed.
    encodings: dict[object, Sized] = field(default_factory=dict)
    size: int = 0
    # Stale-if-error (recursive role): until when an expired copy may still be
    # served if its upstream fails, and whether this entry is such a copy.
    stale_until: float = 0.0
    stale: bool = False
    # The homed prefix this answer counts for in usage statistics
    # (resolver.stats), worked out once here so the hot path only adds 1.
    # "" for "not responsible" answers: they count for no prefix of ours.
    prefix: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.rc != RC.SERVER_NOT_RESP:
            self.prefix = usage_prefix(self.key)


def usage_prefix(key: str) -> str:
    """The prefix a handle key counts for: its own, or for ``0.NA/<prefix>`` the one described."""
    head, _, tail = key.partition("/")
    return tail if head == "0.NA" and tail else head


def record_size(values: tuple[HandleValue, ...] | None) -> int:
    if not values:
        return ENTRY_OVERHEAD
    return ENTRY_OVERHEAD + sum(64 + len(v.type) + len(v.data) for v in values)
