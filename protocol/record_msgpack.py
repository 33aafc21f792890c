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
from protocol.values import HS_SECKEY, MAX_INDEX, HandleValue, ValueReference

FORMAT_VERSION = 1

# msgpack's integer range; anything outside cannot be stored.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# Every error msgpack documents for unpackb, plus TypeError (unhashable map
# keys) and OverflowError: all of them mean "these bytes are not a record".
_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


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
    try:
        obj = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except _UNPACK_ERRORS as exc:
        raise MalformedMessage(f"Record is not valid msgpack: {exc}") from exc
    if type(obj) is not tuple or not obj:
        raise MalformedMessage("Record is not a non-empty array")
    version = obj[0]
    if version != FORMAT_VERSION or type(version) is not int:
        raise MalformedMessage(f"Unsupported record format version {version!r}")
    return tuple(_value_from_tuple(v) for v in obj[1:])


# -- records built from plain rows (batch writes) ---------------------------------

# One value as batch decoders read it: index, type, data, relative ttl,
# permissions; no references. Stored with ttl_absolute False and the stamp.
PlainRow = tuple[int, str, bytes, int, int]

_pack = msgspec.msgpack.Encoder().encode  # the bytes msgpack.packb(use_bin_type) gives


class EncodedRecord(Sequence[HandleValue]):
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

    @overload
    def __getitem__(self, i: int) -> HandleValue: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[HandleValue]: ...
    def __getitem__(self, i: int | slice) -> HandleValue | Sequence[HandleValue]:
        return self._values()[i]

    def __iter__(self) -> Iterator[HandleValue]:
        return iter(self._values())

    def __repr__(self) -> str:
        return f"EncodedRecord({list(self._values())!r})"


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


def _value_from_tuple(v: object) -> HandleValue:
    if type(v) is not tuple or not 7 <= len(v) <= 8:
        raise MalformedMessage("Record value is not an array of 7 or 8 fields")
    index, type_, data, ttl, ttl_absolute, timestamp, permissions = v[:7]
    # type() checks, not isinstance: bool is an int subclass and must not
    # pass for an index, nor an int for ttl_absolute.
    if not (
        type(index) is int
        and type(type_) is str
        and type(data) is bytes
        and type(ttl) is int
        and type(ttl_absolute) is bool
        and type(timestamp) is int
        and type(permissions) is int
    ):
        raise MalformedMessage("Record value has a field of the wrong type")
    references: tuple[ValueReference, ...] = ()
    if len(v) == 8:
        flat = v[7]
        if type(flat) is not tuple or len(flat) % 2:
            raise MalformedMessage("Record value references are not handle/index pairs")
        handles, indexes = flat[::2], flat[1::2]
        if any(type(h) is not str for h in handles) or any(type(i) is not int for i in indexes):
            raise MalformedMessage("Record value reference has a field of the wrong type")
        references = tuple(map(ValueReference, handles, indexes))
    return HandleValue(index, type_, data, ttl, ttl_absolute, timestamp, permissions, references)
