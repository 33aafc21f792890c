"""summary.json: everything a run measured, with the versions and machine behind it.

The report and the plots are rendered from this dict alone, so they can be
made again from a stored summary.json (``python -m bench.runner report DIR``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from bench.measure import Measurement
from bench.processes import ROOT
from bench.ratios import ratios
from bench.scenarios import Scenario

SCHEMA = 1
KEYS = ("schema", "mode", "scenarios", "started", "finished", "interrupted", "error",
        "parameters", "machine", "versions", "preload", "results")


@dataclass
class Run:
    mode: str  # "run" or "compare"
    scenarios: list[Scenario]
    parameters: dict[str, Any]
    subject: str = "idnode"
    started: float = field(default_factory=time.time)
    measurements: list[Measurement] = field(default_factory=list)
    targets: dict[str, list[str]] = field(default_factory=dict)  # scenario -> target names
    preload: dict[str, Any] | None = None
    interrupted: bool = False
    error: str | None = None  # why the run stopped early, if it failed


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("idnode", "locust", "aiohttp", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        rev = ""
    out["git"] = rev or None
    return out


def machine() -> dict[str, Any]:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), None)
    except OSError:
        model = None
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "hostname": platform.node()}


def build(run: Run) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario in run.scenarios:
        mine = [m for m in run.measurements if m.scenario == scenario.name]
        names = run.targets.get(scenario.name, [])
        results[scenario.name] = {
            "description": scenario.description,
            "transport": scenario.transport,
            "node_routes": list(scenario.node_routes),
            "node_args": list(scenario.node_args),
            # identifiers/s = req/s × this (the batch size of batch scenarios)
            "identifiers_per_request": (run.parameters.get("batch_size") or 1
                                        if scenario.batched else 1),
            "targets": names,
            "measurements": [m.to_json() for m in mine],
            "ratios": {f"{run.subject}/{other}": ratios(mine, run.subject, other)
                       for other in names if other != run.subject},
        }
    return {
        "schema": SCHEMA, "mode": run.mode, "scenarios": [s.name for s in run.scenarios],
        "started": _stamp(run.started), "finished": _stamp(time.time()),
        "interrupted": run.interrupted, "error": run.error, "parameters": run.parameters,
        "machine": machine(), "versions": versions(), "preload": run.preload, "results": results,
    }
