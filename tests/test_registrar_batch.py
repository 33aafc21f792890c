"""Registrar.put_many with records encoded by the batch decoders (EncodedRecord)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from protocol.errors import HandleError, InvalidValue
from protocol.identifier import Handle, parse_handle
from protocol.record_msgpack import EncodedRecord, plain_record
from protocol.values import DEFAULT_PERMS, HandleValue
from registry.sqlite_store import SQLiteStore
from resolver.auth import Identity
from resolver.registrar import TEMPLATE_INDEX, Registrar

ADMIN = Identity(300, "0.NA/88.100.1")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def registrar(
    path: Path, clock: Clock, checked: list[Handle]
) -> tuple[Registrar, SQLiteStore, list[str]]:
    store = SQLiteStore(path / "r.db", announces_writes=True)
    await store.open()
    dropped: list[str] = []

    async def invalidate(keys: Collection[str]) -> None:
        dropped.extend(keys)

    async def record_of(_: str) -> None:
        return None

    async def check_template(handle: Handle, values: Sequence[HandleValue]) -> None:
        checked.append(handle)
        if any(v.data == b"bad" for v in values if v.index == TEMPLATE_INDEX):
            raise InvalidValue("does not fit its template")

    return Registrar(
        store=store, invalidate=invalidate, serves=lambda h: h.prefix.upper() == "88.100.1",
        record_of=record_of, server_admins=frozenset({ADMIN}), seal=lambda b: b"sealed",
        clock=clock, check_template=check_template,
    ), store, dropped


def encoded(stamp: int, *rows: tuple[int, str, bytes]) -> EncodedRecord:
    record = plain_record([(i, t, d, 86400, DEFAULT_PERMS) for i, t, d in rows], stamp)
    assert record is not None
    return record


async def test_encoded_records_stored_as_built_or_restamped(tmp_path: Path):
    clock = Clock(1000)
    reg, store, dropped = await registrar(tmp_path, clock, [])
    try:
        fresh = encoded(1000, (1, "URL", b"https://a/"))
        stale = encoded(999, (1, "URL", b"https://b/"))  # the clock ticked after decoding
        items = [(parse_handle("88.100.1/A"), fresh), (parse_handle("88.100.1/B"), stale)]
        assert await reg.put_many(ADMIN, items, mode="create") == [True, True]
        assert await store.get("88.100.1/A") == (HandleValue(1, "URL", b"https://a/", 86400,
                                                              False, 1000, DEFAULT_PERMS),)
        [b] = await store.get("88.100.1/B") or ()
        assert b.timestamp == 1000 and b.data == b"https://b/"
        assert dropped == ["88.100.1/A", "88.100.1/B"]  # read-your-writes: caches told
        again = await reg.put_many(ADMIN, [(parse_handle("88.100.1/a"), fresh)], mode="create")
        assert isinstance(again[0], HandleError)  # taken
    finally:
        await store.close()


async def test_template_check_sees_encoded_records_that_name_a_template(tmp_path: Path):
    checked: list[Handle] = []
    reg, store, _ = await registrar(tmp_path, Clock(1000), checked)
    try:
        items = [
            (parse_handle("88.100.1/PLAIN"), encoded(1000, (1, "URL", b"u"))),
            (parse_handle("88.100.1/GOOD"), encoded(1000, (TEMPLATE_INDEX, "TEMPLATE", b"v1"))),
            (parse_handle("88.100.1/BAD"), encoded(1000, (TEMPLATE_INDEX, "TEMPLATE", b"bad"))),
        ]
        results = await reg.put_many(ADMIN, items, mode="put")
        assert results[:2] == [True, True] and isinstance(results[2], InvalidValue)
        assert [h.text for h in checked] == ["88.100.1/GOOD", "88.100.1/BAD"]
        assert await store.get("88.100.1/BAD") is None
    finally:
        await store.close()
