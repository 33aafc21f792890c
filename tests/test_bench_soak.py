"""bench.soak on a tiny run: paced segments, status counts, RSS, and the write check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.processes import ROOT, child_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None,
                       reason="wrk not installed (apt-get install wrk)"),
]


def test_tiny_soak_reports_every_acknowledged_write_present(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.1", "--segment-seconds", "3",
         "--probe", "2", "--preload", "500", "--connections", "8", "--output", str(tmp_path)],
        check=True, cwd=ROOT, env=child_env(), capture_output=True, timeout=180,
    )
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    writes = summary["writes"]
    assert writes["acknowledged"] > 0
    assert writes["present"] >= writes["acknowledged"]  # none lost
    assert writes["present"] <= writes["attempted"]
    assert summary["unexpected_statuses"] == {}
    assert len(summary["segments"]) == 3  # the capacity probe and two paced segments
    assert summary["rss_start"] > 0 and summary["rss_max"] > 0
    assert "none lost" in (run / "report.md").read_text()
