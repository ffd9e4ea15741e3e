"""The sweep page: how the headline metrics move with one spec parameter."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..atomic import write_text_atomic
from .data import load_run
from .figures import PlotResult, color, new_figure, save
from .html import (fmt_float, fmt_gbps, fmt_ratio, grid_table, link, page, plot_section)
from .pages import make_report

log = logging.getLogger(__name__)


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


def make_sweep_page(param: str, values: list, run_dirs: list, out_dir) -> Path:
    out = Path(out_dir)
    runs = [load_run(d) for d in run_dirs]
    for r in runs:
        if not (r.path / "report.html").is_file():
            make_report(r.path)
    metrics = [_metrics(r.summary) for r in runs]
    names = [k for k in metrics[0] if any(m.get(k) is not None for m in metrics)]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    results = []
    per_fig = 4
    for f, start in enumerate(range(0, len(names), per_fig)):
        chunk = names[start:start + per_fig]
        fig, axes = new_figure(width=4.0 * len(chunk), height=3.4, ncols=len(chunk))
        axes = axes if len(chunk) > 1 else [axes]
        for i, (ax, name) in enumerate(zip(axes, chunk)):
            ys = [m.get(name) for m in metrics]
            xs = values if numeric else list(range(len(values)))
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color(i))
            if numeric and min(values) > 0 and max(values) / min(values) >= 8:
                ax.set_xscale("log", base=2)
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in values], rotation=30, fontsize=8)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(param, fontsize=8)
            ax.grid(alpha=0.3)
        name = f"sweep{f}.png"
        results.append(PlotResult(name, f"{param}: " + ", ".join(chunk),
                                  save(fig, out / "plots", name),
                                  caption=f"Each point is one run with {param} set to the value "
                                          f"on the x axis (links to the runs in the table)."))
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

    rows = [(n, n, [fmt(n, m.get(n)) for m in metrics]) for n in names]
    sub = (f"{len(runs)} runs of {runs[0].name} ({runs[0].scheme}), {param} in "
           f"{', '.join(map(str, values))}")
    body = ["<h2>Numbers</h2>", grid_table(header, rows, cls="compare"), "<h2>Plots</h2>",
            plot_section(results)]
    return write_text_atomic(out / "index.html", page(f"Sweep of {param}", sub, "\n".join(body)))


