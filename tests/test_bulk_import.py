"""resolver.bulk_import and import_input: pieces keep lines whole and a CSV
handle's rows in one piece, and line numbers stay true across pieces, both for
file ranges and for a stream (tiny pieces force many boundaries)."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from protocol.bulk_records import CsvLayout
from registry.sqlite_store import SQLiteStore
from resolver import import_input
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
    monkeypatch.setattr(import_input, "CHUNK_BYTES", 50)


def _as_stdin(monkeypatch: pytest.MonkeyPatch, source: Path) -> str:
    """Feed ``source`` as a pipe would: not seekable, so read by the importer."""

    class Pipe(io.BufferedReader):
        def fileno(self) -> int:
            raise io.UnsupportedOperation("a pipe, for this test")

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Pipe(io.FileIO(source))))
    return "-"


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize(("jobs", "stream"), [(0, False), (2, False), (0, True), (2, True)])
def test_csv_handles_never_split_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, stream: bool
) -> None:
    store = tmp_path / "s.db"
    asyncio.run(_homed_store(store))
    rows = ["handle,index,type,data"]
    for n in range(40):
        rows += [f"88.100.1/h{n},{i},T,value-{n}-{i}" for i in range(1, 1 + n % 4 + 1)]
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    name = _as_stdin(monkeypatch, source) if stream else str(source)
    asyncio.run(import_file(str(store), ImportOptions(name, "csv", batch=7, jobs=jobs)))
    records = _records(store)
    assert len(records) == 40
    for n in range(40):
        assert records[f"88.100.1/H{n}"] == [f"value-{n}-{i}".encode()
                                             for i in range(1, 1 + n % 4 + 1)]


@pytest.mark.usefixtures("tiny_chunks")
@pytest.mark.parametrize(("jobs", "stream"), [(0, False), (2, False), (0, True), (2, True)])
def test_line_numbers_hold_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, stream: bool
) -> None:
    store = tmp_path / "s.db"
    asyncio.run(_homed_store(store))
    lines = [f'{{"handle":"88.100.1/n{n}","values":[]}}' for n in range(30)]
    lines[22] = "{broken"
    lines[9] = ""  # blank lines count
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    name = _as_stdin(monkeypatch, source) if stream else str(source)
    with pytest.raises(CommandError, match=r":23: malformed JSON"):
        asyncio.run(import_file(str(store), ImportOptions(name, "jsonl", batch=5, jobs=jobs)))
    # Stopped at the first bad line: batches before it stayed, none after.
    assert set(_records(store)) <= {f"88.100.1/N{n}" for n in range(22)}


@pytest.mark.usefixtures("tiny_chunks")
def test_skipped_lines_are_numbered_across_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    asyncio.run(_homed_store(store))
    lines = [f'{{"handle":"88.100.1/n{n}","values":[]}}' for n in range(40)]
    for bad in (3, 17, 38):
        lines[bad] = '{"handle":"99.9/x","values":[]}'
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines))  # no final newline
    options = ImportOptions(str(source), "jsonl", batch=6, jobs=2, skip_errors=True)
    asyncio.run(import_file(str(store), options))
    err = capsys.readouterr().err
    assert [line.split(":")[1] for line in err.splitlines() if line.endswith("(skipped)")] == [
        "4", "18", "39"]
    assert len(_records(store)) == 37


def test_split_tail_on_the_chunk_reader(tmp_path: Path) -> None:
    layout = CsvLayout.from_header(b"handle,index,type,data")
    source = tmp_path / "in.csv"
    source.write_bytes(b"88.100.1/a,1,T,x\n88.100.1/b,1,T,x\n88.100.1/b,2,T,x")  # no final \n
    with source.open("rb") as f:
        chunks = list(import_input.stream_chunks(f, layout))
    assert chunks == [b"88.100.1/a,1,T,x\n", b"88.100.1/b,1,T,x\n88.100.1/b,2,T,x"]


@pytest.mark.parametrize("chunk", [1, 5, 17, 18, 40, 1000])
def test_file_ranges_cut_between_handles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(import_input, "CHUNK_BYTES", chunk)
    layout = CsvLayout.from_header(b"handle,index,type,data")
    header = b"handle,index,type,data\n"
    body = (b"88.100.1/a,1,T,x\n88.100.1/b,1,T,x\n88.100.1/b,2,T,x\n"
            b'"88.100.1/b",3,T,x\n88.100.1/c,1,T,x')  # quoted: the same handle; no final \n
    source = tmp_path / "in.csv"
    source.write_bytes(header + body)
    with source.open("rb") as f:
        ranges = list(import_input.file_ranges(f.fileno(), len(header), layout))
    pieces = [(header + body)[a:b] for a, b in ranges]
    assert b"".join(pieces) == body
    for piece in pieces:  # each piece starts at a new handle
        assert piece.startswith((b"88.100.1/a,", b"88.100.1/b,", b"88.100.1/c,"))
    with_b = [piece for piece in pieces if b"/b" in piece]
    assert len(with_b) == 1 and with_b[0].count(b"/b") == 3
