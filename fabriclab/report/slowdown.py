"""FCT slowdown percentiles per flow-size bin and per workload group, for both pages.

A percentile is drawn hatched ("thin") when fewer than one flow of its bin lies above it:
p from n flows is thin when n * (100 - p) / 100 < 1, i.e. p99 from fewer than 100 flows,
p95 from fewer than 20, p50 from a single flow.  Such a bar is interpolated between the
bin's largest values: it is close to the bin's maximum, not a tail percentile, and one
slow flow more or less moves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.patches import Patch

from ..metrics.stats import SIZE_BINS, percentile, size_bin_label, slowdown_by_size
from .data import Run
from .figures import THIN_HATCH, plain_log_y

QUANTILES = (50, 95, 99)
SHADES = {50: "#9ecae1", 95: "#4292c6", 99: "#08519c"}
THIN_LABEL = "thin: fewer than one flow above\nthe percentile (p99 from < 100\nflows, p95 from < 20)"


@dataclass
class Bin:
    """Slowdown percentiles of the completed flows in one bin (a size range or a group)."""

    label: str
    n: int
    p: dict[int, float]


def thin(q: int, n: int) -> bool:
    """True when percentile ``q`` of ``n`` values has fewer than one value above it."""
    return n * (100 - q) < 100


def _bin(label: str, values: list[float]) -> Bin:
    return Bin(label, len(values), {q: percentile(values, q) for q in QUANTILES})


def by_size(run: Run) -> list[Bin]:
    """One Bin per non-empty flow-size bin (metrics.stats.SIZE_BINS), smallest first."""
    return [Bin(label, n, dict(zip(QUANTILES, ps)))
            for label, n, *ps in slowdown_by_size(*run.completed_sizes_slowdowns())]


def by_group(run: Run) -> list[Bin]:
    """One Bin per workload group with a completed flow, in workload order."""
    groups, slowdowns = run.completed_groups_slowdowns()
    members: dict[str, list[float]] = {}
    for g, sd in zip(groups, slowdowns):
        members.setdefault(g, []).append(sd)
    return [_bin(g, v) for g, v in members.items()]


def size_order(labels: set[str]) -> list[str]:
    """The size-bin labels in ``labels``, smallest bin first."""
    out, lower = [], 0
    for upper in SIZE_BINS:
        lab = size_bin_label(upper, lower)
        if lab in labels:
            out.append(lab)
        lower = upper
    return out


def draw(ax, cats: list[str], series: list[tuple[str, str, int, list[Bin | None]]],
         label_n: bool) -> list[float]:
    """Grouped bars: for each (legend label, colour, percentile, bins aligned with ``cats``)
    one bar per category, hatched when thin; with ``label_n`` each bar is topped by its n.
    Returns the drawn values (for the y range)."""
    x = np.arange(len(cats))
    width = 0.8 / max(1, len(series))
    values: list[float] = []
    for i, (label, colour, q, bins) in enumerate(series):
        pos = x + (i - (len(series) - 1) / 2) * width
        ys = [b.p[q] if b is not None else np.nan for b in bins]
        hatch = [THIN_HATCH if b is not None and thin(q, b.n) else "" for b in bins]
        bars = ax.bar(pos, ys, width, color=colour, label=label, edgecolor="#222", lw=0)
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
        values += [y for y in ys if np.isfinite(y)]
        if label_n:
            for p, y, b in zip(pos, ys, bins):
                if b is not None:
                    ax.annotate(f"{b.n:,}", (p, y), ha="center", va="bottom", fontsize=6,
                                xytext=(0, 1), textcoords="offset points",
                                rotation=90 if len(series) * len(cats) > 12 else 0)
    pad = max(0.0, (2.5 - len(cats)) / 2)  # a lone category does not get bars a panel wide
    ax.set_xlim(-0.5 - pad, len(cats) - 0.5 + pad)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="ideal (1)")
    plain_log_y(ax)
    ax.grid(axis="y", alpha=0.3, which="both")
    return values


def set_range(ax, values: list[float]) -> None:
    """Log y from just under 1 (or the lowest bar) to well above the highest bar (room for
    the n labels)."""
    if values:
        ax.set_ylim(min(0.9, min(values) * 0.9), max(values) * 2.0)


def legend(ax, thin_shown: bool, **kw) -> None:
    """The axes' legend (bars, the ideal line) plus, when a bar is thin, what hatching means."""
    handles, _ = ax.get_legend_handles_labels()
    if thin_shown:
        handles.append(Patch(facecolor="white", edgecolor="#222", hatch=THIN_HATCH,
                             label=THIN_LABEL))
    ax.legend(handles=handles, fontsize=7, **kw)


def any_thin(bin_lists: list[list[Bin | None]], qs=QUANTILES) -> bool:
    return any(b is not None and thin(q, b.n) for bins in bin_lists for b in bins for q in qs)


CAPTION_THIN = ("Hatched bars are thin: fewer than one flow of the bin lies above that "
                "percentile (a p99 from fewer than 100 flows, a p95 from fewer than 20), so "
                "the bar is close to the bin's slowest flow rather than a tail percentile.")
