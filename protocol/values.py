"""The Handle value model (RFC 3651 section 3.1).

A record is a sequence of :class:`HandleValue`. Like the wire protocol, a value
holds its ``data`` as bytes: the format a JSON client sees (string, base64,
admin, vlist, site, key) is derived from the type and the bytes, so a value
written over REST reads back byte-identical over the binary protocol.

Structured data types (HS_ADMIN, HS_VLIST) have small codecs here; HS_SITE
lives in ``protocol.site_info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import IntFlag
from typing import Protocol

from protocol.codes import RC
from protocol.errors import HandleError, InvalidValue, MalformedMessage
from protocol.wire import WireReader, WireWriter

# Well-known types.
HS_ADMIN = "HS_ADMIN"
HS_SECKEY = "HS_SECKEY"
HS_PUBKEY = "HS_PUBKEY"
HS_SITE = "HS_SITE"
HS_SITE_PREFIX = "HS_SITE.PREFIX"
HS_SERV = "HS_SERV"
HS_VLIST = "HS_VLIST"
HS_ALIAS = "HS_ALIAS"
URL = "URL"
EMAIL = "EMAIL"

MAX_INDEX = 0x7FFFFFFF
DEFAULT_TTL = 86400


class Perm(IntFlag):
    """Per-value access bits (the wire's permission byte)."""

    PUBLIC_WRITE = 0x01
    PUBLIC_READ = 0x02
    ADMIN_WRITE = 0x04
    ADMIN_READ = 0x08


# Plain ints, not Perm: IntFlag arithmetic costs ~2 µs per operation, and these
# are tested on every resolve.
DEFAULT_PERMS: int = 0x0E  # "1110": admin read/write, public read
SECRET_PERMS: int = 0x0C  # "1100": never public
PUBLIC_READ: int = 0x02


def perms_to_text(perms: int) -> str:
    """Permission byte → REST's 4 characters: admin read, admin write, public read, public write."""
    return format(perms & 0x0F, "04b")


def perms_from_text(text: str) -> int:
    if len(text) != 4 or any(c not in "01" for c in text):
        raise InvalidValue(f"Invalid permissions {text!r}: expected 4 characters of 0/1")
    return int(text, 2)


@dataclass(frozen=True, slots=True)
class ValueReference:
    handle: str
    index: int


@dataclass(frozen=True, slots=True)
class HandleValue:
    index: int
    type: str
    data: bytes = b""
    ttl: int = DEFAULT_TTL
    ttl_absolute: bool = False  # ttl is a Unix time, not seconds
    timestamp: int = 0  # Unix seconds of the last change; 0 = unknown
    permissions: int = DEFAULT_PERMS
    references: tuple[ValueReference, ...] = field(default=())

    # Written out instead of generated: a frozen dataclass's __init__ sets each
    # field through object.__setattr__, ~5x the cost of a plain one, and batch
    # writes and record decoding build millions of values. The slots' own
    # setters (bound below the class) skip that lookup: about half the cost.
    def __init__(
        self,
        index: int,
        type: str,
        data: bytes = b"",
        ttl: int = DEFAULT_TTL,
        ttl_absolute: bool = False,
        timestamp: int = 0,
        permissions: int = DEFAULT_PERMS,
        references: tuple[ValueReference, ...] = (),
    ) -> None:
        _set_index(self, index)
        _set_type(self, type)
        _set_data(self, data)
        _set_ttl(self, ttl)
        _set_ttl_absolute(self, ttl_absolute)
        _set_timestamp(self, timestamp)
        _set_permissions(self, permissions)
        _set_references(self, references)

    @property
    def public_read(self) -> bool:
        return bool(self.permissions & PUBLIC_READ)

    def type_matches(self, wanted: str) -> bool:
        """Handle's type filter: case-insensitive; ``URL.`` also matches ``URL.alt``."""
        mine = self.type.upper()
        wanted = wanted.upper()
        if wanted.endswith("."):
            return mine.startswith(wanted) or mine == wanted[:-1]
        return mine == wanted

    def expires_at(self, now: int) -> int:
        return self.ttl if self.ttl_absolute else now + self.ttl


(
    _set_index, _set_type, _set_data, _set_ttl, _set_ttl_absolute, _set_timestamp,
    _set_permissions, _set_references,
) = (HandleValue.__dict__[f.name].__set__ for f in fields(HandleValue))  # fmt: skip


class ValueView(Protocol):
    """What reading a value needs: a ``HandleValue``, or the ``StoredValue`` a
    store decodes (``protocol.record_msgpack``), which replies are rendered
    from without making a ``HandleValue``."""

    @property
    def index(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def ttl(self) -> int: ...
    @property
    def ttl_absolute(self) -> bool: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def permissions(self) -> int: ...
    @property
    def references(self) -> tuple[ValueReference, ...]: ...
    @property
    def public_read(self) -> bool: ...


def check_value(value: HandleValue) -> None:
    """Structural checks every write path applies (rc 202 on failure)."""
    if not 0 < value.index <= MAX_INDEX:
        raise InvalidValue("Value indexes must be positive")
    if not value.type:
        raise InvalidValue(f"Value {value.index} has an empty type")
    if not 0 <= value.permissions <= 0x0F:
        raise InvalidValue(f"Value {value.index} has invalid permissions")
    if not -(2**31) <= value.ttl < 2**32:
        raise InvalidValue(f"Value {value.index} has an out-of-range ttl")


def check_record(values: Sequence[HandleValue]) -> None:
    """Every value valid and indexes unique (rc 201 for a duplicate, as Handle.Net)."""
    seen: set[int] = set()
    for value in values:
        if not (
            0 < value.index <= MAX_INDEX
            and value.type
            and 0 <= value.permissions <= 0x0F
            and -(2**31) <= value.ttl < 2**32
        ):  # check_value's conditions inline (batches check thousands); it says which
            check_value(value)
        if value.index in seen:
            raise HandleError(f"Index conflict for {value.index}", RC.VALUE_ALREADY_EXISTS)
        seen.add(value.index)


def filter_values(
    values: Sequence[HandleValue],
    indexes: tuple[int, ...] | list[int] = (),
    types: tuple[str, ...] | list[str] = (),
) -> list[HandleValue]:
    """Handle's resolution filter: index OR type; no filter means everything."""
    if not indexes and not types:
        return list(values)
    wanted = set(indexes)
    return [
        v for v in values if v.index in wanted or any(v.type_matches(t) for t in types)
    ]


# --- HS_ADMIN ---------------------------------------------------------------


class AdminPerm(IntFlag):
    """HS_ADMIN permission bits; REST writes them as 12 characters, bit 11 first."""

    ADD_HANDLE = 1 << 0
    DELETE_HANDLE = 1 << 1
    ADD_PREFIX = 1 << 2
    DELETE_PREFIX = 1 << 3
    MODIFY_VALUE = 1 << 4
    REMOVE_VALUE = 1 << 5
    ADD_VALUE = 1 << 6
    MODIFY_ADMIN = 1 << 7
    REMOVE_ADMIN = 1 << 8
    ADD_ADMIN = 1 << 9
    READ_VALUE = 1 << 10
    LIST_HANDLES = 1 << 11


ALL_ADMIN_PERMS = AdminPerm(0x0FFF)
ADMIN_PERM_BITS = 12


@dataclass(frozen=True, slots=True)
class AdminRecord:
    handle: str
    index: int
    permissions: AdminPerm = ALL_ADMIN_PERMS

    def allows(self, perm: AdminPerm) -> bool:
        return bool(self.permissions & perm)


def admin_perms_to_text(perms: int) -> str:
    return format(perms & 0x0FFF, f"0{ADMIN_PERM_BITS}b")


def admin_perms_from_text(text: str) -> AdminPerm:
    if not text or len(text) > ADMIN_PERM_BITS or any(c not in "01" for c in text):
        raise InvalidValue(f"Invalid admin permissions {text!r}")
    return AdminPerm(int(text, 2))


def encode_admin(admin: AdminRecord) -> bytes:
    w = WireWriter()
    w.u16(int(admin.permissions) & 0xFFFF)
    w.str(admin.handle)
    w.i32(admin.index)
    return w.getvalue()


def decode_admin(data: bytes) -> AdminRecord:
    try:
        r = WireReader(data)
        perms = r.get_u16()
        handle = r.get_str()
        index = r.get_i32()
    except MalformedMessage as exc:
        raise InvalidValue(f"Malformed HS_ADMIN data: {exc.message}") from exc
    return AdminRecord(handle, index, AdminPerm(perms & 0x0FFF))


# --- HS_VLIST ---------------------------------------------------------------


def encode_vlist(refs: list[ValueReference] | tuple[ValueReference, ...]) -> bytes:
    w = WireWriter()
    w.u32(len(refs))
    for ref in refs:
        w.str(ref.handle)
        w.i32(ref.index)
    return w.getvalue()


def decode_vlist(data: bytes) -> list[ValueReference]:
    try:
        r = WireReader(data)
        return [ValueReference(r.get_str(), r.get_i32()) for _ in range(r.get_count(8))]
    except MalformedMessage as exc:
        raise InvalidValue(f"Malformed HS_VLIST data: {exc.message}") from exc
