"""One run or compare invocation: preload, start targets, measure, write the results.

For each scenario: a fresh node (or the --target URL), the baseline and peers
when comparing, an unmeasured warm-up per target, then the repetitions, each
measuring every target once in alternating order. Whatever ends the run early
(Ctrl-C, a failed server) still leaves summary.json, report.md and the plots of
everything measured until then.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report, summary
from bench.locust_run import Distribution, LoadSpec, run_locust
from bench.measure import Measurement, aimed, measure
from bench.preload import SNMS_USER, PreloadedStore, prepare_store
from bench.processes import cpu_layout
from bench.scenarios import SCENARIOS, Scenario
from bench.targets import Target, baseline, node, probe


def _parameters(args: argparse.Namespace, server_cpu: int | None, load_cpus: str | None
                ) -> dict[str, Any]:
    return {
        "users": args.users, "spawn_rate": args.spawn_rate or args.users,
        "duration": args.duration, "warmup": args.warmup, "repetitions": args.repetitions,
        "preload": args.preload, "processes": args.processes,
        "master": {"expect_workers": args.expect_workers} if args.master else None,
        "target": args.target, "peers": getattr(args, "peer", []), "prefix": args.prefix,
        "seed": args.seed, "zipf_s": args.zipf_s, "write_ratio": args.write_ratio,
        "batch_size": args.batch_size,
        "node_args": args.node_arg, "handle_port": args.handle_port if args.target else None,
        "pinning": (f"servers on core {server_cpu}, locust on core(s) {load_cpus}"
                    if load_cpus is not None else "none"),
    }


def _spec(args: argparse.Namespace, scenario: Scenario, seconds: int, load_cpus: str | None
          ) -> LoadSpec:
    dist = (Distribution(args.expect_workers, args.master_bind_host, args.master_bind_port)
            if args.master else None)
    return LoadSpec(
        scenario=scenario, url="", users=args.users, spawn_rate=args.spawn_rate or args.users,
        seconds=seconds, processes=args.processes, distribution=dist, cpus=load_cpus,
        bench_options={"prefix": args.prefix, "preload": str(args.preload),
                       "seed": str(args.seed), "zipf-s": f"{args.zipf_s:g}",
                       "write-ratio": f"{args.write_ratio:g}", "secret": args.secret,
                       "tag": secrets.token_hex(4), "batch-size": str(args.batch_size),
                       "snms-user": SNMS_USER},
    )


def _line(m: Measurement, per_request: int = 1) -> str:
    lat = m.locust.latency_ms
    node = "; ".join(f"node {route} p50 {row['p50_us']:,.0f} µs p99 {row['p99_us']:,.0f} µs"
                     for route, row in m.node.items() if row.get("p50_us") is not None)
    cpu = f", server CPU {m.cpu_us_per_request:,.0f} µs/request" if m.cpu_us_per_request else ""
    if m.cache_hit_ratio is not None:
        cpu += f", cache hits {m.cache_hit_ratio:.0%}"
    if m.locust.load_cpu_percent is not None:
        cpu += f", locust CPU {m.locust.load_cpu_percent:.0f}%"
    ids = f" ({m.locust.rps * per_request:,.0f} identifiers/s)" if per_request > 1 else ""
    return (f"  {m.scenario} · {m.target} · rep {m.rep + 1}: {m.locust.rps:,.0f} req/s{ids}, "
            f"{m.locust.failures:,} failures, locust p50 {lat['p50']:g} ms"
            + (f", {node}" if node else "") + cpu)


@dataclass
class Session:
    """One run or compare invocation: its options, scratch space and core layout."""

    args: argparse.Namespace
    compare: bool
    run: summary.Run
    work: Path
    out: Path
    server_cpu: int | None
    load_cpus: str | None
    store: PreloadedStore | None = None

    def spec(self, scenario: Scenario, seconds: int) -> LoadSpec:
        return _spec(self.args, scenario, seconds, self.load_cpus)


def _targets(s: Session, scenario: Scenario, stack: ExitStack) -> list[Target]:
    """The subject (a fresh node: cold cache), then the baseline and peers when comparing."""
    args, logs = s.args, s.out / "logs"
    if s.store is None:
        subject = Target("idnode", args.target.rstrip("/"), handle_port=args.handle_port)
    else:
        subject = stack.enter_context(node(s.store, logs / f"{scenario.name}-idnode.log",
                                           s.server_cpu, [*scenario.node_args, *args.node_arg]))
    replies = probe(subject.url, scenario, args.prefix, args.secret, args.seed)
    if not s.compare:
        return [subject]
    if not scenario.baseline:
        # The bare aiohttp baseline and HTTP peers do not speak the binary protocol;
        # batch registrations are read as identifiers/s beside resolve-hot's rate.
        why = "batch registration" if scenario.batched else "binary Handle protocol"
        print(f"  {scenario.name}: no baseline or peers ({why}); measuring idnode alone",
              flush=True)
        return [subject]
    scratch = s.work / scenario.name
    scratch.mkdir()
    base = stack.enter_context(
        baseline(replies, scratch, logs / f"{scenario.name}-baseline.log", s.server_cpu))
    peers = [Target(f"peer{i + 1}", url.rstrip("/")) for i, url in enumerate(args.peer)]
    return [subject, base, *peers]


def _scenario(s: Session, scenario: Scenario) -> None:
    args = s.args
    with ExitStack() as stack:
        targets = _targets(s, scenario, stack)
        s.run.targets[scenario.name] = [t.name for t in targets]
        for t in targets if args.warmup else []:
            print(f"  warm-up {scenario.name} · {t.name} ({args.warmup} s)", flush=True)
            spec = aimed(s.spec(scenario, args.warmup), t)
            warm = run_locust(spec, s.work / "warmup" / f"{scenario.name}-{t.name}", "warm-up")
            if warm.interrupted:
                raise KeyboardInterrupt
        for rep in range(args.repetitions):
            # Alternate the order (ABBA...) so drift over time favours no target.
            for t in targets if rep % 2 == 0 else targets[::-1]:
                m = measure(t, s.spec(scenario, args.duration), rep,
                            s.out / "runs" / f"{scenario.name}-{t.name}-{rep + 1}")
                s.run.measurements.append(m)
                print(_line(m, args.batch_size if scenario.batched else 1), flush=True)
                if m.interrupted:
                    raise KeyboardInterrupt


def execute(args: argparse.Namespace, compare: bool) -> Path:
    names: list[str] = args.scenario
    server_cpu, load_cpus = (None, None) if args.no_pin else cpu_layout()
    out = args.output / f"{time.strftime('%Y%m%dT%H%M%S')}-{'+'.join(names)}"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    run = summary.Run("compare" if compare else "run", [SCENARIOS[n] for n in names],
                      _parameters(args, server_cpu, load_cpus))
    print(f"results in {out}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="idnode-bench-") as tmp:
            s = Session(args, compare, run, Path(tmp), out, server_cpu, load_cpus)
            if not args.target:
                print(f"preloading {args.preload:,} identifiers ...", flush=True)
                s.store = prepare_store(s.work, args.preload, prefix=args.prefix,
                                        secret=args.secret, seed=args.seed)
                run.preload = {"count": s.store.count,
                               "import_seconds": s.store.import_seconds}
            for scenario in run.scenarios:
                print(f"{scenario.name}: {scenario.description}", flush=True)
                _scenario(s, scenario)
    except KeyboardInterrupt:
        run.interrupted = True
        print("\ninterrupted: writing what was measured", flush=True)
    except RuntimeError as exc:  # a server or locust that failed: keep the runs before it
        run.error = str(exc)
        print(f"\nerror: {exc}\nwriting what was measured", file=sys.stderr, flush=True)
    write(run, out)
    return out


def write(run: summary.Run, out: Path) -> None:
    data = summary.build(run)
    (out / "summary.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    render(out, data)


def render(out: Path, data: dict[str, Any]) -> None:
    from bench import plots  # matplotlib takes ~1 s to import: only when drawing

    made = plots.draw_all(data, out)
    text = report.render(data, made)
    (out / "report.md").write_text(text)
    print("\n" + text, flush=True)
    print(f"results in {out}", flush=True)
