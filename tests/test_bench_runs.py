"""bench/ on tiny live runs: locust scenarios against a node, runner reports, Ctrl-C, workers.

Each load run lasts 2-3 s with a few users; the whole module about half a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest

from bench.locust_run import LoadSpec, run_locust
from bench.preload import prepare_store
from bench.processes import ROOT, child_env, free_port
from bench.scenarios import SCENARIOS, locustfiles
from bench.summary import KEYS
from bench.targets import node

pytestmark = pytest.mark.slow
PRELOAD = 200


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.runner", *args]


def tiny(output: Path, *args: str) -> list[str]:
    return ["--users", "2", "--duration", "2", "--warmup", "0", "--preload", str(PRELOAD),
            "--output", str(output), *args]


def result_dir(output: Path) -> Path:
    (found,) = [p for p in output.iterdir() if p.is_dir()]
    return found


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 300 and height > 100


def test_every_scenario_runs_against_a_live_node(tmp_path: Path):
    store = prepare_store(tmp_path, PRELOAD)
    with node(store, tmp_path / "node.log", None, []) as target:
        # One locust process running all scenario files at once: one user per scenario.
        spec = LoadSpec(SCENARIOS["resolve-hot"], target.url, users=len(SCENARIOS),
                        spawn_rate=len(SCENARIOS), seconds=3, locustfiles=locustfiles(),
                        bench_options={"preload": str(PRELOAD), "secret": store.secret,
                                       "handle-port": str(target.handle_port)})
        result = run_locust(spec, tmp_path / "out", "all scenarios")
    names = set(result.by_name)
    assert {"resolve-hot", "resolve-cold", "resolve-missing", "register-single",
            "binary-udp", "binary-tcp"} <= names
    assert names & {"mixed:resolve", "mixed:register"}
    for name, row in result.by_name.items():
        assert row["requests"] > 0 and row["failures"] == 0, (name, result.errors)
    assert result.per_second and result.rps > 0


def test_compare_reports_ratios_from_real_measurements(tmp_path: Path):
    done = subprocess.run(runner("compare", "--scenario", "resolve-hot", "--repetitions", "2",
                                 *tiny(tmp_path, "--duration", "1")),
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = result_dir(tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert tuple(summary) == KEYS
    assert summary["machine"]["cpu_count"] >= 1 and summary["versions"]["locust"]
    assert summary["parameters"]["users"] == 2 and not summary["interrupted"]
    result = summary["results"]["resolve-hot"]
    runs = {(m["target"], m["rep"]): m for m in result["measurements"]}
    assert set(runs) == {(t, r) for t in ("idnode", "baseline") for r in (0, 1)}
    assert all(m["requests"] > 0 and m["failures"] == 0 for m in runs.values())
    assert runs["idnode", 0]["node_latency_us"]["resolve"]["p50_us"] > 0
    assert runs["baseline", 0]["node_latency_us"] == {}  # the baseline has no /metrics
    assert 0 <= runs["idnode", 0]["cache_hit_ratio"] <= 1
    ratio = result["ratios"]["idnode/baseline"]
    expected = [runs["idnode", r]["rps"] / runs["baseline", r]["rps"] for r in (0, 1)]
    assert ratio["throughput"]["values"] == pytest.approx(expected)
    t = ratio["throughput"]
    assert t["min"] <= t["median"] <= t["max"] and t["min"] > 0
    assert ratio["cpu_per_request"]["median"] > 0
    report = (out / "report.md").read_text()
    assert "idnode/baseline" in report and "![Ratios to the baseline](comparison.png)" in report
    for png in ("throughput.png", "latency.png", "comparison.png"):
        assert_png(out / png)


def test_interrupt_stops_cleanly_and_keeps_what_was_measured(tmp_path: Path):
    proc = subprocess.Popen(runner("run", "--scenario", "resolve-cold,register-single",
                                   *tiny(tmp_path, "--duration", "60")),
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 200 for p in tmp_path.glob("*/runs/*/progress.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    summary = json.loads((result_dir(tmp_path) / "summary.json").read_text())
    assert summary["interrupted"]
    (m,) = summary["results"]["resolve-cold"]["measurements"]
    assert m["interrupted"] and m["requests"] > 0 and m["node_latency_us"]["resolve"]
    assert 0 < m["locust"]["load_cpu_percent"] <= 100 * (os.cpu_count() or 1)
    assert summary["results"]["register-single"]["measurements"] == []
    assert "interrupted" in (result_dir(tmp_path) / "report.md").read_text()
    assert_png(result_dir(tmp_path) / "throughput.png")


def test_master_with_a_worker_process(tmp_path: Path):
    port = free_port()
    worker = subprocess.Popen(runner("worker", "--master-port", str(port), "--once"),
                              cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        done = subprocess.run(
            runner("run", "--scenario", "mixed", "--master", "--expect-workers", "1",
                   "--master-bind-port", str(port), *tiny(tmp_path, "--duration", "1")),
            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    summary = json.loads((result_dir(tmp_path) / "summary.json").read_text())
    (m,) = summary["results"]["mixed"]["measurements"]
    assert m["locust"]["workers"] == 1 and m["requests"] > 0 and m["failures"] == 0
    assert summary["parameters"]["master"] == {"expect_workers": 1}


def test_idnode_bench_hands_over_to_the_runner():
    done = subprocess.run([sys.executable, "-m", "resolver.cli", "bench", "list"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == list(SCENARIOS)
