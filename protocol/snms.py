"""Teleinfo SNMS v5 management API: request and reply shapes (sans-IO).

Shapes follow teleinfo-dev/id-guide ``docs/dev-tools/snms/v5`` (summarised in
shared/reference/snms-v5.md): every reply is the envelope
``{"message", "status", "data"}``; identity records are
``{"handle", "templateVersion", "value": [{"index", "type", "data":
{"format": "string", "value"}, "auth"}]}``. Index 1001 is reserved: the server
writes the TEMPLATE value there, holding the record's ``templateVersion``.

Errors form one family::

    SnmsError (status -2 unless a subclass says otherwise)
    ├── BusinessError      -2  bad input, missing handle, ... (message in Chinese)
    ├── NotLoggedIn        -1  no token, wrong or expired token
    ├── NoPermission       -3  another enterprise's prefix, role not allowed
    └── InternalError      -4  the node failed

Parsing is strict: unknown fields, wrong JSON types and over-long strings are
business errors, so a typo never silently drops data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import lru_cache
from typing import Any, Final, Protocol

import orjson

from protocol.record_msgpack import plain_record
from protocol.values import DEFAULT_PERMS, DEFAULT_TTL, HandleValue


class Status(IntEnum):
    OK = 1
    NOT_LOGGED_IN = -1
    BUSINESS = -2
    NO_PERMISSION = -3
    INTERNAL = -4


# Messages: the documented ones verbatim, the others in the same style.
SUCCESS: Final = "success"
MSG_BAD_LOGIN: Final = "用户名/密码错误！"  # documented
MSG_EXISTS: Final = "标识已存在"  # documented (batch create)
MSG_NOT_FOUND: Final = "没有找到标识"  # documented (single delete)
MSG_NOT_EXIST: Final = "标识不存在"  # documented (batch delete item)
MSG_MISSING_PARAM: Final = "缺少必要的请求参数: {}"  # documented
MSG_NOT_IN_TEMPLATE: Final = "非法操作，索引{}在模板中不存在"  # documented
MSG_NOT_LOGGED_IN: Final = "未登录或登录已过期，请重新获取token"
MSG_NO_PERMISSION: Final = "没有权限操作该前缀: {}"
MSG_INTERNAL: Final = "系统繁忙"
MSG_BAD_JSON: Final = "请求体不是合法的JSON"
MSG_BAD_FIELD: Final = "参数错误: {}"
MSG_UNKNOWN_FIELD: Final = "未知参数: {}"
MSG_TOO_LONG: Final = "参数过长: {}（最多{}个字符）"
MSG_BATCH_LIMIT: Final = "批量操作一次最多{}条，本次{}条"
MSG_BATCH_EMPTY: Final = "批量操作不能为空"
MSG_RESERVED_INDEX: Final = "非法操作，索引1001为系统保留索引"
MSG_DUPLICATE_INDEX: Final = "非法操作，索引{}重复"
MSG_FORMAT: Final = "非法操作，data.format只支持string"
MSG_INVALID: Final = "标识数据不合法: {}"
MSG_NOT_SERVED: Final = "该前缀不由本节点服务: {}"
MSG_DUPLICATE_IN_BATCH: Final = "标识在本批次中重复"

BATCH_LIMIT: Final = 2000
TEMPLATE_INDEX: Final = 1001
TEMPLATE_TYPE: Final = "TEMPLATE"
MAX_HANDLE: Final = 255
MAX_TEMPLATE_VERSION: Final = 128
MAX_TYPE: Final = 128
MAX_VALUE: Final = 255
MAX_USERNAME: Final = 50
MAX_PASSWORD: Final = 64


class SnmsError(Exception):
    status: Status = Status.BUSINESS

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BusinessError(SnmsError):
    status = Status.BUSINESS


class NotLoggedIn(SnmsError):
    status = Status.NOT_LOGGED_IN

    def __init__(self, message: str = MSG_NOT_LOGGED_IN) -> None:
        super().__init__(message)


class NoPermission(SnmsError):
    status = Status.NO_PERMISSION


class InternalError(SnmsError):
    status = Status.INTERNAL

    def __init__(self, message: str = MSG_INTERNAL) -> None:
        super().__init__(message)


# -- envelope -------------------------------------------------------------------


def envelope(status: int, message: str, data: Any = None) -> bytes:
    return orjson.dumps({"message": message, "status": int(status), "data": data})


def success(data: Any) -> bytes:
    return envelope(Status.OK, SUCCESS, data)


def failure(error: SnmsError) -> bytes:
    return envelope(error.status, error.message, None)


# -- request bodies ---------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BusinessError(MSG_BAD_JSON) from None


def expect_object(obj: Any, name: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BusinessError(MSG_BAD_FIELD.format(name))
    if not obj.keys() <= allowed:
        unknown = sorted(set(obj) - allowed)
        raise BusinessError(MSG_UNKNOWN_FIELD.format(unknown[0]))
    return obj


def string_field(obj: dict[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise BusinessError(MSG_MISSING_PARAM.format(name))
        return ""
    if not isinstance(value, str):
        raise BusinessError(MSG_BAD_FIELD.format(name))
    if required and not value:
        raise BusinessError(MSG_MISSING_PARAM.format(name))
    if len(value) > limit:
        raise BusinessError(MSG_TOO_LONG.format(name, limit))
    return value


def int_field(obj: dict[str, Any], name: str) -> int:
    """An integer field; the docs' examples also send digits as strings (``"2000"``)."""
    value = obj.get(name)
    if value is None:
        raise BusinessError(MSG_MISSING_PARAM.format(name))
    if isinstance(value, str) and value.isdigit() and len(value) <= 11:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BusinessError(MSG_BAD_FIELD.format(name))
    return value


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


_LOGIN_FIELDS: Final = frozenset({"username", "password"})


def parse_credentials(obj: Any) -> Credentials:
    body = expect_object(obj, "body", _LOGIN_FIELDS)
    return Credentials(
        string_field(body, "username", MAX_USERNAME), string_field(body, "password", MAX_PASSWORD)
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def v1_password(sha256_of_password: str, day: str) -> str:
    """``/identity/token/v1``'s password: sha256hex(sha256hex(password) + "yyyy-MM-dd")."""
    return sha256_hex(sha256_of_password + day)


@dataclass(frozen=True, slots=True)
class SnmsValue:
    index: int
    type: str
    value: str
    auth: str = ""

    # Not generated: a frozen dataclass's __init__ costs ~3x this (see HandleValue).
    def __init__(self, index: int, type: str, value: str, auth: str = "") -> None:
        _set_value_index(self, index)
        _set_value_type(self, type)
        _set_value_value(self, value)
        _set_value_auth(self, auth)


_set_value_index, _set_value_type, _set_value_value, _set_value_auth = (
    SnmsValue.__dict__[f.name].__set__ for f in fields(SnmsValue)
)


class ValueInput(Protocol):
    """What a record's value gives: a ``SnmsValue``, or a batch's fast decoding of one."""

    @property
    def index(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def value(self) -> str: ...


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    handle: str
    template_version: str
    values: tuple[ValueInput, ...]

    def to_handle_values(self, timestamp: int = 0) -> list[HandleValue]:
        """The stored record: the TEMPLATE value at 1001, then the values as given."""
        values = [_template_value(self.template_version, timestamp)]
        for v in self.values:
            values.append(
                HandleValue(v.index, v.type, v.value.encode(), DEFAULT_TTL, False, timestamp)
            )
        return values

    def stored(self, timestamp: int) -> Sequence[HandleValue]:
        """``to_handle_values(timestamp)``, encoded already when it passes the write checks."""
        rows = [(TEMPLATE_INDEX, TEMPLATE_TYPE, self.template_version.encode(), DEFAULT_TTL,
                 DEFAULT_PERMS)]
        rows += [(v.index, v.type, v.value.encode(), DEFAULT_TTL, DEFAULT_PERMS)
                 for v in self.values]
        record = plain_record(rows, timestamp)
        return record if record is not None else self.to_handle_values(timestamp)


@lru_cache(maxsize=64)
def _template_value(version: str, timestamp: int) -> HandleValue:
    # Values are immutable: a batch's records share this one.
    return HandleValue(
        TEMPLATE_INDEX, TEMPLATE_TYPE, version.encode(), DEFAULT_TTL, False, timestamp
    )


_RECORD_FIELDS: Final = frozenset({"handle", "templateVersion", "value"})
_VALUE_FIELDS: Final = frozenset({"index", "type", "data", "auth"})
_DATA_FIELDS: Final = frozenset({"format", "value"})
_HANDLE_FIELDS: Final = frozenset({"handle"})


def parse_value(obj: Any) -> SnmsValue:
    # Each field is taken as is when it has the usual shape (the checks below
    # are what string_field/int_field would do with it); anything else goes
    # through those helpers, which word the error. A batch parses thousands.
    item = expect_object(obj, "value", _VALUE_FIELDS)
    index = item.get("index")
    if type(index) is not int:
        index = int_field(item, "index")
    if index == TEMPLATE_INDEX:
        raise BusinessError(MSG_RESERVED_INDEX)
    if not 0 < index <= 0x7FFFFFFF:
        raise BusinessError(MSG_BAD_FIELD.format("index"))
    type_ = item.get("type")
    if type(type_) is not str or not 0 < len(type_) <= MAX_TYPE:
        type_ = string_field(item, "type", MAX_TYPE)
    data = expect_object(item.get("data"), "data", _DATA_FIELDS)
    if data.get("format", "string") != "string":
        raise BusinessError(MSG_FORMAT)
    text = data.get("value")
    if type(text) is not str or len(text) > MAX_VALUE:
        text = string_field(data, "value", MAX_VALUE, required=False)
        if "value" not in data:
            raise BusinessError(MSG_MISSING_PARAM.format("data.value"))
    auth = item.get("auth")
    if auth is None:
        auth = ""
    elif type(auth) is not str or len(auth) > 64:
        auth = string_field(item, "auth", 64, required=False)
    return SnmsValue(index, type_, text, auth)


def parse_record(obj: Any) -> IdentityRecord:
    body = expect_object(obj, "body", _RECORD_FIELDS)
    handle = body.get("handle")
    if type(handle) is not str or not 0 < len(handle) <= MAX_HANDLE:
        handle = string_field(body, "handle", MAX_HANDLE)
    version = body.get("templateVersion")
    if type(version) is not str or not 0 < len(version) <= MAX_TEMPLATE_VERSION:
        version = string_field(body, "templateVersion", MAX_TEMPLATE_VERSION)
    raw_values = body.get("value")
    if raw_values is None:
        raise BusinessError(MSG_MISSING_PARAM.format("value"))
    if not isinstance(raw_values, list):
        raise BusinessError(MSG_BAD_FIELD.format("value"))
    values = tuple([parse_value(v) for v in raw_values])
    seen: set[int] = set()
    for v in values:
        if v.index in seen:
            raise BusinessError(MSG_DUPLICATE_INDEX.format(v.index))
        seen.add(v.index)
    return IdentityRecord(handle, version, values)


def parse_handle_body(obj: Any) -> str:
    """``DELETE /identityv2/data``'s ``{"handle": ...}``."""
    return string_field(expect_object(obj, "body", _HANDLE_FIELDS), "handle", MAX_HANDLE)


def batch_items(obj: Any, *, key: str | None = None) -> list[Any]:
    """A batch body: a bare JSON array (as the docs' examples), or ``{key: [...]}``.

    At most ``BATCH_LIMIT`` items, else the whole request is refused.
    """
    if key is not None and isinstance(obj, dict):
        obj = expect_object(obj, "body", frozenset({key})).get(key)
    if not isinstance(obj, list):
        raise BusinessError(MSG_BAD_FIELD.format(key or "body"))
    if not obj:
        raise BusinessError(MSG_BATCH_EMPTY)
    if len(obj) > BATCH_LIMIT:
        raise BusinessError(MSG_BATCH_LIMIT.format(BATCH_LIMIT, len(obj)))
    return obj


# Per item of a batch: its handle as written (None if not a string), its record or why not.
BatchItem = tuple[str | None, IdentityRecord | SnmsError]


def parse_batch(body: bytes) -> list[BatchItem]:
    """A batchCreate/batchUpdate body: a refusal of the whole request raises
    (bad JSON, not an array, empty, too many), a bad item fails alone."""
    items: list[BatchItem] = []
    for raw in batch_items(parse_json(body)):
        try:
            items.append((item_handle(raw), parse_record(raw)))
        except SnmsError as exc:
            items.append((item_handle(raw), exc))
    return items


def item_handle(obj: Any) -> str | None:
    """The handle a (possibly malformed) batchCreate/batchUpdate item names, for its result."""
    handle = obj.get("handle") if isinstance(obj, dict) else None
    return handle if isinstance(handle, str) else None


def delete_handle_item(obj: Any) -> str:
    if not isinstance(obj, str) or not obj:
        raise BusinessError(MSG_BAD_FIELD.format("handles"))
    if len(obj) > MAX_HANDLE:
        raise BusinessError(MSG_TOO_LONG.format("handle", MAX_HANDLE))
    return obj


# -- replies ------------------------------------------------------------------------


def detail(prefix: str, handle: str, values: Iterable[HandleValue]) -> dict[str, Any]:
    """``GET /identityv2/data/detail``'s data: every public value as a string value."""
    template_version = ""
    rendered = []
    for v in values:
        if not v.public_read:
            continue
        text = v.data.decode("utf-8", errors="replace")
        if v.index == TEMPLATE_INDEX and v.type == TEMPLATE_TYPE:
            template_version = text
        rendered.append(
            {"index": v.index, "type": v.type, "data": {"format": "string", "value": text},
             "auth": ""}
        )
    return {
        "code": "200",
        "prefix": prefix,
        "handle": handle,
        "templateVersion": template_version,
        "value": rendered,
    }


def item_result(handle: str | None, message: str) -> dict[str, Any]:
    """A batchCreate/batchUpdate result line: ``{handle, msg}``."""
    return {"handle": handle, "msg": message}


def delete_result(handle: str | None, message: str) -> dict[str, Any]:
    """A batchDelete result line: ``{handle, code, msg}`` (code 1 ok, -2 failed)."""
    code = Status.OK if message == SUCCESS else Status.BUSINESS
    return {"handle": handle, "code": int(code), "msg": message}
