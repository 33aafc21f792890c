"""``idnode simulate`` end to end: real node processes, real APIs, clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _simulate(*args: str) -> list[str]:
    return [sys.executable, "-m", "resolver.cli", "simulate", *args]


def test_simulate_once_builds_cross_industry_traces(tmp_path: Path) -> None:
    done = subprocess.run(
        _simulate("--secondaries", "6", "--enterprises", "1", "--ids-per-enterprise", "3",
                  "--seed", "5", "--dir", str(tmp_path), "--once"),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("  secondary   ") == 6
    assert "300:0.NA/88.104" in out and "300:88.106.1/ADMIN" in out
    # product <- part <- raw material: three identifiers under three secondaries.
    assert "Check passed: 3 identifiers traced" in out
    # Same seed, same data: the second run prints the same credentials and trace.
    again = subprocess.run(
        _simulate("--secondaries", "6", "--enterprises", "1", "--ids-per-enterprise", "3",
                  "--seed", "5", "--dir", str(tmp_path / "again"), "--once"),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert again.returncode == 0

    def stable(text: str) -> list[str]:
        return [line.split(" s. ")[-1] for line in text.splitlines()
                if "ADMIN" in line or "0.NA/" in line or "<-" in line]

    assert stable(again.stdout) == stable(out)


def test_simulate_serves_until_ctrl_c_then_stops_every_node(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _simulate("--secondaries", "2", "--enterprises", "1", "--ids-per-enterprise", "2",
                  "--dir", str(tmp_path), "--stats-interval", "1"),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ready"):
                break
        text = "".join(lines)
        assert "Ready" in text, text
        recursive = next(line.split()[1] for line in lines if line.startswith("  recursive"))
        curl = next(line.split()[1] for line in lines if line.strip().startswith("curl"))
        with urllib.request.urlopen(curl, timeout=10) as reply:
            body = json.load(reply)
        assert body["responseCode"] == 1 and curl.startswith(recursive)
        # idnode trace walks the chain across secondaries through the recursive node.
        root = curl.rsplit("/api/handles/", 1)[1]
        traced = subprocess.run(
            [sys.executable, "-m", "resolver.cli", "trace", root, "--server", recursive, "--json"],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
        )
        assert traced.returncode == 0, traced.stdout + traced.stderr
        tree = json.loads(traced.stdout)

        def walk(node: dict) -> list[dict]:
            return [node, *(n for child in node["children"] for n in walk(child))]

        nodes = walk(tree)
        assert len(nodes) >= 2 and {n["status"] for n in nodes} == {"ok"}
        assert {n.get("relation") for n in nodes[1:]} <= {"material", "component"}
        # Statistics flow upward: both secondaries report their registrations.
        top = next(line.split()[1] for line in lines if line.startswith("  top-level   http"))
        reporting: set[str] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(reporting) < 2:
            with urllib.request.urlopen(f"{top}/api/stats", timeout=5) as reply:
                totals = json.load(reply)["totals"]
            reporting = {t["node"] for t in totals if t["registrations"] > 0}
            time.sleep(0.5)
        assert len(reporting) == 2, totals
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Every node process is gone: nothing answers on the recursive node's port.
    try:
        urllib.request.urlopen(f"{recursive}/metrics", timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("a node still answers after Ctrl-C")
