"""protocol.bulk_records: the import codec. Its shortcut for plain values must
accept, refuse and encode exactly as the general REST decoder does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bulk_records import CsvLayout, RecordParser
from protocol.errors import HandleError, InvalidHandle, InvalidValue, MalformedMessage
from protocol.record_msgpack import decode_record
from protocol.values import HS_SECKEY, HandleValue

HOMED = frozenset({"88.100.1", "88.100.2"})


def sealed(data: bytes) -> bytes:
    return b"sealed:" + data


def parser() -> RecordParser:
    return RecordParser(sealed, HOMED)


def general(line: bytes) -> tuple[str, bytes] | type[HandleError]:
    """The reference: the general decoder alone, never the shortcut."""
    try:
        return parser()._general_record(line)
    except HandleError as exc:
        return type(exc)


def shortcut(line: bytes) -> tuple[str, bytes] | type[HandleError]:
    try:
        return parser().jsonl_record(line)
    except HandleError as exc:
        return type(exc)


json_values = st.one_of(
    st.integers(-(2**33), 2**33), st.text(max_size=8), st.none(), st.booleans(),
    st.floats(allow_nan=False), st.just([]), st.just({}),
)
value_objects = st.fixed_dictionaries(
    {"index": st.one_of(st.integers(-2, 2**31 + 1), json_values),
     "type": st.one_of(st.sampled_from(["URL", "EMAIL", "", HS_SECKEY, "HS_ADMIN"]), json_values),
     "data": st.one_of(
         st.text(max_size=20),
         st.fixed_dictionaries({"format": st.sampled_from(["string", "STRING", "hex", "base64"]),
                                "value": st.one_of(st.text(max_size=12), json_values)}),
         json_values)},
    optional={"ttl": st.one_of(st.integers(-(2**32), 2**32), json_values),
              "permissions": st.sampled_from(["1110", "1111", "x"]),
              "timestamp": st.sampled_from([0, "2026-01-02T03:04:05Z"])},
)
handles = st.sampled_from(["88.100.1/a", "88.100.1/ÄB", "88.100.2/x\x01", "99/x", "88.100.1",
                           "88.100.1/", "88..1/x", "88.100.1/" + "a" * 300])


@given(handle=handles, values=st.lists(value_objects, max_size=4))
def test_shortcut_agrees_with_the_general_decoder(handle: str, values: list[Any]) -> None:
    line = orjson.dumps({"handle": handle, "values": values})
    assert shortcut(line) == general(line)


@pytest.mark.parametrize("line", [
    b'{"handle": "88.100.1/a", "values": [{"index": 1, "type": "URL", "data": "x"},'
    b' {"index": 1, "type": "URL", "data": "y"}]}',  # duplicate index: rc 201
    b'{"handle": "88.100.1/a", "values": {"index": 1}}',
    b'{"handle": 5, "values": []}',
    b'[1, 2]',
    b'{"handle": "88.100.1/a", "values": [{"index": 1, "type": "URL", "data": "\xff"}]}',
    b'{"handle": "88.100.1/a", "values": [{"index": 1, "type": "\\ud800", "data": "x"}]}',
    b'{"handle": "88.100.1/a", "values": [], "extra": 1}',
    b'{"handle": "88.100.1/a", "values": [{"index": "7", "type": "URL", "data": "x"}]}',
    b'{"handle": "88.100.1/a", "values": [{"index": 1, "type": "URL", "data": "x", "ttl": null}]}',
    b'{"handle": "88.100.1/a", "values": []}{"handle": "88.100.1/b", "values": []}',
    b'{"handle": "88.100.1/a", "values": [{"index": 2, "type": "U", "data": "x"},'
    b' {"index": 1, "type": "U", "data": "y"}, {"index": 2, "type": "U", "data": "z"}]}',
])
def test_unusual_lines_get_the_general_verdict(line: bytes) -> None:
    assert shortcut(line) == general(line)


def test_plain_line_to_key_and_record() -> None:
    key, blob = parser().jsonl_record(
        b'{"handle":"88.100.1/abc","values":[{"index":1,"type":"URL","data":'
        b'{"format":"string","value":"https://x"},"ttl":60},{"index":2,"type":"n","data":"v"}]}'
    )
    assert key == "88.100.1/ABC"
    assert decode_record(blob) == (HandleValue(1, "URL", b"https://x", ttl=60),
                                   HandleValue(2, "n", b"v"))


def test_secret_keys_are_sealed() -> None:
    _, blob = parser().jsonl_record(
        b'{"handle":"88.100.1/a","values":[{"index":300,"type":"HS_SECKEY","data":"pw"}]}'
    )
    assert decode_record(blob)[0].data == b"sealed:pw"


@pytest.mark.parametrize(("handle", "error"), [
    ("99.1/a", InvalidValue), ("88.100.1/a\x7f", InvalidHandle), ("nohandle", InvalidHandle),
])
def test_keys_refused(handle: str, error: type[HandleError]) -> None:
    p = parser()
    p.key("88.100.1/warm")  # the prefix is known: later handles take the short checks
    with pytest.raises(error):
        p.key(handle)
    assert p.key("88.100.1/Mixed") == "88.100.1/MIXED"


def test_jsonl_chunk_numbers_lines_and_sorts() -> None:
    data = (b'{"handle":"88.100.1/b","values":[]}\n'
            b"\n"
            b'{"handle":"88.100.1/a","values":[{"index":1,"type":"U","data":"1"}]}\n'
            b"{nope\n"
            b'{"handle":"88.100.1/a","values":[{"index":1,"type":"U","data":"2"}]}\n')
    chunk = parser().jsonl_chunk(data, 10)
    assert chunk.lines == 5
    assert [number for number, _ in chunk.errors] == [13]
    assert "malformed JSON" in chunk.errors[0][1]
    keys = [key for key, _ in chunk.records]
    assert keys == ["88.100.1/A", "88.100.1/A", "88.100.1/B"]  # input order among equals
    assert decode_record(chunk.records[1][1])[0].data == b"2"


@given(handle=handles, values=st.lists(value_objects, max_size=3),
       layout=st.lists(st.sampled_from(["line", "line", "blank", "two", "broken"]), max_size=6))
def test_jsonl_chunk_agrees_with_the_general_decoder_line_by_line(
    handle: str, values: list[Any], layout: list[str]
) -> None:
    line = orjson.dumps({"handle": handle, "values": values})
    text = {"line": line, "blank": b"  ", "two": line + line, "broken": line[:-1]}
    lines = [text[kind] for kind in layout]
    chunk = parser().jsonl_chunk(b"".join(one + b"\n" for one in lines), 7)
    expected, errors = [], []
    for number, one in enumerate(lines, 7):
        if not one.strip():
            continue
        verdict = general(one)
        if isinstance(verdict, tuple):
            expected.append(verdict)
        else:
            errors.append(number)
    assert chunk.lines == len(lines)
    assert chunk.records == sorted(expected, key=lambda record: record[0])
    assert [number for number, _ in chunk.errors] == errors


# -- CSV ----------------------------------------------------------------------------

LAYOUT = CsvLayout.from_header(b"handle,index,type,data,format,ttl\n")


def test_csv_header() -> None:
    layout = CsvLayout.from_header(b"\xef\xbb\xbfType,Handle,Data,Index\r\n")
    assert (layout.handle, layout.index, layout.type, layout.data) == (1, 3, 0, 2)
    assert layout.format is None and layout.ttl is None
    for bad in (b"handle,index,type\n", b"handle,index,type,data,colour\n",
                b"handle,index,type,data,data\n"):
        with pytest.raises(MalformedMessage):
            CsvLayout.from_header(bad)


def test_csv_rows_make_the_same_records_as_jsonl() -> None:
    csv = (b'88.100.1/a,1,URL,"https://a, b",,60\n'
           b"88.100.1/a,2,BIN,00ff,hex,\n"
           b'88.100.1/b,1,URL,plain,string,\n')
    jsonl = (b'{"handle":"88.100.1/a","values":[{"index":1,"type":"URL","data":"https://a, b",'
             b'"ttl":60},{"index":2,"type":"BIN","data":{"format":"hex","value":"00ff"}}]}\n'
             b'{"handle":"88.100.1/b","values":[{"index":1,"type":"URL","data":"plain"}]}\n')
    from_csv = parser().csv_chunk(csv, 2, LAYOUT)
    assert not from_csv.errors
    assert from_csv.records == parser().jsonl_chunk(jsonl, 1).records


def test_csv_errors_carry_line_numbers() -> None:
    csv = (b"88.100.1/a,1,URL,x,,\n"
           b"88.100.1/b,1,URL\n"  # too few columns
           b'88.100.1/c,1,URL,"open,,\n'  # a quote runs over the line break
           b"88.100.1/c,2,URL,y,,\n"
           b"88.100.1/d,x,URL,y,,\n"  # index not a number
           b"88.100.1/e,1,URL,\xff,,\n")
    chunk = parser().csv_chunk(csv, 2, LAYOUT)
    assert [number for number, _ in chunk.errors] == [3, 4, 6, 7]
    assert [key for key, _ in chunk.records] == ["88.100.1/A"]


def test_csv_split_tail_keeps_a_handles_rows_together() -> None:
    data = (b"88.100.1/a,1,U,x,,\n88.100.1/b,1,U,x,,\n"
            b'"88.100.1/b",2,U,x,,\n88.100.1/b,3,U,x,,\n')
    head, tail = LAYOUT.split_tail(data)
    assert head == b"88.100.1/a,1,U,x,,\n"
    assert tail == data[len(head):]
    assert LAYOUT.split_tail(b"88.100.1/a,1,U,x,,\n") == (b"", b"88.100.1/a,1,U,x,,\n")


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


_PLAIN_CSV = (["88.100.1/a", "88.100.1/b"], ["1", "2", "3"], ["URL", "名"], [], ["", "string"],
              ["", "60"])
_ODD_CSV = (["88.100.1/A", "99/x", ""], ["+1", "0", "x", "4294967296"], ["", HS_SECKEY],
            ['a"b', "x,y", "\x00"], ["hex", "STRING"], ["-1", "2147483648", "1e3"])
_JUNK_CSV = ["", ",,,,,", '88.100.1/a,1,URL,"open', "88.100.1/a,1,URL", "\r"]


@st.composite
def csv_rows(draw: st.DrawFn) -> list[str]:
    """Plain rows (the shortcut's case) with now and then an odd field or line."""
    rows = draw(st.lists(st.tuples(*(st.sampled_from(c) if c else st.text(max_size=6)
                                      for c in _PLAIN_CSV)).map(list), max_size=6))
    lines = [",".join(map(_csv_field, row)) for row in rows]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(rows)))
        if at < len(rows) and draw(st.booleans()):
            column = draw(st.integers(0, 5))
            rows[at][column] = draw(st.sampled_from(_ODD_CSV[column]))
            lines[at] = ",".join(map(_csv_field, rows[at]))
        else:
            lines.insert(at, draw(st.sampled_from(_JUNK_CSV)))
    return lines


@given(rows=csv_rows())
def test_csv_chunk_shortcut_agrees_with_row_by_row(rows: list[str]) -> None:
    data = "".join(row + "\n" for row in rows).encode()
    assert parser().csv_chunk(data, 2, LAYOUT) == parser()._csv_rows(data, 2, LAYOUT)


@pytest.mark.parametrize("data", [
    b'88.100.1/a,1,URL,"x\ny",,\n',  # a quoted line break: one row over two lines
    b"88.100.1/a,1,URL,x,,\r\n",
    b"88.100.1/a,1,URL,\xff,,\n",
    b"88.100.1/a,2,URL,x,,\n88.100.1/a,1,URL,y,,\n88.100.1/a,2,URL,z,,\n",
])
def test_csv_shortcut_leaves_odd_chunks_to_the_rows(data: bytes) -> None:
    assert parser()._csv_plain_chunk(data, LAYOUT) is None
    assert parser().csv_chunk(data, 2, LAYOUT) == parser()._csv_rows(data, 2, LAYOUT)


def test_csv_shortcut_takes_plain_chunks() -> None:
    data = b'88.100.1/a,1,URL,"x, y",,60\n88.100.1/a,2,N,z,string,\n88.100.1/b,1,URL,w,,\n'
    chunk = parser()._csv_plain_chunk(data, LAYOUT)
    assert chunk is not None and chunk == parser()._csv_rows(data, 2, LAYOUT)
    assert [key for key, _ in chunk.records] == ["88.100.1/A", "88.100.1/B"]
