"""One suite for the Store contract (registry/store.py), run on every backend.

Written against the abstract contract only; the backends and their factories
are in ``store_backends.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, Backend

from protocol.codes import RC
from protocol.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidValue,
    ValueAlreadyExists,
    ValuesNotFound,
)
from protocol.values import HandleValue, ValueReference
from registry.store import (
    Account,
    Application,
    ApplicationConflict,
    ApplicationNotFound,
    PrefixTaken,
    PutItem,
    StatsCount,
    Store,
)

TS = 1_700_000_000


def url(index: int, text: str, **kw: object) -> HandleValue:
    return HandleValue(index, "URL", text.encode(), timestamp=TS, **kw)  # type: ignore[arg-type]


ADMIN = HandleValue(100, "HS_ADMIN", b"\x0f\xff\x00\x00\x00\x0b0.NA/88.100\x00\x00\x00\xc8")
RECORD = (ADMIN, url(1, "https://example.com/a"), url(2, "https://example.com/b"))


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def opened_store(backend: Backend, directory: Path) -> AsyncIterator[Store]:
    s = backend.make(directory)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[Store]:
    s = backend.make(tmp_path)
    await s.open()
    yield s
    await s.close()


# -- get / create / put ----------------------------------------------------------


async def test_get_missing_is_none(store: Store) -> None:
    assert await store.get("88.100/NOPE") is None


async def test_create_then_get(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    assert await store.get("88.100/A") == RECORD


async def test_create_existing_raises_and_keeps_record(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    with pytest.raises(HandleAlreadyExists) as info:
        await store.create("88.100/A", (url(1, "other"),))
    assert info.value.rc == RC.HANDLE_ALREADY_EXISTS
    assert await store.get("88.100/A") == RECORD


async def test_put_creates_then_replaces_whole_record(store: Store) -> None:
    assert await store.put("88.100/A", RECORD) is True
    replacement = (url(7, "https://example.com/new"),)
    assert await store.put("88.100/A", replacement) is False
    assert await store.get("88.100/A") == replacement


async def test_values_round_trip_exactly(store: Store) -> None:
    values = (
        url(3, "x"),  # order as given, not sorted by index
        HandleValue(1, "ÜBER.类型", bytes(range(256)), ttl=-5, ttl_absolute=True, permissions=0),
        HandleValue(
            2,
            "HS_VLIST",
            b"",
            ttl=2**32 - 1,
            timestamp=2**32 - 1,
            references=(ValueReference("0.NA/88", 300), ValueReference("88/ü", 0x7FFFFFFF)),
        ),
    )
    await store.put("88.100/EXACT", values)
    assert await store.get("88.100/EXACT") == values


async def test_empty_record_exists(store: Store) -> None:
    await store.create("88.100/EMPTY", ())
    assert await store.get("88.100/EMPTY") == ()
    assert await store.count_handles("88.100") == 1


async def test_keys_are_stored_as_given(store: Store) -> None:
    # The store does not normalise: callers pass Handle.key.
    await store.put("88.100/abc", (url(1, "lower"),))
    await store.put("88.100/ABC", (url(1, "upper"),))
    assert await store.get("88.100/abc") == (url(1, "lower"),)
    assert await store.get("88.100/ABC") == (url(1, "upper"),)
    assert await store.get("88.100/Abc") is None
    assert await store.list_handles("88.100") == ["88.100/ABC", "88.100/abc"]
    assert await store.list_handles("88.10") == []
    await store.put("88.a/X", ())
    assert await store.list_handles("88.A") == []
    assert await store.count_handles("88.A") == 0


async def test_unstorable_value_changes_nothing(store: Store) -> None:
    await store.put("88.100/A", RECORD)
    with pytest.raises(InvalidValue):
        await store.put("88.100/A", (HandleValue(1, "URL", b"x", timestamp=2**80),))
    with pytest.raises(InvalidValue):
        await store.create("88.100/B", (HandleValue(1, "URL", "not bytes"),))  # type: ignore[arg-type]
    assert await store.get("88.100/A") == RECORD
    assert await store.get("88.100/B") is None


# -- add_values / remove_values ---------------------------------------------------


async def test_add_values_to_missing_handle(store: Store) -> None:
    with pytest.raises(HandleNotFound):
        await store.add_values("88.100/NOPE", [url(1, "x")])
    assert await store.get("88.100/NOPE") is None


async def test_add_values_adds_and_replaces_in_index_order(store: Store) -> None:
    # RECORD is stored as given (100, 1, 2); after add_values the merged
    # record is in index order, as Handle.Net returns it.
    await store.create("88.100/A", RECORD)
    assert await store.add_values("88.100/A", [url(3, "three")]) is True
    assert await store.get("88.100/A") == (RECORD[1], RECORD[2], url(3, "three"), ADMIN)
    # Replacing only: nothing new.
    assert await store.add_values("88.100/A", [url(1, "one-bis")]) is False
    assert await store.get("88.100/A") == (url(1, "one-bis"), RECORD[2], url(3, "three"), ADMIN)
    # A mix of new and replaced counts as new.
    assert await store.add_values("88.100/A", [url(4, "four"), url(2, "two-bis")]) is True
    record = await store.get("88.100/A")
    assert record is not None
    assert [v.index for v in record] == [1, 2, 3, 4, 100]
    assert record[1] == url(2, "two-bis")


async def test_add_values_without_overwrite_is_all_or_nothing(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    with pytest.raises(ValueAlreadyExists) as info:
        await store.add_values("88.100/A", [url(9, "new"), url(2, "taken")], overwrite=False)
    assert info.value.rc == RC.VALUE_ALREADY_EXISTS
    assert await store.get("88.100/A") == RECORD
    assert await store.add_values("88.100/A", [url(9, "new")], overwrite=False) is True
    assert await store.get("88.100/A") == (RECORD[1], RECORD[2], url(9, "new"), ADMIN)


async def test_remove_values(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    await store.remove_values("88.100/A", [1, 100])
    assert await store.get("88.100/A") == (RECORD[2],)


async def test_remove_values_missing_handle(store: Store) -> None:
    with pytest.raises(HandleNotFound):
        await store.remove_values("88.100/NOPE", [1])


async def test_failed_remove_values_leaves_all_values(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    with pytest.raises(ValuesNotFound) as info:
        await store.remove_values("88.100/A", [1, 2, 55])
    assert info.value.rc == RC.VALUES_NOT_FOUND
    assert await store.get("88.100/A") == RECORD


async def test_removing_every_value_keeps_the_handle(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    await store.remove_values("88.100/A", [v.index for v in RECORD])
    assert await store.get("88.100/A") == ()


# -- delete ------------------------------------------------------------------------


async def test_delete(store: Store) -> None:
    await store.create("88.100/A", RECORD)
    await store.delete("88.100/A")
    assert await store.get("88.100/A") is None
    assert await store.count_handles() == 0
    with pytest.raises(HandleNotFound) as info:
        await store.delete("88.100/A")
    assert info.value.rc == RC.HANDLE_NOT_FOUND
    await store.create("88.100/A", RECORD)  # the key is free again
    assert await store.get("88.100/A") == RECORD


# -- put_many ------------------------------------------------------------------------


async def test_put_many_empty(store: Store) -> None:
    assert await store.put_many([]) == []


async def test_put_many_mixed_results(store: Store) -> None:
    await store.put("88.100/OLD", RECORD)
    await store.put("88.100/KEEP", RECORD)
    results = await store.put_many(
        [
            PutItem("88.100/NEW", (url(1, "new"),)),
            PutItem("88.100/OLD", (url(1, "replaced"),)),
            PutItem("88.100/KEEP", (url(1, "refused"),), overwrite=False),
            PutItem("88.100/BAD", (HandleValue(1, "URL", b"", ttl=2**70),)),
            PutItem("88.100/NEW2", (url(1, "new2"),), overwrite=False),
        ]
    )
    assert results[0] is True
    assert results[1] is False
    assert isinstance(results[2], HandleAlreadyExists)
    assert isinstance(results[3], InvalidValue)
    assert results[4] is True
    assert await store.get("88.100/NEW") == (url(1, "new"),)
    assert await store.get("88.100/OLD") == (url(1, "replaced"),)
    assert await store.get("88.100/KEEP") == RECORD  # the failing item is unchanged
    assert await store.get("88.100/BAD") is None
    assert await store.get("88.100/NEW2") == (url(1, "new2"),)


async def test_put_many_applies_items_in_order(store: Store) -> None:
    results = await store.put_many(
        [
            PutItem("88.100/K", (url(1, "first"),), overwrite=False),
            PutItem("88.100/K", (url(1, "second"),), overwrite=False),
            PutItem("88.100/K", (url(1, "third"),)),
        ]
    )
    assert results[0] is True
    assert isinstance(results[1], HandleAlreadyExists)
    assert results[2] is False
    assert await store.get("88.100/K") == (url(1, "third"),)


async def test_put_many_large_batch(store: Store) -> None:
    n = 12_345  # more than one chunk/transaction in any sane backend
    items = [PutItem(f"88.100/{i:06d}", (url(1, f"https://e.com/{i}"),)) for i in range(n)]
    items.append(PutItem("88.100/000007", (url(1, "dup"),), overwrite=False))
    results = await store.put_many(items)
    assert results[:n] == [True] * n
    assert isinstance(results[n], HandleAlreadyExists)
    assert await store.count_handles("88.100") == n
    assert await store.get("88.100/012344") == (url(1, "https://e.com/12344"),)
    assert await store.get("88.100/000007") == (url(1, "https://e.com/7"),)


# -- listing -------------------------------------------------------------------------

LISTED = ["88.1/", "88.1/0", "88.1/A", "88.1/a", "88.1/z/y", "88.1/é"]
NOT_LISTED = ["88.1", "88.10/A", "88.1.5/A", "88.0/A", "88/A", "88.1./A", "0.NA/88.1"]


async def _fill(store: Store) -> None:
    await store.put_many([PutItem(k, (url(1, k),)) for k in LISTED + NOT_LISTED])


async def test_list_handles_strictly_under_prefix_sorted(store: Store) -> None:
    await _fill(store)
    assert await store.list_handles("88.1") == LISTED
    assert await store.list_handles("88") == ["88/A"]
    assert await store.list_handles("77") == []


@pytest.mark.parametrize(
    ("offset", "limit", "expected"),
    [
        (0, None, LISTED),
        (0, 2, LISTED[:2]),
        (2, 2, LISTED[2:4]),
        (4, 10, LISTED[4:]),
        (5, None, LISTED[5:]),
        (6, None, []),  # offset == count
        (100, 5, []),  # offset past the end
        (0, 0, []),  # limit 0
        (3, 0, []),
    ],
)
async def test_list_handles_paging(
    store: Store, offset: int, limit: int | None, expected: list[str]
) -> None:
    await _fill(store)
    assert await store.list_handles("88.1", offset=offset, limit=limit) == expected


async def test_list_handles_pages_cover_everything_once(store: Store) -> None:
    keys = [f"88.2/{i:04d}" for i in range(257)]
    await store.put_many([PutItem(k, ()) for k in reversed(keys)])
    pages = [await store.list_handles("88.2", offset=o, limit=50) for o in range(0, 350, 50)]
    assert [k for page in pages for k in page] == keys
    assert pages[-1] == []


async def test_count_handles(store: Store) -> None:
    assert await store.count_handles() == 0
    assert await store.count_handles("88.1") == 0
    await _fill(store)
    assert await store.count_handles() == len(LISTED) + len(NOT_LISTED)
    assert await store.count_handles("88.1") == len(LISTED)
    assert await store.count_handles("88.10") == 1
    await store.delete("88.1/A")
    assert await store.count_handles("88.1") == len(LISTED) - 1


async def test_iter_records_sorted_complete_and_by_prefix(store: Store) -> None:
    await _fill(store)
    everything = [(k, r) async for k, r in store.iter_records()]
    assert [k for k, _ in everything] == sorted(LISTED + NOT_LISTED)
    assert all(r == (url(1, k),) for k, r in everything)
    under = [k async for k, _ in store.iter_records("88.1")]
    assert under == LISTED


async def test_iter_records_streams_past_page_boundaries(store: Store) -> None:
    n = 1_203  # not a multiple of any page size a backend would pick
    await store.put_many([PutItem(f"88.3/{i:05d}", (url(1, str(i)),)) for i in range(n)])
    await store.put("88.4/after", ())
    seen = [(k, r) async for k, r in store.iter_records("88.3")]
    assert [k for k, _ in seen] == [f"88.3/{i:05d}" for i in range(n)]
    assert seen[-1][1] == (url(1, str(n - 1)),)
    assert sum([1 async for _ in store.iter_records()]) == n + 1


async def test_iter_records_of_empty_store(store: Store) -> None:
    assert [item async for item in store.iter_records()] == []


# -- homed prefixes --------------------------------------------------------------------


async def test_home_and_unhome_prefixes(store: Store) -> None:
    assert await store.homed_prefixes() == []
    assert await store.home_prefix("88.100.a") is True
    assert await store.home_prefix("88.100.A") is False  # upper-cased: the same prefix
    assert await store.home_prefix("86.1") is True
    assert await store.homed_prefixes() == ["86.1", "88.100.A"]
    assert await store.unhome_prefix("88.100.a") is True
    assert await store.unhome_prefix("88.100.A") is False
    assert await store.homed_prefixes() == ["86.1"]


# -- concurrency -------------------------------------------------------------------


async def test_concurrent_puts_all_present_and_group_committed(
    store: Store, backend: Backend
) -> None:
    n = 200
    before = backend.commits(store) if backend.commits else 0
    results = await asyncio.gather(
        *(store.put(f"88.5/{i:03d}", (url(1, str(i)),)) for i in range(n))
    )
    assert results == [True] * n
    for i in range(n):
        assert await store.get(f"88.5/{i:03d}") == (url(1, str(i)),)
    assert await store.count_handles("88.5") == n
    if backend.commits is not None:
        commits = backend.commits(store) - before
        assert 1 <= commits <= n // 4, f"{n} concurrent puts took {commits} transactions"


async def test_concurrent_read_modify_write_loses_nothing(store: Store) -> None:
    await store.create("88.5/SHARED", ())
    await asyncio.gather(
        *(store.add_values("88.5/SHARED", [url(i, str(i))]) for i in range(1, 101))
    )
    record = await store.get("88.5/SHARED")
    assert record is not None
    assert sorted(v.index for v in record) == list(range(1, 101))
    await asyncio.gather(*(store.remove_values("88.5/SHARED", [i]) for i in range(1, 51)))
    record = await store.get("88.5/SHARED")
    assert record is not None
    assert sorted(v.index for v in record) == list(range(51, 101))


async def test_concurrent_creates_of_one_key_exactly_one_wins(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create("88.5/RACE", (url(1, str(i)),)) for i in range(50)),
        return_exceptions=True,
    )
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, HandleAlreadyExists) for r in results if r is not None)
    assert await store.get("88.5/RACE") == (url(1, str(winners[0])),)


async def test_a_failing_write_does_not_undo_its_neighbours(store: Store) -> None:
    await store.create("88.5/EXISTS", RECORD)
    results = await asyncio.gather(
        store.put("88.5/ONE", (url(1, "one"),)),
        store.create("88.5/EXISTS", ()),
        store.add_values("88.5/MISSING", [url(1, "x")]),
        store.remove_values("88.5/EXISTS", [42]),
        store.put("88.5/TWO", (url(1, "two"),)),
        store.delete("88.5/MISSING"),
        store.add_values("88.5/EXISTS", [url(9, "nine")]),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], HandleAlreadyExists)
    assert isinstance(results[2], HandleNotFound)
    assert isinstance(results[3], ValuesNotFound)
    assert results[4] is True
    assert isinstance(results[5], HandleNotFound)
    assert results[6] is True
    assert await store.get("88.5/ONE") == (url(1, "one"),)
    assert await store.get("88.5/TWO") == (url(1, "two"),)
    assert await store.get("88.5/EXISTS") == (RECORD[1], RECORD[2], url(9, "nine"), ADMIN)


async def test_concurrent_reads_see_committed_writes(store: Store) -> None:
    async def write_then_read(i: int) -> None:
        await store.put(f"88.6/{i}", (url(1, str(i)),))
        assert await store.get(f"88.6/{i}") == (url(1, str(i)),)  # read-your-write

    await asyncio.gather(*(write_then_read(i) for i in range(100)))


# -- lifecycle -------------------------------------------------------------------------


async def test_reopen_keeps_everything(backend: Backend, tmp_path: Path) -> None:
    first = backend.make(tmp_path)
    await first.open()
    await first.put("88.7/A", RECORD)
    await first.put_many([PutItem(f"88.7/{i}", (url(1, str(i)),)) for i in range(50)])
    await first.home_prefix("88.7")
    await first.delete("88.7/3")
    await first.close()

    second = backend.make(tmp_path)
    await second.open()
    try:
        assert await second.get("88.7/A") == RECORD
        assert await second.get("88.7/49") == (url(1, "49"),)
        assert await second.get("88.7/3") is None
        assert await second.count_handles("88.7") == 50
        assert await second.homed_prefixes() == ["88.7"]
    finally:
        await second.close()


async def test_close_finishes_queued_writes(backend: Backend, tmp_path: Path) -> None:
    s = backend.make(tmp_path)
    await s.open()
    tasks = [asyncio.create_task(s.put(f"88.8/{i}", (url(1, str(i)),))) for i in range(300)]
    await asyncio.sleep(0)  # every task has queued its write
    await s.close()
    assert await asyncio.gather(*tasks) == [True] * 300

    again = backend.make(tmp_path)
    await again.open()
    try:
        assert await again.count_handles("88.8") == 300
    finally:
        await again.close()


async def test_operations_after_close_raise(backend: Backend, tmp_path: Path) -> None:
    s = backend.make(tmp_path)
    await s.open()
    await s.put("88.9/A", RECORD)
    await s.close()
    await s.close()  # idempotent
    calls = [
        s.get("88.9/A"),
        s.put("88.9/B", ()),
        s.create("88.9/C", ()),
        s.add_values("88.9/A", []),
        s.remove_values("88.9/A", [1]),
        s.delete("88.9/A"),
        s.put_many([PutItem("88.9/D", ())]),
        s.list_handles("88.9"),
        s.count_handles(),
        s.home_prefix("88.9"),
        s.unhome_prefix("88.9"),
        s.homed_prefixes(),
    ]
    for call in calls:
        with pytest.raises(HandleError) as info:
            await call
        assert info.value.rc == RC.ERROR
        assert "closed" in info.value.message
    with pytest.raises(HandleError):
        await anext(s.iter_records())


# -- SNMS accounts and templates --------------------------------------------------


async def test_accounts_create_replace_and_reopen(backend: Backend, tmp_path: Path) -> None:
    store = backend.make(tmp_path)
    await store.open()
    try:
        assert await store.get_account("app1") is None
        account = Account("app1", "88.100.1", "enterprise", b"pbkdf2$hash", 0)
        await store.put_account(account)
        assert await store.get_account("app1") == account
        assert await store.get_account("APP1") is None  # usernames are exact
        revoked = Account("app1", "88.100.1", "enterprise", b"pbkdf2$other", 1)
        await store.put_account(revoked)
        assert await store.get_account("app1") == revoked
    finally:
        await store.close()
    store = backend.make(tmp_path)
    await store.open()
    try:
        assert await store.get_account("app1") == revoked
    finally:
        await store.close()


async def test_templates_put_get_delete(store: Store) -> None:
    assert await store.get_template("88.100.1", "1.0") is None
    assert await store.put_template("88.100.1", "1.0", '{"a":1}') is True
    assert await store.put_template("88.100.1", "1.0", '{"a":2}') is False
    assert await store.get_template("88.100.1", "1.0") == '{"a":2}'
    assert await store.get_template("88.100.1", "1.1") is None
    assert await store.get_template("88.100.2", "1.0") is None
    assert await store.delete_template("88.100.1", "1.0") is True
    assert await store.delete_template("88.100.1", "1.0") is False
    assert await store.get_template("88.100.1", "1.0") is None
    # SNMS data never shows up among handles
    assert await store.count_handles() == 0


# -- prefix applications ------------------------------------------------------------


def application(applicant: str = "ent1", requested: str | None = None) -> Application:
    return Application(0, applicant, "Enterprise One", requested, '{"contact":"a@b"}', TS)


def approved(app: Application, prefix: str, by: str = "auditor1") -> Application:
    return dataclasses.replace(
        app, state="approved", decided_by=by, decided_at=TS + 5, reason="ok", prefix=prefix
    )


async def test_applications_add_get_list(store: Store) -> None:
    first = await store.add_application(application("ent1"))
    second = await store.add_application(application("ent2", "88.118.9"))
    assert first.id != second.id and first.id > 0
    assert first.state == "pending" and first.prefix is None and first.decided_by is None
    assert await store.get_application(second.id) == second
    assert second.requested_prefix == "88.118.9"
    assert await store.get_application(999_999) is None
    assert await store.list_applications() == [first, second]
    assert await store.list_applications(applicant="ent2") == [second]
    assert await store.list_applications(state="approved") == []


async def test_one_pending_application_per_applicant(store: Store) -> None:
    first = await store.add_application(application("ent1"))
    with pytest.raises(ApplicationConflict):
        await store.add_application(application("ent1"))
    rejected = dataclasses.replace(first, state="rejected", decided_by="a", decided_at=TS,
                                   reason="incomplete")
    await store.reject_application(rejected)
    again = await store.add_application(application("ent1"))  # after a decision: allowed
    assert again.id > first.id


async def test_approve_is_atomic_and_cannot_be_replayed(store: Store) -> None:
    app = await store.add_application(application("ent1"))
    account = Account("ent1", "88.118.1", "enterprise", b"hash", 3)
    records = [PutItem("0.NA/88.118.1", (ADMIN,)), PutItem("88.118.1/ADMIN", (ADMIN,))]
    done = await store.approve_application(approved(app, "88.118.1"), records, account)
    assert (done.state, done.prefix, done.decided_by, done.reason) == (
        "approved", "88.118.1", "auditor1", "ok")
    assert await store.get_application(app.id) == done
    assert "88.118.1" in await store.homed_prefixes()
    assert await store.get("0.NA/88.118.1") == (ADMIN,)
    assert await store.get_account("ent1") == account
    with pytest.raises(ApplicationConflict):
        await store.approve_application(approved(app, "88.118.2"), [], account)
    with pytest.raises(ApplicationConflict):
        await store.reject_application(dataclasses.replace(app, state="rejected", reason="x"))
    assert await store.get_application(app.id) == done
    assert "88.118.2" not in await store.homed_prefixes()


async def test_approve_of_a_taken_prefix_changes_nothing(store: Store) -> None:
    await store.home_prefix("88.118.1")
    app = await store.add_application(application("ent1"))
    account = Account("ent1", "88.118.1", "enterprise", b"hash")
    records = [PutItem("0.NA/88.118.1", (ADMIN,))]
    with pytest.raises(PrefixTaken):
        await store.approve_application(approved(app, "88.118.1"), records, account)
    # An existing record under the new prefix fails the whole approval too.
    await store.put("88.118.2/ADMIN", (ADMIN,))
    records = [PutItem("0.NA/88.118.2", (ADMIN,)), PutItem("88.118.2/ADMIN", (ADMIN,))]
    with pytest.raises(PrefixTaken):
        await store.approve_application(approved(app, "88.118.2"), records, account)
    assert await store.get_application(app.id) == app
    assert await store.homed_prefixes() == ["88.118.1"]
    assert await store.get("0.NA/88.118.1") is None and await store.get("0.NA/88.118.2") is None
    assert await store.get_account("ent1") is None


async def test_prefix_allocated_to_one_application_only(store: Store) -> None:
    a = await store.add_application(application("ent1"))
    b = await store.add_application(application("ent2"))
    await store.approve_application(approved(a, "88.118.1"), [], Account("ent1", "88.118.1",
                                                                         "enterprise", b"h"))
    await store.unhome_prefix("88.118.1")  # still allocated to application a
    with pytest.raises(PrefixTaken):
        await store.approve_application(approved(b, "88.118.1"), [],
                                        Account("ent2", "88.118.1", "enterprise", b"h"))


async def test_decide_unknown_application(store: Store) -> None:
    ghost = dataclasses.replace(application(), id=424242, state="rejected", reason="x")
    with pytest.raises(ApplicationNotFound):
        await store.reject_application(ghost)


async def test_applications_survive_reopen(backend: Backend, tmp_path: Path) -> None:
    async with opened_store(backend, tmp_path) as s:
        app = await s.add_application(application("ent1"))
    async with opened_store(backend, tmp_path) as s:
        assert await s.get_application(app.id) == app


# -- reported statistics -----------------------------------------------------------


def counts(node: str, *rows: tuple[str, int, int, int]) -> list[StatsCount]:
    return [StatsCount(node, prefix, start, 60, reg, res) for prefix, start, reg, res in rows]


async def test_stats_reports_sum_once_per_report_id(store: Store) -> None:
    assert await store.add_stats_report("n1", "r1", TS, counts(
        "n1", ("88.118.1", 0, 2, 10), ("88.118.2", 0, 0, 1)))
    assert await store.add_stats_report("n1", "r2", TS, counts("n1", ("88.118.1", 0, 1, 5)))
    assert not await store.add_stats_report("n1", "r1", TS, counts("n1", ("88.118.1", 0, 2, 10)))
    assert await store.add_stats_report("n2", "r1", TS, counts("n2", ("88.119.1", 60, 7, 0)))
    assert await store.stats_counts() == [
        StatsCount("n1", "88.118.1", 0, 60, 3, 15),
        StatsCount("n1", "88.118.2", 0, 60, 0, 1),
        StatsCount("n2", "88.119.1", 60, 60, 7, 0),
    ]
    assert await store.stats_counts(node="n2") == [StatsCount("n2", "88.119.1", 60, 60, 7, 0)]
    assert await store.stats_counts(prefix="88.118.2") == [
        StatsCount("n1", "88.118.2", 0, 60, 0, 1)]
    assert [c.node for c in await store.stats_counts(since=30)] == ["n2"]


async def test_stats_survive_reopen(backend: Backend, tmp_path: Path) -> None:
    async with opened_store(backend, tmp_path) as s:
        await s.add_stats_report("n1", "r1", TS, counts("n1", ("88.118.1", 0, 1, 1)))
    async with opened_store(backend, tmp_path) as s:
        assert not await s.add_stats_report("n1", "r1", TS, counts("n1", ("88.118.1", 0, 1, 1)))
        assert await s.stats_counts() == [StatsCount("n1", "88.118.1", 0, 60, 1, 1)]
