"""Compact msgpack encoding of a whole record, as the stores keep it.

Layout (format version 1)::

    [1, value, value, ...]
    value = [index, type, data(bin), ttl, ttl_absolute, timestamp, permissions]
          | [index, type, data(bin), ttl, ttl_absolute, timestamp, permissions,
             [ref_handle, ref_index, ref_handle, ref_index, ...]]

The leading integer is the format version: a later layout gets a new number
and ``decode_record`` keeps reading the old ones, so stored records never need
a flag-day rewrite. Values are positional arrays (no map keys repeated per
value) and references are a flat list omitted when empty, which keeps a typical
HS_ADMIN + URL record around 100 bytes.

Sans-IO: bytes in, values out. Corrupt input raises :class:`MalformedMessage`
and nothing else; a value that cannot be represented raises
:class:`InvalidValue` on encode, so whatever ``encode_record`` returns decodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import index as _as_int
from typing import overload

import msgpack
import msgspec

from protocol.errors import InvalidValue, MalformedMessage
from protocol.values import (
    HS_SECKEY,
    MAX_INDEX,
    PUBLIC_READ,
    HandleValue,
    ValueReference,
    ValueView,
)

FORMAT_VERSION = 1

# msgpack's integer range; anything outside cannot be stored.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def encode_record(values: Sequence[HandleValue]) -> bytes:
    """Values → bytes; raises InvalidValue for a field msgpack cannot carry."""
    if type(values) is EncodedRecord:
        return values.blob
    out: list[object] = [FORMAT_VERSION]
    for value in values:
        out.append(_value_to_list(value))
    try:
        return msgpack.packb(out, use_bin_type=True)
    except OverflowError as exc:  # an int beyond 64 bits: say which value
        raise InvalidValue(f"{_out_of_range(values)} has an integer out of range") from exc
    except ValueError as exc:  # UnicodeEncodeError: a lone surrogate
        raise InvalidValue(f"Record cannot be encoded: {exc}") from exc


def decode_record(data: bytes) -> tuple[HandleValue, ...]:
    """Bytes → values; raises MalformedMessage for anything but a valid record."""
    return tuple(v.to_value() for v in decode_stored(data))


class StoredValue(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True,
                  gc=False):
    """One value as a record stores it, type-checked in C as it is decoded.

    Read like a ``HandleValue`` (same field names, ``public_read``,
    ``references``), which ``to_value`` makes. Decoding a record into these
    costs ~0.6 µs against ~4 µs for the ``HandleValue`` objects, so the
    resolve path reads them (``StoredRecord``) and renders replies from them.
    """

    index: int
    type: str
    data: bytes
    ttl: int
    ttl_absolute: bool
    timestamp: int
    permissions: int
    flat_references: tuple[str | int, ...] = ()  # handle, index, handle, index, ...

    @property
    def public_read(self) -> bool:
        return bool(self.permissions & PUBLIC_READ)

    @property
    def references(self) -> tuple[ValueReference, ...]:
        flat = self.flat_references
        if not flat:
            return ()
        return tuple(map(ValueReference, flat[::2], flat[1::2]))  # type: ignore[arg-type]

    def to_value(self) -> HandleValue:
        return HandleValue(self.index, self.type, self.data, self.ttl, self.ttl_absolute,
                           self.timestamp, self.permissions, self.references)


_decode_stored = msgspec.msgpack.Decoder(tuple[int | StoredValue, ...]).decode


def decode_stored(data: bytes) -> tuple[StoredValue, ...]:
    """Bytes → checked ``StoredValue``s; raises MalformedMessage for anything but a valid record."""
    try:
        obj = _decode_stored(data)
    except msgspec.MsgspecError as exc:
        raise MalformedMessage(f"Record is not valid: {exc}") from exc
    if not obj:
        raise MalformedMessage("Record is not a non-empty array")
    version = obj[0]
    if type(version) is not int or version != FORMAT_VERSION:
        raise MalformedMessage(f"Unsupported record format version {version!r}")
    values = obj[1:]
    for v in values:
        if type(v) is not StoredValue:
            raise MalformedMessage("Record value is not an array of 7 or 8 fields")
        if v.flat_references:
            _check_references(v.flat_references)
    return values  # type: ignore[return-value]  # every element checked above


def _check_references(flat: tuple[str | int, ...]) -> None:
    if len(flat) % 2:
        raise MalformedMessage("Record value references are not handle/index pairs")
    if any(type(h) is not str for h in flat[::2]) or any(type(i) is not int for i in flat[1::2]):
        raise MalformedMessage("Record value reference has a field of the wrong type")


def value_views(values: Sequence[HandleValue]) -> Sequence[ValueView]:
    """``values`` to read without making ``HandleValue``s where they are not made yet."""
    return values.stored if type(values) is StoredRecord else values


class _LazyRecord(Sequence[HandleValue]):
    """A record whose ``HandleValue``s are made on first read (``_values``)."""

    __slots__ = ()

    def _values(self) -> tuple[HandleValue, ...]:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> HandleValue: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[HandleValue]: ...
    def __getitem__(self, i: int | slice) -> HandleValue | Sequence[HandleValue]:
        return self._values()[i]

    def __iter__(self) -> Iterator[HandleValue]:
        return iter(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._values())!r})"


class StoredRecord(_LazyRecord):
    """A record as read from a store: ``stored`` holds its checked ``StoredValue``s,
    and the ``HandleValue``s are made from them only if somebody reads them.

    The resolve path reads records like this, so a miss whose reply is
    rendered from ``stored`` (``protocol.rest_json``) never builds a
    ``HandleValue``. Compares equal to the tuple of its values.
    """

    __slots__ = ("_made", "encoded_size", "stored")

    def __init__(self, blob: bytes) -> None:
        self.stored = decode_stored(blob)
        self.encoded_size = len(blob)  # what a cache charges for it, without a walk
        self._made: tuple[HandleValue, ...] | None = None

    def _values(self) -> tuple[HandleValue, ...]:
        if self._made is None:
            self._made = tuple(v.to_value() for v in self.stored)
        return self._made

    def __len__(self) -> int:
        return len(self.stored)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _LazyRecord):
            other = tuple(other)
        return self._values() == other

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, so not hashable


# -- records built from plain rows (batch writes) ---------------------------------

# One value as batch decoders read it: index, type, data, relative ttl,
# permissions; no references. Stored with ttl_absolute False and the stamp.
PlainRow = tuple[int, str, bytes, int, int]

_pack = msgspec.msgpack.Encoder().encode  # the bytes msgpack.packb(use_bin_type) gives


class EncodedRecord(_LazyRecord):
    """A record that is checked (``check_record``), stamped and encoded already:
    ``blob`` is what ``encode_record`` gives for its values, which are decoded
    from it only if somebody reads them. Batch writes build one per record from
    plain rows (:func:`plain_record`) instead of a ``HandleValue`` per value,
    and the stores take ``blob`` as it is."""

    __slots__ = ("_decoded", "blob", "indexes", "timestamp")

    def __init__(self, blob: bytes, timestamp: int, indexes: frozenset[int]) -> None:
        self.blob = blob
        self.timestamp = timestamp  # every value's
        self.indexes = indexes
        self._decoded: tuple[HandleValue, ...] | None = None

    def _values(self) -> tuple[HandleValue, ...]:
        if self._decoded is None:
            self._decoded = decode_record(self.blob)
        return self._decoded

    def __len__(self) -> int:
        return len(self.indexes)


def plain_record(rows: Iterable[PlainRow], timestamp: int) -> EncodedRecord | None:
    """The record of ``rows`` stamped with ``timestamp``, if ``check_record`` would
    pass it and no value needs sealing (HS_SECKEY); None otherwise: the caller
    builds ``HandleValue`` objects instead, and the write path says what is wrong."""
    out: list[object] = [FORMAT_VERSION]
    seen: set[int] = set()
    for index, type_, data, ttl, permissions in rows:
        if (
            not (0 < index <= MAX_INDEX and type_ and 0 <= permissions <= 0x0F
                 and -(2**31) <= ttl < 2**32)
            or type_ == HS_SECKEY
            or index in seen
        ):
            return None
        seen.add(index)
        out.append((index, type_, data, ttl, False, timestamp, permissions))
    return EncodedRecord(_pack(out), timestamp, frozenset(seen))


# -- one value -----------------------------------------------------------------


def _value_to_list(value: HandleValue) -> list[object]:
    # The bulk import path runs this per value: checks are a few type() tests,
    # and msgpack itself refuses out-of-range ints (OverflowError above).
    type_, data = value.type, value.data
    if type(type_) is not str:
        raise InvalidValue(f"Value {value.index!r} has a non-string type")
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidValue(f"Value {value.index!r} has non-bytes data")
        data = bytes(data)
    try:
        # operator.index accepts int subclasses (IntFlag permissions) and
        # refuses floats and str; msgpack packs the result as a plain int.
        fields: list[object] = [
            _as_int(value.index),
            type_,
            data,
            _as_int(value.ttl),
            bool(value.ttl_absolute),
            _as_int(value.timestamp),
            _as_int(value.permissions),
        ]
        if value.references:
            fields.append([x for ref in value.references for x in (ref.handle, _as_int(ref.index))])
    except (TypeError, AttributeError) as exc:  # e.g. a float ttl, a non-reference
        raise InvalidValue(f"Value {value.index!r} has a field of the wrong type: {exc}") from exc
    if value.references and any(type(ref.handle) is not str for ref in value.references):
        raise InvalidValue(f"Value {value.index!r} has a reference with a non-string handle")
    return fields


def _out_of_range(values: Sequence[HandleValue]) -> str:
    for v in values:
        ints = [v.index, v.ttl, v.timestamp, v.permissions, *(r.index for r in v.references)]
        if not all(_INT_MIN <= _as_int(n) <= _INT_MAX for n in ints):
            return f"Value {v.index}"
    return "A value"
