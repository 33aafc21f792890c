"""Reproducible workloads: identifiers and records as an enterprise would register them.

Records are built with protocol/'s value model and written as the node's JSONL
import format, so preloading is one bulk import, not one HTTP call each. The
request streams (Zipf-popular, uniform, missing, new handles) are drawn from
seeded ``random.Random`` objects, so a run can be repeated request for request.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterator
from functools import lru_cache
from itertools import accumulate
from math import gcd
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


# -- Request streams: what the load scenarios ask for, reproducible from a seed --

def handle_path(handle: str) -> str:
    return f"/api/handles/{handle}"


def missing_identifier(prefix: str, rng: random.Random) -> str:
    """A handle no preload creates (a different suffix family), drawn from 10^9."""
    return f"{prefix}/MISSING-{rng.randrange(10**9):09d}"


def write_identifier(prefix: str, tag: str, user: str, n: int) -> str:
    """The n-th new handle of one load user; ``tag`` keeps repeated runs apart."""
    return f"{prefix}/LOAD-{tag}-{user}-{n}"


class ZipfSampler:
    """Draws n in [0, count) with P(rank k) ∝ 1 / (k + 1)^s.

    Ranks are scattered over the identifier space by a stride coprime with
    ``count``, so the popular identifiers are not simply the first ones loaded.
    """

    def __init__(self, count: int, s: float) -> None:
        if count < 1:
            raise ValueError("a Zipf sampler needs at least one identifier")
        self.count = count
        self.cdf = list(accumulate((k + 1) ** -s for k in range(count)))
        stride = max(1, int(count * 0.6180339887))
        while gcd(stride, count) != 1:
            stride += 1
        self.stride = stride

    def rank(self, rng: random.Random) -> int:
        return min(bisect_left(self.cdf, rng.random() * self.cdf[-1]), self.count - 1)

    def sample(self, rng: random.Random) -> int:
        return self.rank(rng) * self.stride % self.count


@lru_cache(maxsize=8)
def zipf_sampler(count: int, s: float) -> ZipfSampler:
    """One table per process, shared by its users."""
    return ZipfSampler(count, s)


@lru_cache(maxsize=8)
def put_bodies(prefix: str, count: int = 256, seed: int = 1) -> tuple[bytes, ...]:
    """REST PUT bodies ``{"values": [...]}`` of preload-like records, built once."""
    rng = random.Random(seed)
    return tuple(
        orjson.dumps({"values": [value_to_json(v) for v in record(prefix, n, rng)]})
        for n in range(count)
    )


# -- Batch registration: REST ``POST /api/handles`` and SNMS ``batchCreate`` bodies --

SNMS_TEMPLATE_VERSION = "bench-1.0"


def snms_template(prefix: str) -> dict[str, object]:
    """The SNMS template the batchCreate records name (an SNMS record needs one)."""
    return {
        "prefix": prefix, "version": SNMS_TEMPLATE_VERSION, "industryCategory": "C",
        "industrySpecific": "34", "industryTrade": "344", "industrySubclass": "3441",
        "type": 1, "description": "idnode bench",
        "items": [
            {"name": "name", "idType": "name", "idIndex": 2000, "required": True,
             "metadata": {"type": "string", "minLength": 1, "maxLength": 40}},
            {"name": "URL", "idType": "URL", "idIndex": 2001, "required": False,
             "metadata": {"type": "string", "minLength": 0, "maxLength": 200}},
        ],
    }


@lru_cache(maxsize=8)
def value_arrays(prefix: str, count: int = 256, seed: int = 1) -> tuple[bytes, ...]:
    """REST ``values`` arrays of preload-like records, as JSON, built once."""
    rng = random.Random(seed)
    return tuple(orjson.dumps([value_to_json(v) for v in record(prefix, n, rng)])
                 for n in range(count))


@lru_cache(maxsize=8)
def snms_value_arrays(prefix: str, count: int = 256, seed: int = 1) -> tuple[bytes, ...]:
    """SNMS ``value`` arrays matching :func:`snms_template`, as JSON, built once."""
    rng = random.Random(seed)

    def value(index: int, kind: str, text: str) -> dict[str, object]:
        return {"index": index, "type": kind, "auth": "",
                "data": {"format": "string", "value": text}}

    out = []
    for n in range(count):
        kind = rng.choice(PRODUCT_TYPES)
        out.append(orjson.dumps([
            value(2000, "name", f"{kind}-{rng.randrange(10**6):06d}"),
            value(2001, "URL", f"https://trace.example.com/{prefix}/{kind.lower()}/{n}"),
        ]))
    return tuple(out)


def rest_batch(handles: list[str], arrays: tuple[bytes, ...]) -> bytes:
    """``[{"handle", "values"}, ...]`` for ``POST /api/handles``."""
    return b"[" + b",".join(
        b'{"handle":' + orjson.dumps(h) + b',"values":' + arrays[i % len(arrays)] + b"}"
        for i, h in enumerate(handles)) + b"]"


def snms_batch(handles: list[str], arrays: tuple[bytes, ...]) -> bytes:
    """``[{"handle", "templateVersion", "value"}, ...]`` for SNMS ``batchCreate``."""
    version = orjson.dumps(SNMS_TEMPLATE_VERSION)
    return b"[" + b",".join(
        b'{"handle":' + orjson.dumps(h) + b',"templateVersion":' + version
        + b',"value":' + arrays[i % len(arrays)] + b"}"
        for i, h in enumerate(handles)) + b"]"
