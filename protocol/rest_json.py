"""Handle.Net 9 REST JSON: value objects and reply bodies, both directions (sans-IO).

Formats follow Handle.Net's ``GsonUtility`` and the observed server
(shared/reference/handle-rest.md). A value object is::

    {"index": 1, "type": "URL", "data": {"format": "string", "value": "..."},
     "permissions": "1110", "ttl": 86400, "timestamp": "2026-11-23T18:04:27Z",
     "references": [{"handle": "...", "index": 1}]}

with ``permissions`` only when not ``1110``, ``ttl`` an ISO string when absolute,
``timestamp`` omitted when 0 and ``references`` only when non-empty.

Decoding accepts what Gson accepts (numbers as numeric strings, a bare string as
``data``, format names in any case) and raises :class:`MalformedMessage` (rc 4)
for anything it cannot map, as Handle.Net does; structural checks (index > 0,
unique indexes: rc 202 / 201) are left to ``protocol.values.check_record`` so the
caller can run them after its own ``?index`` checks, in Handle.Net's order.

Encoding builds insertion-ordered dicts and serialises them with orjson; replies
come out as ``bytes`` ready to cache.
"""

from __future__ import annotations

import base64
import calendar
import re
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from protocol.codes import RC
from protocol.errors import HandleError, InvalidValue, MalformedMessage
from protocol.site_info import (
    basic_data_from_json,
    decode_site,
    encode_site,
    json_bool,
    json_int,
    json_list,
    json_obj,
    json_required,
    json_str,
    public_key_to_json,
    site_from_json,
    site_to_json,
    utf8,
)
from protocol.values import (
    DEFAULT_PERMS,
    DEFAULT_TTL,
    AdminPerm,
    AdminRecord,
    HandleValue,
    ValueReference,
    ValueView,
    admin_perms_to_text,
    encode_admin,
    encode_vlist,
    perms_to_text,
)
from protocol.wire import WireReader

__all__ = [
    "decode_data",
    "decode_put_body",
    "decode_value_object",
    "decode_values",
    "error_reply",
    "format_time",
    "http_status",
    "jsonp",
    "list_handles_reply",
    "list_prefixes_reply",
    "ok_reply",
    "parse_time",
    "pretty",
    "resolve_reply",
    "scrub_callback",
    "value_to_json",
    "values_not_found_reply",
    "values_to_json",
]

# Value ttl / timestamp are int4 on the wire; values.check_value allows this range.
_TIME_MIN, _TIME_MAX = -(2**31), 2**32 - 1
_ADMIN_ALL = 0x0FFF

# --- time -------------------------------------------------------------------


@lru_cache(maxsize=4096)  # records share timestamps; bounded
def format_time(seconds: int) -> str:
    """Unix seconds → ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), Handle.Net's ISO8601_NO_MS."""
    try:
        t = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        raise InvalidValue(f"Time {seconds} out of range") from None
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
    )


_ISO = re.compile(
    r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r"\s*(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2})?)?\s*"
)


def parse_time(text: str) -> int:
    """ISO-8601 (date, date-time, optional fraction and zone; UTC when no zone, as
    Handle.Net's FastDateFormat.parseUtc) → Unix seconds."""
    m = _ISO.fullmatch(text)
    if m is None:
        raise MalformedMessage(f"Unparseable date: {text!r}")
    year, month, day, hour, minute, sec = (int(g) if g else 0 for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(year, month, day, hour, minute, sec)  # range checks only
    except ValueError:
        raise MalformedMessage(f"Unparseable date: {text!r}") from None
    seconds = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11) or 0) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    if not _TIME_MIN <= seconds <= _TIME_MAX:
        raise MalformedMessage(f"Date out of range: {text!r}")
    return seconds


# --- encoding: values ---------------------------------------------------------

# Handle.Net's HandleValue.hasType: case-insensitive, and "X.sub" counts as "X".
_STRUCTURED = {
    "HS_ADMIN": "admin",
    "HS_VLIST": "vlist",
    "HS_SITE": "site",  # also HS_SITE.PREFIX and HS_SITE.6 as subtypes
    "HS_NA_DELEGATE": "site",  # legacy derived-prefix site type
    "HS_PUBKEY": "key",
}

# Util.looksLikeBinary: besides invalid UTF-8, C0 controls other than 0x09-0x13, and DEL.
_BINARY_BYTE = re.compile(rb"[\x00-\x08\x14-\x1f\x7f]")
_PERMS_TEXT = tuple(perms_to_text(p) for p in range(16))
_DEFAULT_PERMS = int(DEFAULT_PERMS)


@lru_cache(maxsize=1024)
def _structured_kind(type_: str) -> str | None:
    if not type_.isascii():  # Java's equalsCI is byte-wise ASCII
        return None
    upper = type_.upper()
    kind = _STRUCTURED.get(upper)
    if kind is None and "." in upper:
        kind = _STRUCTURED.get(upper.partition(".")[0])
    return kind


def _generic_data(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _base64_data(data)
    # Printable text has none of the control bytes that make data binary, and
    # isprintable costs less than the search (1.1-4x): only the rest is searched.
    if text.isprintable() or _BINARY_BYTE.search(data) is None:
        return {"format": "string", "value": text}
    return _base64_data(data)


def _base64_data(data: bytes) -> dict[str, Any]:
    return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def _admin_to_json(data: bytes) -> dict[str, Any]:
    # Strict, unlike values.decode_admin: Handle.Net refuses trailing bytes except the
    # 2 of a "legacy byte length" record, which it reports as legacyByteLength.
    try:
        r = WireReader(data)
        perms = r.get_u16()
        handle = r.get_str()
        index = r.get_i32()
    except MalformedMessage as exc:
        raise InvalidValue(exc.message) from exc
    out: dict[str, Any] = {
        "handle": handle,
        "index": index,
        "permissions": admin_perms_to_text(perms),
    }
    if r.remaining == 2:
        out["legacyByteLength"] = True
    elif r.remaining:
        raise InvalidValue("Unexpected data remaining after decoding")
    return out


def _vlist_to_json(data: bytes) -> list[dict[str, Any]]:
    try:
        r = WireReader(data)
        refs = [{"handle": r.get_str(), "index": r.get_i32()} for _ in range(r.get_count(8))]
        r.expect_end()
    except MalformedMessage as exc:
        raise InvalidValue(exc.message) from exc
    return refs


@lru_cache(maxsize=2048)  # the same HS_ADMIN/HS_VLIST recurs across a prefix; bounded
def _structured_data(kind: str, data: bytes) -> dict[str, Any]:
    try:
        if kind == "admin":
            return {"format": "admin", "value": _admin_to_json(data)}
        if kind == "vlist":
            return {"format": "vlist", "value": _vlist_to_json(data)}
        if kind == "site":
            return {"format": "site", "value": site_to_json(decode_site(data))}
        return {"format": "key", "value": public_key_to_json(data)}
    except HandleError:
        # As Handle.Net: undecodable structured data is shown as string/base64.
        return _generic_data(data)


def value_to_json(v: ValueView) -> dict[str, Any]:
    """One value as Handle.Net writes it (key order included).

    The ``data`` dict of structured types comes from a shared cache: serialise or
    copy the result, never mutate it in place. Every resolve that misses the
    cache renders its values here: each attribute is read once.
    """
    type_, data = v.type, v.data
    kind = _structured_kind(type_)
    shown = _generic_data(data) if kind is None else _structured_data(kind, data)
    out: dict[str, Any] = {"index": v.index, "type": type_, "data": shown}
    perms = v.permissions  # often a Perm IntFlag: "&" on it is slow, "!=" is not
    if perms != _DEFAULT_PERMS:
        out["permissions"] = _PERMS_TEXT[int(perms) & 0x0F]
    out["ttl"] = format_time(v.ttl) if v.ttl_absolute else v.ttl
    if v.timestamp:
        out["timestamp"] = format_time(v.timestamp)
    references = v.references
    if references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in references]
    return out


def values_to_json(values: Sequence[ValueView]) -> list[dict[str, Any]]:
    return [value_to_json(v) for v in values]


# --- encoding: replies -------------------------------------------------------

_dumps = orjson.dumps


def resolve_reply(handle_text: str, values: Sequence[ValueView]) -> bytes:
    """``{"responseCode":1,"handle":...,"values":[...]}``; ``handle`` is the request's spelling."""
    return _dumps(
        {"responseCode": 1, "handle": handle_text, "values": [value_to_json(v) for v in values]}
    )


def referral_reply(
    rc: int, handle_text: str, values: Sequence[ValueView]
) -> bytes:
    """RC 302/303: the referral's values (HS_SITE / HS_SITE.PREFIX / HS_SERV) in the
    resolution reply's shape, so a client reads the sites to ask next."""
    encoded = [value_to_json(v) for v in values]
    return _dumps({"responseCode": int(rc), "handle": handle_text, "values": encoded})


def values_not_found_reply(handle_text: str) -> bytes:
    """RC 200 on resolution: ``values`` comes before ``handle``, as Handle.Net writes it."""
    return _dumps({"responseCode": int(RC.VALUES_NOT_FOUND), "values": [], "handle": handle_text})


def error_reply(rc: int, handle_text: str | None = None, message: str | None = None) -> bytes:
    """``{"responseCode":rc[,"message":...][,"handle":...]}``. An empty message or handle
    is left out, as Handle.Net does (``GET /api/handles/`` has no ``handle`` key)."""
    out: dict[str, Any] = {"responseCode": int(rc)}
    if message:
        out["message"] = message
    if handle_text:
        out["handle"] = handle_text
    return _dumps(out)


def ok_reply(handle_text: str) -> bytes:
    return _dumps({"responseCode": 1, "handle": handle_text})


def list_handles_reply(
    prefix_param: str,
    total: int,
    handles: list[str] | tuple[str, ...],
    page: int | None = None,
    page_size: int | None = None,
) -> bytes:
    """``totalCount`` is a string; ``page``/``pageSize`` only when both paged."""
    out: dict[str, Any] = {"responseCode": 1, "prefix": prefix_param, "totalCount": str(total)}
    if page is not None and page_size is not None:
        out["page"] = page
        out["pageSize"] = page_size
    out["handles"] = list(handles)
    return _dumps(out)


def list_prefixes_reply(
    total: int,
    prefixes: list[str] | tuple[str, ...],
    page: int | None = None,
    page_size: int | None = None,
) -> bytes:
    out: dict[str, Any] = {"responseCode": 1, "totalCount": str(total)}
    if page is not None and page_size is not None:
        out["page"] = page
        out["pageSize"] = page_size
    out["prefixes"] = list(prefixes)
    return _dumps(out)


def pretty(body: bytes) -> bytes:
    """Re-render a reply indented by 2 spaces (``?pretty``), keeping key order, as Gson's
    pretty printer lays it out. Not on the hot path: parses and re-serialises."""
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)


def scrub_callback(name: str) -> str:
    """JSONP callback name as Handle.Net sanitises it: anything but ``_ $ A-Z a-z``,
    digits after the first character, and chars >= U+00A0 becomes ``_``."""
    return "".join(
        ch
        if ch in "_$"
        or ("a" <= ch <= "z")
        or ("A" <= ch <= "Z")
        or (i > 0 and "0" <= ch <= "9")
        or ord(ch) >= 0xA0
        else "_"
        for i, ch in enumerate(name)
    )


def jsonp(body: bytes, callback: str) -> bytes:
    """``cb({...});`` (served as application/javascript)."""
    return scrub_callback(callback).encode("utf-8", "replace") + b"(" + body + b");"


# --- HTTP status ---------------------------------------------------------------

_STATUS: dict[int, int] = {
    RC.ERROR: 500,
    RC.SERVER_TOO_BUSY: 503,
    RC.SERVER_BACKUP: 503,
    RC.PROTOCOL_ERROR: 400,
    RC.OPERATION_NOT_SUPPORTED: 501,
    RC.HANDLE_NOT_FOUND: 404,
    RC.HANDLE_ALREADY_EXISTS: 409,
    RC.INVALID_HANDLE: 400,
    RC.VALUE_ALREADY_EXISTS: 409,
    RC.INVALID_VALUE: 400,
    RC.SERVER_NOT_RESP: 400,
    RC.SERVICE_REFERRAL: 300,  # Handle.Net's statusCodeFromResponse
    RC.PREFIX_REFERRAL: 300,
    RC.INVALID_ADMIN: 403,
    RC.INSUFFICIENT_PERMISSIONS: 403,
    RC.AUTHENTICATION_FAILED: 403,
    RC.INVALID_CREDENTIAL: 403,
    RC.QUOTA_REQUESTS_EXCEEDED: 429,  # Teleinfo quota codes
    RC.QUOTA_IDENTIFIERS_EXCEEDED: 429,
    RC.QUOTA_PREFIXES_EXCEEDED: 429,
}
_RESOLVING_METHODS = frozenset({"GET", "HEAD", "POST"})  # POST on /api/handles resolves


def http_status(rc: int, *, method: str = "GET", created: bool = False, tls: bool = False) -> int:
    """The HTTP status Handle.Net gives a reply with response code ``rc``.

    Every code it does not list (6, 300, 405 auth timeout, 406, 500, 501, ...) is
    500, as in its ``statusCodeFromResponse`` default; this keeps us indistinguishable
    rather than guessing a 4xx.
    """
    if rc == RC.SUCCESS:
        return 201 if created else 200
    if rc == RC.VALUES_NOT_FOUND:
        return 200 if method.upper() in _RESOLVING_METHODS else 400
    if rc == RC.AUTHENTICATION_NEEDED:
        # Over plain HTTP credentials are ignored, so a challenge would be pointless.
        return 401 if tls else 403
    return _STATUS.get(rc, 500)


# --- decoding ---------------------------------------------------------------


def _admin_perms_from_json(v: Any) -> int:
    """Handle.Net's permsElementToArray: string right-aligned (bit 0 = last char, only
    '1' sets a bit, at most 12 used), "*" or true = all, number = its low 12 bits,
    array = truthy items from bit 0 up, absent/null = none."""
    if v is None:
        return 0
    if isinstance(v, bool):
        return _ADMIN_ALL if v else 0
    if isinstance(v, str):
        if v == "*":
            return _ADMIN_ALL
        bits = 0
        for i, ch in enumerate(reversed(v[-12:])):
            if ch == "1":
                bits |= 1 << i
        return bits
    if isinstance(v, int | float):
        return json_int(v, "admin permissions") & _ADMIN_ALL
    if isinstance(v, list):
        bits = 0
        for i, item in enumerate(v[:12]):
            if _truthy(item):
                bits |= 1 << i
        return bits
    raise MalformedMessage("Did not expect permissions object")


def _truthy(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v != ""
    if isinstance(v, int | float):
        return v == v and v != 0  # NaN is false
    return True  # arrays and objects


def _admin_from_json(v: Any) -> bytes:
    obj = json_obj(v, "admin value")
    handle = json_str(json_required(obj, "handle", "admin value"), "admin handle")
    utf8(handle, "admin handle")
    index = json_int(json_required(obj, "index", "admin value"), "admin index")
    perms = _admin_perms_from_json(obj.get("permissions"))
    data = encode_admin(AdminRecord(handle, index, AdminPerm(perms)))
    legacy = obj.get("legacyByteLength")
    if legacy is not None and json_bool(legacy, "legacyByteLength"):
        data += b"\x00\x00"  # Java sizes the permissions as 4 bytes and writes 2
    return data


def _references_from_json(v: Any, what: str) -> list[ValueReference]:
    refs = []
    for item in json_list(v, what):
        obj = json_obj(item, "value reference")
        handle = json_str(json_required(obj, "handle", "value reference"), "reference handle")
        utf8(handle, "reference handle")
        index = json_int(json_required(obj, "index", "value reference"), "reference index")
        refs.append(ValueReference(handle, index))
    return refs


def decode_data(elem: Any) -> bytes:
    """A ``data`` element → the value's bytes: a bare string, or ``{"format","value"}``
    with string, base64, hex, admin, vlist, site or key (format names in any case)."""
    decoded = basic_data_from_json(elem)
    if isinstance(decoded, bytes):
        return decoded
    fmt = decoded.lower()
    value = elem.get("value")
    if fmt == "admin":
        return _admin_from_json(value)
    if fmt == "vlist":
        # Gson turns a missing list into null, which encodes as an empty list.
        return encode_vlist(() if value is None else _references_from_json(value, "vlist"))
    if fmt == "site":
        return encode_site(site_from_json(value))
    raise MalformedMessage(f"Unexpected type {decoded}")


def value_permissions(v: Any) -> int:
    """Value permissions text, right-aligned: the last 4 characters are admin read,
    admin write, public read, public write; missing positions keep the 1110 default,
    only '1' sets a bit; "*" = all."""
    text = json_str(v, "permissions")
    if text == "*":
        return 0x0F
    perms = _DEFAULT_PERMS
    for bit, ch in enumerate(reversed(text[-4:])):
        if ch == "1":
            perms |= 1 << bit
        else:
            perms &= ~(1 << bit)
    return perms


def _time_value(v: Any, what: str) -> int:
    if isinstance(v, str):
        return parse_time(v)
    return json_int(v, what, _TIME_MIN, _TIME_MAX)


_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


_PLAIN_ADMIN_KEYS = frozenset({"handle", "index", "permissions"})


@lru_cache(maxsize=256)
def admin_data(handle: str, index: int, permissions: str | None) -> bytes:
    # A batch's records nearly always share their HS_ADMIN value: decode and
    # encode it once.
    return _admin_from_json({"handle": handle, "index": index, "permissions": permissions})


def _common_value(obj: Any, stamp: int) -> HandleValue | None:
    """The shapes nearly every client sends, without the general path's helper per
    field: an int index, an ASCII type, string data (bare or ``{"format": "string"}``)
    or admin data, an int ttl or none, permissions or none, no timestamp or
    references. None for anything else: the general path decides, and words the
    errors. Same result as the general path for what it accepts (tested)."""
    if type(obj) is not dict:
        return None
    index = obj.get("index")
    type_ = obj.get("type")
    elem = obj.get("data")
    if (
        type(index) is not int
        or not _I32_MIN <= index <= _I32_MAX
        or type(type_) is not str
        or not type_.isascii()
    ):
        return None
    try:
        if type(elem) is dict:
            fmt = elem.get("format")
            value = elem.get("value")
            if fmt == "string" and type(value) is str:
                data = value.encode()
            elif fmt == "admin" and type(value) is dict:
                handle, admin_index = value.get("handle"), value.get("index")
                perms = value.get("permissions")
                if (
                    type(handle) is not str
                    or type(admin_index) is not int
                    or not _I32_MIN <= admin_index <= _I32_MAX
                    or not (perms is None or type(perms) is str)
                    or not value.keys() <= _PLAIN_ADMIN_KEYS  # e.g. legacyByteLength
                ):
                    return None
                data = admin_data(handle, admin_index, perms)
            else:
                return None
        elif type(elem) is str:
            data = elem.encode()
        else:
            return None
    except UnicodeEncodeError:
        return None  # an unpaired surrogate: the general path says so
    ttl = obj.get("ttl")
    perms = obj.get("permissions")
    if len(obj) > 3 + (ttl is not None) + (perms is not None) and (
        obj.get("timestamp") is not None or obj.get("references") is not None
    ):
        return None  # more keys than those read: maybe a timestamp or references
    if ttl is None:
        ttl = DEFAULT_TTL
    elif type(ttl) is not int or not _I32_MIN <= ttl <= _I32_MAX:
        return None
    return HandleValue(
        index, type_, data, ttl, False, stamp,
        _DEFAULT_PERMS if perms is None else value_permissions(perms), (),
    )  # fmt: skip


def decode_value_object(obj: Any, stamp: int | None = None) -> HandleValue:
    """One value object → :class:`HandleValue`. Timestamps are kept (import/export)
    unless ``stamp`` is given: writes pass the time they are stamped with, so the
    registrar need not build every value again to stamp it."""
    common = _common_value(obj, 0 if stamp is None else stamp)
    if common is not None:
        return common
    return _decode_value_general(obj, stamp)


def _decode_value_general(obj: Any, stamp: int | None) -> HandleValue:
    obj = json_obj(obj, "handle value")
    index = json_int(json_required(obj, "index", "handle value"), "index")
    type_ = json_str(json_required(obj, "type", "handle value"), "type")
    utf8(type_, "type")
    data = decode_data(json_required(obj, "data", "handle value"))

    permissions = _DEFAULT_PERMS
    if obj.get("permissions") is not None:
        permissions = value_permissions(obj["permissions"])

    ttl, ttl_absolute = DEFAULT_TTL, False
    raw_ttl = obj.get("ttl")
    if raw_ttl is not None:
        if isinstance(raw_ttl, str):
            ttl, ttl_absolute = parse_time(raw_ttl), True
        elif isinstance(raw_ttl, bool):
            raise MalformedMessage("bad ttl")
        else:
            ttl = json_int(raw_ttl, "ttl")

    timestamp = 0
    if obj.get("timestamp") is not None:
        timestamp = _time_value(obj["timestamp"], "timestamp")
    if stamp is not None:
        timestamp = stamp

    references: tuple[ValueReference, ...] = ()
    if obj.get("references") is not None:
        references = tuple(_references_from_json(obj["references"], "references"))

    return HandleValue(
        index=index,
        type=type_,
        data=data,
        ttl=ttl,
        ttl_absolute=ttl_absolute,
        timestamp=timestamp,
        permissions=permissions,
        references=references,
    )


def decode_values(arr: Any, stamp: int | None = None) -> list[HandleValue]:
    """A JSON array of value objects (body of PUT, batch and import)."""
    return [decode_value_object(item, stamp) for item in json_list(arr, "values")]


def _same_handle(a: str, b: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        return a.upper() == b.upper()
    pa, sa_slash, sa = a.partition("/")
    pb, sb_slash, sb = b.partition("/")
    return pa.upper() == pb.upper() and sa_slash == sb_slash and sa == sb


def decode_put_body(
    body: bytes | bytearray | memoryview | str, url_handle: str, *, case_sensitive: bool = False
) -> list[HandleValue]:
    """The body of ``PUT /api/handles/{handle}``: a JSON array of values,
    ``{"values":[...]}`` (an optional ``"handle"`` must match ``url_handle``, ignoring
    case; with ``case_sensitive`` only the prefix ignores case), or one value object
    (index + type + data). Raises :class:`MalformedMessage` (rc 4)."""
    if isinstance(body, memoryview):
        body = bytes(body)
    if not body.strip():
        raise MalformedMessage("Invalid JSON in PUT request")  # Gson parses "" as null
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"JSON syntax error: {exc}") from None
    if isinstance(doc, list):
        return decode_values(doc)
    if isinstance(doc, dict):
        if "values" in doc:
            if "handle" in doc:
                body_handle = json_str(doc["handle"], "handle")
                if not _same_handle(body_handle, url_handle, case_sensitive):
                    raise MalformedMessage("Mismatched handle in PUT request")
            values = doc["values"]
            return [] if values is None else decode_values(values)
        if "index" in doc and "type" in doc and "data" in doc:
            return [decode_value_object(doc)]
    raise MalformedMessage("Invalid JSON in PUT request")


# -- batch registration (idnode's extension: Handle.Net has none) -------------------

BATCH_LIMIT = 2000
_BATCH_ITEM_KEYS = frozenset({"handle", "values"})

# Per item: (the handle as written, or None if unreadable; its values, or why not).
BatchItem = tuple[str | None, Sequence[HandleValue] | HandleError]


def _batch_item(doc: Any, stamp: int | None) -> BatchItem:
    if not isinstance(doc, dict):
        return None, MalformedMessage("A batch item must be an object {handle, values}")
    handle = doc.get("handle")
    if not isinstance(handle, str) or not handle:
        return None, MalformedMessage("A batch item needs a handle")
    if not doc.keys() <= _BATCH_ITEM_KEYS:
        unknown = sorted(set(doc) - _BATCH_ITEM_KEYS)
        return handle, MalformedMessage(f"Unknown field {unknown[0]!r} in batch item")
    try:
        values = doc.get("values")
        if not isinstance(values, list):
            raise MalformedMessage("A batch item needs a values array")
        return handle, decode_values(values, stamp)
    except HandleError as exc:
        return handle, exc


def decode_batch(body: bytes, *, ndjson: bool, stamp: int | None = None) -> list[BatchItem]:
    """``POST /api/handles``: a JSON array of ``{"handle", "values"}``, or NDJSON (one per line).

    A malformed item fails alone; a malformed array, or more than
    ``BATCH_LIMIT`` items, fails the request (MalformedMessage, rc 4).
    """
    if ndjson:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > BATCH_LIMIT:
            raise MalformedMessage(f"At most {BATCH_LIMIT} records per batch, got {len(lines)}")
        return [decode_batch_line(line, stamp) for line in lines]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"JSON syntax error: {exc}") from None
    if not isinstance(doc, list):
        raise MalformedMessage("A batch is a JSON array of {handle, values}")
    if len(doc) > BATCH_LIMIT:
        raise MalformedMessage(f"At most {BATCH_LIMIT} records per batch, got {len(doc)}")
    return [_batch_item(item, stamp) for item in doc]


def decode_batch_line(line: bytes, stamp: int | None = None) -> BatchItem:
    """One NDJSON line of a batch (not blank)."""
    try:
        return _batch_item(orjson.loads(line), stamp)
    except orjson.JSONDecodeError as exc:
        return None, MalformedMessage(f"JSON syntax error: {exc}")


def batch_reply(results: list[tuple[str | None, bool | HandleError]]) -> bytes:
    """``{"responseCode":1,"results":[{"handle","responseCode"[,"created"|"message"]}]}``,
    in input order; ``created`` tells a new handle from a replaced one."""
    out = []
    for handle, result in results:
        if isinstance(result, HandleError):
            item: dict[str, Any] = {"handle": handle, "responseCode": int(result.rc)}
            if result.message:
                item["message"] = result.message
        else:
            item = {"handle": handle, "responseCode": 1, "created": result}
        out.append(item)
    return _dumps({"responseCode": 1, "results": out})
