"""The input of ``idnode import`` cut into pieces the parse processes take.

A piece holds whole records: whole lines, and for CSV every row of a handle
(a handle's rows are adjacent). Two kinds:

- a **file range** ``(start, end)``: for a regular file, the parse process
  reads the bytes itself (``pread``), so the input never passes through the
  importing process or a pipe. Boundaries are found here on a memory map,
  touching only the few lines around each cut.
- **bytes**: for a pipe (stdin), read here and handed over as they are.

Line numbers are not known when a piece is cut (that would mean reading
all of it here): each piece is parsed with its lines numbered from 0 and
reports how many it held; the pipeline adds up the counts in input order.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from typing import IO

from protocol.bulk_records import CsvLayout

CHUNK_BYTES = 4 << 20  # input per piece: ~10k JSONL lines, a few ms of parsing

Range = tuple[int, int]
Piece = bytes | Range


def file_ranges(fd: int, start: int, layout: CsvLayout | None) -> Iterator[Range]:
    """Ranges of whole records of the regular file ``fd`` from ``start`` on."""
    size = os.fstat(fd).st_size
    if start >= size:
        return
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
        while start < size:
            end = mm.find(b"\n", start + CHUNK_BYTES) + 1 or size
            if layout is not None and end < size:
                end = _group_end(mm, end, layout)
            yield start, end
            start = end


def _group_end(mm: mmap.mmap, cut: int, layout: CsvLayout) -> int:
    """The first line at or after ``cut`` (a line start) whose handle differs
    from the line before it: rows of one handle stay in one piece."""
    size = len(mm)
    before = mm.rfind(b"\n", 0, cut - 1) + 1
    handle = layout.handle_of(mm[before : cut - 1].decode(errors="replace"))
    while cut < size:
        line_end = mm.find(b"\n", cut)
        if line_end < 0:
            line_end = size
        if layout.handle_of(mm[cut:line_end].decode(errors="replace")) != handle:
            return cut
        cut = line_end + 1
    return size


def read_range(fd: int, piece: Range) -> bytes:
    start, end = piece
    data = os.pread(fd, end - start, start)
    if len(data) != end - start:  # only if the file shrank under us
        raise OSError(f"input file changed while importing: short read at byte {start}")
    return data


def stream_chunks(source: IO[bytes], layout: CsvLayout | None) -> Iterator[bytes]:
    """Pieces of a stream, about CHUNK_BYTES each."""
    carry = b""
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
        yield head
    if carry:
        yield carry


def is_regular_file(source: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError):
        return False
