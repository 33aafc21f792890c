"""resolver.bulk_import and import_input: pieces keep lines whole and a CSV
handle's rows in one piece, and line numbers stay true across pieces, both for
file ranges and for a stream (tiny pieces force many boundaries)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pg_service
import pytest
from processes import ROOT, _cli, _env

from protocol.bulk_records import CsvLayout
from protocol.record_msgpack import encode_record
from protocol.values import HS_SECKEY, HandleValue
from registry.credentials import is_hashed
from registry.sqlite_store import SQLiteStore
from resolver import import_input
from resolver.admin_tasks import CommandError, opened, sealer_for
from resolver.bulk_import import ImportOptions, export_file, import_file


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


# -- import, export, import again: SQLite and PostgreSQL -----------------------------


def _export_lines(n: int) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for i in range(n):
        values: list[dict[str, object]] = [
            {"index": 1, "type": "URL", "data": f"https://e.com/{i}", "ttl": 60 + i}]
        if i % 3 == 0:
            values.append({"index": 2, "type": "BIN", "data": {"format": "hex", "value": "00ff"},
                           "timestamp": "2026-01-02T03:04:05Z"})
        if i % 7 == 0:
            values.append({"index": 300, "type": HS_SECKEY, "data": f"secret-{i}"})
        lines.append({"handle": f"88.100.1/item-{i:03d}", "values": values})
    return lines


@pytest.fixture(params=["sqlite", "lmdb", "postgresql"])
async def store_locations(request: pytest.FixtureRequest, tmp_path: Path):
    """Two empty stores with 88.100.1 homed (file paths or schema URLs) and a master key."""
    key = str(tmp_path / "master.key")
    if request.param in ("sqlite", "lmdb"):
        suffix = ".db" if request.param == "sqlite" else ".lmdb"
        places = [str(tmp_path / f"one{suffix}"), str(tmp_path / f"two{suffix}")]
        key_arg = None
    else:
        await pg_service.require_postgres()
        places = [pg_service.url_for(tmp_path / n) for n in ("one", "two")]
        sealer_for(places[0], key, create=True)
        key_arg = key
    for place in places:
        sealer_for(place, key_arg, create=True)
        async with opened(place) as store:
            await store.home_prefix("88.100.1")
    yield places, key_arg
    if request.param == "postgresql":
        for n in ("one", "two"):
            await pg_service.drop_schema(tmp_path / n)


@pytest.mark.usefixtures("tiny_chunks")
async def test_import_export_round_trip_on_each_backend(
    tmp_path: Path, store_locations: tuple[list[str], str | None]
) -> None:
    (first, second), key = store_locations
    lines = _export_lines(40)
    async with opened(first) as store:  # replaced by the import
        await store.load_records([("88.100.1/ITEM-005", b"\x91\x01")])
    source = tmp_path / "in.jsonl"
    changed = {"handle": "88.100.1/item-004", "values": [{"index": 9, "type": "T", "data": "z"}]}
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in [*lines, changed]))
    options = ImportOptions(str(source), "jsonl", batch=7, jobs=2, master_key=key)
    assert await import_file(first, options) == 0
    exported = tmp_path / "out.jsonl"
    await export_file(first, "88.100.1", str(exported), "jsonl")
    out = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert [line["handle"] for line in out] == [f"88.100.1/ITEM-{i:03d}" for i in range(40)]
    later = {"index": 9, "type": "T", "data": {"format": "string", "value": "z"}, "ttl": 86400}
    assert out[4]["values"] == [later]  # the later line for a handle won
    assert out[5]["values"][0]["data"]["value"] == "https://e.com/5"
    secret = next(v for v in out[14]["values"] if v["type"] == HS_SECKEY)
    assert is_hashed(secret["data"]["value"].encode())  # sealed on import
    # An export imports again to the same records, and a second run changes nothing.
    for _ in range(2):
        await import_file(second, ImportOptions(str(exported), "jsonl", jobs=0, master_key=key))
        again = tmp_path / "again.jsonl"
        await export_file(second, None, str(again), "jsonl")
        assert again.read_bytes() == exported.read_bytes()


async def test_export_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """``idnode export | head``: no traceback, exit 1, as Unix tools stop."""
    store = tmp_path / "s.db"
    async with opened(str(store)) as opened_store:
        await opened_store.load_records(
            [(f"88.100.1/ITEM-{n:05d}", encode_record([HandleValue(1, "URL", b"x" * 200)]))
             for n in range(2000)])  # ~600 KB of JSONL: more than a pipe holds
    proc = subprocess.Popen(_cli("export", "--store", str(store)), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b'{"handle":"88.100.1/ITEM-00000"')
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert stderr == b""
