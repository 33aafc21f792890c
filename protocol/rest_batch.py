"""``POST /api/handles`` bodies, decoded on the fast path when they have the usual shape.

The usual batch item is ``{"handle", "values"}`` whose values have an int
``index``, an ASCII ``type``, string data (bare or ``{"format": "string"}``)
or admin data, and at most an int ``ttl`` and ``permissions``. msgspec decodes
such a body in C straight into structs (no dict per object, no tracked
garbage for the cycle collector), and each record goes to the stored bytes
(``record_msgpack.plain_record``) without a ``HandleValue`` per value.

A body with anything else (another data format, a timestamp, references,
unknown keys, a value out of range, bad JSON...) is decoded again, whole, by
the general decoder (``rest_json.decode_batch``), which accepts or refuses it
and words the errors: both paths give the same records for what the fast one
accepts (tests/test_rest_batch_decode.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from protocol.errors import HandleError, MalformedMessage
from protocol.record_msgpack import PlainRow, plain_record
from protocol.rest_json import (
    BATCH_LIMIT,
    BatchItem,
    admin_data,
    decode_batch,
    decode_batch_line,
    value_permissions,
)
from protocol.values import DEFAULT_PERMS, DEFAULT_TTL, HandleValue

_I32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]  # json_int's range


class _Admin(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    handle: str
    index: _I32
    permissions: str | None = None


class _Data(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    format: str
    value: str | _Admin


class _Value(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: _I32
    type: str
    data: str | _Data
    ttl: _I32 | None = None
    permissions: str | None = None
    timestamp: None = None  # present and not null: the general decoder's
    references: None = None


class _Item(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    handle: str
    values: list[_Value]


_decode_array = msgspec.json.Decoder(list[_Item]).decode
_decode_item = msgspec.json.Decoder(_Item).decode
# msgspec raises UnicodeDecodeError, not DecodeError, for bytes that are not UTF-8.
_NOT_PLAIN = (msgspec.DecodeError, UnicodeDecodeError)
_PERMS = int(DEFAULT_PERMS)


class _NotPlain(Exception):
    """Something the general decoder must look at."""


def decode_rest_batch(body: bytes, *, ndjson: bool, stamp: int) -> list[BatchItem]:
    """``rest_json.decode_batch`` for writes stamped ``stamp``: the same items (records
    as ``EncodedRecord`` where they pass the write checks), faster for the usual shape."""
    if ndjson:
        return _decode_lines(body, stamp)
    try:
        items = _decode_array(body)
        if len(items) <= BATCH_LIMIT:
            return [_plain_item(item, stamp) for item in items]
    except (*_NOT_PLAIN, _NotPlain):
        pass
    return decode_batch(body, ndjson=False, stamp=stamp)


def _decode_lines(body: bytes, stamp: int) -> list[BatchItem]:
    lines = [line for line in body.splitlines() if line.strip()]
    if len(lines) > BATCH_LIMIT:
        raise MalformedMessage(f"At most {BATCH_LIMIT} records per batch, got {len(lines)}")
    out: list[BatchItem] = []
    for line in lines:
        try:
            out.append(_plain_item(_decode_item(line), stamp))
        except (*_NOT_PLAIN, _NotPlain):
            out.append(decode_batch_line(line, stamp))
    return out


def _plain_item(item: _Item, stamp: int) -> BatchItem:
    if not item.handle:
        raise _NotPlain
    rows: list[PlainRow] = []
    for v in item.values:
        type_, data = v.type, v.data
        if not type_.isascii():
            raise _NotPlain
        if type(data) is str:
            blob = data.encode()
        else:
            value = data.value  # type: ignore[union-attr]
            fmt = data.format  # type: ignore[union-attr]
            if fmt == "string" and type(value) is str:
                blob = value.encode()
            elif fmt == "admin" and type(value) is _Admin:
                try:
                    blob = admin_data(value.handle, value.index, value.permissions)
                except HandleError:
                    raise _NotPlain from None
            else:
                raise _NotPlain
        perms = v.permissions
        rows.append((
            v.index, type_, blob, DEFAULT_TTL if v.ttl is None else v.ttl,
            _PERMS if perms is None else value_permissions(perms),
        ))  # fmt: skip
    record = plain_record(rows, stamp)
    return item.handle, record if record is not None else _handle_values(rows, stamp)


def _handle_values(rows: Sequence[PlainRow], stamp: int) -> list[HandleValue]:
    """What the general decoder gives for these rows: the write path checks them
    and says what is wrong (a duplicate index, ...), or seals an HS_SECKEY."""
    return [HandleValue(i, t, d, ttl, False, stamp, p, ()) for i, t, d, ttl, p in rows]
