"""Ratios between targets, one per repetition, reported as min / median / max.

Each repetition measures every target once, back to back (alternating the
order), so a ratio of the same repetition compares targets under the same
machine conditions; the spread over repetitions shows how much to trust it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench.measure import Measurement


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "values": list(values)}


def _paired(measurements: Sequence[Measurement], subject: str, other: str
            ) -> list[tuple[Measurement, Measurement]]:
    done = [m for m in measurements if not m.interrupted]
    mine = {m.rep: m for m in done if m.target == subject}
    theirs = {m.rep: m for m in done if m.target == other}
    return [(mine[r], theirs[r]) for r in sorted(mine.keys() & theirs.keys())]


def _ratio(pairs: list[tuple[Measurement, Measurement]],
           metric: Callable[[Measurement], float | None]) -> dict[str, Any] | None:
    values = []
    for a, b in pairs:
        x, y = metric(a), metric(b)
        if x is not None and y:
            values.append(x / y)
    return spread(values) if values else None


def ratios(measurements: Sequence[Measurement], subject: str, other: str) -> dict[str, Any]:
    """subject/other: throughput (higher is better for the subject) and server CPU
    per request (lower is better), each over the repetitions both completed."""
    pairs = _paired(measurements, subject, other)
    return {
        "throughput": _ratio(pairs, lambda m: m.locust.rps),
        "cpu_per_request": _ratio(pairs, lambda m: m.cpu_us_per_request),
        "repetitions": len(pairs),
    }
