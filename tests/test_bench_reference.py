"""Smoke test of bench.reference: both servers answer every transport, the ratios come out.

Tiny (a few hundred records, one-second runs): it checks the benchmark works,
not how fast anything is. Skipped when the reference Handle.Net 9.3.1 server is
not installed (tests/interop/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from processes import ROOT, _env

from bench.reference_server import missing_reason

REASON = missing_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def test_reference_bench_runs_every_transport_on_both_servers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.reference", "--preload", "200", "--seconds", "1",
         "--repetitions", "2", "--warmup", "1", "--connections-tcp", "4",
         "--connections-http", "4", "--output", str(tmp_path)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["hot_set"] == 200
    assert len(summary["repetition_results"]) == 2
    for rep in summary["repetition_results"]:
        for server in ("idnode", "reference"):
            for transport in ("udp", "tcp"):
                m = rep[f"{server}-{transport}"]
                assert m["requests"] > 0 and set(m["rc"]) == {"1"}, (server, transport, m["rc"])
                assert m["mismatched"] == 0 and m["errors"] == 0
                assert m["server_cpu_seconds"] is not None
            http = rep[f"{server}-http"]
            assert http["requests"] > 0 and http["non_2xx"] == 0 and http["socket_errors"] == 0
    for transport in ("udp", "tcp", "http"):
        per_cpu = summary["ratios"][transport]["per_server_cpu_second"]
        assert per_cpu is not None and per_cpu["min"] > 0
    assert "idnode / reference" in (run_dir / "report.md").read_text()
