"""SNMS v5 metadata templates: parse, merge (PUT), store as JSON, validate records (sans-IO).

A template is identified by ``prefix`` + ``version``. Its items say which
value indexes (``idIndex``, from 2000) and types (``idType``) a record
registered with that ``templateVersion`` may carry, which are required, their
length limits, and whether they are enabled (``state`` 1) or disabled (0).

Decisions where the docs are unclear (shared/reference/snms-v5.md):
- POST items without ``state`` are enabled; PUT items must give it.
- PUT merges items by ``idIndex``: same index and ``idType`` updates the item,
  same index with another ``idType`` is an error, an unknown or missing index
  adds an item (a missing one gets the next free index from 2000). Items are
  never removed, only disabled. Other fields are replaced; ``version`` is the
  key and cannot change.
- Validation: every value's index must be an enabled item of the template
  with the same type (case-sensitive), within its length limits; every
  enabled required item must be present.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from protocol.snms import (
    MSG_MISSING_PARAM,
    MSG_NOT_IN_TEMPLATE,
    BusinessError,
    ValueInput,
    expect_object,
    int_field,
    string_field,
)

FIRST_INDEX: Final = 2000
MAX_ITEMS: Final = 1000
MAX_PREFIX: Final = 64
MAX_VERSION: Final = 128

MSG_TEMPLATE_MISSING: Final = "模板不存在: {} {}"
MSG_TEMPLATE_EXISTS: Final = "模板已存在: {} {}"
MSG_TEMPLATE_IN_USE: Final = "模板已被标识使用，不能删除"
MSG_INDEX_RANGE: Final = "idIndex必须从2000开始: {}"
MSG_ITEM_DUPLICATE: Final = "模板属性重复: {}"
MSG_ITEM_CONFLICT: Final = "索引{}已被属性{}使用"
MSG_ITEM_DISABLED: Final = "非法操作，索引{}在模板中已停用"
MSG_ITEM_TYPE: Final = "非法操作，索引{}的类型应为{}"
MSG_ITEM_LENGTH: Final = "属性{}的长度应在{}到{}之间"
MSG_ITEM_REQUIRED: Final = "缺少必填属性: {}"
MSG_METADATA_TYPE: Final = "metadata.type只支持string"
MSG_TYPE: Final = "type只能是1或2"
MSG_LENGTHS: Final = "minLength/maxLength不合法"


@dataclass(frozen=True, slots=True)
class TemplateItem:
    name: str
    id_type: str
    id_index: int
    required: bool
    state: int  # 1 enabled, 0 disabled
    min_length: int
    max_length: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "idType": self.id_type,
            "idIndex": self.id_index,
            "required": self.required,
            "state": self.state,
            "metadata": {
                "type": "string", "minLength": self.min_length, "maxLength": self.max_length
            },
        }


@dataclass(frozen=True, slots=True)
class Template:
    prefix: str
    version: str
    industry_category: str
    industry_specific: str
    industry_trade: str
    industry_subclass: str
    type: int
    description: str
    items: tuple[TemplateItem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "version": self.version,
            "industryCategory": self.industry_category,
            "industrySpecific": self.industry_specific,
            "industryTrade": self.industry_trade,
            "industrySubclass": self.industry_subclass,
            "type": self.type,
            "description": self.description,
            "items": [item.to_json() for item in self.items],
        }

    def dumps(self) -> str:
        return orjson.dumps(self.to_json()).decode()


_TEMPLATE_FIELDS: Final = frozenset(
    {"prefix", "version", "industryCategory", "industrySpecific", "industryTrade",
     "industrySubclass", "type", "description", "items", "handle"}
)
_ITEM_FIELDS: Final = frozenset(
    {"name", "idType", "idIndex", "required", "state", "metadata", "metadataId"}
)
_METADATA_FIELDS: Final = frozenset({"type", "minLength", "maxLength"})
_KEY_FIELDS: Final = frozenset({"prefix", "version"})


@dataclass(frozen=True, slots=True)
class _ItemInput:
    item: TemplateItem
    index_given: bool


def _parse_item(obj: Any, *, update: bool) -> _ItemInput:
    raw = expect_object(obj, "items", _ITEM_FIELDS)
    name = string_field(raw, "name", 128)
    id_type = string_field(raw, "idType", 128)
    index_given = raw.get("idIndex") not in (None, "")
    index = int_field(raw, "idIndex") if index_given else 0
    if index_given and index < FIRST_INDEX:
        raise BusinessError(MSG_INDEX_RANGE.format(index))
    if not index_given and not update:
        raise BusinessError(MSG_MISSING_PARAM.format("idIndex"))
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise BusinessError(MSG_MISSING_PARAM.format("required"))
    if raw.get("state") is None:
        if update:
            raise BusinessError(MSG_MISSING_PARAM.format("state"))
        state = 1
    else:
        state = int_field(raw, "state")
        if state not in (0, 1):
            raise BusinessError(MSG_MISSING_PARAM.format("state"))
    meta = expect_object(raw.get("metadata"), "metadata", _METADATA_FIELDS)
    if meta.get("type", "string") != "string":
        raise BusinessError(MSG_METADATA_TYPE)
    low, high = int_field(meta, "minLength"), int_field(meta, "maxLength")
    if not 0 <= low <= high:
        raise BusinessError(MSG_LENGTHS)
    item = TemplateItem(name, id_type, index, required, state, low, high)
    return _ItemInput(item, index_given)


def parse_key(obj: Any) -> tuple[str, str]:
    """``DELETE``'s body ``{"prefix", "version"}``."""
    body = expect_object(obj, "body", _KEY_FIELDS)
    return string_field(body, "prefix", MAX_PREFIX), string_field(body, "version", MAX_VERSION)


def parse_template(obj: Any, *, update: bool = False) -> tuple[Template, list[_ItemInput]]:
    """A POST (``update=False``) or PUT body: the template's fields and its items as given."""
    body = expect_object(obj, "body", _TEMPLATE_FIELDS)
    kind = int_field(body, "type")
    if kind not in (1, 2):
        raise BusinessError(MSG_TYPE)
    raw_items = body.get("items")
    if raw_items is None:
        raise BusinessError(MSG_MISSING_PARAM.format("items"))
    if not isinstance(raw_items, list) or len(raw_items) > MAX_ITEMS:
        raise BusinessError(MSG_MISSING_PARAM.format("items"))
    inputs = [_parse_item(i, update=update) for i in raw_items]
    template = Template(
        prefix=string_field(body, "prefix", MAX_PREFIX),
        version=string_field(body, "version", MAX_VERSION),
        industry_category=string_field(body, "industryCategory", 64),
        industry_specific=string_field(body, "industrySpecific", 64),
        industry_trade=string_field(body, "industryTrade", 64),
        industry_subclass=string_field(body, "industrySubclass", 64),
        type=kind,
        description=string_field(body, "description", 1024, required=False),
        items=tuple(i.item for i in inputs),
    )
    if not update:
        _check_unique(template.items)
    return template, inputs


def _check_unique(items: Iterable[TemplateItem]) -> None:
    seen: set[tuple[str, object]] = set()
    for item in items:
        for key in (("name", item.name), ("idType", item.id_type), ("idIndex", item.id_index)):
            if key in seen:
                raise BusinessError(MSG_ITEM_DUPLICATE.format(key[1]))
            seen.add(key)


def merge(old: Template, new: Template, inputs: list[_ItemInput]) -> Template:
    """PUT: replace the fields, update or add items (never remove them)."""
    items = {item.id_index: item for item in old.items}
    next_index = max(items, default=FIRST_INDEX - 1) + 1
    for given in inputs:
        item = given.item
        if not given.index_given or item.id_index not in items:
            if not given.index_given:
                item = replace(item, id_index=next_index)
            items[item.id_index] = item
            next_index = max(next_index, item.id_index + 1)
            continue
        current = items[item.id_index]
        if current.id_type != item.id_type:
            raise BusinessError(MSG_ITEM_CONFLICT.format(item.id_index, current.id_type))
        items[item.id_index] = item
    merged = tuple(sorted(items.values(), key=lambda i: i.id_index))
    _check_unique(merged)
    return replace(new, prefix=old.prefix, version=old.version, items=merged)


def loads(document: str) -> Template:
    """A stored template (``Template.dumps``)."""
    template, _ = parse_template(orjson.loads(document))
    return template


def validate(template: Template, values: Iterable[ValueInput]) -> None:
    """Raise BusinessError unless ``values`` fit ``template``."""
    by_index = {item.id_index: item for item in template.items}
    present: set[int] = set()
    for value in values:
        item = by_index.get(value.index)
        if item is None:
            raise BusinessError(MSG_NOT_IN_TEMPLATE.format(value.index))
        if item.state != 1:
            raise BusinessError(MSG_ITEM_DISABLED.format(value.index))
        if item.id_type != value.type:
            raise BusinessError(MSG_ITEM_TYPE.format(value.index, item.id_type))
        if not item.min_length <= len(value.value) <= item.max_length:
            raise BusinessError(
                MSG_ITEM_LENGTH.format(item.id_type, item.min_length, item.max_length)
            )
        present.add(value.index)
    for item in template.items:
        if item.required and item.state == 1 and item.id_index not in present:
            raise BusinessError(MSG_ITEM_REQUIRED.format(item.id_type))
