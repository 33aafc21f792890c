"""bench.big_store: the cache counters it reads, and a tiny run through every phase."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.big_store import CacheCounters, interleaved_rounds, parse_cache_counters
from bench.processes import ROOT, child_env

METRICS = """\
# HELP idnode_cache_hits_total Cache hits
# TYPE idnode_cache_hits_total counter
idnode_cache_hits_total 12.0
idnode_cache_misses_total 124990.0
idnode_cache_misses_created 1.7e+09
idnode_cache_evictions_total 2.0
idnode_cache_refused_total{worker="0"} 100.0
idnode_cache_refused_total{worker="1"} 15.0
idnode_cache_entries 9272.0
idnode_prefix_cache_misses_total 7.0
"""


def test_cache_counters_are_read_from_metrics_text() -> None:
    assert parse_cache_counters(METRICS) == CacheCounters(
        hits=12.0, misses=124990.0, refused=115.0, evictions=2.0
    )
    assert parse_cache_counters("") == CacheCounters(0.0, 0.0, 0.0, 0.0)


def test_rounds_alternate_which_slice_goes_first_and_take_the_median() -> None:
    order: list[str] = []
    costs = iter([20.0, 40.0, 50.0, 20.0, 20.0, 80.0])  # node CPU-us, in call order

    def slice_(name: str) -> dict[str, object]:
        order.append(name)
        return {"node_cpu_us_per_request": next(costs), "cache_hit_ratio": 0.0}

    result = interleaved_rounds(3, hot=lambda: slice_("hot"), cold=lambda i: slice_(f"cold{i}"))
    assert order == ["hot", "cold0", "cold1", "hot", "hot", "cold2"]
    assert [r["cold_over_hot_by_cpu"] for r in result["runs"]] == [0.5, 0.4, 0.25]
    assert result["cold_over_hot_by_cpu_median"] == 0.4
    assert (result["cold_over_hot_by_cpu_min"], result["cold_over_hot_by_cpu_max"]) == (0.25, 0.5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.parametrize("name", ["ids.db", "ids.lmdb"], ids=["sqlite", "lmdb"])
def test_tiny_run_measures_cold_while_filling_and_once_full(tmp_path: Path, name: str) -> None:
    env, store = child_env(), tmp_path / name
    ids = tmp_path / "ids.jsonl"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, check=True, cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=180)

    run(sys.executable, "-m", "bench.gen_ids", "--count", "3000", "--output", str(ids))
    run(sys.executable, "-m", "resolver.cli", "init", "--store", str(store),
        "--prefix", "88.100.1", "--admin-secret", "x")
    run(sys.executable, "-m", "resolver.cli", "import", "--store", str(store), str(ids))
    output = tmp_path / "big.json"
    run(sys.executable, "-m", "bench.big_store", "--store", str(store), "--count", "3000",
        "--seconds", "1", "--connections", "4", "--hot-set", "50", "--cache-size", "256K",
        "--fill-seconds", "60", "--rounds", "2", "--round-seconds", "1",
        "--output", str(output))
    result = json.loads(output.read_text())
    assert result["store_bytes"] > 3000 * 100  # the SQLite file, or the LMDB data.mdb
    assert result["fill"]["full"]  # a 256K cache fills within the first cold runs
    assert result["fill"]["refused"] + result["fill"]["evictions"] > 0
    assert result["hot"]["cache_hit_ratio"] == 1.0
    # The first cold run starts on a cache holding only the hot set.
    assert result["cold"]["cache_hit_ratio"] < 0.5
    assert result["hot_after"]["cache_hit_ratio"] == 1.0  # re-warmed
    assert result["hot_drift_by_cpu"] == pytest.approx(
        result["hot_after"]["node_cpu_us_per_request"] / result["hot"]["node_cpu_us_per_request"])
    for phase in ("hot", "cold", "cold_full", "hot_after"):
        assert result[phase]["non_2xx"] == 0
        assert result[phase]["node_cpu_us_per_request"] > 0
    hot, full = result["hot"], result["cold_full"]
    assert result["cold_full_over_hot"] == pytest.approx(
        full["requests_per_second"] / hot["requests_per_second"])
    assert result["cold_full_over_hot_by_cpu"] == pytest.approx(
        hot["node_cpu_us_per_request"] / full["node_cpu_us_per_request"])
    rounds = result["rounds"]["runs"]
    assert len(rounds) == 2
    for r in rounds:
        # The hot set stays cached between slices, but for the few keys that
        # 3000 identifiers' cold slices repeat, admit, and evict hot ones for.
        assert r["hot"]["cache_hit_ratio"] > 0.95
        assert r["cold"]["cache_hit_ratio"] < 0.5  # each cold slice has a seed of its own
        assert r["cold_over_hot_by_cpu"] == pytest.approx(
            r["hot"]["node_cpu_us_per_request"] / r["cold"]["node_cpu_us_per_request"])
    assert result["rounds"]["cold_over_hot_by_cpu_min"] <= (
        result["rounds"]["cold_over_hot_by_cpu_median"]) <= (
        result["rounds"]["cold_over_hot_by_cpu_max"])
