"""The fast decoding of REST batch bodies (protocol.rest_batch) against the general one."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import HandleError
from protocol.record_msgpack import EncodedRecord, encode_record
from protocol.rest_batch import decode_rest_batch
from protocol.rest_json import decode_batch
from protocol.values import HS_SECKEY, check_record

STAMP = 1_700_000_000
URL = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/"}}
ADMIN = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
    "handle": "88.100.1/ADMIN", "index": 300, "permissions": "111111111111"}}}


def outcome(decode):
    try:
        return decode()
    except HandleError as exc:
        return type(exc), exc.message


def same_items(fast, general) -> None:
    """Item by item: the same handle, error or values; an EncodedRecord only where
    the write path would take the general decoder's values as they are."""
    if not isinstance(fast, list) or not isinstance(general, list):
        assert fast == general  # the whole body refused alike
        return
    assert len(fast) == len(general)
    for (f_handle, f_values), (g_handle, g_values) in zip(fast, general, strict=True):
        assert f_handle == g_handle
        if isinstance(g_values, HandleError):
            assert isinstance(f_values, HandleError)
            assert (type(f_values), f_values.message) == (type(g_values), g_values.message)
            continue
        assert list(f_values) == list(g_values)
        if type(f_values) is EncodedRecord:
            check_record(g_values)  # passes: the write path stores them as they are
            assert all(v.type != HS_SECKEY and v.timestamp == STAMP for v in g_values)
            assert f_values.blob == encode_record(list(g_values))
            assert f_values.indexes == {v.index for v in g_values}


def both(body: bytes, *, ndjson: bool = False) -> None:
    fast = outcome(lambda: decode_rest_batch(body, ndjson=ndjson, stamp=STAMP))
    general = outcome(lambda: decode_batch(body, ndjson=ndjson, stamp=STAMP))
    same_items(fast, general)


def test_usual_batch_is_encoded_without_handle_values():
    items = [{"handle": f"88.100.1/B{i}", "values": [URL, ADMIN]} for i in range(3)]
    decoded = decode_rest_batch(orjson.dumps(items), ndjson=False, stamp=STAMP)
    assert all(type(values) is EncodedRecord for _, values in decoded)
    both(orjson.dumps(items))


@pytest.mark.parametrize("item", [
    {"handle": "88.100.1/X", "values": [URL, {**URL, "timestamp": 5}]},  # a timestamp
    {"handle": "88.100.1/X", "values": [{**URL, "references": [{"handle": "a/b", "index": 1}]}]},
    {"handle": "88.100.1/X", "values": [URL], "colour": "red"},  # unknown field
    {"handle": "", "values": [URL]},
    {"handle": "88.100.1/X", "values": [{**URL, "data": {"format": "base64", "value": "AA=="}}]},
    {"handle": "88.100.1/X", "values": [{**URL, "index": 2**31}]},
    {"handle": "88.100.1/X", "values": [{**URL, "type": "t\u00e9"}]},
    {"handle": "88.100.1/X", "values": [{**URL, "ttl": "2030-01-01T00:00:00Z"}]},
    {"handle": "88.100.1/X", "values": [{**ADMIN, "data": {"format": "admin", "value": {
        "handle": "88.100.1/ADMIN", "index": 300, "legacyByteLength": True}}}]},
])
def test_other_shapes_take_the_general_decoder(item):
    body = orjson.dumps([{"handle": "88.100.1/OK", "values": [URL]}, item])
    decoded = decode_rest_batch(body, ndjson=False, stamp=STAMP)
    assert all(type(values) is not EncodedRecord for _, values in decoded)
    both(body)


@pytest.mark.parametrize("values", [
    [URL, URL],  # duplicate index: the write path refuses it
    [{**URL, "index": 0}],
    [{**URL, "type": ""}],
    [{"index": 300, "type": HS_SECKEY, "data": "secret"}],  # sealed by the write path
])
def test_records_the_write_path_must_check_stay_handle_values(values):
    body = orjson.dumps([{"handle": "88.100.1/X", "values": values}])
    [(_, decoded)] = decode_rest_batch(body, ndjson=False, stamp=STAMP)
    assert type(decoded) is list
    both(body)


def test_ndjson_lines_decoded_one_by_one():
    lines = [orjson.dumps({"handle": "88.100.1/N1", "values": [URL]}), b"{broken",
             orjson.dumps({"handle": "88.100.1/N2", "values": [URL], "x": 1}), b"  ",
             orjson.dumps({"handle": "88.100.1/N3", "values": [ADMIN]})]
    body = b"\n".join(lines)
    decoded = decode_rest_batch(body, ndjson=True, stamp=STAMP)
    assert [type(v).__name__ for _, v in decoded] == [
        "EncodedRecord", "MalformedMessage", "MalformedMessage", "EncodedRecord"]
    both(body, ndjson=True)


@pytest.mark.parametrize("body", [
    b"", b"{not json", b"{}", b'{"handle": "a/b", "values": []}', b"[1, 2]",
    b'[{"handle": "a/b", "values": [], "handle": "a/c"}]',  # duplicate key: the last counts
    b'[{"handle": "a/\\ud800", "values": []}]', b"\xef\xbb\xbf[]", b'[{"handle": "a/\xff"}]',
    orjson.dumps([{"handle": f"88.100.1/M{i}", "values": [URL]} for i in range(2001)]),
])
def test_odd_bodies_agree(body):
    both(body)
    both(body, ndjson=True)


# -- property: any body of value-like objects -------------------------------------

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=False),
    st.sampled_from(["", "1110", "*", "0101", "abc", "\ud800", "h\u00e9llo", "string", "admin",
                     HS_SECKEY, "2030-01-01T00:00:00Z"]),
)
_admin = st.fixed_dictionaries(
    {"handle": st.one_of(st.sampled_from(["0.NA/88.1", "h\u00e9", "\ud800", ""]), _scalar),
     "index": st.one_of(st.integers(-(2**32), 2**32), _scalar)},
    optional={"permissions": st.one_of(st.sampled_from(["111111111111", "0101", "*"]), _scalar),
              "legacyByteLength": _scalar},
)
_data = st.one_of(
    st.text(max_size=6),
    st.fixed_dictionaries(
        {"format": st.sampled_from(["string", "String", "admin", "hex", "base64"]),
         "value": st.one_of(st.text(max_size=6), _admin, _scalar)},
        optional={"extra": _scalar}),
    _scalar,
)
_value = st.fixed_dictionaries(
    {"index": st.one_of(st.integers(-3, 5), st.integers(-(2**32), 2**32), _scalar),
     "type": st.one_of(st.sampled_from(["URL", "HS_ADMIN", HS_SECKEY, "", "t\u00e9"]), _scalar),
     "data": _data},
    optional={"ttl": st.one_of(st.integers(-(2**32), 2**33), _scalar),
              "permissions": _scalar, "timestamp": _scalar,
              "references": st.one_of(st.none(), st.just([])), "auth": _scalar},
)
_item = st.one_of(
    st.fixed_dictionaries(
        {"handle": st.one_of(st.sampled_from(["88.100.1/A", "88.100.1/b", ""]), _scalar),
         "values": st.one_of(st.lists(_value, max_size=4), _scalar)},
        optional={"extra": _scalar}),
    _scalar,
)


@settings(max_examples=400)
@given(items=st.lists(_item, max_size=5))
def test_any_body_decodes_as_the_general_decoder_does(items):
    body = json.dumps(items).encode()  # escapes lone surrogates, as a client might send them
    both(body)
    both(b"\n".join(json.dumps(item).encode() for item in items), ndjson=True)


_plain_value = st.fixed_dictionaries(
    {"index": st.integers(1, 6),
     "type": st.sampled_from(["URL", "HS_ADMIN", "EMAIL", HS_SECKEY]),
     "data": st.one_of(st.text(max_size=6), st.fixed_dictionaries(
         {"format": st.just("string"), "value": st.text(max_size=6)}))},
    optional={"ttl": st.integers(-(2**31), 2**31 - 1),
              "permissions": st.sampled_from(["1110", "*", "0101", "11111", "", "x"])},
)


@settings(max_examples=300)
@given(records=st.lists(st.lists(_plain_value, max_size=4), min_size=1, max_size=4))
def test_usual_values_agree_byte_for_byte(records):
    items = [{"handle": f"88.100.1/R{i}", "values": values} for i, values in enumerate(records)]
    both(orjson.dumps(items))
