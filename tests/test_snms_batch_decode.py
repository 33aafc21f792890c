"""The fast decoding of SNMS batch bodies (protocol.snms_batch) against snms.parse_batch."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import snms
from protocol.record_msgpack import EncodedRecord, encode_record
from protocol.snms_batch import decode_snms_batch
from protocol.values import HS_SECKEY

STAMP = 1_700_000_000


def value(index, kind="name", text="PUMP-1", **extra):
    return {"index": index, "type": kind, "auth": "", "data": {"format": "string", "value": text},
            **extra}


def record(handle="88.100.1/S1", values=None, **extra):
    return {"handle": handle, "templateVersion": "v1.0",
            "value": values if values is not None else [value(2000), value(2001, "URL")], **extra}


def outcome(decode):
    try:
        return decode()
    except snms.SnmsError as exc:
        return type(exc), exc.message


def flat(item):
    text, parsed = item
    if isinstance(parsed, snms.SnmsError):
        return text, type(parsed), parsed.message
    values = [(v.index, v.type, v.value) for v in parsed.values]
    return text, parsed.handle, parsed.template_version, values


def both(body: bytes) -> None:
    fast = outcome(lambda: decode_snms_batch(body))
    general = outcome(lambda: snms.parse_batch(body))
    if not isinstance(fast, list) or not isinstance(general, list):
        assert fast == general
        return
    assert [flat(i) for i in fast] == [flat(i) for i in general]
    for (_, f), (_, g) in zip(fast, general, strict=True):
        if isinstance(g, snms.IdentityRecord):
            assert isinstance(f, snms.IdentityRecord)
            stored, expected = f.stored(STAMP), g.to_handle_values(STAMP)
            assert list(stored) == expected
            if type(stored) is EncodedRecord:
                assert stored.blob == encode_record(expected)


def test_usual_batch_and_its_stored_records():
    body = orjson.dumps([record(f"88.100.1/S{i}") for i in range(3)])
    items = decode_snms_batch(body)
    assert all(type(r.stored(STAMP)) is EncodedRecord for _, r in items)  # type: ignore[union-attr]
    both(body)


@pytest.mark.parametrize("item", [
    record(values=[value(1001)]),  # reserved index
    record(values=[value(2000), value(2000)]),  # repeated index
    record(values=[{**value(2000), "index": "2000"}]),  # digits as a string: accepted
    record(values=[{**value(2000), "data": {"format": "hex", "value": "00"}}]),
    record(values=[{**value(2000), "data": {"value": "x", "colour": 1}}]),
    record(values=[{**value(2000), "auth": None}]),
    record(values=[{**value(2000), "data": {"format": "string", "value": None}}]),
    record(values=None) | {"value": None},
    record(colour="red"),
    record(handle=""),
    record(handle="h" * 256),
    record(values=[value(2000, text="x" * 256)]),
    "88.100.1/S9",
])
def test_other_shapes_take_the_general_parser(item):
    both(orjson.dumps([record("88.100.1/OK"), item]))


def test_values_the_write_path_must_check_stay_handle_values():
    body = orjson.dumps([record(values=[value(300, HS_SECKEY, "secret")])])
    [(_, parsed)] = decode_snms_batch(body)
    assert isinstance(parsed, snms.IdentityRecord)
    assert type(parsed.stored(STAMP)) is list  # sealed by the write path
    both(body)


@pytest.mark.parametrize("body", [
    b"", b"{not json", b"[]", b"{}", b'{"items": []}', b"[1]",
    orjson.dumps([record(f"88.100.1/M{i}") for i in range(2001)]),
    b'[{"handle": "88.100.1/A", "handle": "88.100.1/B", "templateVersion": "v", "value": []}]',
    b'[{"handle": "88.100.1/\\ud800", "templateVersion": "v", "value": []}]',
    b'[{"handle": "88.100.1/\xff", "templateVersion": "v", "value": []}]',
])
def test_odd_bodies_agree(body):
    both(body)


_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=False),
    st.sampled_from(["", "2000", "string", "x" * 255, "x" * 256, "h\u00e9", "\ud800", HS_SECKEY]),
)
_value = st.fixed_dictionaries(
    {"index": st.one_of(st.sampled_from([0, 1, 1001, 2000, 2001, 2**31 - 1, 2**31]), _scalar),
     "type": st.one_of(st.sampled_from(["name", "URL", "t" * 129, ""]), _scalar),
     "data": st.one_of(st.fixed_dictionaries(
         {}, optional={"format": st.one_of(st.just("string"), _scalar),
                       "value": st.one_of(st.text(max_size=5), _scalar),
                       "extra": _scalar}), _scalar)},
    optional={"auth": _scalar, "extra": _scalar},
)
_record = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"handle": st.one_of(st.just("88.100.1/A"), _scalar),
                      "templateVersion": st.one_of(st.just("v1"), _scalar),
                      "value": st.one_of(st.lists(_value, max_size=3), _scalar),
                      "extra": _scalar}),
    _scalar,
)


@settings(max_examples=400)
@given(items=st.one_of(st.lists(_record, max_size=4), _scalar))
def test_any_body_parses_as_the_general_parser_does(items):
    both(json.dumps(items).encode())


_usual_value = st.builds(
    value,
    st.sampled_from([1, 1001, 2000, 2001, 2002, 2**31 - 1]),
    st.sampled_from(["name", "URL", HS_SECKEY, "t" * 128, "t" * 129]),
    st.one_of(st.text(max_size=4), st.sampled_from(["x" * 255, "x" * 256])),
)


@settings(max_examples=300)
@given(records=st.lists(st.lists(_usual_value, max_size=3), min_size=1, max_size=4))
def test_usual_shapes_agree(records):
    both(orjson.dumps([record(f"88.100.1/U{i}", values) for i, values in enumerate(records)]))
