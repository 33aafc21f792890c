"""SNMS record parsing: the per-field shortcuts agree with the strict helpers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import snms
from protocol.snms import (
    MAX_TYPE,
    MAX_VALUE,
    BusinessError,
    SnmsValue,
    expect_object,
    int_field,
    string_field,
)


def reference_parse_value(obj: object) -> SnmsValue:
    """Every field through the helpers (what parse_value does, without shortcuts)."""
    item = expect_object(obj, "value", snms._VALUE_FIELDS)
    index = int_field(item, "index")
    if index == snms.TEMPLATE_INDEX:
        raise BusinessError(snms.MSG_RESERVED_INDEX)
    if not 0 < index <= 0x7FFFFFFF:
        raise BusinessError(snms.MSG_BAD_FIELD.format("index"))
    type_ = string_field(item, "type", MAX_TYPE)
    data = expect_object(item.get("data"), "data", snms._DATA_FIELDS)
    if data.get("format", "string") != "string":
        raise BusinessError(snms.MSG_FORMAT)
    text = string_field(data, "value", MAX_VALUE, required=False)
    if "value" not in data:
        raise BusinessError(snms.MSG_MISSING_PARAM.format("data.value"))
    auth = string_field(item, "auth", 64, required=False)
    return SnmsValue(index, type_, text, auth)


def outcome(parse, obj):
    try:
        return parse(obj)
    except BusinessError as exc:
        return ("error", exc.message)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**32), st.just("2000"),
                    st.text(max_size=3), st.text(min_size=60, max_size=70),
                    st.text(min_size=250, max_size=260))
_value = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(-1, 2**31 + 1), st.just(1001), _scalar),
        "type": st.one_of(st.sampled_from(["name", "URL"]), _scalar,
                          st.text(min_size=128, max_size=130)),
        "data": st.one_of(_scalar, st.fixed_dictionaries({}, optional={
            "format": st.one_of(st.just("string"), _scalar), "value": _scalar,
            "extra": _scalar})),
        "auth": _scalar,
        "colour": _scalar,
    },
)


@settings(max_examples=600)
@given(obj=st.one_of(_value, _scalar))
def test_parse_value_agrees_with_the_helpers(obj):
    assert outcome(snms.parse_value, obj) == outcome(reference_parse_value, obj)


@settings(max_examples=300)
@given(handle=_scalar, version=_scalar)
def test_parse_record_fields_agree_with_the_helpers(handle, version):
    body = {"handle": handle, "templateVersion": version, "value": []}

    def reference(obj):
        string_field(obj, "handle", snms.MAX_HANDLE)
        string_field(obj, "templateVersion", snms.MAX_TEMPLATE_VERSION)
        return (obj["handle"], obj["templateVersion"])

    def actual(obj):
        record = snms.parse_record(obj)
        return (record.handle, record.template_version)

    assert outcome(actual, body) == outcome(reference, body)
