"""Usage reports a secondary node sends its top-level node: msgpack, sans-IO.

One report covers one interval of one node::

    {"v": 1,                      # format version
     "id": "9f0c...",             # report id: unique per node, kept across retries
     "node": "88.118",            # the sender's own name for itself (informational)
     "start": 1700000000,         # interval, Unix seconds, start < end
     "end": 1700000060,
     "counts": [["88.118.1", 12, 3400], ...]}   # [prefix, registrations, resolutions]

The receiver adds a report's counts once per (sender, id), so a report
retried after a lost acknowledgement is not counted twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from protocol.errors import MalformedMessage

VERSION: Final = 1
MAX_PREFIXES: Final = 100_000
MAX_REPORT_BYTES: Final = 8 * 1024 * 1024
MAX_COUNT: Final = 2**63 - 1
MAX_PREFIX_CHARS: Final = 255
_REPORT_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
CONTENT_TYPE: Final = "application/msgpack"


@dataclass(frozen=True, slots=True)
class PrefixCounts:
    prefix: str
    registrations: int
    resolutions: int


@dataclass(frozen=True, slots=True)
class StatsReport:
    report_id: str
    node: str
    start: int
    end: int
    counts: tuple[PrefixCounts, ...]

    def __post_init__(self) -> None:
        if not _REPORT_ID.fullmatch(self.report_id):
            raise MalformedMessage("report id must be 1-64 characters [0-9A-Za-z_-]")
        if not 0 <= self.start < self.end <= MAX_COUNT:
            raise MalformedMessage("report interval must have 0 <= start < end")
        if len(self.node) > MAX_PREFIX_CHARS:
            raise MalformedMessage("node name too long")
        if len(self.counts) > MAX_PREFIXES:
            raise MalformedMessage(f"at most {MAX_PREFIXES} prefixes per report")
        seen: set[str] = set()
        for c in self.counts:
            if not c.prefix or len(c.prefix) > MAX_PREFIX_CHARS or "/" in c.prefix:
                raise MalformedMessage(f"invalid prefix {c.prefix!r} in report")
            if c.prefix in seen:
                raise MalformedMessage(f"prefix {c.prefix} twice in one report")
            seen.add(c.prefix)
            for n in (c.registrations, c.resolutions):
                if not 0 <= n <= MAX_COUNT:
                    raise MalformedMessage("counts must be non-negative 64-bit integers")


def encode_report(report: StatsReport) -> bytes:
    return msgpack.packb(
        {
            "v": VERSION,
            "id": report.report_id,
            "node": report.node,
            "start": report.start,
            "end": report.end,
            "counts": [[c.prefix, c.registrations, c.resolutions] for c in report.counts],
        },
        use_bin_type=True,
    )


def decode_report(data: bytes) -> StatsReport:
    """The report in ``data``; MalformedMessage for anything else."""
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedMessage("report too large")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True,
                              max_array_len=MAX_PREFIXES, max_map_len=16)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedMessage(f"report is not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage("report must be a map")
    if obj.get("v") != VERSION:
        raise MalformedMessage(f"unsupported report version {obj.get('v')!r}")
    try:
        counts = tuple(_prefix_counts(row) for row in _field(obj, "counts", list))
        return StatsReport(
            _field(obj, "id", str), _field(obj, "node", str), _int(obj, "start"),
            _int(obj, "end"), counts,
        )
    except TypeError as exc:
        raise MalformedMessage(f"malformed report: {exc}") from None


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise MalformedMessage(f"report field {name!r} must be a {kind.__name__}")
    return value


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"report field {name!r} must be an integer")
    return value


def _prefix_counts(row: Any) -> PrefixCounts:
    if (
        not isinstance(row, list)
        or len(row) != 3
        or not isinstance(row[0], str)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in row[1:])
    ):
        raise MalformedMessage("each count must be [prefix, registrations, resolutions]")
    return PrefixCounts(row[0], row[1], row[2])
