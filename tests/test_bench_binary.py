"""The binary Handle protocol scenarios on tiny live runs: locust over UDP and TCP.

A runner ``run`` of binary-udp and binary-tcp against a node it starts, and a
``compare`` showing that binary scenarios are measured without a baseline.
Each load run lasts 2 s with 2 users.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.handle_requests import addressed, check_reply, resolution_template
from bench.processes import ROOT, child_env
from bench.scenarios import SCENARIOS
from protocol.codes import RC
from protocol.handle_wire import (
    ErrorBody,
    Message,
    OpCode,
    ResolutionRequest,
    ValuesBody,
    decode_request,
)

PRELOAD = 200


def runner(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """summary.json and report.md of one tiny runner invocation."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.runner", *args, "--users", "2", "--warmup", "0",
         "--preload", str(PRELOAD), "--output", str(tmp_path)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (out,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (out / "throughput.png").exists()
    return json.loads((out / "summary.json").read_text()), (out / "report.md").read_text()


def test_request_template_is_a_resolution_with_the_patched_id():
    packet = addressed(resolution_template("88.100.1/BENCH-000000007"), 0xDEADBEEF, 1_800_000_000)
    env, msg = decode_request(packet)
    assert env.request_id == 0xDEADBEEF and msg.op_code == OpCode.RESOLUTION
    assert msg.expiration == 1_800_000_000
    assert msg.body == ResolutionRequest("88.100.1/BENCH-000000007")
    check_reply(Message(OpCode.RESOLUTION, RC.SUCCESS, 0, ValuesBody("T/x", ())), "T/x")
    with pytest.raises(Exception, match="RC 100"):
        check_reply(Message(OpCode.RESOLUTION, RC.HANDLE_NOT_FOUND, 0, ErrorBody("no")), "T/x")


@pytest.mark.slow
def test_binary_udp_and_tcp_against_a_live_node(tmp_path: Path):
    summary, _ = runner(tmp_path, "run", "--scenario", "binary-udp,binary-tcp", "--duration", "2")
    assert not summary["interrupted"] and summary["error"] is None
    for name, request_type, route in (("binary-udp", "UDP", "resolve"),
                                      ("binary-tcp", "TCP", "request")):
        (m,) = summary["results"][name]["measurements"]
        assert m["requests"] > 0 and m["failures"] == 0, (name, m["locust"]["errors"])
        row = m["locust"]["by_name"][name]
        assert row["method"] == request_type and row["requests"] == m["requests"]
        # The node timed them on its own Handle transport, not over HTTP.
        assert SCENARIOS[name].transport == name.removeprefix("binary-")
        assert m["node_latency_us"][route]["requests"] > 0


@pytest.mark.slow
def test_compare_measures_binary_scenarios_without_a_baseline(tmp_path: Path):
    summary, report = runner(tmp_path, "compare", "--scenario", "binary-udp", "--duration", "1",
                     "--repetitions", "1")
    result = summary["results"]["binary-udp"]
    assert result["targets"] == ["idnode"] and result["ratios"] == {}
    (m,) = result["measurements"]
    assert m["requests"] > 0 and m["failures"] == 0
    assert "does not speak the binary Handle protocol" in report
