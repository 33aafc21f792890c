"""Value-level edits of a stored record, shared by every backend.

Backends read the current record inside their own transaction (row lock,
single writer...), call these pure functions, and write the result back.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.errors import ValueAlreadyExists, ValuesNotFound
from protocol.values import HandleValue
from registry.store import Record


def merge_values(
    key: str, current: Record, values: Sequence[HandleValue], overwrite: bool
) -> tuple[list[HandleValue], bool]:
    """``current`` with ``values`` added: (the merged record in index order, any index new).

    Raises ValueAlreadyExists for a taken index when not ``overwrite``.
    """
    by_index = {v.index: v for v in current}
    if not overwrite:
        taken = sorted(v.index for v in values if v.index in by_index)
        if taken:
            raise ValueAlreadyExists(f"Handle {key} already has index {taken[0]}")
    any_new = any(v.index not in by_index for v in values)
    for v in values:
        by_index[v.index] = v
    # The merged record comes back in index order, as Handle.Net shows it
    # (tests/test_rest_api.py relies on it); put() keeps the caller's order.
    return [by_index[i] for i in sorted(by_index)], any_new


def without_indexes(key: str, current: Record, indexes: Sequence[int]) -> list[HandleValue]:
    """``current`` minus ``indexes``; raises ValuesNotFound if any is absent."""
    present = {v.index for v in current}
    missing = sorted(set(indexes) - present)
    if missing:
        raise ValuesNotFound(f"Handle {key} has no value at index {missing[0]}")
    drop = set(indexes)
    return [v for v in current if v.index not in drop]
