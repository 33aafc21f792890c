"""resolver.bulk_import: chunking keeps lines whole, CSV handles in one chunk,
and line numbers true across chunks (tiny chunks force many boundaries)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.bulk_records import CsvLayout
from registry.sqlite_store import SQLiteStore
from resolver import bulk_import
from resolver.admin_tasks import CommandError
from resolver.bulk_import import ImportOptions, import_file


def _records(path: Path) -> dict[str, list[bytes]]:
    async def read() -> dict[str, list[bytes]]:
        async with SQLiteStore(path) as store:
            return {key: [v.data for v in values]
                    async for key, values in store.iter_records("88.100.1")}
    return asyncio.run(read())


async def _homed_store(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.home_prefix("88.100.1")


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_import, "CHUNK_BYTES", 50)


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize("jobs", [0, 2])
def test_csv_handles_never_split_across_chunks(tmp_path: Path, jobs: int) -> None:
    store = tmp_path / "s.db"
    asyncio.run(_homed_store(store))
    rows = ["handle,index,type,data"]
    for n in range(40):
        rows += [f"88.100.1/h{n},{i},T,value-{n}-{i}" for i in range(1, 1 + n % 4 + 1)]
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    asyncio.run(import_file(str(store), ImportOptions(str(source), "csv", batch=7, jobs=jobs)))
    records = _records(store)
    assert len(records) == 40
    for n in range(40):
        assert records[f"88.100.1/H{n}"] == [f"value-{n}-{i}".encode()
                                             for i in range(1, 1 + n % 4 + 1)]


@pytest.mark.usefixtures("tiny_chunks")
def test_line_numbers_hold_across_chunks(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    asyncio.run(_homed_store(store))
    lines = [f'{{"handle":"88.100.1/n{n}","values":[]}}' for n in range(30)]
    lines[22] = "{broken"
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match=r"in\.jsonl:23: malformed JSON"):
        asyncio.run(import_file(str(store), ImportOptions(str(source), "jsonl", batch=5,
                                                          jobs=0)))


def test_split_tail_on_the_chunk_reader(tmp_path: Path) -> None:
    layout = CsvLayout.from_header(b"handle,index,type,data")
    source = tmp_path / "in.csv"
    source.write_bytes(b"88.100.1/a,1,T,x\n88.100.1/b,1,T,x\n88.100.1/b,2,T,x")  # no final \n
    with source.open("rb") as f:
        chunks = list(bulk_import._chunks(f, layout, 2))
    assert chunks == [(b"88.100.1/a,1,T,x\n", 2), (b"88.100.1/b,1,T,x\n88.100.1/b,2,T,x", 3)]
