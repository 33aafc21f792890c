"""protocol.record_msgpack: round trips over arbitrary values, and corrupt input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidValue, MalformedMessage
from protocol.record_msgpack import (
    FORMAT_VERSION,
    EncodedRecord,
    StoredRecord,
    StoredValue,
    decode_record,
    encode_record,
    plain_record,
    value_views,
)
from protocol.values import (
    DEFAULT_PERMS,
    HS_SECKEY,
    HandleValue,
    Perm,
    ValueReference,
    check_record,
)

# msgpack carries 64-bit integers; the model's own ranges (index, i32/u32
# ttl, u32 timestamp, 4-bit permissions) are inside, and hypothesis favours
# the boundaries of what it is given.
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
MODEL_INT = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**32 - 1),
    st.sampled_from([0, 1, 0x7FFFFFFF, -(2**31), 2**32 - 1, -(2**63), 2**64 - 1]),
    INT64,
)

references = st.builds(ValueReference, handle=st.text(max_size=40), index=MODEL_INT)

handle_values = st.builds(
    HandleValue,
    index=MODEL_INT,
    type=st.text(max_size=30),  # unicode, empty included: the codec does not validate
    data=st.binary(max_size=300),
    ttl=MODEL_INT,
    ttl_absolute=st.booleans(),
    timestamp=MODEL_INT,
    permissions=MODEL_INT,
    references=st.lists(references, max_size=4).map(tuple),
)

records = st.lists(handle_values, max_size=8)


def _decodes_or_malformed(data: bytes) -> None:
    """The corrupt-input contract: a valid record or MalformedMessage, nothing else."""
    try:
        values = decode_record(data)
    except MalformedMessage:
        return
    assert isinstance(values, tuple)
    for value in values:
        assert isinstance(value, HandleValue)
        assert type(value.index) is int and type(value.type) is str
        assert type(value.data) is bytes and type(value.ttl_absolute) is bool
        assert all(isinstance(ref, ValueReference) for ref in value.references)
    # Whatever decodes must re-encode to something that decodes the same.
    assert decode_record(encode_record(values)) == values
    # The resolve path's lazy reading agrees with it, value for value.
    stored = StoredRecord(data)
    assert stored == values and len(stored) == len(values)


# -- round trips -------------------------------------------------------------


@given(records)
@settings(max_examples=300)
def test_round_trip(values: list[HandleValue]) -> None:
    data = encode_record(values)
    assert decode_record(data) == tuple(values)


@given(records)
def test_encoding_is_deterministic(values: list[HandleValue]) -> None:
    assert encode_record(values) == encode_record(list(values))


def test_empty_record_round_trips() -> None:
    assert decode_record(encode_record([])) == ()


def test_layout_has_version_marker_and_omits_empty_references() -> None:
    plain = HandleValue(1, "URL", b"https://example.com", timestamp=1700000000)
    with_refs = HandleValue(2, "HS_VLIST", b"", references=(ValueReference("0.NA/88", 300),))
    obj = msgpack.unpackb(encode_record([plain, with_refs]))
    assert obj[0] == FORMAT_VERSION == 1
    assert obj[1] == [1, "URL", b"https://example.com", 86400, False, 1700000000, 14]
    assert obj[2][7] == ["0.NA/88", 300]
    assert len(obj[2]) == 8


def test_record_is_compact() -> None:
    # A typical HS_ADMIN + URL record; the store sizes its pages on this.
    admin = HandleValue(100, "HS_ADMIN", b"\x0f\xff" + b"\x00" * 4 + b"0.NA/88.1" + b"\x00" * 4)
    url = HandleValue(1, "URL", b"https://example.com/p/000123", timestamp=1700000000)
    data = encode_record([admin, url])
    payload = len(admin.type) + len(admin.data) + len(url.type) + len(url.data)
    # Framing: 2 bytes for the record, at most 17 per value with every field
    # present (a map layout would spend ~70 on field names alone).
    assert len(data) - payload <= 2 + 2 * 17


def test_int_subclasses_and_buffers_are_normalised() -> None:
    value = HandleValue(1, "URL", bytearray(b"abc"), permissions=DEFAULT_PERMS | Perm.PUBLIC_WRITE)  # type: ignore[arg-type]
    (back,) = decode_record(encode_record([value]))
    assert back.data == b"abc" and type(back.data) is bytes
    assert back.permissions == 0x0F and type(back.permissions) is int


@pytest.mark.parametrize(
    "value",
    [
        HandleValue(2**64, "URL"),
        HandleValue(1, "URL", ttl=-(2**63) - 1),
        HandleValue(1, "URL", timestamp=2**70),
        HandleValue(1, "URL", references=(ValueReference("a/b", 2**64),)),
        HandleValue(1.5, "URL"),  # type: ignore[arg-type]
        HandleValue(1, 7),  # type: ignore[arg-type]
        HandleValue(1, "URL", "text, not bytes"),  # type: ignore[arg-type]
        HandleValue(1, "URL", references=(ValueReference(5, 1),)),  # type: ignore[arg-type]
        HandleValue(1, "\ud800"),  # lone surrogate: not UTF-8
    ],
)
def test_unrepresentable_value_is_invalid_value(value: HandleValue) -> None:
    with pytest.raises(InvalidValue):
        encode_record([value])


# -- corrupt input -----------------------------------------------------------


@given(st.binary(max_size=200))
@settings(max_examples=500)
@example(b"")
@example(b"\xc1")  # never used
@example(b"\x91\x01\x00")  # trailing data
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4G items
@example(b"\xc6\xff\xff\xff\xff")  # bin32 claiming 4G bytes
@example(b"\x91" * 5000)  # deeper than msgpack's stack
def test_junk_bytes(data: bytes) -> None:
    _decodes_or_malformed(data)


@given(records.filter(bool), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_records(values: list[HandleValue], data: st.DataObject) -> None:
    encoded = bytearray(encode_record(values))
    cut = data.draw(st.integers(0, len(encoded)), label="cut")
    _decodes_or_malformed(bytes(encoded[:cut]))
    pos = data.draw(st.integers(0, len(encoded) - 1), label="pos")
    encoded[pos] = data.draw(st.integers(0, 255), label="byte")
    _decodes_or_malformed(bytes(encoded))


msgpack_objects = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
    lambda kids: st.lists(kids, max_size=9) | st.dictionaries(st.text(max_size=5), kids),
    max_leaves=30,
)


@given(msgpack_objects)
@settings(max_examples=300)
def test_well_formed_msgpack_of_the_wrong_shape(obj: object) -> None:
    _decodes_or_malformed(msgpack.packb(obj, use_bin_type=True))


@given(msgpack_objects)
def test_wrong_shape_inside_a_versioned_record(obj: object) -> None:
    _decodes_or_malformed(msgpack.packb([FORMAT_VERSION, obj], use_bin_type=True))


GOOD = [1, "URL", b"x", 86400, False, 0, 14]


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"v": 1},
        [2, GOOD],  # a future format version
        [True, GOOD],  # bool is not the version int
        [1.0, GOOD],
        [1, GOOD[:6]],
        [1, [*GOOD, ["a/b", 1], "extra"]],
        [1, [True, *GOOD[1:]]],  # bool index
        [1, [1, b"URL", *GOOD[2:]]],  # bin type
        [1, [1, "URL", "x", *GOOD[3:]]],  # str data
        [1, [*GOOD[:4], 0, *GOOD[5:]]],  # int for ttl_absolute
        [1, [*GOOD[:6], 14.0]],
        [1, [*GOOD, ["a/b"]]],  # odd reference list
        [1, [*GOOD, ["a/b", "1"]]],
        [1, [*GOOD, [1, 1]]],
        [1, [*GOOD, "a/b"]],
    ],
)
def test_wrong_shapes_are_malformed(obj: object) -> None:
    with pytest.raises(MalformedMessage):
        decode_record(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    "data",
    [
        b"\x92\x01\xc7\x01\x05\x00",  # ext type where a value belongs
        b"\x92\x01\xd6\xff\x00\x00\x00\x00",  # msgpack Timestamp ext
        b"\x92\x01\xa2\xff\xfe",  # str that is not UTF-8
        b"\x92\x01\x81\x01\x02",  # map with an int key
        bytes([0x91, 0x01]) + b"\x00",
    ],
)
def test_corrupt_bytes_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_record(data)


def test_valid_record_with_references_decodes() -> None:
    data = msgpack.packb([1, [*GOOD, ["a/b", 1, "c/d", -2]]], use_bin_type=True)
    (value,) = decode_record(data)
    assert value.references == (ValueReference("a/b", 1), ValueReference("c/d", -2))


# -- plain_record: batch writes' records without a HandleValue per value --------------

plain_rows = st.lists(
    st.tuples(
        st.one_of(st.integers(-2, 5), st.sampled_from([0x7FFFFFFF, 2**31])),
        st.sampled_from(["URL", "", HS_SECKEY, "hs_seckey", "t\u00e9"]),
        st.binary(max_size=20),
        st.one_of(st.integers(-(2**31) - 1, 2**32), st.sampled_from([-(2**31), 2**32 - 1])),
        st.integers(-1, 16),
    ),
    max_size=5,
)


@given(rows=plain_rows, stamp=st.sampled_from([0, 1_700_000_000, 2**32 - 1]))
def test_plain_record_is_what_the_write_path_would_store(rows, stamp) -> None:
    values = [HandleValue(i, t, d, ttl, False, stamp, p) for i, t, d, ttl, p in rows]
    record = plain_record(rows, stamp)
    try:
        check_record(values)
        writable = all(v.type != HS_SECKEY for v in values)
    except Exception:
        writable = False
    if not writable:
        assert record is None  # the write path checks (and seals) HandleValues instead
        return
    assert record is not None
    assert record.blob == encode_record(values)  # msgspec's bytes are msgpack's
    assert encode_record(record) is record.blob  # stores take it as it is
    assert list(record) == values and len(record) == len(values)
    assert record.timestamp == stamp and record.indexes == {v.index for v in values}


def test_encoded_record_reads_as_a_sequence() -> None:
    rows = [(1, "URL", b"https://example.com/", 86400, DEFAULT_PERMS), (2, "EMAIL", b"a@b", 60, 12)]
    record = plain_record(rows, 5)
    assert isinstance(record, EncodedRecord)
    assert record[1] == HandleValue(2, "EMAIL", b"a@b", 60, False, 5, 12)
    assert record[-1] == record[1] and list(record[:1]) == [record[0]]
    assert [v.index for v in record] == [1, 2]
    assert "EMAIL" in repr(record)


# -- StoredRecord: the resolve path's reading, HandleValues made on demand ------------


def test_stored_record_reads_like_its_values_and_makes_them_once() -> None:
    values = (HandleValue(1, "URL", b"https://x", timestamp=7),
              HandleValue(2, "EMAIL", b"a@b", permissions=0x0C,
                          references=(ValueReference("88.1/r", 3),)))
    record = StoredRecord(encode_record(values))
    assert record._made is None  # nothing made yet
    views = value_views(record)
    assert all(type(v) is StoredValue for v in views)
    assert [(v.index, v.type, v.data, v.public_read) for v in views] == [
        (1, "URL", b"https://x", True), (2, "EMAIL", b"a@b", False)]
    assert views[1].references == (ValueReference("88.1/r", 3),)
    assert record == values and record == StoredRecord(encode_record(values))
    assert record[1] is record[1]  # made once, then kept
    assert list(record) == list(values) and record.encoded_size == len(encode_record(values))
    assert value_views(values) is values  # anything else is read as it is


@pytest.mark.parametrize("obj", [[1, [*GOOD, ["a/b", 1], "extra"]], [1, [1, "URL"]], [1, 5]])
def test_stored_record_refuses_what_decode_record_refuses(obj: object) -> None:
    with pytest.raises(MalformedMessage):
        StoredRecord(msgpack.packb(obj, use_bin_type=True))
