"""PNG plots from a summary dict: throughput over time, latency percentiles, ratio bars."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _colour(targets: list[str], name: str) -> str:
    return COLOURS[targets.index(name) % len(COLOURS)] if name in targets else "tab:gray"


def _rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n, r) for n, r in summary["results"].items() if r["measurements"]]


def throughput(summary: dict[str, Any], path: Path) -> bool:
    rows = _rows(summary)
    if not rows:
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.8 * len(rows)), squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], rows, strict=True):
        for m in result["measurements"]:
            series = m["locust"]["per_second"]
            ax.plot(range(len(series)), series, color=_colour(result["targets"], m["target"]),
                    alpha=0.45 + 0.55 / (m["rep"] + 1), marker=".",
                    label=f"{m['target']} rep {m['rep'] + 1}")
        ax.set_title(name)
        ax.set_ylabel("requests / s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", ncol=2, loc="lower right")
    axes[-1, 0].set_xlabel("seconds since the first request (first and last are partial)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _median(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else math.nan


def latency(summary: dict[str, Any], path: Path) -> bool:
    rows = _rows(summary)
    if not rows:
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 3.2 * len(rows)), squeeze=False)
    labels = ("p50", "p90", "p99")
    for ax, (name, result) in zip(axes[:, 0], rows, strict=True):
        groups: list[tuple[str, str, list[float]]] = []
        for target in result["targets"]:
            ms = [m for m in result["measurements"] if m["target"] == target]
            if not ms:
                continue
            groups.append((f"{target} (locust)", _colour(result["targets"], target),
                           [_median([m["latency_ms"][q] for m in ms]) for q in labels]))
            for route in result["node_routes"]:
                node = [m["node_latency_us"].get(route) for m in ms]
                if any(node):
                    groups.append((f"{target} node-side {route}", "tab:cyan",
                                   [_median([n[f"{q}_us"] / 1e3 if n and n[f"{q}_us"] else None
                                             for n in node]) for q in labels]))
        width = 0.8 / max(len(groups), 1)
        for i, (label, colour, values) in enumerate(groups):
            xs = [x + i * width for x in range(len(labels))]
            # Locust reports sub-0.5 ms as 0: drawn as missing on a log axis.
            shown = [v if v and v > 0 else math.nan for v in values]
            bars = ax.bar(xs, shown, width, label=label, color=colour,
                          hatch="//" if "node-side" in label else None, edgecolor="white")
            ax.bar_label(bars, labels=[_fmt_ms(v) for v in values], fontsize="x-small")
        ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(labels))], labels)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        tallest = max((v for _, _, vs in groups for v in vs if v and v > 0), default=1.0)
        ax.set_ylim(top=tallest * 10)  # head room for the legend above the bars
        ax.set_title(f"{name}: median over repetitions")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small", loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _fmt_ms(v: float) -> str:
    if v is None or math.isnan(v):
        return ""
    return f"{v * 1e3:.0f}µs" if v < 1 else f"{v:.3g}ms"


def comparison(summary: dict[str, Any], path: Path) -> bool:
    bars = [(name, pair, r) for name, result in summary["results"].items()
            for pair, r in result["ratios"].items() if r["repetitions"]]
    if not bars:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.7 * len(bars) + 1.6), squeeze=False)
    fig.suptitle("median with min–max over repetitions", fontsize="small")
    for ax, (key, title) in zip(axes[0], (("throughput", "throughput ratio (>1: faster)"),
                                          ("cpu_per_request", "server CPU per request ratio "
                                                              "(<1: cheaper)")), strict=True):
        ys = list(range(len(bars)))
        med, lo, hi = [], [], []
        for _, _, r in bars:
            s = r[key]
            med.append(s["median"] if s else math.nan)
            lo.append(s["median"] - s["min"] if s else 0)
            hi.append(s["max"] - s["median"] if s else 0)
        ax.barh(ys, med, height=0.5, xerr=[lo, hi], color="tab:blue", alpha=0.8, capsize=4)
        for y, v, up in zip(ys, med, hi, strict=True):
            if not math.isnan(v):  # right of the whisker, where nothing else is drawn
                ax.text(v + up, y, f"  {v:.2f}", va="center", fontsize="small")
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xlim(0, max([1.0, *(m + h for m, h in zip(med, hi, strict=True)
                                   if not math.isnan(m))]) * 1.2)
        ax.set_yticks(ys, [f"{name}\n{pair}" for name, pair, _ in bars], fontsize="small")
        ax.invert_yaxis()
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def draw_all(summary: dict[str, Any], out: Path) -> list[str]:
    """Write the plots that have data; return their file names."""
    made = []
    for file, draw in (("throughput.png", throughput), ("latency.png", latency),
                       ("comparison.png", comparison)):
        if draw(summary, out / file):
            made.append(file)
    return made
