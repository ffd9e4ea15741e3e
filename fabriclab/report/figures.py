"""Figure plumbing shared by the run report and the comparison page (Agg canvas, no pyplot).

Every figure is written twice: ``<name>.png`` (200 dpi, for the page) and ``<name>.svg``
(vector, for papers; text stays text so it can be edited), with the same bounding box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

DPI = 150
FORMATS = ("png", "svg")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
THIN_HATCH = "////"


@dataclass
class PlotResult:
    """A plot written to ``plots/<file>`` (and its SVG twin), or (file None) a skipped one
    with a note why."""

    key: str
    title: str
    file: str | None = None
    caption: str = ""
    note: str | None = None
    extra_html: str = ""  # shown under the figure or the note, e.g. a table of its numbers

    @property
    def svg(self) -> str | None:
        return None if self.file is None else str(Path(self.file).with_suffix(".svg"))


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def new_figure(width: float = 8.0, height: float = 4.2, ncols: int = 1, nrows: int = 1,
               sharey: bool = False, sharex: bool = False):
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharey=sharey, sharex=sharex)
    return fig, axes


def plain_log_y(ax) -> None:
    """A log y axis labelled 1, 2, 5, 10 ... rather than in powers-of-ten notation."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 2, 5, 20, 50: enough to read
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if np.log10(max(ax.get_ylim()) / min(ax.get_ylim())) <= 3 else ""))


def outside_legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False, **kw)


# Fault times (us, label) marked on every plot with a time axis while a run's plots are made
# (pages.make_report sets them from the summary's faults).
FAULT_MARKS: list[tuple[float, str]] = []


def mark_faults(fig: Figure) -> None:
    """A dashed line at each fault time on every axis whose x axis is time (in us)."""
    for ax in fig.axes:
        if not FAULT_MARKS or not ax.get_xlabel().startswith("time"):
            continue
        lo, hi = ax.get_xlim()
        for t, label in FAULT_MARKS:
            if lo <= t <= hi:
                ax.axvline(t, color="#d62728", ls="--", lw=0.9, zorder=5)
                ax.annotate(label, (t, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", fontsize=7,
                            color="#d62728", va="top", rotation=90)
        ax.set_xlim(lo, hi)


def save(fig: Figure, plots_dir: Path, name: str) -> str:
    """Write the figure to ``plots_dir/name`` (PNG) and its ``.svg`` twin, each via a
    temporary file, and return ``name``.

    The tight bounding box is computed once and used for both formats (one layout pass
    fewer than ``bbox_inches="tight"`` twice).
    """
    plots_dir.mkdir(parents=True, exist_ok=True)
    mark_faults(fig)
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    stem = Path(name).stem
    for fmt in FORMATS:
        final = plots_dir / f"{stem}.{fmt}"
        tmp = plots_dir / f".{final.name}.tmp-{os.getpid()}"
        try:
            if fmt == "svg":
                with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": stem}):
                    fig.savefig(tmp, format="svg", bbox_inches=bbox, metadata={"Date": None})
            else:
                fig.savefig(tmp, format="png", dpi=DPI, bbox_inches=bbox,
                            pil_kwargs={"compress_level": 1})
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return name


def remove_stale(plots_dir: Path, results: list[PlotResult], known: list[str]) -> None:
    """Delete our PNGs and SVGs left from an earlier report when their plot is now skipped."""
    made = {Path(r.file).stem for r in results if r.file}
    for name in known:
        stem = Path(name).stem
        if stem not in made:
            for fmt in FORMATS:
                (plots_dir / f"{stem}.{fmt}").unlink(missing_ok=True)
