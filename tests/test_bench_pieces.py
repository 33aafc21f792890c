"""bench/'s pure pieces: seeded request streams, the node's histograms, ratio spreads."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from bench.node_metrics import Histogram, cache_hit_ratio, parse, summarise
from bench.ratios import spread
from bench.scenarios import SCENARIOS
from bench.workload import ZipfSampler, put_bodies, write_identifier


def test_zipf_is_seeded_skewed_and_in_range():
    zipf = ZipfSampler(1000, 1.0)
    draws = [zipf.sample(random.Random(7)) for _ in range(3)]
    assert draws == [zipf.sample(random.Random(7)) for _ in range(3)]
    rng = random.Random(1)
    counts = Counter(zipf.sample(rng) for _ in range(20_000))
    assert all(0 <= n < 1000 for n in counts)
    top10 = sum(c for _, c in counts.most_common(10))
    assert top10 > 0.3 * 20_000  # H(10)/H(1000) ≈ 0.39 of requests go to 10 identifiers
    assert counts.most_common(1)[0][0] == 0  # rank 0 maps to identifier 0
    assert counts.most_common(2)[1][0] != 1  # ...but ranks are scattered, not sequential


def test_put_bodies_are_rest_json_records():
    body = orjson.loads(put_bodies("88.100.1")[0])
    assert [v["index"] for v in body["values"]] == [1, 2, 3, 4, 100]
    assert body["values"][-1]["type"] == "HS_ADMIN"
    assert write_identifier("88.100.1", "t", "0-1", 5) == "88.100.1/LOAD-t-0-1-5"


METRICS = """\
# TYPE idnode_request_duration_seconds histogram
idnode_request_duration_seconds_bucket{le="5e-05",route="resolve",transport="http"} %d
idnode_request_duration_seconds_bucket{le="0.0001",route="resolve",transport="http"} %d
idnode_request_duration_seconds_bucket{le="+Inf",route="resolve",transport="http"} %d
idnode_request_duration_seconds_count{route="resolve",transport="http"} %d
idnode_request_duration_seconds_sum{route="resolve",transport="http"} %f
# TYPE idnode_cache_hits_total counter
idnode_cache_hits_total %d
# TYPE idnode_cache_misses_total counter
idnode_cache_misses_total 4.0
"""


def test_histogram_difference_and_quantiles():
    before = parse(METRICS % (10, 10, 10, 10, 0.0003, 2))
    after = parse(METRICS % (10, 110, 110, 110, 0.0083, 98))
    run = after.histograms["http", "resolve"].minus(before.histograms["http", "resolve"])
    assert run.count == 100 and run.cumulative == (0, 100, 100)
    assert run.quantile(0.5) == pytest.approx(75e-6)  # halfway through the 50-100 µs bucket
    row = summarise(before, after, "http", ("resolve", "write"))
    assert set(row) == {"resolve"}
    assert row["resolve"]["mean_us"] == pytest.approx(80.0)
    assert row["resolve"]["p99_us"] == pytest.approx(99.5)
    assert cache_hit_ratio(before, after) == 1.0  # 96 more hits, no more misses
    assert cache_hit_ratio(None, after) is None  # a target without idnode's /metrics
    beyond = Histogram((1e-4, float("inf")), (0, 5), 1.0)
    assert beyond.quantile(0.5) == 1e-4  # only a lower bound is known past the last bucket


def test_spread_and_registry():
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0,
                                       "values": [3.0, 1.0, 2.0]}
    assert {"resolve-hot", "resolve-cold", "resolve-missing", "register-single",
            "mixed"} <= set(SCENARIOS)
    assert all(s.locustfile.exists() for s in SCENARIOS.values())
