"""The batch registration scenarios on tiny live runs: REST ``POST /api/handles`` and SNMS.

Each load run lasts 2 s with 2 users sending batches of 50; afterwards the
identifiers are asked for over REST. A ``compare`` shows that batch scenarios
are measured without a baseline and reported in identifiers per second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.locust_run import LoadSpec, run_locust
from bench.preload import SNMS_USER, prepare_store
from bench.processes import ROOT, child_env
from bench.scenarios import SCENARIOS
from bench.targets import node
from bench.workload import SNMS_TEMPLATE_VERSION, handle_path, write_identifier

pytestmark = pytest.mark.slow
PRELOAD = 200
BATCH = 50


def get_record(url: str, handle: str) -> dict:
    with urllib.request.urlopen(url + handle_path(handle), timeout=10) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


@pytest.mark.parametrize("name", ["register-batch", "register-batch-snms"])
def test_batches_register_identifiers_on_a_live_node(tmp_path: Path, name: str):
    store = prepare_store(tmp_path, PRELOAD)
    with node(store, tmp_path / "node.log", None, []) as target:
        spec = LoadSpec(SCENARIOS[name], target.url, users=2, spawn_rate=2, seconds=2,
                        bench_options={"preload": str(PRELOAD), "secret": store.secret,
                                       "tag": "T", "batch-size": str(BATCH),
                                       "snms-user": SNMS_USER})
        result = run_locust(spec, tmp_path / "out", name)
        row = result.by_name[name]
        assert row["requests"] > 0 and row["failures"] == 0, result.errors
        # User 0-0's first batch: its first and last identifiers exist now.
        for n in (1, BATCH):
            found = get_record(target.url, write_identifier(store.prefix, "T", "0-0", n))
            assert found["responseCode"] == 1 and found["values"]
        types = {v["type"] for v in found["values"]}
        assert ("TEMPLATE" in types) == (name == "register-batch-snms")
        if name == "register-batch-snms":
            template = next(v for v in found["values"] if v["type"] == "TEMPLATE")
            assert template["data"]["value"] == SNMS_TEMPLATE_VERSION


def test_compare_reports_identifiers_per_second_without_a_baseline(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.runner", "compare", "--scenario",
         "resolve-hot,register-batch", "--repetitions", "1", "--duration", "1", "--users", "2",
         "--warmup", "0", "--preload", str(PRELOAD), "--batch-size", str(BATCH),
         "--output", str(tmp_path)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (out,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((out / "summary.json").read_text())
    batch = summary["results"]["register-batch"]
    assert batch["targets"] == ["idnode"] and batch["ratios"] == {}
    assert batch["identifiers_per_request"] == BATCH
    (m,) = batch["measurements"]
    assert m["requests"] > 0 and m["failures"] == 0
    assert summary["results"]["resolve-hot"]["targets"] == ["idnode", "baseline"]
    report = (out / "report.md").read_text()
    assert "## Identifiers per second" in report
    assert f"| register-batch | {BATCH} | {m['rps']:,.0f} | {m['rps'] * BATCH:,.0f} |" in report
