"""Traceability links of a record: which other identifiers it points at (sans-IO).

Two kinds, in value order:

- Handle value references: every ``references`` entry of any value
  (``{"handle", "index"}`` in REST JSON) links to that handle, relation
  ``reference``.
- Typed trace values: a value of type ``TRACE`` or ``TRACE.<relation>``
  (``TRACE.component``, ``TRACE.batch``, ``TRACE.parent``...; the relation is
  free text) whose data is UTF-8 text naming one or more handles: a JSON
  array of strings (``["88.118.2/engine-7", "88.119.1/batch-3"]``), or
  handles separated by whitespace or commas. Relation: the part after
  ``TRACE.``, or ``trace``.

A target that is not a handle is still returned (``valid=False``), so a
walker can show it instead of silently dropping it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from protocol.errors import HandleError
from protocol.identifier import parse_handle
from protocol.values import HandleValue

TRACE_TYPE: Final = "TRACE"
MAX_LINKS_PER_VALUE: Final = 10_000
_SEPARATORS: Final = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class Link:
    target: str
    relation: str
    index: int  # the value it came from
    type: str
    valid: bool = True


def trace_relation(value_type: str) -> str | None:
    """The relation a typed trace value names, or None if it is not one."""
    if value_type == TRACE_TYPE:
        return "trace"
    if value_type.startswith(TRACE_TYPE + ".") and len(value_type) > len(TRACE_TYPE) + 1:
        return value_type[len(TRACE_TYPE) + 1:]
    return None


def trace_targets(data: bytes) -> list[str]:
    """The handles named by a trace value's data (JSON array, or separated text)."""
    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith("["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list):
            return [item.strip() for item in items[:MAX_LINKS_PER_VALUE]
                    if isinstance(item, str) and item.strip()]
    return [t for t in _SEPARATORS.split(text) if t][:MAX_LINKS_PER_VALUE]


def links_of(values: Sequence[HandleValue]) -> list[Link]:
    links: list[Link] = []
    for v in values:
        for ref in v.references:
            links.append(Link(ref.handle, "reference", v.index, v.type, _is_handle(ref.handle)))
        relation = trace_relation(v.type)
        if relation is not None:
            for target in trace_targets(v.data):
                links.append(Link(target, relation, v.index, v.type, _is_handle(target)))
    return links


def _is_handle(text: str) -> bool:
    try:
        parse_handle(text)
    except HandleError:
        return False
    return "/" in text
