"""Import text → stored records: the bulk-load codec of ``idnode import``.

Two input forms, both UTF-8:

- **JSONL**: one ``{"handle": "...", "values": [...]}`` per line, values in
  Handle REST JSON (what ``idnode export`` writes).
- **CSV** (RFC 4180 quoting, no line breaks inside fields): a header row,
  then one row per value; the rows of one handle are adjacent::

      handle,index,type,data[,format][,ttl]
      88.100.1/E1,1,URL,https://example.com/e1
      88.100.1/E1,2,name,"Pump, 3 kW"

  ``format`` is ``string`` (default), ``hex`` or ``base64``; ``ttl`` is in
  seconds (default 86400). Columns may come in any order; others are refused.

Each handle becomes ``(key, record)``: its normalised key and the
``record_msgpack`` bytes the stores keep. Validation is the REST write path's
(``rest_json.decode_value_object`` + ``check_record``) with one shortcut: a
value shaped as nearly every import's is (``index``, ``type``, string
``data``, optional integer ``ttl``, nothing else) is checked by a few type
tests and goes straight to msgpack fields, without a ``HandleValue`` and the
general decoder's per-field helpers (a third of the parse cost at 3 values a
record). Measured on ``bench.gen_ids`` lines (3 values): 2.0 us a line, of
which msgspec's decode 0.65, the record 0.57, the key 0.2. Anything else
takes the general decoder, so both accept and refuse the same input and
produce the same bytes (tests/test_bulk_records.py).

Chunks are parsed independently (a process pool parses several at once);
their records come back sorted by key, which is B-tree friendly, keeping
input order among equal keys: a later line for a handle replaces it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import groupby
from operator import itemgetter
from typing import Annotated, Any

import msgspec
import orjson

from protocol.errors import HandleError, InvalidValue, MalformedMessage
from protocol.identifier import MAX_HANDLE_BYTES, parse_handle
from protocol.record_msgpack import FORMAT_VERSION, encode_record
from protocol.rest_json import decode_value_object
from protocol.values import (
    DEFAULT_PERMS,
    DEFAULT_TTL,
    HS_SECKEY,
    MAX_INDEX,
    SECRET_PERMS,
    HandleValue,
    check_record,
)

# Seals an HS_SECKEY's data (registry.credentials), passed in: no keys here.
Seal = Callable[[bytes], bytes]
KeyedBlob = tuple[str, bytes]  # a normalised key and its record_msgpack bytes

_PERMS = int(DEFAULT_PERMS)
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1  # json_int's range; check_value's is inside it
_encode_msgpack = msgspec.msgpack.Encoder().encode  # same bytes as msgpack.packb(use_bin_type)


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    records: list[KeyedBlob]  # sorted by key; equal keys in input order
    errors: list[tuple[int, str]]  # (line number, message), in input order
    lines: int  # lines consumed, blank ones included


# The shape nearly every import line has, decoded and type-checked by msgspec
# in C. A line that does not fit (another data format, permissions,
# timestamps, references, a numeric string for an index...) is not an error
# here: it goes to the general decoder, which accepts or refuses it. The
# structs hold only strings and ints, so they skip the cyclic GC's tracking
# (gc=False: 15% of the decode time).
class _StringData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    format: str
    value: str


class _PlainValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
    type: Annotated[str, msgspec.Meta(min_length=1)]
    data: str | _StringData
    ttl: Annotated[int, msgspec.Meta(ge=_I32_MIN, le=_I32_MAX)] = DEFAULT_TTL


class _PlainLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    handle: str
    values: list[_PlainValue]


_plain_decoder = msgspec.json.Decoder(_PlainLine)
_decode_plain_line = _plain_decoder.decode
# msgspec raises UnicodeDecodeError, not DecodeError, for bytes that are not UTF-8.
_NOT_PLAIN = (msgspec.DecodeError, UnicodeDecodeError)


def _plain_record(values: list[_PlainValue]) -> bytes | None:
    """Record bytes of plain values, or None when the general decoder must look."""
    out: list[object] = [FORMAT_VERSION]
    last, ascending = 0, True
    for v in values:
        data = v.data
        if type(data) is not str:
            if data.format != "string":  # type: ignore[union-attr]
                return None
            data = data.value  # type: ignore[union-attr]
        index, type_ = v.index, v.type
        if type_ == HS_SECKEY:
            return None
        if index <= last:
            ascending = False
        last = index
        # msgspec refuses lone surrogates, so every str here encodes.
        out.append((index, type_, data.encode(), v.ttl, False, 0, _PERMS))  # type: ignore[union-attr]
    # Indexes nearly always come in ascending order, so distinct: checked
    # without a set. A repeated index is the general decoder's error to give.
    if not ascending and len({value[0] for value in out[1:]}) != len(values):  # type: ignore[index]
        return None
    return _encode_msgpack(out)


class RecordParser:
    """Import records → ``(key, record bytes)``, for the prefixes in ``homed``."""

    def __init__(self, seal: Seal, homed: frozenset[str]) -> None:
        self.seal = seal
        self.homed = homed
        self._checked: set[str] = set()  # prefixes (key form) that passed parse_handle, homed

    def key(self, handle: Any) -> str:
        """The storage key of a handle text; raises HandleError (rc 102, or not homed)."""
        if type(handle) is not str:
            raise MalformedMessage('each record needs {"handle": ..., "values": [...]}')
        # parse_handle's checks for the common case: printable ASCII (no
        # controls, one byte per character), so the key is the handle
        # upper-cased, under a prefix already checked and homed.
        if handle.isascii() and handle.isprintable() and len(handle) <= MAX_HANDLE_BYTES:
            key = handle.upper()
            prefix, _, suffix = key.partition("/")
            if suffix and prefix in self._checked:
                return key
        key = parse_handle(handle).key
        prefix = key.partition("/")[0]
        if prefix not in self.homed:
            raise InvalidValue(f"prefix {prefix} is not homed here")
        self._checked.add(prefix)
        return key

    def record_bytes(self, values: Any) -> bytes:
        """A JSON array of value objects → record bytes (the REST write path's checks)."""
        if values is not None and type(values) is not list:
            raise MalformedMessage('"values" must be an array')
        decoded = [decode_value_object(v) for v in values or ()]
        check_record(decoded)
        seal = self.seal
        return encode_record([_sealed(v, seal) if v.type == HS_SECKEY else v for v in decoded])

    def jsonl_record(self, line: bytes) -> KeyedBlob:
        """One JSONL line → (key, record bytes); raises HandleError."""
        try:
            plain = _decode_plain_line(line)
        except _NOT_PLAIN:
            pass  # not the plain shape (or not JSON): the general path tells which
        else:
            blob = _plain_record(plain.values)
            if blob is not None:
                return self.key(plain.handle), blob
        return self._general_record(line)

    def _general_record(self, line: bytes) -> KeyedBlob:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise MalformedMessage(f"malformed JSON: {exc}") from None
        if type(obj) is not dict:
            raise MalformedMessage('each line needs {"handle": ..., "values": [...]}')
        return self.key(obj.get("handle")), self.record_bytes(obj.get("values"))

    def jsonl_chunk(self, data: bytes, first_line: int) -> ParsedChunk:
        """Whole lines of JSONL, the first numbered ``first_line``.

        Line by line (msgspec's ``decode_lines`` over the whole chunk was no
        faster, and it reads ``{...}{...}`` on one line as two records)."""
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        key, decode, general = self.key, _decode_plain_line, self._general_record
        records: list[KeyedBlob] = []
        errors: list[tuple[int, str]] = []
        for number, line in enumerate(lines, first_line):
            try:
                try:
                    plain = decode(line)
                except _NOT_PLAIN:
                    blob = None  # not the plain shape (or not JSON): the general path tells
                else:
                    blob = _plain_record(plain.values)
                if blob is not None:
                    records.append((key(plain.handle), blob))
                elif line.strip():  # blank lines are skipped
                    records.append(general(line))
            except HandleError as exc:
                errors.append((number, exc.message or type(exc).__name__))
        records.sort(key=_by_key)
        return ParsedChunk(records, errors, len(lines))

    def csv_chunk(self, data: bytes, first_line: int, layout: CsvLayout) -> ParsedChunk:
        """Whole rows of CSV (no header), every handle's rows inside this chunk.
        A handle with any bad row is refused whole, never stored in part."""
        plain = self._csv_plain_chunk(data, layout)
        return plain if plain is not None else self._csv_rows(data, first_line, layout)

    def _csv_plain_chunk(self, data: bytes, layout: CsvLayout) -> ParsedChunk | None:
        """The records of a chunk of plain rows only (string data, digit
        indexes and ttls, no HS_SECKEY, distinct indexes per handle), or None
        for the row-by-row path, which also tells what is wrong where. One
        csv.reader over the chunk: 1.1 us a handle instead of 2.5."""
        if b"\r" in data:
            return None
        try:
            lines = data.decode().split("\n")
        except UnicodeDecodeError:
            return None
        if lines and not lines[-1]:
            lines.pop()
        try:
            rows = list(csv.reader(lines, strict=True))
        except csv.Error:
            return None
        # One row per line (a quote left open would have taken the next line
        # in), of the header's width (a blank line is an empty row).
        width = layout.width
        if len(rows) != len(lines) or any(len(row) != width for row in rows):
            return None
        at_index, at_type, at_data = layout.index, layout.type, layout.data
        at_format, at_ttl = layout.format, layout.ttl
        key = self.key
        records: list[KeyedBlob] = []
        try:
            for handle, group in groupby(rows, itemgetter(layout.handle)):
                fields: list[object] = [FORMAT_VERSION]
                last, ascending = 0, True
                for row in group:
                    index, type_ = row[at_index], row[at_type]
                    if not (index.isascii() and index.isdigit() and type_ and type_ != HS_SECKEY):
                        return None
                    if at_format is not None and row[at_format] not in ("", "string"):
                        return None
                    ttl = DEFAULT_TTL
                    if at_ttl is not None and row[at_ttl]:
                        text = row[at_ttl]
                        if not (text.isascii() and text.isdigit()) or int(text) > _I32_MAX:
                            return None
                        ttl = int(text)
                    number = int(index)
                    if not 0 < number <= MAX_INDEX:
                        return None
                    if number <= last:
                        ascending = False
                    last = number
                    # Decoded from UTF-8, so every str here encodes.
                    fields.append((number, type_, row[at_data].encode(), ttl, False, 0, _PERMS))
                if not ascending and len({v[0] for v in fields[1:]}) != len(fields) - 1:  # type: ignore[index]
                    return None
                records.append((key(handle), _encode_msgpack(fields)))
        except HandleError:
            return None
        records.sort(key=_by_key)
        return ParsedChunk(records, [], len(lines))

    def _csv_rows(self, data: bytes, first_line: int, layout: CsvLayout) -> ParsedChunk:
        records: list[KeyedBlob] = []
        errors: list[tuple[int, str]] = []
        lines, undecodable = _decoded_lines(data, first_line, errors)
        group: list[list[str]] = []
        group_handle: str | None = None
        group_line, group_bad = first_line, False

        def flush() -> None:
            if group_handle is None or group_bad:
                return
            try:
                records.append((self.key(group_handle), self._csv_record(group, layout)))
            except HandleError as exc:
                errors.append((group_line, exc.message or type(exc).__name__))

        for number, line in enumerate(lines, first_line):
            row, problem = _csv_row(line)
            if row is None and problem is None:
                continue  # blank
            if row is not None and len(row) != layout.width:
                problem = f"expected {layout.width} columns, got {len(row)}"
            fits = row is not None and problem is None
            handle = row[layout.handle] if fits else layout.handle_of(line)  # type: ignore[index]
            if handle != group_handle:
                flush()
                group, group_handle, group_line, group_bad = [], handle, number, False
            if number in undecodable:
                group_bad = True  # reported already
            elif problem is not None:
                errors.append((number, problem))
                group_bad = True
            else:
                assert row is not None
                group.append(row)
        flush()
        errors.sort()
        records.sort(key=_by_key)
        return ParsedChunk(records, errors, len(lines))

    def _csv_record(self, rows: list[list[str]], layout: CsvLayout) -> bytes:
        fields: list[object] = [FORMAT_VERSION]
        indexes = set()
        for row in rows:
            plain = layout.plain_fields(row)
            if plain is None or plain[0] in indexes:
                return self.record_bytes([layout.value_object(row) for row in rows])
            indexes.add(plain[0])
            fields.append(plain)
        return _encode_msgpack(fields)


def _sealed(value: HandleValue, seal: Seal) -> HandleValue:
    return replace(value, data=seal(value.data), permissions=value.permissions & SECRET_PERMS)


def _by_key(record: KeyedBlob) -> str:
    return record[0]


# -- CSV -------------------------------------------------------------------------

CSV_REQUIRED = ("handle", "index", "type", "data")
CSV_OPTIONAL = ("format", "ttl")


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Column positions, from the header row."""

    handle: int
    index: int
    type: int
    data: int
    format: int | None
    ttl: int | None
    width: int

    @classmethod
    def from_header(cls, line: bytes) -> CsvLayout:
        try:
            names = next(csv.reader([line.decode("utf-8-sig").rstrip("\r\n")]))
        except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
            raise MalformedMessage(f"unreadable CSV header: {exc}") from None
        names = [n.strip().lower() for n in names]
        unknown = sorted(set(names) - set(CSV_REQUIRED) - set(CSV_OPTIONAL))
        missing = [n for n in CSV_REQUIRED if n not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise MalformedMessage(
                f"CSV header must name the columns {','.join(CSV_REQUIRED)} and optionally "
                f"{','.join(CSV_OPTIONAL)}, each once (got {','.join(names)})"
            )
        at = {name: i for i, name in enumerate(names)}
        return cls(at["handle"], at["index"], at["type"], at["data"], at.get("format"),
                   at.get("ttl"), len(names))

    def split_tail(self, data: bytes) -> tuple[bytes, bytes]:
        """Split whole lines so no handle's rows straddle two chunks: the rows of
        the last handle are returned as the tail, to go with the next chunk."""
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        cut = data.rfind(b"\n", 0, end) + 1  # start of the last line
        last = self.handle_of(data[cut:end].decode(errors="replace"))
        while cut > 0:
            previous = data.rfind(b"\n", 0, cut - 1) + 1
            if self.handle_of(data[previous : cut - 1].decode(errors="replace")) != last:
                break
            cut = previous
        return data[:cut], data[cut:]

    def plain_fields(self, row: list[str]) -> tuple[object, ...] | None:
        """msgspec fields of a plain string row, or None for the general decoder."""
        index, type_, text = row[self.index], row[self.type], row[self.data]
        if self.format is not None and row[self.format] not in ("", "string"):
            return None
        ttl = row[self.ttl] if self.ttl is not None else ""
        plain_ttl = not ttl or (ttl.isascii() and ttl.isdigit())
        if not (index.isascii() and index.isdigit() and plain_ttl and type_ and type_ != HS_SECKEY):
            return None
        number, seconds = int(index), int(ttl) if ttl else DEFAULT_TTL
        if not (0 < number <= MAX_INDEX and seconds <= _I32_MAX):
            return None
        try:
            type_.encode()
            data = text.encode()
        except UnicodeEncodeError:
            return None
        return (number, type_, data, seconds, False, 0, _PERMS)

    def value_object(self, row: list[str]) -> dict[str, Any]:
        """The row as a REST value object, for the general decoder. Numbers go
        in as numbers where they parse (a text ttl would be an absolute time)."""
        fmt = "string" if self.format is None else row[self.format] or "string"
        value: dict[str, Any] = {
            "index": _number(row[self.index]),
            "type": row[self.type],
            "data": {"format": fmt, "value": row[self.data]},
        }
        if self.ttl is not None and row[self.ttl]:
            value["ttl"] = _number(row[self.ttl])
        return value

    def handle_of(self, line: str) -> str:
        """The handle column of a line, read loosely: also from a malformed row,
        so its handle's other rows can be told apart."""
        try:
            row = next(csv.reader([line.rstrip("\r")]))
        except (StopIteration, csv.Error):
            row = [field.strip('"') for field in line.split(",")]
        return row[self.handle] if len(row) > self.handle else ""


def _number(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _csv_row(line: str) -> tuple[list[str] | None, str | None]:
    """(fields, None), (None, problem), or (None, None) for a blank line. A plain
    split unless the line has quotes (RFC 4180); a quote still open at the end
    of the line is an error, not a field running on to the next."""
    line = line.rstrip("\r")
    if '"' not in line:
        row = line.split(",")
    else:
        try:
            row = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            return None, f"malformed CSV: {exc}"
    return (row, None) if any(row) else (None, None)


def _decoded_lines(
    data: bytes, first_line: int, errors: list[tuple[int, str]]
) -> tuple[list[str], set[int]]:
    """The chunk's lines as text, and the numbers of those that are not UTF-8
    (reported, and decoded with replacement characters to find their handle)."""
    bad: set[int] = set()
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError:
        lines = []
        for number, raw in enumerate(data.split(b"\n"), first_line):
            try:
                lines.append(raw.decode())
            except UnicodeDecodeError as exc:
                errors.append((number, f"not UTF-8: {exc.reason}"))
                bad.add(number)
                lines.append(raw.decode(errors="replace"))
    if lines and not lines[-1]:
        lines.pop()
    return lines, bad
