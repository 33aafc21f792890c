"""``idnode import`` and ``idnode export``: bulk load and dump of a store.

Import is a pipeline::

    input ──pieces: file ranges──▶ parse processes ──sorted (key, record)──▶ batches
          (resolver.import_input)  (protocol.bulk_records:   lists            of --batch
                                    read the range, validate,                identifiers
                                    msgpack-encode)                              │
                                        Store.load_records, one transaction ◀────┘
                                        per batch, one batch in flight

Parsing is most of the CPU (the JSON and the validation of every value), so it
runs in ``--jobs`` processes while this process only stores; the SQLite
writer thread spends its time in C with the GIL released. The parse
processes read their ranges of an input file themselves: passing 4 MiB of
input through this process and a pipe cost more CPU than parsing it, and a
pipe write waits for this process's GIL once per 64 KiB, which left the
parsers idle a quarter of the time (measured with py-spy). A pipe (stdin)
is read here and its pieces sent as bytes. A batch is sorted by key before
it is stored (each piece arrives sorted, so the sort is a merge of runs):
B-tree inserts then touch neighbouring pages. Success is reported only after
the last batch committed; batches are create-or-replace, so an import
stopped half-way is finished by running it again.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from multiprocessing import get_context
from typing import IO, Literal

import msgspec
import orjson

from protocol import rest_json
from protocol.bulk_records import CsvLayout, KeyedBlob, RecordParser
from protocol.errors import HandleError
from protocol.identifier import parse_prefix
from protocol.values import DEFAULT_PERMS, DEFAULT_TTL, HandleValue
from registry.store import Store
from resolver import import_input
from resolver.admin_tasks import CommandError, opened, sealer_for
from resolver.import_input import Piece

LINES_PER_PIECE = 10_000  # about that many in 4 MiB of JSONL
MAX_SHOWN_ERRORS = 100  # --on-error skip: lines reported one by one, then only counted

Format = Literal["jsonl", "csv"]


@dataclass(frozen=True)
class ImportOptions:
    file: str  # path, or "-" for stdin
    format: Format
    batch: int = 100_000  # identifiers per transaction
    jobs: int = 1  # parse processes; 0 parses in this process
    skip_errors: bool = False  # report bad lines and go on, instead of stopping at the first
    progress_every: float = 10.0  # seconds between progress lines (0: none)
    master_key: str | None = None  # key file (--master-key) for a URL store


@dataclass
class ImportReport:
    imported: int = 0
    lines: int = 0
    bad_lines: int = 0
    parse_cpu: float = 0.0  # CPU seconds the parsers spent, summed over processes
    store_seconds: float = 0.0  # wall time with a batch being written (one at a time)
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)

    def summary(self) -> str:
        wall = time.perf_counter() - self.started
        rate = self.imported / wall if wall > 0 else 0.0
        own_cpu = time.process_time() - self.cpu_started
        return (f"imported {self.imported} handles in {wall:.1f} s ({rate:,.0f}/s); "
                f"parse {self.parse_cpu:.1f} CPU-s, store {self.store_seconds:.1f} s "
                f"(this process {own_cpu:.1f} CPU-s: cutting, sorting, storing)"
                + (f"; {self.bad_lines} bad lines skipped" if self.bad_lines else ""))


def default_jobs() -> int:
    """One parse process per core. This process is busy about 60% of an import
    (its SQLite writer waits on the disk): on 2 cores, 2 jobs imported 1M
    gen_ids lines at 243-272k/s and 1 job at 214-233k/s (2026-12-07, alternating)."""
    return max(1, os.cpu_count() or 1)


def format_for(file: str, given: str | None) -> Format:
    if given in ("jsonl", "csv"):
        return given  # type: ignore[return-value]
    return "csv" if file.lower().endswith(".csv") else "jsonl"


# -- the parse side (runs in the worker processes, or inline with --jobs 0) --------


class _Parser:
    """Parses pieces; a range piece is read from ``input_path``. Line numbers
    in the result count from 0 within the piece."""

    def __init__(self, store_path: str, fmt: Format, layout: CsvLayout | None,
                 homed: frozenset[str], master_key: str | None, input_path: str | None) -> None:
        self.layout = layout if fmt == "csv" else None
        self.records = RecordParser(sealer_for(store_path, master_key).seal, homed)
        self.input_path = input_path
        self._fd: int | None = None

    def parse(self, piece: Piece) -> Parsed:
        started = time.process_time()
        data = piece if isinstance(piece, bytes) else import_input.read_range(self._input(), piece)
        if self.layout is not None:
            chunk = self.records.csv_chunk(data, 0, self.layout)
        else:
            chunk = self.records.jsonl_chunk(data, 0)
        return Parsed(chunk.records, chunk.errors, chunk.lines, time.process_time() - started)

    def _input(self) -> int:
        if self._fd is None:
            assert self.input_path is not None
            self._fd = os.open(self.input_path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_worker: _Parser | None = None


def _worker_start(*parser_args: object) -> None:
    global _worker
    # Parsers keep no cycles, and each chunk's objects are dropped together: the
    # cyclic GC would only rescan them (measured: 13% of the parse time).
    gc.disable()
    _worker = _Parser(*parser_args)  # type: ignore[arg-type]


def _worker_parse(piece: Piece) -> Parsed:
    assert _worker is not None
    parsed = _worker.parse(piece)
    parsed.records = _pack_records(parsed.records)  # type: ignore[arg-type]
    return parsed


# Records cross from a parse process as one msgpack array of [key, record]
# pairs: msgspec packs it in 0.05 us a record where pickling the list of
# tuples took 0.39 (and unpickling 0.19; unpacking is 0.18).
_pack_records = msgspec.msgpack.Encoder().encode
_unpack_records = msgspec.msgpack.Decoder(list[tuple[str, bytes]]).decode


@dataclass(slots=True)
class Parsed:
    """A parsed piece: its records (packed, from a parse process), errors and
    line numbers counted from 0 within the piece."""

    records: list[KeyedBlob] | bytes
    errors: list[tuple[int, str]]
    lines: int
    cpu: float  # seconds the parser spent on it

    def unpacked(self) -> list[KeyedBlob]:
        records = self.records
        return _unpack_records(records) if isinstance(records, bytes) else records


# -- the pipeline -----------------------------------------------------------------


async def import_file(store_path: str, options: ImportOptions) -> int:
    source: IO[bytes] = (sys.stdin.buffer if options.file == "-"
                         else open(options.file, "rb"))  # noqa: SIM115
    report = ImportReport()
    with source:
        layout = None
        first_line = 1
        if options.format == "csv":
            header = source.readline()
            try:
                layout = CsvLayout.from_header(header)
            except HandleError as exc:
                raise CommandError(f"{options.file}:1: {exc.message}") from None
            first_line = 2
        pieces: Iterator[Piece]
        if options.file != "-" and import_input.is_regular_file(source):
            pieces = import_input.file_ranges(source.fileno(), source.tell(), layout)
            input_path: str | None = options.file
        else:
            pieces, input_path = import_input.stream_chunks(source, layout), None
        # Creates a file store's master key once, before the parsers read it.
        sealer_for(store_path, options.master_key)
        async with opened(store_path) as store:
            homed = frozenset(await store.homed_prefixes())
            parser_args = (store_path, options.format, layout, homed, options.master_key,
                           input_path)
            # Input of one piece is parsed here: starting a process costs more.
            ahead: list[Piece] = list(islice(pieces, 2))
            pool: Executor | None = None
            inline: _Parser | None = None
            if options.jobs > 0 and len(ahead) > 1:
                # spawn, not fork: this process already runs the SQLite writer thread.
                pool = ProcessPoolExecutor(options.jobs, mp_context=get_context("spawn"),
                                           initializer=_worker_start, initargs=parser_args)
            else:
                inline = _Parser(*parser_args)
            try:
                await _run(store, options, report, first_line, chain(ahead, pieces), pool,
                           inline)
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                if inline is not None:
                    inline.close()
    print(report.summary(), file=sys.stderr)
    return 0


async def _run(store: Store, options: ImportOptions, report: ImportReport, first_line: int,
               pieces: Iterator[Piece], pool: Executor | None, inline: _Parser | None) -> None:
    loop = asyncio.get_running_loop()
    # Pieces parsed ahead of the collector: a whole batch, so the parsers keep
    # going while the collector waits for the batch before to commit.
    depth = options.batch // LINES_PER_PIECE + 2 * max(options.jobs, 1)
    parsing: deque[asyncio.Future[Parsed]] = deque()
    batch: list[KeyedBlob] = []
    storing: asyncio.Task[None] | None = None
    last_progress, last_imported = time.perf_counter(), 0

    async def timed_load(records: list[KeyedBlob]) -> None:
        started = time.perf_counter()
        await store.load_records(records)
        report.store_seconds += time.perf_counter() - started
        report.imported += len(records)

    async def store_batch() -> None:
        nonlocal storing, batch
        if storing is not None:
            await storing  # one batch in flight: the writer is serial anyway
        batch.sort(key=_by_key)  # runs of sorted chunks: a merge
        storing = asyncio.ensure_future(timed_load(batch))
        batch = []

    async def collect() -> None:
        nonlocal last_progress, last_imported
        parsed = await parsing.popleft()
        report.parse_cpu += parsed.cpu
        if parsed.errors:
            # Pieces come back in input order: their first line is known now.
            base = first_line + report.lines
            _report_errors(options, report, [(base + n, text) for n, text in parsed.errors])
        report.lines += parsed.lines
        batch.extend(parsed.unpacked())
        if len(batch) >= options.batch:
            await store_batch()
        now = time.perf_counter()
        if options.progress_every and now - last_progress >= options.progress_every:
            recent = (report.imported - last_imported) / (now - last_progress)
            last_progress, last_imported = now, report.imported
            elapsed = now - report.started
            print(f"... {elapsed:.0f} s: {report.imported} imported, {report.lines} lines read, "
                  f"{report.imported / elapsed:,.0f}/s overall, {recent:,.0f}/s lately",
                  file=sys.stderr, flush=True)

    try:
        for piece in pieces:
            if pool is not None:
                parsing.append(loop.run_in_executor(pool, _worker_parse, piece))
            else:
                assert inline is not None
                done = loop.create_future()
                done.set_result(inline.parse(piece))
                parsing.append(done)
            while len(parsing) >= depth:
                await collect()
        while parsing:
            await collect()
        if batch:
            await store_batch()
        if storing is not None:
            await storing
    except BaseException:
        for future in parsing:
            future.cancel()
        if storing is not None and not storing.done():
            # Let the batch being written finish, so the count below is true.
            await asyncio.gather(storing, return_exceptions=True)
        print(f"idnode import: stopped; {report.imported} handles were imported and stay "
              "(re-running the import is safe: it creates or replaces)", file=sys.stderr)
        raise


def _by_key(record: KeyedBlob) -> str:
    return record[0]


def _report_errors(options: ImportOptions, report: ImportReport,
                   errors: list[tuple[int, str]]) -> None:
    if not options.skip_errors:
        number, message = errors[0]
        raise CommandError(f"{options.file}:{number}: {message}")
    for number, message in errors:
        report.bad_lines += 1
        if report.bad_lines <= MAX_SHOWN_ERRORS:
            print(f"{options.file}:{number}: {message} (skipped)", file=sys.stderr)
        elif report.bad_lines == MAX_SHOWN_ERRORS + 1:
            print("... more bad lines are counted, not shown", file=sys.stderr)


# -- export -------------------------------------------------------------------------

CSV_EXPORT_HEADER = b"handle,index,type,data,format,ttl\n"


async def export_file(store_path: str, prefix: str | None, output: str, fmt: Format) -> int:
    """Stream every record (of ``prefix``) in key order; memory stays one page of records."""
    sink: IO[bytes] = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    try:
        lossy = await _export_records(store_path, prefix, sink, fmt)
    except BrokenPipeError:
        # The reader went away (``idnode export | head``): stop quietly, as
        # Unix tools do, and keep Python from failing again on its final
        # flush of stdout (closing the sink may have failed half-way: use fd 1).
        if output == "-":
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        return 1
    if lossy:
        print(f"idnode export: {lossy} values had permissions, timestamps, references or an "
              "absolute ttl that CSV does not carry; export JSONL for a faithful copy",
              file=sys.stderr)
    return 0


async def _export_records(store_path: str, prefix: str | None, sink: IO[bytes],
                          fmt: Format) -> int:
    """Write the records to ``sink`` and close it; the count of values CSV cannot carry."""
    lossy = 0
    with sink:
        if fmt == "csv":
            sink.write(CSV_EXPORT_HEADER)
        async with opened(store_path) as store:
            async for key, values in store.iter_records(parse_prefix(prefix) if prefix else None):
                if fmt == "csv":
                    sink.write(b"".join(_csv_value_row(key, v) for v in values))
                    lossy += sum(1 for v in values if not _csv_faithful(v))
                else:
                    line = {"handle": key, "values": [rest_json.value_to_json(v) for v in values]}
                    sink.write(orjson.dumps(line) + b"\n")
    return lossy


def _csv_faithful(value: HandleValue) -> bool:
    return (value.permissions == DEFAULT_PERMS and not value.timestamp and not value.references
            and not value.ttl_absolute)


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


_CONTROL_BYTE = re.compile(rb"[\x00-\x1f\x7f]")  # binary, or a line break: rows never span lines


def _csv_value_row(key: str, value: HandleValue) -> bytes:
    try:
        if _CONTROL_BYTE.search(value.data):
            raise ValueError
        text, fmt = value.data.decode(), "string"
    except ValueError:
        text, fmt = value.data.hex(), "hex"
    ttl = value.ttl if not value.ttl_absolute else DEFAULT_TTL
    return (f"{_csv_field(key)},{value.index},{_csv_field(value.type)},{_csv_field(text)},"
            f"{fmt},{ttl}\n").encode()
