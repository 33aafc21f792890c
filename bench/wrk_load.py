"""Drive a target with wrk (C, one pinned core) and read its summary.

Python load generators cannot saturate a Python server from one core; wrk can,
so it is the load generator for throughput ratios. Lua scripts make each
request's path (and body) vary the same way for every target.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.processes import pinned

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_PCT = re.compile(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    non_2xx: int
    socket_errors: int
    latency_p50: float | None
    latency_p99: float | None


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is needed for throughput benchmarks: apt-get install wrk")
    return wrk


def wrk_argv(url: str, script: Path, *, seconds: float, connections: int, cpu: int | None
             ) -> list[str]:
    # wrk takes whole seconds only ("-d6.66667s" is an error).
    whole = max(1, round(seconds))
    return pinned(cpu, [require_wrk(), "-t1", f"-c{connections}", f"-d{whole}s", "--latency",
                        "-s", str(script), url])


def run_wrk(
    url: str, script: Path, *, seconds: float, connections: int, cpu: int | None
) -> WrkResult:
    argv = wrk_argv(url, script, seconds=seconds, connections=connections, cpu=cpu)
    return parse_wrk(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def parse_wrk(out: str) -> WrkResult:
    rate = _RATE.search(out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    non2xx = _NON2XX.search(out)
    errors = _ERRORS.search(out)
    pct = {p: float(v) * _UNIT[u] for p, v, u in _PCT.findall(out)}
    return WrkResult(
        float(rate.group(1)),
        int(non2xx.group(1)) if non2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
        pct.get("50"),
        pct.get("99"),
    )


def lua_rotate_get(paths: list[str]) -> str:
    """GET each path in turn (one table built once, not per request)."""
    items = ",".join(f'"{p}"' for p in paths)
    return (
        f"local paths = {{{items}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\nend\n'
    )


def lua_unique_put(path_prefix: str, authorization: str, body: str, tag: str) -> str:
    """PUT a new handle per request: ``<path_prefix><tag>-<counter>``."""
    body_lua = body.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "local counter = 0\n"
        f'local tag = "{tag}"\n'
        "request = function()\n  counter = counter + 1\n"
        f'  return wrk.format("PUT", "{path_prefix}" .. tag .. "-" .. counter,\n'
        f'    {{["Content-Type"] = "application/json", ["Authorization"] = "{authorization}"}},\n'
        f'    "{body_lua}")\nend\n'
    )
