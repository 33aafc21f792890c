"""REST JSON against the observed Handle.Net 9.3.1 replies (shared/reference/handle-rest.md)."""

from __future__ import annotations

import base64
import contextlib
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codes import RC
from protocol.errors import HandleError, InvalidValue, MalformedMessage
from protocol.rest_json import (
    decode_data,
    decode_put_body,
    decode_value_object,
    decode_values,
    error_reply,
    format_time,
    http_status,
    jsonp,
    list_handles_reply,
    list_prefixes_reply,
    ok_reply,
    parse_time,
    pretty,
    resolve_reply,
    scrub_callback,
    value_to_json,
    values_not_found_reply,
)
from protocol.site_info import Interface, ServerInfo, SiteInfo, encode_site
from protocol.values import (
    AdminPerm,
    AdminRecord,
    HandleValue,
    ValueReference,
    check_record,
    decode_admin,
    encode_admin,
    encode_vlist,
)

TS = 0x6B04802B  # the timestamp in the captured binary reply for TEST/item1
ITEM1 = [
    HandleValue(1, "URL", b"https://example.com/x", timestamp=TS),
    HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord("TEST/ADMIN", 300)), timestamp=TS),
]


def _put(doc, handle: str = "TEST/x") -> list[HandleValue]:
    return decode_put_body(orjson.dumps(doc), handle)


# --- encoding: observed replies ---------------------------------------------------


def test_item1_reply_exact_bytes():
    assert resolve_reply("TEST/item1", ITEM1) == (
        b'{"responseCode":1,"handle":"TEST/item1","values":['
        b'{"index":1,"type":"URL","data":{"format":"string","value":"https://example.com/x"},'
        b'"ttl":86400,"timestamp":"2026-11-23T18:04:27Z"},'
        b'{"index":100,"type":"HS_ADMIN","data":{"format":"admin","value":'
        b'{"handle":"TEST/ADMIN","index":300,"permissions":"111111111111"}},'
        b'"ttl":86400,"timestamp":"2026-11-23T18:04:27Z"}]}'
    )


def test_reply_echoes_request_spelling():
    assert orjson.loads(resolve_reply("test/ITEM1", ITEM1))["handle"] == "test/ITEM1"


def test_timestamp_omitted_when_zero():
    j = value_to_json(HandleValue(300, "HS_SECKEY", b"secret", permissions=0b1100))
    assert list(j) == ["index", "type", "data", "permissions", "ttl"]
    assert j["permissions"] == "1100"


def test_key_order_with_everything():
    v = HandleValue(
        7,
        "URL",
        b"x",
        ttl=1893456000,
        ttl_absolute=True,
        timestamp=TS,
        permissions=0b1111,
        references=(ValueReference("TEST/a", 1),),
    )
    assert orjson.dumps(value_to_json(v)) == (
        b'{"index":7,"type":"URL","data":{"format":"string","value":"x"},"permissions":"1111",'
        b'"ttl":"2030-01-01T00:00:00Z","timestamp":"2026-11-23T18:04:27Z",'
        b'"references":[{"handle":"TEST/a","index":1}]}'
    )


def test_values_not_found_key_order():
    assert values_not_found_reply("TEST/rref-Mixed") == (
        b'{"responseCode":200,"values":[],"handle":"TEST/rref-Mixed"}'
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100, "TEST/rref-nothere"), b'{"responseCode":100,"handle":"TEST/rref-nothere"}'),
        (
            (301, "FOO/bar", "That prefix doesn't live here"),
            b'{"responseCode":301,"message":"That prefix doesn\'t live here","handle":"FOO/bar"}',
        ),
        (
            (102, None, "Empty handle invalid"),
            b'{"responseCode":102,"message":"Empty handle invalid"}',
        ),
        ((RC.AUTHENTICATION_NEEDED,), b'{"responseCode":402}'),
        ((100, "TEST/x", ""), b'{"responseCode":100,"handle":"TEST/x"}'),
        ((100, ""), b'{"responseCode":100}'),  # DELETE /api/handles/
    ],
)
def test_error_reply(args, expected):
    assert error_reply(*args) == expected


def test_ok_reply():
    assert ok_reply("TEST/rref-a") == b'{"responseCode":1,"handle":"TEST/rref-a"}'


def test_list_replies():
    assert list_handles_reply("TEST", 10327, ["TEST/", "TEST/ADMIN"]) == (
        b'{"responseCode":1,"prefix":"TEST","totalCount":"10327","handles":["TEST/","TEST/ADMIN"]}'
    )
    assert list_handles_reply("0.NA/TEST", 10, ["TEST/A"], page=0, page_size=3) == (
        b'{"responseCode":1,"prefix":"0.NA/TEST","totalCount":"10","page":0,"pageSize":3,'
        b'"handles":["TEST/A"]}'
    )
    assert list_handles_reply("TEST", 10, [], page=0) == (
        b'{"responseCode":1,"prefix":"TEST","totalCount":"10","handles":[]}'
    )
    assert list_prefixes_reply(1, ["0.NA/TEST"]) == (
        b'{"responseCode":1,"totalCount":"1","prefixes":["0.NA/TEST"]}'
    )
    assert list_prefixes_reply(1, [], page=100000, page_size=3) == (
        b'{"responseCode":1,"totalCount":"1","page":100000,"pageSize":3,"prefixes":[]}'
    )


# --- data formats ---------------------------------------------------------------------


def test_hex_reads_back_as_base64():
    (v,) = _put([{"index": 1, "type": "BIN", "data": {"format": "hex", "value": "00ff10"}}])
    assert v.data == b"\x00\xff\x10"
    assert value_to_json(v)["data"] == {"format": "base64", "value": "AP8Q"}


def test_bare_string_data():
    (v,) = _put({"values": [{"index": 1, "type": "URL", "data": "https://a.example/"}]})
    assert v.data == b"https://a.example/"
    assert value_to_json(v)["data"] == {"format": "string", "value": "https://a.example/"}


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"", "string"),
        ("héllo €".encode(), "string"),
        (b"tab\tlf\ncr\r", "string"),
        (b"\x0e\x13", "string"),  # Handle.Net's looksLikeBinary passes 0x09..0x13
        (b"\x00abc", "base64"),  # valid UTF-8, but a control byte
        (b"abc\x7f", "base64"),
        (b"\x1f", "base64"),
        (b"\xc3\x28", "base64"),  # invalid UTF-8
        (b"\xed\xa0\x80", "base64"),  # encoded surrogate: not UTF-8 to us
    ],
)
def test_string_or_base64(data, fmt):
    j = value_to_json(HandleValue(1, "X", data))
    assert j["data"]["format"] == fmt
    assert decode_data(j["data"]) == data


def _looks_like_binary(data: bytes) -> bool:
    """Handle.Net's rule, spelled out: invalid UTF-8, or a C0 control outside 0x09-0x13, or DEL."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(b <= 0x08 or 0x14 <= b <= 0x1F or b == 0x7F for b in data)


@settings(max_examples=500)
@given(st.binary(max_size=24) | st.text(max_size=24).map(str.encode))
def test_string_or_base64_follows_looks_like_binary(data):
    j = value_to_json(HandleValue(1, "X", data))
    assert j["data"]["format"] == ("base64" if _looks_like_binary(data) else "string")
    assert decode_data(j["data"]) == data


def test_hs_admin_string_index_as_pyhandle_sends_it():
    body = {
        "values": [
            {
                "index": "100",
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "0.NA/TEST", "index": "200", "permissions": "011111110011"},
                },
            },
            {"index": 1, "type": "URL", "data": {"format": "string", "value": "http://x"}},
        ]
    }
    admin, url = _put(body, "TEST/pyhandle")
    assert admin.index == 100 and url.index == 1
    assert decode_admin(admin.data) == AdminRecord("0.NA/TEST", 200, AdminPerm(0b011111110011))
    assert value_to_json(admin)["data"] == {
        "format": "admin",
        "value": {"handle": "0.NA/TEST", "index": 200, "permissions": "011111110011"},
    }


@pytest.mark.parametrize(
    ("perms", "bits"),
    [
        ("111111111111", 0xFFF),
        ("1", int(AdminPerm.ADD_HANDLE)),  # right-aligned: the last char is bit 0
        ("10", int(AdminPerm.DELETE_HANDLE)),
        ("x11111111111", 0x7FF),  # only '1' sets a bit
        ("0111111111111", 0xFFF),  # only the last 12 count
        ("*", 0xFFF),
        (True, 0xFFF),
        (False, 0),
        (None, 0),  # absent permissions mean none
        (4095, 0xFFF),
        (-1, 0xFFF),
        ([1, 0, "x", None, [], 0.0], 0b10101),  # bit i = item i
    ],
)
def test_admin_permission_forms(perms, bits):
    value = {"handle": "TEST/ADMIN", "index": 300}
    if perms is not None:
        value["permissions"] = perms
    data = decode_data({"format": "admin", "value": value})
    assert decode_admin(data).permissions == bits


def test_admin_legacy_byte_length():
    data = decode_data(
        {"format": "ADMIN", "value": {"handle": "A/B", "index": 1, "legacyByteLength": True}}
    )
    assert data == encode_admin(AdminRecord("A/B", 1, AdminPerm(0))) + b"\x00\x00"
    j = value_to_json(HandleValue(100, "HS_ADMIN", data))["data"]["value"]
    assert j == {
        "handle": "A/B",
        "index": 1,
        "permissions": "000000000000",
        "legacyByteLength": True,
    }


def test_corrupt_structured_data_falls_back():
    # Trailing junk in HS_ADMIN: Handle.Net refuses to decode it and shows the bytes.
    data = encode_admin(AdminRecord("TEST/ADMIN", 300)) + b"\x00\x00\x00"
    assert value_to_json(HandleValue(100, "HS_ADMIN", data))["data"]["format"] == "base64"
    assert value_to_json(HandleValue(100, "HS_ADMIN", b"oops"))["data"] == {
        "format": "string",
        "value": "oops",
    }
    for t in ("HS_VLIST", "HS_SITE", "HS_PUBKEY"):
        assert value_to_json(HandleValue(1, t, b"\x00\x01"))["data"]["format"] == "base64"


def test_type_matching_for_formats_is_case_insensitive_with_subtypes():
    admin = encode_admin(AdminRecord("TEST/ADMIN", 300))
    assert value_to_json(HandleValue(1, "hs_admin", admin))["data"]["format"] == "admin"
    assert value_to_json(HandleValue(1, "HS_ADMIN.x", admin))["data"]["format"] == "admin"
    assert value_to_json(HandleValue(1, "HS_ADMINX", admin))["data"]["format"] == "base64"


def test_vlist():
    refs = [ValueReference("TEST/ADMIN", 300), ValueReference("0.NA/TEST", 200)]
    v = HandleValue(200, "HS_VLIST", encode_vlist(refs))
    j = value_to_json(v)["data"]
    assert j == {
        "format": "vlist",
        "value": [{"handle": "TEST/ADMIN", "index": 300}, {"handle": "0.NA/TEST", "index": 200}],
    }
    assert decode_data(j) == v.data
    assert decode_data({"format": "vlist"}) == encode_vlist([])


def _rsa_key() -> bytes:
    n = b"\x00\xc1" + bytes(range(254)) + b"\x01"
    return (
        struct.pack(">I", 11) + b"RSA_PUB_KEY" + b"\x00\x00"
        + struct.pack(">I", 3) + b"\x01\x00\x01" + struct.pack(">I", len(n)) + n + bytes(4)
    )  # fmt: skip


def test_site_and_prefix_site_and_key_formats():
    site = SiteInfo(
        serial_number=1,
        primary=True,
        servers=(ServerInfo(1, "127.0.0.1", _rsa_key(), (Interface(3, 1, 2641),)),),
    )
    raw = encode_site(site)
    for t in ("HS_SITE", "HS_SITE.PREFIX", "HS_SITE.6", "hs_na_delegate"):
        j = value_to_json(HandleValue(1, t, raw))["data"]
        assert j["format"] == "site"
        assert j["value"]["servers"][0]["publicKey"]["format"] == "key"
        assert decode_data(orjson.loads(orjson.dumps(j))) == raw
    k = value_to_json(HandleValue(300, "HS_PUBKEY", _rsa_key()))["data"]
    assert k["format"] == "key" and k["value"]["kty"] == "RSA" and k["value"]["e"] == "AQAB"
    assert decode_data(k) == _rsa_key()


def test_permissions_only_when_not_1110():
    assert "permissions" not in value_to_json(HandleValue(1, "URL", b"x"))
    (v,) = _put([{"index": 8, "type": "X", "data": "s", "permissions": "1100"}])
    assert v.permissions == 0b1100
    assert value_to_json(v)["permissions"] == "1100"


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("1110", 0b1110),
        ("0110", 0b0110),  # Handle.Net 9.3.1 ignores the admin-read char (off by one); we don't
        ("10", 0b1110),  # right-aligned: public read, public write; the rest default
        ("1", 0b1111),
        ("", 0b1110),
        ("*", 0b1111),
        ("x1x1", 0b0101),
        ("0001111", 0b1111),
        (1100, 0b1100),  # Gson's getAsString on a number
    ],
)
def test_value_permission_parsing(text, bits):
    (v,) = _put([{"index": 1, "type": "X", "data": "s", "permissions": text}])
    assert v.permissions == bits


def test_absolute_ttl_round_trip():
    (v,) = _put([{"index": 1, "type": "URL", "data": "x", "ttl": "2030-01-01T00:00:00Z"}])
    assert v.ttl_absolute and v.ttl == 1893456000
    assert value_to_json(v)["ttl"] == "2030-01-01T00:00:00Z"
    (r,) = _put([{"index": 1, "type": "URL", "data": "x", "ttl": 3600}])
    assert not r.ttl_absolute and r.ttl == 3600


def test_timestamp_forms_are_kept():
    (a,) = _put([{"index": 1, "type": "U", "data": "x", "timestamp": "2026-11-23T18:04:27Z"}])
    (b,) = _put([{"index": 1, "type": "U", "data": "x", "timestamp": TS}])
    (c,) = _put(
        [{"index": 1, "type": "U", "data": "x", "timestamp": "2026-11-23T19:04:27.5+01:00"}]
    )
    assert a.timestamp == b.timestamp == c.timestamp == TS


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2030-01-01", 1893456000),
        ("2030-01-01T00:00", 1893456000),
        ("2030-01-01 00:00:00", 1893456000),
        ("2029-12-31T19:00:00-0500", 1893456000),
    ],
)
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "2030", "2030-13-01", "2030-02-30T00:00:00Z", "tomorrow"])
def test_parse_time_rejects(text):
    with pytest.raises(MalformedMessage, match="Unparseable"):
        parse_time(text)


def test_format_time():
    assert format_time(TS) == "2026-11-23T18:04:27Z"
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(2**32 - 1) == "2106-02-07T06:28:15Z"
    with pytest.raises(InvalidValue):
        format_time(10**20)


# --- body shapes ---------------------------------------------------------------------


def test_body_shapes():
    one = {"index": 1, "type": "URL", "data": "x"}
    expected = [HandleValue(1, "URL", b"x")]
    assert _put([one]) == expected
    assert _put({"values": [one]}) == expected
    assert _put({"values": [one], "handle": "test/X"}, "TEST/x") == expected  # ignores case
    assert _put(one) == expected
    assert _put({"values": []}) == []
    assert _put({"values": None}) == []
    assert _put([]) == []
    assert decode_put_body(memoryview(orjson.dumps([one])), "A/b") == expected
    assert decode_values([one]) == expected


def test_handle_match_case_sensitive_mode():
    body = orjson.dumps({"handle": "test/Item", "values": []})
    assert decode_put_body(body, "TEST/Item", case_sensitive=True) == []
    with pytest.raises(MalformedMessage, match="Mismatched handle"):
        decode_put_body(body, "TEST/ITEM", case_sensitive=True)


# --- PUT rejections (body decoding) ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"values": [', "JSON syntax error: unexpected end of data: line 1 column 13"),
        (b'{"foo":1}', "Invalid JSON in PUT request"),
        (b'"str"', "Invalid JSON in PUT request"),
        (b"", "Invalid JSON in PUT request"),
        (b"  \n", "Invalid JSON in PUT request"),
        (b"42", "Invalid JSON in PUT request"),
        (b'{"index":1,"type":"URL"}', "Invalid JSON in PUT request"),  # not a value: no data
        (b'{"handle":"TEST/other","values":[]}', "Mismatched handle in PUT request"),
        (
            b'[{"index":1,"type":"URL","data":{"format":"nope","value":"x"}}]',
            "Unexpected type nope",
        ),
        (b'[{"type":"URL","data":"x"}]', "Missing 'index'"),
        (b'[{"index":null,"type":"URL","data":"x"}]', "Missing 'index'"),
        (b'[{"index":1,"data":"x"}]', "Missing 'type'"),
        (b'[{"index":1,"type":"URL"}]', "Missing 'data'"),
        (b'[{"index":"abc","type":"URL","data":"x"}]', "Expected an integer for index"),
        (b'[{"index":1.5,"type":"URL","data":"x"}]', "Expected an integer for index"),
        (b'[{"index":true,"type":"URL","data":"x"}]', "Expected a number for index"),
        (b'[{"index":4294967297,"type":"URL","data":"x"}]', "out of range"),
        (b'[{"index":1,"type":"URL","data":[]}]', "Expected a string or an object"),
        (b'[{"index":1,"type":"URL","data":{"value":"x"}}]', "Missing 'format'"),
        (b'[{"index":1,"type":"URL","data":{"format":"string"}}]', "Missing 'value'"),
        (b'[{"index":1,"type":"U","data":{"format":"hex","value":"0"}}]', "odd number"),
        (b'[{"index":1,"type":"U","data":{"format":"hex","value":"zz"}}]', "illegal character"),
        (b'[{"index":1,"type":"U","data":"x","ttl":true}]', "bad ttl"),
        (b'[{"index":1,"type":"U","data":"x","ttl":"soon"}]', "Unparseable date"),
        (b'[{"index":1,"type":"U","data":"x","ttl":{}}]', "Expected an integer for ttl"),
        (b'[{"index":1,"type":"U","data":"x","timestamp":[]}]', "Expected an integer"),
        (b'[{"index":1,"type":"U","data":"x","references":{}}]', "Expected a JSON array"),
        (b'[{"index":1,"type":"U","data":"x","references":[null]}]', "null in array"),
        (b'[{"index":1,"type":"U","data":"x","permissions":[]}]', "Expected a string"),
        (b"[null]", "null in array for values"),
        (b"[1]", "Expected a JSON object for handle value"),
        (b'{"values":{}}', "Expected a JSON array for values"),
        (b'{"values":[],"handle":null}', "Expected a string for handle"),
        (b'[{"index":1,"type":"HS_ADMIN","data":{"format":"admin"}}]', "admin value"),
        (
            b'[{"index":1,"type":"HS_ADMIN","data":{"format":"admin","value":{"index":1}}}]',
            "Missing 'handle'",
        ),
        (
            b'[{"index":1,"type":"H","data":{"format":"admin","value":'
            b'{"handle":"A/B","index":1,"permissions":{}}}}]',
            "Did not expect permissions object",
        ),
        (b'[{"index":1,"type":"S","data":{"format":"site","value":[]}}]', "Expected a JSON object"),
        (b'[{"index":1,"type":"K","data":{"format":"key","value":{"kty":"X"}}}]', "Unsupported"),
        (b"\xff[]", "JSON syntax error"),
    ],
)
def test_put_rejections(body, message):
    with pytest.raises(MalformedMessage) as info:
        decode_put_body(body, "TEST/x")
    assert info.value.rc == RC.PROTOCOL_ERROR == 4
    assert message in info.value.message


def test_write_path_checks_after_decoding():
    """Negative and duplicate indexes decode; check_record then gives Handle.Net's codes."""
    dup = _put([{"index": 1, "type": "A", "data": "x"}, {"index": 1, "type": "B", "data": "y"}])
    with pytest.raises(HandleError) as info:
        check_record(dup)
    assert info.value.rc == 201 and info.value.message == "Index conflict for 1"
    neg = _put([{"index": -1, "type": "A", "data": "x"}])
    with pytest.raises(HandleError) as info:
        check_record(neg)
    assert info.value.rc == 202 and info.value.message == "Value indexes must be positive"


def test_decode_value_object_rejects_non_objects():
    for junk in (None, [], "x", 1):
        with pytest.raises(MalformedMessage):
            decode_value_object(junk)
    with pytest.raises(MalformedMessage, match="surrogate"):
        decode_value_object({"index": 1, "type": "\ud800", "data": "x"})


# --- status, pretty, JSONP ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rc", "kwargs", "status"),
    [
        (1, {}, 200),
        (1, {"created": True}, 201),
        (2, {}, 500),
        (3, {}, 503),
        (7, {}, 503),
        (4, {}, 400),
        (102, {}, 400),
        (202, {}, 400),
        (301, {}, 400),
        (5, {}, 501),
        (100, {}, 404),
        (100, {"method": "DELETE"}, 404),
        (101, {}, 409),
        (201, {}, 409),
        (200, {}, 200),
        (200, {"method": "POST"}, 200),
        (200, {"method": "DELETE"}, 400),
        (402, {"tls": True}, 401),
        (402, {"tls": False}, 403),
        (400, {}, 403),
        (401, {}, 403),
        (403, {}, 403),
        (404, {}, 403),
        (603, {}, 429),
        (604, {}, 429),
        (605, {}, 429),
        (302, {}, 300),
        (303, {}, 300),
        (405, {}, 500),
        (500, {}, 500),
        (999, {}, 500),
    ],
)
def test_http_status(rc, kwargs, status):
    assert http_status(rc, **kwargs) == status


def test_pretty():
    out = pretty(values_not_found_reply("TEST/a"))
    assert out == b'{\n  "responseCode": 200,\n  "values": [],\n  "handle": "TEST/a"\n}'
    assert orjson.loads(pretty(resolve_reply("TEST/item1", ITEM1))) == orjson.loads(
        resolve_reply("TEST/item1", ITEM1)
    )


def test_jsonp():
    assert jsonp(ok_reply("A/b"), "cb") == b'cb({"responseCode":1,"handle":"A/b"});'
    assert scrub_callback("9a$b.c<d>_é") == "_a$b_c_d__é"  # é < U+00A0 is replaced


# --- properties ------------------------------------------------------------------------

_i32 = st.integers(-(2**31), 2**31 - 1)
_text = st.text(max_size=12)
_STRUCTURED = ("HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_NA_DELEGATE", "HS_PUBKEY")
_plain_types = _text.filter(lambda t: t.upper().partition(".")[0] not in _STRUCTURED)
_common = {
    "index": _i32,
    "ttl_absolute": st.booleans(),
    "timestamp": st.integers(-(2**31), 2**32 - 1),
    "permissions": st.integers(0, 15),
    "references": st.lists(st.builds(ValueReference, _text, _i32), max_size=2).map(tuple),
}


def _ttl_for(absolute: bool) -> st.SearchStrategy[int]:
    return st.integers(-(2**31), 2**32 - 1) if absolute else _i32


@st.composite
def _values(draw: st.DrawFn) -> HandleValue:
    kind = draw(st.sampled_from(["plain", "admin", "vlist"]))
    if kind == "plain":
        type_, data = draw(_plain_types), draw(st.binary(max_size=30) | _text.map(str.encode))
    elif kind == "admin":
        type_ = draw(st.sampled_from(["HS_ADMIN", "hs_admin", "HS_ADMIN.sub"]))
        data = encode_admin(
            AdminRecord(draw(_text), draw(_i32), AdminPerm(draw(st.integers(0, 0xFFF))))
        )
    else:
        type_ = "HS_VLIST"
        data = encode_vlist(draw(st.lists(st.builds(ValueReference, _text, _i32), max_size=3)))
    absolute = draw(st.booleans())
    return HandleValue(
        index=draw(_common["index"]),
        type=type_,
        data=data,
        ttl=draw(_ttl_for(absolute)),
        ttl_absolute=absolute,
        timestamp=draw(_common["timestamp"]),
        permissions=draw(_common["permissions"]),
        references=draw(_common["references"]),
    )


@settings(max_examples=300)
@given(st.lists(_values(), max_size=4))
def test_round_trip_through_reply_bytes(values):
    reply = orjson.loads(resolve_reply("TEST/x", values))
    assert reply["responseCode"] == 1
    assert decode_values(reply["values"]) == values
    assert decode_put_body(orjson.dumps(reply), "test/X") == values


@given(_values())
def test_round_trip_value_object(v):
    assert decode_value_object(value_to_json(v)) == v


_put_keys = st.sampled_from(
    [
        "index", "type", "data", "format", "value", "handle", "permissions", "ttl",
        "timestamp", "references", "values", "legacyByteLength", "kty", "n", "e",
        "servers", "serverId", "address", "publicKey",
    ]
)  # fmt: skip
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["string", "base64", "hex", "admin", "vlist", "site", "key", "RSA"])
    | st.sampled_from(["1", "-1", "00ff", "AP8Q", "2030-01-01T00:00:00Z", "*", "1110", "TEST/x"])
    | _text
)
_junk = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_put_keys, inner, max_size=6),
    max_leaves=25,
)


@settings(max_examples=600)
@given(_junk)
def test_junk_json_only_handle_errors(doc):
    try:
        values = decode_put_body(orjson.dumps(doc), "TEST/x")
    except HandleError:
        return
    # Whatever decoded must encode again.
    resolve_reply("TEST/x", values)


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_junk_bytes_only_handle_errors(body):
    with contextlib.suppress(HandleError):
        decode_put_body(body, "TEST/x")


@given(st.binary(max_size=40), st.sampled_from(["HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_PUBKEY"]))
def test_any_bytes_encode_for_structured_types(data, type_):
    j = value_to_json(HandleValue(1, type_, data))
    if j["data"]["format"] in ("string", "base64"):
        assert decode_data(j["data"]) == data


def test_base64_input_is_lenient_like_commons_codec():
    assert decode_data({"format": "base64", "value": "AP8Q"}) == b"\x00\xff\x10"
    assert decode_data({"format": "base64", "value": "AP8Q\n"}) == b"\x00\xff\x10"
    assert decode_data({"format": "base64", "value": "AP8"}) == b"\x00\xff"
    assert decode_data({"format": "BASE64", "value": "_-8"}) == base64.b64decode("/+8=")


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**33), 2**33), st.floats(allow_nan=False),
    st.sampled_from(["", "1110", "*", "0101", "abc", "\ud800", "héllo", "string", "admin"]),
)
_admin_like = st.fixed_dictionaries(
    {"handle": st.one_of(st.sampled_from(["0.NA/88.1", "h\u00e9", "\ud800"]), _json_scalar),
     "index": st.one_of(st.integers(-(2**32), 2**32), _json_scalar)},
    optional={"permissions": st.one_of(st.sampled_from(["111111111111", "0101", "*"]),
                                       _json_scalar, st.just([1, 0])),
              "legacyByteLength": _json_scalar},
)
_value_like = st.fixed_dictionaries(
    {
        "index": st.one_of(st.integers(-(2**32), 2**32), _json_scalar),
        "type": st.one_of(st.sampled_from(["URL", "HS_ADMIN", "t\u00e9", "\ud800"]), _json_scalar),
        "data": st.one_of(
            st.fixed_dictionaries({
                "format": st.sampled_from(["string", "String", "admin", "hex", 1]),
                "value": st.one_of(_json_scalar, _admin_like),
            }),
            _json_scalar,
        ),
    },
    optional={
        "ttl": st.one_of(st.integers(-(2**32), 2**32), _json_scalar),
        "permissions": _json_scalar,
        "timestamp": _json_scalar,
        "references": st.one_of(st.none(), st.just([])),
    },
)


_nearly_valid = st.fixed_dictionaries(
    {
        "index": st.integers(-(2**31) - 2, 2**31 + 1),
        "type": st.sampled_from(["URL", "", "HS_ADMIN", "t\u00e9"]),
        "data": st.one_of(
            st.text(max_size=8),
            st.fixed_dictionaries({"format": st.just("string"), "value": st.text(max_size=8)}),
            st.fixed_dictionaries({"format": st.just("admin"), "value": _admin_like}),
        ),
    },
    optional={
        "ttl": st.integers(-(2**31) - 2, 2**31 + 1),
        "permissions": st.one_of(st.sampled_from(["1110", "*", "01", ""]), _json_scalar),
    },
)


@settings(max_examples=500)
@given(obj=st.one_of(_value_like, _nearly_valid),
       stamp=st.sampled_from([None, 0, 1_700_000_000]))
def test_common_value_shortcut_agrees_with_the_general_decoder(obj, stamp):
    from protocol.rest_json import _common_value, _decode_value_general

    def outcome(decode):
        try:
            return decode()
        except HandleError as exc:  # the shortcut may fail only as the general path does
            return type(exc), exc.message

    common = outcome(lambda: _common_value(obj, 0 if stamp is None else stamp))
    if common is None:
        return  # the general path decides alone
    assert common == outcome(lambda: _decode_value_general(obj, stamp))
