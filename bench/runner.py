"""Load tests in one command: ``python -m bench.runner`` (also ``idnode bench``).

    run      --scenario S[,S...] [--users U] [--duration T] [--preload N] [--target URL]
             [--processes P] [--spawn-rate R] [--master --expect-workers K]
    compare  the same, against the bare baseline (and --peer URL ...), --repetitions R
    worker   --master-host H       a locust worker for a --master run on another machine
    preload-file --preload N --output FILE   the preload as JSONL, for a --target or peer
    report   DIR                   render report.md and plots again from DIR/summary.json
    list                           the scenarios

Without --target it starts a node (embedded store in a temporary directory,
N identifiers preloaded with ``idnode import``), a fresh process per
scenario. Results go to ``bench/results/<timestamp>-<scenarios>/``. Ctrl-C
stops the load and still writes what was measured.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.preload import PREFIX, SECRET
from bench.processes import ROOT, child_env, stop
from bench.scenarios import SCENARIOS, locustfiles
from bench.session import execute, render
from bench.workload import write_jsonl

RESULTS = Path(__file__).resolve().parent / "results"


def _seconds(text: str) -> int:
    """``10``, ``10s``, ``2m``: whole seconds (locust's run time is whole seconds)."""
    match = re.fullmatch(r"(\d+)\s*([sm]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 10, 10s or 2m)")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _scenarios(text: str) -> list[str]:
    names = list(SCENARIOS) if text == "all" else [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}, all")
    return names


def _load_options(p: argparse.ArgumentParser, compare: bool) -> None:
    p.add_argument("--scenario", type=_scenarios, required=True,
                   help=f"one or more of {', '.join(SCENARIOS)} (comma-separated) or all")
    p.add_argument("--users", type=int, default=8, help="concurrent locust users (connections)")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all)")
    p.add_argument("--duration", type=_seconds, default=10, help="seconds per measurement")
    p.add_argument("--warmup", type=_seconds, default=2,
                   help="unmeasured seconds per target and scenario first (0: none)")
    p.add_argument("--repetitions", type=int, default=3 if compare else 1)
    p.add_argument("--preload", type=int, default=100_000,
                   help="identifiers preloaded (with --target: how many it already holds)")
    p.add_argument("--target", help="measure this URL instead of starting a node")
    p.add_argument("--handle-port", type=int, default=2641,
                   help="with --target: its binary Handle protocol port (binary scenarios)")
    if compare:
        p.add_argument("--peer", action="append", default=[],
                       help="another server to compare with, holding the same preload "
                            "(repeatable)")
    p.add_argument("--processes", type=int, default=1, help="locust processes on this machine")
    p.add_argument("--master", action="store_true",
                   help="let locust workers on other machines generate the load")
    p.add_argument("--expect-workers", type=int, default=1)
    p.add_argument("--master-bind-host", default="127.0.0.1",
                   help="address workers connect to (0.0.0.0 for other machines)")
    p.add_argument("--master-bind-port", type=int, default=5557)
    p.add_argument("--prefix", default=PREFIX)
    p.add_argument("--secret", default=SECRET, help="secret of 300:<prefix>/ADMIN, for writes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--zipf-s", type=float, default=1.0, help="resolve-hot popularity exponent")
    p.add_argument("--write-ratio", type=float, default=0.05, help="registrations in mixed")
    p.add_argument("--batch-size", type=int, default=2000,
                   help="identifiers per request of register-batch and register-batch-snms "
                        "(at most 2000)")
    p.add_argument("--node-arg", action="append", default=[],
                   help="extra `idnode serve` argument, e.g. --node-arg=--cache-size=16M")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin servers to core 0 and locust to the other cores")
    p.add_argument("--output", type=Path, default=RESULTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.runner",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _load_options(sub.add_parser("run", help="measure one subject"), compare=False)
    _load_options(sub.add_parser("compare", help="subject vs bare baseline and peers, A/B"),
                  compare=True)
    w = sub.add_parser("worker", help="a locust worker for a --master run")
    w.add_argument("--master-host", default="127.0.0.1")
    w.add_argument("--master-port", type=int, default=5557)
    w.add_argument("--processes", type=int, default=1)
    w.add_argument("--once", action="store_true",
                   help="serve one locust run, not every run of a runner session")
    f = sub.add_parser("preload-file", help="write the preload as idnode import JSONL")
    f.add_argument("--preload", type=int, default=100_000)
    f.add_argument("--prefix", default=PREFIX)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--output", type=Path, required=True)
    r = sub.add_parser("report", help="render report.md and plots from a summary.json")
    r.add_argument("directory", type=Path)
    sub.add_parser("list", help="list the scenarios")
    return parser


def worker(args: argparse.Namespace) -> int:
    """Serve the master's locust runs until Ctrl-C (a locust worker quits with its master)."""
    argv = [sys.executable, "-m", "locust", "-f", locustfiles(), "--worker",
            "--master-host", args.master_host, "--master-port", str(args.master_port)]
    if args.processes > 1:
        argv += ["--processes", str(args.processes)]
    try:
        while True:
            # Output to this terminal; own session, so Ctrl-C ends the loop before locust.
            proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), start_new_session=True)
            try:
                proc.wait()
            finally:
                stop(proc)
            if args.once:
                return proc.returncode
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "compare"):
        # kill/timeout/a closed terminal stop like Ctrl-C: children are in their own
        # sessions, so only this process can stop them and save the results.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        out = execute(args, compare=args.command == "compare")
        done = json.loads((out / "summary.json").read_text())
        return 2 if done["error"] else 130 if done["interrupted"] else 0
    if args.command == "worker":
        return worker(args)
    if args.command == "preload-file":
        write_jsonl(args.output, args.prefix, args.preload, args.seed)
        print(f"{args.preload:,} identifiers written to {args.output}; load them with "
              f"`idnode import --store STORE {args.output}`")
        return 0
    if args.command == "report":
        render(args.directory, json.loads((args.directory / "summary.json").read_text()))
        return 0
    for s in SCENARIOS.values():
        print(f"{s.name:16} {s.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
