"""Reproducible workloads: identifiers and records as an enterprise would register them.

Records are built with protocol/'s value model and written as the node's JSONL
import format, so preloading is one bulk import, not one HTTP call each.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson

from protocol.rest_json import value_to_json
from protocol.values import HS_ADMIN, AdminRecord, HandleValue, encode_admin

PRODUCT_TYPES = ("PUMP", "VALVE", "MOTOR", "BEARING", "SENSOR", "GEARBOX")


def identifier(prefix: str, n: int) -> str:
    return f"{prefix}/BENCH-{n:09d}"


def record(prefix: str, n: int, rng: random.Random) -> list[HandleValue]:
    kind = rng.choice(PRODUCT_TYPES)
    admin = encode_admin(AdminRecord(f"{prefix}/ADMIN", 300))
    return [
        HandleValue(1, "URL", f"https://trace.example.com/{prefix}/{kind.lower()}/{n}".encode()),
        HandleValue(2, "name", f"{kind}-{rng.randrange(10**6):06d}".encode()),
        HandleValue(3, "batch", f"B{rng.randrange(2020, 2027)}{rng.randrange(1, 13):02d}"
                    f"-{rng.randrange(10**4):04d}".encode()),
        HandleValue(4, "manufacturer", f"{prefix}".encode()),
        HandleValue(100, HS_ADMIN, admin),
    ]


def jsonl_lines(prefix: str, count: int, seed: int = 1) -> Iterator[bytes]:
    rng = random.Random(seed)
    for n in range(count):
        values = [value_to_json(v) for v in record(prefix, n, rng)]
        yield orjson.dumps({"handle": identifier(prefix, n), "values": values}) + b"\n"


def write_jsonl(path: Path, prefix: str, count: int, seed: int = 1) -> None:
    with path.open("wb") as f:
        batch: list[bytes] = []
        for line in jsonl_lines(prefix, count, seed):
            batch.append(line)
            if len(batch) >= 10_000:
                f.write(b"".join(batch))
                batch.clear()
        f.write(b"".join(batch))
