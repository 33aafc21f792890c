"""Immutable cache entries and the bytes they are charged for."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass, field

from protocol.codes import RC
from protocol.record_msgpack import StoredRecord
from protocol.values import HandleValue

# What the Python objects around the payload cost, measured with tracemalloc
# (tests/test_cache_memory.py): an entry with its key, slot in the LRU
# dict and encodings dict ~430 B; a HandleValue with its type and data
# objects ~130 B beyond the bytes themselves.
ENTRY_OVERHEAD = 440
VALUE_OVERHEAD = 136
# A record as a store reads it (StoredRecord): the object and its tuple, and
# per value a StoredValue, whose type string is its own (decoded, not interned).
STORED_RECORD_OVERHEAD = 112
STORED_VALUE_OVERHEAD = VALUE_OVERHEAD + 56


@dataclass(slots=True)
class CacheEntry:
    """One resolved key. ``values`` is None for a negative answer (``rc`` says which)."""

    key: str
    values: Sequence[HandleValue] | None
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


def record_size(key: str, values: Sequence[HandleValue] | None) -> int:
    if not values:
        return ENTRY_OVERHEAD + len(key)
    if type(values) is StoredRecord:  # sized from its encoding, without a walk
        return (ENTRY_OVERHEAD + len(key) + STORED_RECORD_OVERHEAD
                + STORED_VALUE_OVERHEAD * len(values) + values.encoded_size)
    return ENTRY_OVERHEAD + len(key) + sum(
        VALUE_OVERHEAD + len(v.type) + len(v.data) for v in values)


def exact_bytes(body: bytes) -> bytes:
    """A copy of ``body`` in an allocation of its own size, for keeping.

    orjson.dumps returns its bytes inside a 4 KiB allocation whatever their
    length (orjson 3.13, measured with tracemalloc): kept as is, a 300-byte
    reply pins 4 KiB and a cache holds ~6x the bytes it is charged for.
    """
    return bytes(memoryview(body))
