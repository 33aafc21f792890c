"""``idnode import`` and ``idnode export``: bulk load and dump of a store.

Import is a pipeline::

    input ──4 MiB chunks──▶ parse processes ──sorted (key, record) lists──▶ batches
          (whole lines)     (protocol.bulk_records:                         of --batch
                             validate, msgpack-encode)                      identifiers
                                                                                │
                                        Store.load_records, one transaction ◀───┘
                                        per batch, one batch in flight

Parsing is most of the CPU (the JSON and the validation of every value), so it
runs in ``--jobs`` processes while this process only sorts and stores; the
SQLite writer thread spends its time in C with the GIL released. A batch is
sorted by key before it is stored (each chunk arrives sorted, so the sort is
a merge of runs): B-tree inserts then touch neighbouring pages. Success is
reported only after the last batch committed; batches are create-or-replace,
so an import stopped half-way is finished by running it again.
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

import orjson

from protocol import rest_json
from protocol.bulk_records import CsvLayout, ParsedChunk, RecordParser, StoredRecord
from protocol.errors import HandleError
from protocol.identifier import parse_prefix
from protocol.values import DEFAULT_PERMS, DEFAULT_TTL, HandleValue
from registry.store import Store
from resolver.admin_tasks import CommandError, opened, sealer_for

CHUNK_BYTES = 4 << 20  # input handed to a parse process at a time
LINES_PER_CHUNK = 10_000  # about that many in 4 MiB of JSONL
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
                f"(this process {own_cpu:.1f} CPU-s: reading, sorting, SQLite)"
                + (f"; {self.bad_lines} bad lines skipped" if self.bad_lines else ""))


def default_jobs() -> int:
    """One parse process per core but the one this process's writer uses."""
    return max(1, (os.cpu_count() or 2) - 1)


def format_for(file: str, given: str | None) -> Format:
    if given in ("jsonl", "csv"):
        return given  # type: ignore[return-value]
    return "csv" if file.lower().endswith(".csv") else "jsonl"


# -- the parse side (runs in the worker processes, or inline with --jobs 0) --------


class _Parser:
    def __init__(self, store_path: str, fmt: Format, layout: CsvLayout | None,
                 homed: frozenset[str], master_key: str | None = None) -> None:
        self.layout = layout if fmt == "csv" else None
        self.records = RecordParser(sealer_for(store_path, master_key).seal, homed)

    def parse(self, data: bytes, first_line: int) -> tuple[ParsedChunk, float]:
        started = time.process_time()
        if self.layout is not None:
            chunk = self.records.csv_chunk(data, first_line, self.layout)
        else:
            chunk = self.records.jsonl_chunk(data, first_line)
        return chunk, time.process_time() - started


_worker: _Parser | None = None


def _worker_start(store_path: str, fmt: Format, layout: CsvLayout | None,
                  homed: frozenset[str], master_key: str | None = None) -> None:
    global _worker
    # Parsers keep no cycles, and each chunk's objects are dropped together: the
    # cyclic GC would only rescan them (measured: 13% of the parse time).
    gc.disable()
    _worker = _Parser(store_path, fmt, layout, homed, master_key)


def _worker_parse(data: bytes, first_line: int) -> tuple[ParsedChunk, float]:
    assert _worker is not None
    return _worker.parse(data, first_line)


# -- reading the input in whole lines (and, for CSV, whole handles) ---------------


def _chunks(
    source: IO[bytes], layout: CsvLayout | None, first_line: int
) -> Iterator[tuple[bytes, int]]:
    """(data, number of its first line): whole lines, about CHUNK_BYTES each."""
    carry = b""
    number = first_line
    while True:
        block = source.read(CHUNK_BYTES)
        if not block:
            break
        data = carry + block
        end = data.rfind(b"\n") + 1
        if end == 0:
            carry = data
            continue
        head, carry = data[:end], data[end:]
        if layout is not None:
            head, tail = layout.split_tail(head)
            carry = tail + carry
            if not head:
                continue
        yield head, number
        number += head.count(b"\n")
    if carry:
        yield carry, number


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
        # Creates a file store's master key once, before the parsers read it.
        sealer_for(store_path, options.master_key)
        async with opened(store_path) as store:
            homed = frozenset(await store.homed_prefixes())
            parser_args = (store_path, options.format, layout, homed, options.master_key)
            chunks = _chunks(source, layout, first_line)
            # Input of one chunk is parsed here: starting a process costs more.
            ahead = list(islice(chunks, 2))
            pool: Executor | None = None
            if options.jobs > 0 and len(ahead) > 1:
                # spawn, not fork: this process already runs the SQLite writer thread.
                pool = ProcessPoolExecutor(options.jobs, mp_context=get_context("spawn"),
                                           initializer=_worker_start, initargs=parser_args)
            try:
                await _run(store, options, report, chain(ahead, chunks),
                           pool, _Parser(*parser_args) if pool is None else None)
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
    print(report.summary(), file=sys.stderr)
    return 0


async def _run(store: Store, options: ImportOptions, report: ImportReport,
               chunks: Iterator[tuple[bytes, int]], pool: Executor | None,
               inline: _Parser | None) -> None:
    loop = asyncio.get_running_loop()
    # Chunks parsed ahead of the collector: a whole batch, so the parsers keep
    # going while the collector waits for the batch before to commit.
    depth = options.batch // LINES_PER_CHUNK + 2 * max(options.jobs, 1)
    parsing: deque[asyncio.Future[tuple[ParsedChunk, float]]] = deque()
    batch: list[StoredRecord] = []
    storing: asyncio.Task[None] | None = None
    last_progress, last_imported = time.perf_counter(), 0

    async def timed_load(records: list[StoredRecord]) -> None:
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
        chunk, cpu = await parsing.popleft()
        report.parse_cpu += cpu
        report.lines += chunk.lines
        if chunk.errors:
            _report_errors(options, report, chunk.errors)
        batch.extend(chunk.records)
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
        for data, first_line in chunks:
            if pool is not None:
                parsing.append(loop.run_in_executor(pool, _worker_parse, data, first_line))
            else:
                assert inline is not None
                done = loop.create_future()
                done.set_result(inline.parse(data, first_line))
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


def _by_key(record: StoredRecord) -> str:
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
    if lossy:
        print(f"idnode export: {lossy} values had permissions, timestamps, references or an "
              "absolute ttl that CSV does not carry; export JSONL for a faithful copy",
              file=sys.stderr)
    return 0


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
