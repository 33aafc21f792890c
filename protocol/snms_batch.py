"""SNMS ``batchCreate``/``batchUpdate`` bodies: the usual shape decoded on a fast path.

The usual item is ``{"handle", "templateVersion", "value": [{"index", "type",
"data": {"format": "string", "value"}, "auth"}]}`` with every field of its
type and within its length, no reserved or repeated index. msgspec decodes
such a body in C straight into structs (no dict per object, no tracked
garbage for the cycle collector); the structs serve as the records' values.

A body with anything else (a numeric string for an index, another format,
unknown fields, bad JSON, too many items...) is parsed again, whole, by
``snms.parse_batch``, which accepts or refuses it and words the errors: both
give the same records for what the fast path accepts
(tests/test_snms_batch_decode.py).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.snms import (
    BATCH_LIMIT,
    MAX_HANDLE,
    MAX_TEMPLATE_VERSION,
    MAX_TYPE,
    MAX_VALUE,
    TEMPLATE_INDEX,
    BatchItem,
    IdentityRecord,
    parse_batch,
)
from protocol.values import MAX_INDEX


class _Data(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    value: Annotated[str, msgspec.Meta(max_length=MAX_VALUE)]
    format: str = "string"


class _Value(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TYPE)]
    data: _Data
    auth: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    @property
    def value(self) -> str:  # snms.ValueInput
        return self.data.value


class _Record(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    handle: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HANDLE)]
    templateVersion: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEMPLATE_VERSION)]
    value: list[_Value]


_decode = msgspec.json.Decoder(list[_Record]).decode
# msgspec raises UnicodeDecodeError, not DecodeError, for bytes that are not UTF-8.
_NOT_PLAIN = (msgspec.DecodeError, UnicodeDecodeError)


def decode_snms_batch(body: bytes) -> list[BatchItem]:
    """``snms.parse_batch(body)``, faster for the usual shape."""
    try:
        records = _decode(body)
    except _NOT_PLAIN:
        return parse_batch(body)
    if not records or len(records) > BATCH_LIMIT:
        return parse_batch(body)  # which refuses the request
    items: list[BatchItem] = []
    for r in records:
        seen: set[int] = set()
        for v in r.value:
            if v.index == TEMPLATE_INDEX or v.data.format != "string" or v.index in seen:
                return parse_batch(body)  # which says what is wrong with the item
            seen.add(v.index)
        items.append((r.handle, IdentityRecord(r.handle, r.templateVersion, tuple(r.value))))
    return items
