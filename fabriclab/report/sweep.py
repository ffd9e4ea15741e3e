"""The sweep page: how the headline metrics move with one spec parameter.

Axes carry real numbers: no offset notation (``1e-6+1.36146``), a y range of at least
±5 % around the data so that equal runs draw a flat line (not a 3 ppm "trend" magnified to
fill the panel), base-2 log x with KiB/MiB labels for byte sizes (keys ending ``_bytes``),
and a metric that is zero in every run said in a sentence instead of an empty panel.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from ..atomic import write_text_atomic
from .data import load_run
from .figures import PlotResult, color, new_figure, save
from .html import fmt_float, fmt_gbps, fmt_ratio, grid_table, link, page, plot_section
from .pages import make_report

log = logging.getLogger(__name__)

STALE = re.compile(r"sweep\d+\.(png|svg)")
PER_FIGURE = 4
MIN_REL_SPAN = 0.10  # the y axis spans at least 10 % of the data's magnitude


def _metrics(summary: dict) -> dict[str, float | None]:
    """The numbers a sweep plots, by name (None when a run does not have them)."""
    m = {"slowdown p99": summary.get("slowdown_p99"),
         "spine uplink max/mean": summary.get("uplink_load_max_over_mean"),
         "PFC pause frames": summary.get("pfc_pause_frames")}
    for c in summary.get("collectives") or []:
        m[f"{c['name']}: completion / bound"] = c.get("completion_over_bound")
        m[f"{c['name']}: bus bandwidth (Gb/s)"] = c.get("busbw_gbps")
    g = summary.get("gse")
    if g:
        m["GSE reorder buffer, most held (KB)"] = (g["reorder_max_bytes"] or 0) / 1000
        p99 = g.get("grant_latency_p99_ns")
        m["GSE grant latency p99 (us)"] = p99 / 1000 if p99 is not None else None
        m["GSE request/grant bytes per data byte (%)"] = (
            100 * g["control_overhead"] if g.get("control_overhead") is not None else None)
    return m


def _number(v) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return None


def fmt_size(b: float) -> str:
    """Bytes in binary units, as a byte-size parameter is usually given: 16 KiB, 1.5 MiB."""
    for unit, div in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= div:
            return f"{b / div:g} {unit}"
    return f"{b:g} B"


def y_range(ys: list[float]) -> tuple[float, float]:
    """Limits around the data: at least MIN_REL_SPAN of its magnitude wide (equal values stay
    a flat line in the middle), padded by 15 %, not below 0 for non-negative data."""
    lo, hi = min(ys), max(ys)
    mid, span = (lo + hi) / 2, hi - lo
    span = max(span, MIN_REL_SPAN * max(abs(lo), abs(hi)), 1e-9)
    lo, hi = mid - span / 2, mid + span / 2
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    if min(ys) >= 0 and lo < 0:
        hi, lo = hi - lo, 0.0
    return lo, hi


def _x_axis(ax, param: str, values: list, xs: list[float] | None) -> None:
    if xs is None:  # not numbers: one category per value
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=30, fontsize=8)
        return
    sizes = param.endswith("_bytes") and min(xs) > 0
    if sizes or (min(xs) > 0 and max(xs) / min(xs) >= 8):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(xs, [fmt_size(x) if sizes else f"{x:g}" for x in xs], fontsize=8)
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 1.4, hi * 1.4)
    else:
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.xaxis.set_major_formatter(fmt)


def _panel(ax, i: int, name: str, param: str, values: list, xs, ys: list) -> None:
    pos = list(range(len(values))) if xs is None else xs
    pts = [(x, y) for x, y in zip(pos, ys) if y is not None]
    px, py = [p[0] for p in pts], [float(p[1]) for p in pts]
    ax.plot(px, py, "o-", color=color(i))
    _x_axis(ax, param, values, xs)
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.set_ylim(*y_range(py))
    same = ""
    if len(py) > 1 and max(py) == min(py):
        same = f"\n(every run: {py[0]:.6g})"
    elif len(py) > 1 and max(py) - min(py) <= 1e-4 * max(abs(v) for v in py):
        same = f"\n(every run within 0.01% of {py[0]:.6g})"
    ax.set_title(name + same, fontsize=9)
    ax.set_xlabel(param, fontsize=8)
    ax.grid(alpha=0.3)


def sweep_plots(param: str, values: list, metrics: list[dict], plots: Path) -> list[PlotResult]:
    """One figure per PER_FIGURE metrics, and a sentence for the metrics that are zero in
    every run."""
    names = [k for k in metrics[0] if any(m.get(k) is not None for m in metrics)]
    zero = [n for n in names if all((m.get(n) or 0) == 0 for m in metrics)]
    names = [n for n in names if n not in zero]
    xs = [_number(v) for v in values]
    xs = None if any(x is None for x in xs) else xs
    results = []
    for f, start in enumerate(range(0, len(names), PER_FIGURE)):
        chunk = names[start:start + PER_FIGURE]
        fig, axes = new_figure(width=4.0 * len(chunk), height=3.6, ncols=len(chunk))
        axes = axes if len(chunk) > 1 else [axes]
        for i, (ax, name) in enumerate(zip(axes, chunk)):
            _panel(ax, start + i, name, param, values, xs, [m.get(name) for m in metrics])
        fig.subplots_adjust(wspace=0.35)
        name = f"sweep{f}.png"
        results.append(PlotResult(name[:-4], f"{param}: " + ", ".join(chunk),
                                  save(fig, plots, name),
                                  caption=f"Each point is one run with {param} set to the value "
                                          "on the x axis (links to the runs in the table). Each "
                                          "y axis spans at least 10% of its values, so runs "
                                          "that agree draw a flat line."))
    if zero:
        results.append(PlotResult("sweep-zero", "Zero in every run", note=(
            f"Not plotted, because every run gave 0: {', '.join(zero)}.")))
    return results


def make_sweep_page(param: str, values: list, run_dirs: list, out_dir) -> Path:
    out = Path(out_dir)
    runs = [load_run(d) for d in run_dirs]
    for r in runs:
        if not (r.path / "report.html").is_file():
            make_report(r.path)
    metrics = [_metrics(r.summary) for r in runs]
    results = sweep_plots(param, values, metrics, out / "plots")
    made = {Path(r.file).stem for r in results if r.file}
    for f in (out / "plots").glob("sweep*") if (out / "plots").is_dir() else []:
        if STALE.fullmatch(f.name) and f.stem not in made:  # ours, from a longer metric list
            f.unlink()
    header = ["metric"] + [link(Path(os.path.relpath(r.path / "report.html", out)).as_posix(),
                                f"{param}={v}") for r, v in zip(runs, values)]

    def fmt(name, v):
        if v is None:
            return "\u2014"
        if "completion / bound" in name:
            return fmt_ratio(v)
        if "Gb/s" in name:
            return fmt_gbps(v)
        return fmt_float(v, 3)

    names = [k for k in metrics[0] if any(m.get(k) is not None for m in metrics)]
    rows = [(n, n, [fmt(n, m.get(n)) for m in metrics]) for n in names]
    sub = (f"{len(runs)} runs of {runs[0].name} ({runs[0].scheme}), {param} in "
           f"{', '.join(map(str, values))}")
    body = ["<h2>Numbers</h2>", grid_table(header, rows, cls="compare"), "<h2>Plots</h2>",
            plot_section(results)]
    return write_text_atomic(out / "index.html", page(f"Sweep of {param}", sub, "\n".join(body)))
