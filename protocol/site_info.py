"""HS_SITE values: the site record model, its binary codec and its REST JSON form.

Binary layout (handle-wire.md section 6, Handle.Net ``Encoder.encodeSiteInfoRecord``)::

    u16 dataFormatVersion · u8 major · u8 minor · u16 serialNumber
    u8 primaryMask (0x80 primary, 0x40 multi-primary) · u8 hashOption
    str hashFilter · int4 count + (str name, str value)*            attributes
    int4 count + servers: int4 serverId · 16-byte address
                          · str publicKey · int4 count + (u8 type, u8 protocol, int4 port)*

The JSON form is the one Handle.Net's ``GsonUtility`` writes for ``"format":"site"``
(``version``, ``protocolVersion`` as a ``"2.11"`` string, ``serialNumber``,
``primarySite``, ``multiPrimary``, ``hashOption`` only when not 2, ``hashFilter``
only when non-empty, ``attributes`` as ``[{"name","value"}]``, ``servers`` with
``serverId``, ``address``, ``publicKey`` and ``interfaces`` of
``{"query","admin","protocol","port"}``).

Public keys (HS_PUBKEY data and a server's ``publicKey``) are Handle's binary key
encoding; their JSON form is JWK-like: ``{"kty":"RSA","n","e"}`` or
``{"kty":"DSA","y","p","q","g"}`` with unpadded base64url big-endian magnitudes.

This module also holds the Gson-compatible JSON coercions that ``rest_json`` shares
(``json_int``, ``json_str``, lenient base64 ...), because site JSON needs them too
and ``rest_json`` imports this module, not the reverse.

Malformed binary input raises :class:`InvalidValue` (rc 202); malformed JSON raises
:class:`MalformedMessage` (rc 4, as Handle.Net answers any JSON it cannot map).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from protocol.errors import InvalidValue, MalformedMessage
from protocol.wire import WireReader, WireWriter

SITE_RECORD_FORMAT_VERSION = 1
PRIMARY_SITE = 0x80
MULTI_PRIMARY = 0x40
ADDRESS_LENGTH = 16

# Minimum encoded sizes, used to refuse counts that could not fit in what is left.
_MIN_ATTRIBUTE = 8  # two empty strs
_MIN_SERVER = 4 + ADDRESS_LENGTH + 4 + 4  # id, address, empty key, zero interfaces
_MIN_INTERFACE = 6

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


class HashOption(IntEnum):
    BY_PREFIX = 0
    BY_SUFFIX = 1
    BY_ALL = 2


class InterfaceType(IntFlag):
    OUT_OF_SERVICE = 0
    ADMIN = 1
    QUERY = 2
    BOTH = 3


class Protocol(IntEnum):
    UDP = 0
    TCP = 1
    HTTP = 2
    HTTPS = 3


_PROTOCOL_NAMES = {p.value: p.name for p in Protocol}
_PROTOCOL_BY_NAME = {p.name: p.value for p in Protocol}  # case-sensitive, as Handle.Net


# --- model ------------------------------------------------------------------


def _check_range(value: int, lo: int, hi: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidValue(f"Site {what} {value!r} out of range {lo}..{hi}")


def address_to_bytes(addr: bytes | str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """A server address as the wire's 16 bytes; IPv4 (and IPv4-mapped IPv6, as Java's
    ``InetAddress`` does) goes into the last 4 bytes after 12 zero bytes."""
    if isinstance(addr, bytes | bytearray | memoryview):
        raw = bytes(addr)
        if len(raw) == 4:
            return bytes(12) + raw
        if len(raw) != ADDRESS_LENGTH:
            raise InvalidValue(f"Server address must be 4 or 16 bytes, not {len(raw)}")
        return raw
    if isinstance(addr, str):
        text = addr.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            # Java would resolve a host name here; protocol/ does no I/O.
            raise InvalidValue(f"Invalid server address {addr!r}: not an IP literal") from None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        return bytes(12) + mapped.packed if mapped is not None else addr.packed
    if isinstance(addr, ipaddress.IPv4Address):
        return bytes(12) + addr.packed
    raise InvalidValue(f"Invalid server address {addr!r}")


def address_text(raw: bytes) -> str:
    """Handle.Net's ``ServerInfo.getAddressString``: dotted IPv4 when the first 12
    bytes are zero, else its own IPv6 rendering (longest inner zero run as ``::``;
    a trailing zero run is never compressed, a quirk kept for byte-identical JSON)."""
    if not any(raw[:12]):
        return ".".join(str(b) for b in raw[12:16])
    groups = [(raw[i] << 8) | raw[i + 1] for i in range(0, 16, 2)]
    best_start, best_len, cur_start, cur_len = -1, 0, 0, 0
    for i, g in enumerate(groups):
        if g == 0:
            if cur_len == 0:
                cur_start = i
            cur_len += 1
        else:
            if cur_len > best_len:
                best_start, best_len = cur_start, cur_len
            cur_len = 0
    if best_len <= 1:
        return ":".join(format(g, "x") for g in groups)
    head = ":".join(format(g, "x") for g in groups[:best_start])
    tail = ":".join(format(g, "x") for g in groups[best_start + best_len :])
    return f"{head}::{tail}"


@dataclass(frozen=True, slots=True)
class Interface:
    type: int = InterfaceType.BOTH  # InterfaceType bits: 1 admin, 2 query
    protocol: int = Protocol.TCP  # Protocol; other values pass through as numbers
    port: int = 2641

    def __post_init__(self) -> None:
        _check_range(self.type, 0, 0xFF, "interface type")
        _check_range(self.protocol, 0, 0xFF, "interface protocol")
        _check_range(self.port, _I32_MIN, _I32_MAX, "interface port")

    @property
    def query(self) -> bool:
        return bool(self.type & InterfaceType.QUERY)

    @property
    def admin(self) -> bool:
        return bool(self.type & InterfaceType.ADMIN)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    server_id: int
    # 16 wire bytes; a str, ipaddress object or 4-byte value is converted on construction.
    address: bytes
    public_key: bytes = b""  # Handle's binary key encoding (see public_key_to_json)
    interfaces: tuple[Interface, ...] = ()

    def __post_init__(self) -> None:
        _check_range(self.server_id, _I32_MIN, _I32_MAX, "server id")
        object.__setattr__(self, "address", address_to_bytes(self.address))
        if not isinstance(self.public_key, bytes):
            raise InvalidValue("Server public key must be bytes")
        object.__setattr__(self, "interfaces", tuple(self.interfaces))

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if not any(self.address[:12]):
            return ipaddress.IPv4Address(self.address[12:])
        return ipaddress.IPv6Address(self.address)

    @property
    def address_text(self) -> str:
        return address_text(self.address)


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SiteInfo:
    data_format_version: int = SITE_RECORD_FORMAT_VERSION
    protocol_version: tuple[int, int] = (2, 11)
    serial_number: int = 0
    primary: bool = False
    multi_primary: bool = False
    hash_option: int = HashOption.BY_ALL
    hash_filter: bytes = b""
    attributes: tuple[Attribute, ...] = ()
    servers: tuple[ServerInfo, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_range(self.data_format_version, 0, 0xFFFF, "data format version")
        major, minor = self.protocol_version
        _check_range(major, 0, 0xFF, "protocol major version")
        _check_range(minor, 0, 0xFF, "protocol minor version")
        _check_range(self.serial_number, 0, 0xFFFF, "serial number")
        _check_range(self.hash_option, 0, 0xFF, "hash option")
        object.__setattr__(self, "protocol_version", (major, minor))
        object.__setattr__(self, "hash_filter", bytes(self.hash_filter))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "servers", tuple(self.servers))

    def attribute(self, name: str) -> str | None:
        for att in self.attributes:
            if att.name == name:
                return att.value
        return None


# --- binary -----------------------------------------------------------------


def encode_site(site: SiteInfo) -> bytes:
    w = WireWriter()
    w.u16(site.data_format_version)
    w.u8(site.protocol_version[0])
    w.u8(site.protocol_version[1])
    w.u16(site.serial_number)
    w.u8((PRIMARY_SITE if site.primary else 0) | (MULTI_PRIMARY if site.multi_primary else 0))
    w.u8(site.hash_option)
    w.counted_bytes(site.hash_filter)
    w.u32(len(site.attributes))
    for att in site.attributes:
        w.str(att.name)
        w.str(att.value)
    w.u32(len(site.servers))
    for server in site.servers:
        w.i32(server.server_id)
        w.raw(server.address)
        w.counted_bytes(server.public_key)
        w.u32(len(server.interfaces))
        for intf in server.interfaces:
            w.u8(intf.type)
            w.u8(intf.protocol)
            w.i32(intf.port)
    return w.getvalue()


def decode_site(data: bytes | memoryview) -> SiteInfo:
    """The inverse of :func:`encode_site`; trailing bytes are refused, as Handle.Net does."""
    try:
        r = WireReader(data)
        version = r.get_u16()
        major = r.get_u8()
        minor = r.get_u8()
        serial = r.get_u16()
        mask = r.get_u8()
        hash_option = r.get_u8()
        hash_filter = r.get_counted_bytes()
        attributes = tuple(
            Attribute(r.get_str(), r.get_str()) for _ in range(r.get_count(_MIN_ATTRIBUTE))
        )
        servers = []
        for _ in range(r.get_count(_MIN_SERVER)):
            server_id = r.get_i32()
            address = r.get_bytes(ADDRESS_LENGTH)
            key = r.get_counted_bytes()
            interfaces = tuple(
                Interface(r.get_u8(), r.get_u8(), r.get_i32())
                for _ in range(r.get_count(_MIN_INTERFACE))
            )
            servers.append(ServerInfo(server_id, address, key, interfaces))
        r.expect_end()
    except MalformedMessage as exc:
        raise InvalidValue(f"Malformed HS_SITE data: {exc.message}") from exc
    return SiteInfo(
        data_format_version=version,
        protocol_version=(major, minor),
        serial_number=serial,
        primary=bool(mask & PRIMARY_SITE),
        multi_primary=bool(mask & MULTI_PRIMARY),
        hash_option=hash_option,
        hash_filter=hash_filter,
        attributes=attributes,
        servers=tuple(servers),
    )


# --- Gson-compatible JSON coercions (shared with rest_json) -----------------
#
# Gson's getAsInt/getAsString accept a number or a numeric string, so clients send
# either (pyhandle sends the HS_ADMIN index as "300"). These helpers accept what
# Gson accepts, minus its silent truncation of 1.5 to 1, and raise MalformedMessage.

_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def json_int(v: Any, what: str, lo: int = _I32_MIN, hi: int = _I32_MAX) -> int:
    if isinstance(v, bool):
        raise MalformedMessage(f"Expected a number for {what}, got {str(v).lower()}")
    if isinstance(v, int):
        n = v
    elif (isinstance(v, float) and v.is_integer()) or (
        isinstance(v, str) and _INT_TEXT.fullmatch(v)
    ):
        n = int(v)
    else:
        raise MalformedMessage(f"Expected an integer for {what}: {_show(v)}")
    if not lo <= n <= hi:
        raise MalformedMessage(f"Number out of range for {what}: {n}")
    return n


def json_str(v: Any, what: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)  # Gson's getAsString on a number primitive
    raise MalformedMessage(f"Expected a string for {what}: {_show(v)}")


def json_bool(v: Any, what: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str | int | float):
        return str(v).lower() == "true"  # Boolean.parseBoolean(getAsString())
    raise MalformedMessage(f"Expected a boolean for {what}: {_show(v)}")


def json_obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise MalformedMessage(f"Expected a JSON object for {what}: {_show(v)}")
    return v


def json_list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise MalformedMessage(f"Expected a JSON array for {what}: {_show(v)}")
    if None in v:  # JSON values: nothing else equals None
        # Gson's ensureNoTrailingComma: [a, b, ] parses leniently as a null element.
        raise MalformedMessage(f"While parsing JSON found null in array for {what}")
    return v


def json_required(obj: dict[str, Any], key: str, what: str) -> Any:
    v = obj.get(key)
    if v is None:
        raise MalformedMessage(f"Missing {key!r} in {what}")
    return v


def utf8(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedMessage(f"Invalid text in {what}: unpaired surrogate") from None


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_B64_JUNK = re.compile(r"[^A-Za-z0-9+/\-_]")


def b64decode_lenient(text: str) -> bytes:
    """Commons-codec ``Base64.decodeBase64``: both alphabets, characters outside them
    ignored, decoding stops at the first ``=``, a dangling 6-bit remainder dropped."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    body = _B64_JUNK.sub("", text.split("=", 1)[0]).replace("-", "+").replace("_", "/")
    if len(body) % 4 == 1:
        body = body[:-1]
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:  # not reachable after cleaning; be safe
        raise MalformedMessage(f"Invalid base64 data: {exc}") from None


_HEX = re.compile(r"[0-9A-Fa-f]*")


def hex_decode(text: str) -> bytes:
    if len(text) % 2:
        raise MalformedMessage("Invalid hex data: odd number of characters")
    if not _HEX.fullmatch(text):
        raise MalformedMessage("Invalid hex data: illegal character")
    return bytes.fromhex(text)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- public keys ------------------------------------------------------------

RSA_PUB_KEY = b"RSA_PUB_KEY"
DSA_PUB_KEY = b"DSA_PUB_KEY"
DH_PUB_KEY = b"DH_PUB_KEY"


def _magnitude(raw: bytes) -> bytes:
    """BigInteger(1, raw) written back unsigned: leading zeros stripped, at least 1 byte."""
    stripped = raw.lstrip(b"\x00")
    return stripped or b"\x00"


def _twos_complement(magnitude: bytes) -> bytes:
    """BigInteger(1, magnitude).toByteArray(): minimal big-endian with a sign bit."""
    n = int.from_bytes(magnitude, "big")
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _rsa_acceptable(n: bytes, e: bytes) -> bool:
    # The checks Java's RSA KeyFactory applies; a key it refuses is shown as base64.
    n_bits = int.from_bytes(n, "big").bit_length()
    e_val = int.from_bytes(e, "big")
    if not 512 <= n_bits <= 16384 or e_val <= 0:
        return False
    return n_bits <= 3072 or e_val.bit_length() <= 64


def public_key_to_json(data: bytes) -> dict[str, str]:
    """HS_PUBKEY bytes → ``{"kty":"RSA","n","e"}`` / ``{"kty":"DSA","y","p","q","g"}``.

    Raises InvalidValue for anything else (DH keys, unknown or corrupt encodings);
    callers then fall back to string/base64 like Handle.Net.
    """
    try:
        r = WireReader(data)
        kind = r.get_counted_bytes()
        r.get_u16()  # flags, reserved
        if kind == RSA_PUB_KEY:
            e = r.get_counted_bytes()
            n = r.get_counted_bytes()
            # Trailing bytes (Java writes 4 zero bytes after n) are ignored, as Java does.
            if not _rsa_acceptable(n, e):
                raise InvalidValue("RSA public key the Java KeyFactory would refuse")
            return {"kty": "RSA", "n": b64url(_magnitude(n)), "e": b64url(_magnitude(e))}
        if kind == DSA_PUB_KEY:
            q = r.get_counted_bytes()
            p = r.get_counted_bytes()
            g = r.get_counted_bytes()
            y = r.get_counted_bytes()
            return {
                "kty": "DSA",
                "y": b64url(_magnitude(y)),
                "p": b64url(_magnitude(p)),
                "q": b64url(_magnitude(q)),
                "g": b64url(_magnitude(g)),
            }
    except MalformedMessage as exc:
        raise InvalidValue(f"Malformed public key: {exc.message}") from exc
    raise InvalidValue("Public key type has no JSON form")


def public_key_from_json(obj: Any) -> bytes:
    """The ``key`` JSON form → Handle's binary key encoding (as Util.getBytesFromPublicKey)."""
    obj = json_obj(obj, "public key")
    kty = json_str(json_required(obj, "kty", "public key"), "kty").upper()

    def part(name: str) -> bytes:
        raw = b64decode_lenient(json_str(json_required(obj, name, "public key"), name))
        return _twos_complement(raw)

    w = WireWriter()
    if kty == "RSA":
        n, e = part("n"), part("e")
        if not _rsa_acceptable(n, e):
            raise MalformedMessage("Unable to deserialize public key: invalid RSA key")
        w.counted_bytes(RSA_PUB_KEY)
        w.u16(0)
        w.counted_bytes(e)
        w.counted_bytes(n)
        w.u32(0)  # Java sizes the buffer for 4 ints and leaves the last one zero
        return w.getvalue()
    if kty == "DSA":
        y, p, q, g = part("y"), part("p"), part("q"), part("g")
        w.counted_bytes(DSA_PUB_KEY)
        w.u16(0)
        for component in (q, p, g, y):
            w.counted_bytes(component)
        return w.getvalue()
    raise MalformedMessage(f"Unsupported key type {kty}")


def basic_data_from_json(elem: Any, what: str = "data") -> bytes | str:
    """Decode a data element in the formats every context accepts: a bare primitive
    (= string), or ``{"format","value"}`` with string, base64, hex or key.

    Returns the lower-cased format name (a str) when it is one this function does not
    handle (admin, vlist, site, or unknown), so the caller can take over.
    """
    if not isinstance(elem, dict):
        if isinstance(elem, list) or elem is None:
            raise MalformedMessage(f"Expected a string or an object for {what}: {_show(elem)}")
        return utf8(json_str(elem, what), what)
    fmt = json_str(json_required(elem, "format", what), "format")
    lower = fmt.lower()
    value = elem.get("value")
    if lower == "string":
        return utf8(json_str(json_required(elem, "value", what), what), what)
    if lower == "base64":
        return b64decode_lenient(json_str(json_required(elem, "value", what), what))
    if lower == "hex":
        return hex_decode(json_str(json_required(elem, "value", what), what))
    if lower == "key":
        return public_key_from_json(value)
    return fmt


# --- site JSON ----------------------------------------------------------------


def site_to_json(site: SiteInfo) -> dict[str, Any]:
    """The site object as Handle.Net's GsonUtility writes it (key order included)."""
    out: dict[str, Any] = {
        "version": site.data_format_version,
        "protocolVersion": f"{site.protocol_version[0]}.{site.protocol_version[1]}",
        "serialNumber": site.serial_number,
        "primarySite": site.primary,
        "multiPrimary": site.multi_primary,
    }
    if site.hash_option != HashOption.BY_ALL:
        out["hashOption"] = site.hash_option
    if site.hash_filter:
        try:
            out["hashFilter"] = site.hash_filter.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("Site hash filter is not UTF-8") from None
    out["attributes"] = [{"name": a.name, "value": a.value} for a in site.attributes]
    out["servers"] = [_server_to_json(s) for s in site.servers]
    return out


def _server_to_json(server: ServerInfo) -> dict[str, Any]:
    try:
        key: dict[str, Any] = {"format": "key", "value": public_key_to_json(server.public_key)}
    except InvalidValue:
        key = {"format": "base64", "value": base64.b64encode(server.public_key).decode("ascii")}
    return {
        "serverId": server.server_id,
        "address": address_text(server.address),
        "publicKey": key,
        "interfaces": [
            {
                "query": bool(i.type & InterfaceType.QUERY),
                "admin": bool(i.type & InterfaceType.ADMIN),
                "protocol": _PROTOCOL_NAMES.get(i.protocol, i.protocol),
                "port": i.port,
            }
            for i in server.interfaces
        ],
    }


def _legacy_keys(obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Old siteinfo.json files capitalise keys (``ServerList``, ``Address``, ``Port``)."""
    if "ServerList" in obj or "Address" in obj or "Port" in obj:
        return {(k[:1].lower() + k[1:]): v for k, v in obj.items()}, True
    return obj, False


def site_from_json(obj: Any) -> SiteInfo:
    """Parse the site JSON (also the legacy capitalised form). Absent fields take
    Handle.Net's defaults: version 1, protocol 2.11, serial 0, hash option 2."""
    obj, _ = _legacy_keys(json_obj(obj, "site"))
    kwargs: dict[str, Any] = {}
    if obj.get("version") is not None:
        kwargs["data_format_version"] = json_int(obj["version"], "site version", 0, 0xFFFF)
    if obj.get("protocolVersion") is not None:
        text = json_str(obj["protocolVersion"], "protocolVersion")
        major, dot, minor = text.partition(".")
        if not dot:
            raise MalformedMessage(f"Invalid protocolVersion {text!r}")
        kwargs["protocol_version"] = (
            json_int(major, "protocolVersion", -128, 255) & 0xFF,
            json_int(minor, "protocolVersion", -128, 255) & 0xFF,
        )
    if obj.get("serialNumber") is not None:
        kwargs["serial_number"] = json_int(obj["serialNumber"], "serialNumber", 0, 0xFFFF)
    if obj.get("primarySite") is not None:
        kwargs["primary"] = json_bool(obj["primarySite"], "primarySite")
    if obj.get("multiPrimary") is not None:
        kwargs["multi_primary"] = json_bool(obj["multiPrimary"], "multiPrimary")
    if obj.get("hashOption") is not None:
        kwargs["hash_option"] = json_int(obj["hashOption"], "hashOption", -128, 255) & 0xFF
    if obj.get("hashFilter") is not None:
        kwargs["hash_filter"] = utf8(json_str(obj["hashFilter"], "hashFilter"), "hashFilter")
    if obj.get("attributes") is not None:
        kwargs["attributes"] = _attributes_from_json(obj["attributes"])
    servers = obj.get("servers")
    if servers is None:
        servers = obj.get("serverList")
    if servers is not None:
        kwargs["servers"] = tuple(_server_from_json(s) for s in json_list(servers, "site servers"))
    try:
        return SiteInfo(**kwargs)
    except InvalidValue as exc:
        raise MalformedMessage(exc.message) from exc


def _attributes_from_json(v: Any) -> tuple[Attribute, ...]:
    if isinstance(v, list):
        out = []
        for item in json_list(v, "site attributes"):
            att = json_obj(item, "site attribute")
            name = json_str(json_required(att, "name", "site attribute"), "attribute name")
            value = json_str(json_required(att, "value", "site attribute"), "attribute value")
            out.append(Attribute(name, value))
        return tuple(out)
    # Also accepted by Handle.Net: {"name": "value"} or {"name": ["v1", "v2"]}.
    out = []
    for name, value in json_obj(v, "site attributes").items():
        for item in json_list(value, "attribute") if isinstance(value, list) else [value]:
            out.append(Attribute(name, json_str(item, "attribute value")))
    return tuple(out)


def _server_from_json(v: Any) -> ServerInfo:
    obj, legacy = _legacy_keys(json_obj(v, "site server"))
    server_id = json_int(json_required(obj, "serverId", "site server"), "serverId")
    address_text_ = json_str(json_required(obj, "address", "site server"), "address")
    try:
        address = address_to_bytes(address_text_)
    except InvalidValue as exc:
        raise MalformedMessage(exc.message) from exc
    key_elem = json_required(obj, "publicKey", "site server")
    if legacy and isinstance(key_elem, str):
        key = hex_decode(key_elem)
    else:
        decoded = basic_data_from_json(key_elem, "server publicKey")
        if isinstance(decoded, str):
            raise MalformedMessage(f"Unexpected type {decoded}")
        key = decoded
    interfaces = obj.get("interfaces")
    if interfaces is None:
        interfaces = obj.get("interfaceList")
    intfs = (
        ()
        if interfaces is None
        else tuple(_interface_from_json(i) for i in json_list(interfaces, "interfaces"))
    )
    return ServerInfo(server_id, address, key, intfs)


def _interface_from_json(v: Any) -> Interface:
    obj, _ = _legacy_keys(json_obj(v, "interface"))
    query = json_bool(json_required(obj, "query", "interface"), "query")
    admin = json_bool(json_required(obj, "admin", "interface"), "admin")
    proto_elem = json_required(obj, "protocol", "interface")
    protocol = _PROTOCOL_BY_NAME.get(proto_elem) if isinstance(proto_elem, str) else None
    if protocol is None:
        protocol = json_int(proto_elem, "interface protocol", -128, 255) & 0xFF
    port = json_int(json_required(obj, "port", "interface"), "port")
    kind = (InterfaceType.QUERY if query else 0) | (InterfaceType.ADMIN if admin else 0)
    return Interface(int(kind), protocol, port)
