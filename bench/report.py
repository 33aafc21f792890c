"""report.md from a summary dict: what was run, the ratios, every measurement, the plots."""

from __future__ import annotations

from typing import Any

LOAD_BOUND = 0.9  # share of a core at which locust itself is the bottleneck
PLOTS = (("throughput.png", "Throughput over time"),
         ("latency.png", "Latency percentiles"),
         ("comparison.png", "Ratios to the baseline"))


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "–" if value is None else format(value, fmt)


def _load_cpu(m: dict[str, Any]) -> float | None:
    percent = m["locust"].get("load_cpu_percent")
    return None if percent is None else percent / 100


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _spread(s: dict[str, Any] | None, fmt: str = ".3f") -> str:
    if not s:
        return "–"
    return f"{s['min']:{fmt}} / **{s['median']:{fmt}}** / {s['max']:{fmt}}"


def _setup(summary: dict[str, Any]) -> list[str]:
    p, v, m = summary["parameters"], summary["versions"], summary["machine"]
    kinds = {r.get("transport", "http") for r in summary["results"].values()}
    user = ("FastHttpUser" if kinds == {"http"} else "Handle protocol User (UDP/TCP sockets)"
            if "http" not in kinds else "FastHttpUser and Handle protocol User")
    load = (f"locust {user}, {p['users']} users (closed loop: each sends its next request "
            f"when the last is answered), spawn rate {p['spawn_rate']:g}/s, ")
    if p.get("master"):
        load += f"distributed: master + {p['master']['expect_workers']} worker(s), "
    else:
        load += f"{p['processes']} locust process{'es' if p['processes'] > 1 else ''}, "
    load += (f"{p['repetitions']} repetition(s) × {p['duration']} s"
             + (f" after a {p['warmup']} s warm-up per target" if p["warmup"] else "") + ".")
    lines = [
        f"- Started {summary['started']}, finished {summary['finished']}"
        + (" — **interrupted (Ctrl-C): partial results**" if summary["interrupted"] else "")
        + (f" — **stopped by an error: {summary['error']}**" if summary.get("error") else "")
        + ".",
        f"- idnode {v.get('idnode')} (git {v.get('git')}), locust {v.get('locust')}, "
        f"aiohttp {v.get('aiohttp')}, Python {v.get('python')}.",
        f"- {m['cpu_count']} CPUs ({m.get('cpu_model') or 'unknown model'}), {m['platform']}.",
        f"- Load: {load}",
        f"- Pinning: {p['pinning']}.",
    ]
    if (pre := summary.get("preload")) and pre["count"]:
        lines.append(f"- Preload: {pre['count']:,} identifiers with one `idnode import` "
                     f"({pre['import_seconds']:.1f} s including process start).")
    if p.get("target"):
        lines.append(f"- Subject: {p['target']} (not started by the runner).")
    for i, peer in enumerate(p.get("peers") or []):
        lines.append(f"- Peer {i + 1}: {peer}.")
    return lines


def _ratio_table(summary: dict[str, Any]) -> list[str]:
    rows = []
    for name, result in summary["results"].items():
        for pair, r in result["ratios"].items():
            rows.append(f"| {name} | {pair} | {_spread(r['throughput'])} | "
                        f"{_spread(r['cpu_per_request'])} | {r['repetitions']} |")
    if not rows:
        return []
    return ["## Ratios", "",
            "Per repetition, min / **median** / max. Throughput above 1 and CPU per request "
            "below 1 favour idnode.", "",
            "| scenario | ratio | throughput | server CPU per request | repetitions |",
            "|---|---|---|---|---|", *rows, ""]


def _identifier_table(summary: dict[str, Any]) -> list[str]:
    """Requests and identifiers per second of every scenario, when batches were measured."""
    results = summary["results"]
    if all(r.get("identifiers_per_request", 1) == 1 for r in results.values()):
        return []
    rows = []
    for name, result in results.items():
        mine = [m for m in result["measurements"] if m["target"] == "idnode"]
        if not mine:
            continue
        per = result.get("identifiers_per_request", 1)
        rps = sorted(m["rps"] for m in mine)[len(mine) // 2]
        rows.append(f"| {name} | {per:,} | {rps:,.0f} | {rps * per:,.0f} | "
                    f"{sum(m['requests'] for m in mine):,} | "
                    f"{sum(m['failures'] for m in mine):,} |")
    return ["## Identifiers per second", "",
            "idnode, median over repetitions; identifiers/s = req/s × identifiers per request "
            "(the batch size for batch registrations, 1 otherwise). Each scenario ran on a "
            "fresh node on the same preloaded store.", "",
            "| scenario | identifiers/request | req/s | identifiers/s | requests | failures |",
            "|---|---|---|---|---|---|", *rows, ""]


def _node_side(node: dict[str, Any]) -> str:
    parts = []
    for route, row in node.items():
        parts.append(f"{route}: {_num(row.get('p50_us'))} / {_num(row.get('p90_us'))} / "
                     f"{_num(row.get('p99_us'))}")
    return "; ".join(parts) or "–"


def _scenario(name: str, result: dict[str, Any], mode: str) -> list[str]:
    if not result["measurements"]:
        return [f"## {name}", "", "Not measured: the run stopped before it.", ""]
    lines = [f"## {name}", "", result["description"] + "."]
    if result.get("node_args"):
        lines[-1] += f" Node started with `{' '.join(result['node_args'])}`."
    if (per := result.get("identifiers_per_request", 1)) > 1:
        lines[-1] += (f" Each request registers {per:,} identifiers: identifiers/s is req/s × "
                      f"{per:,}.")
        if mode == "compare":
            lines[-1] += (" No baseline or peers here: the figure to read is identifiers/s "
                          "beside the resolve rate of the same node (run resolve-hot in the "
                          "same invocation).")
    if mode == "compare" and result.get("transport", "http") != "http":
        lines[-1] += (" No baseline or peers here: the bare aiohttp baseline does not speak "
                      "the binary Handle protocol, so idnode is measured alone (run resolve-hot "
                      "alongside for the HTTP figures).")
    lines += ["",
              "| target | rep | requests | failures | req/s | locust mean / p50 / p99 ms "
              "| node-side p50 / p90 / p99 µs | server CPU µs/request | cache hits | locust CPU |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["measurements"]:
        lat = m["latency_ms"]
        flag = " (interrupted)" if m["interrupted"] else ""
        lines.append(
            f"| {m['target']}{flag} | {m['rep'] + 1} | {m['requests']:,} | {m['failures']:,} | "
            f"{m['rps']:,.0f} | {_num(lat['mean'], '.2f')} / {_num(lat['p50'], 'g')} / "
            f"{_num(lat['p99'], 'g')} | {_node_side(m['node_latency_us'])} | "
            f"{_num(m['cpu_us_per_request'])} | {_percent(m.get('cache_hit_ratio'))} | "
            f"{_percent(_load_cpu(m))} |")
    bound = sum(1 for m in result["measurements"]
                if m["locust"]["cpu_warning"] or (_load_cpu(m) or 0) >= LOAD_BOUND)
    if bound:
        lines += ["", f"In {bound} of these runs locust's busiest process used "
                  f"{LOAD_BOUND:.0%} of a core or more: there the load generator, not the "
                  "server, set the pace, so throughput ratios understate the difference "
                  "between servers; server CPU per request still measures it."]
    errors = [e for m in result["measurements"] for e in m["locust"]["errors"]]
    if errors:
        lines += ["", "Errors: " + "; ".join(
            f"{e.get('method')} {e.get('name')}: {e.get('error')} ×{e.get('occurrences')}"
            for e in errors[:5])]
    return [*lines, ""]


def render(summary: dict[str, Any], plots: list[str]) -> str:
    names = ", ".join(summary["scenarios"])
    lines = [f"# idnode load test ({summary['mode']}): {names}", "", *_setup(summary), "",
             *_ratio_table(summary), *_identifier_table(summary)]
    for name, result in summary["results"].items():
        lines += _scenario(name, result, summary["mode"])
    lines += ["Latencies: locust's are client-side and rounded to whole milliseconds below "
              "100 ms (mean is exact); node-side ones come from idnode's "
              "`idnode_request_duration_seconds` histogram (difference of /metrics scrapes "
              "before and after the run, interpolated inside buckets), so they exclude the "
              "network and the client. Server CPU is user+system time of the server process "
              "the runner started, divided by the requests locust completed; locust CPU is the "
              "busiest local locust process's share of one core while its users ran.", ""]
    for file, title in PLOTS:
        if file in plots:
            lines += [f"![{title}]({file})", ""]
    return "\n".join(lines)
