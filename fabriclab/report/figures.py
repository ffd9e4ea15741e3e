"""Figure plumbing shared by the run report and the comparison page (Agg canvas, no pyplot)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

DPI = 110
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class PlotResult:
    """A plot written to ``plots/<file>``, or (file None) a skipped one with a note why."""

    key: str
    title: str
    file: str | None = None
    caption: str = ""
    note: str | None = None


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def new_figure(width: float = 8.0, height: float = 4.2, ncols: int = 1,
               sharey: bool = False):
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, sharey=sharey)
    return fig, axes


def plain_log_y(ax) -> None:
    """A log y axis labelled 1, 2, 5, 10 ... rather than in powers-of-ten notation."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def outside_legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False, **kw)


def save(fig: Figure, plots_dir: Path, name: str) -> str:
    """Write the figure to ``plots_dir/name`` via a temporary file and return ``name``."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    final = plots_dir / name
    tmp = plots_dir / f".{name}.tmp-{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return name


def remove_stale(plots_dir: Path, results: list[PlotResult], known: list[str]) -> None:
    """Delete our PNGs left from an earlier report when their plot is now skipped."""
    made = {r.file for r in results if r.file}
    for name in known:
        if name not in made:
            (plots_dir / name).unlink(missing_ok=True)
