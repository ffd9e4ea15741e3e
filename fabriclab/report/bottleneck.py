"""The bottleneck port (summary "bottleneck_port": the switch port with the largest
time-averaged egress queue): its queue distribution beside the run report's queue plot, and
each run's own bottleneck queue CDF on the comparison page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from .data import Run, interval_ns, weighted_cdf, weighted_quantile
from .figures import PlotResult, color, new_figure, save
from .html import fmt_bytes

MISSING = ("This results directory has no summary \"bottleneck_port\" (it was written by an "
           "older fabriclab); run the spec again to get the bottleneck port.")


def port_label(bp: dict) -> str:
    """E.g. "l0:0 → h0 (host port)"."""
    return f"{bp.get('port', '?')} \u2192 {bp.get('peer', '?')} ({bp.get('role', '?')} port)"


def queue_of(run: Run) -> tuple[dict | None, str | None, tuple | None]:
    """(bottleneck_port, note, (t, queue bytes, weights)); note explains a missing piece."""
    if not run.has("bottleneck_port"):
        return None, MISSING, None
    bp = run.summary["bottleneck_port"]
    if not bp:
        return None, "No switch port ever queued a packet, so there is no bottleneck port.", None
    s = run.series("queue_bytes")
    if s is None or bp.get("port") not in s.names:
        return bp, (f"The bottleneck port is {port_label(bp)}, but timeseries/queue_bytes.csv "
                    "has no samples of it."), None
    return bp, None, (s.t, np.nan_to_num(s.column(bp["port"])), interval_ns(s.t))


def draw_cdf(ax, data: tuple) -> None:
    """The time-weighted CDF of one port's queue (``queue_of``'s data), p50 and p99 marked."""
    _, q, w = data
    x, cdf = weighted_cdf(q / 1000, w)
    ax.plot(np.r_[0.0, x], np.r_[0.0, cdf], color=color(0), lw=1.6, drawstyle="steps-post")
    for p, lab, c in ((0.5, "p50", "#555"), (0.99, "p99", color(3))):
        v = weighted_quantile(x, cdf, p)
        ax.axvline(v, color=c, lw=0.8, ls=":", label=f"{lab} {v:,.1f} KB")
    mean = float(np.average(q, weights=w)) / 1000
    ax.axvline(mean, color="k", lw=0.8, ls="--", label=f"time average {mean:,.1f} KB")
    ax.set_xlabel("queue depth (KB)")
    ax.set_ylabel("fraction of the run (CDF)")
    ax.set_ylim(0, 1.002)
    ax.set_xlim(left=0)
    ax.set_title("the bottleneck's queue distribution (time-weighted)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def caption(bp: dict) -> str:
    """What the summary says about the bottleneck port, for a caption."""
    util, pf = bp.get("utilisation"), bp.get("paused_frac")
    return (f"The bottleneck, {bp.get('port')} \u2192 {bp.get('peer')}, is the switch port "
            f"with the {bp.get('why') or 'largest time-averaged queue'}: time average "
            f"{fmt_bytes(bp.get('mean_queue_bytes'))}, p99 {fmt_bytes(bp.get('p99_queue_bytes'))}, "
            f"maximum {fmt_bytes(bp.get('max_queue_bytes'))}"
            + (f"; its link was busy {100 * util:.1f}% of the run" if util is not None else "")
            + (f" and paused by PFC {100 * pf:.1f}% of it" if pf else "")
            + ". Right: the share of the run its queue was at most x.")


def compare_cdf(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "Queue depth at each run's bottleneck port"
    res = PlotResult("queue_cdf", title)
    fig, ax = new_figure()
    skipped, lowest = [], 1.0
    for i, (r, lab) in enumerate(zip(runs, labels)):
        bp, note, data = queue_of(r)
        if data is None:
            skipped.append(f"{lab}: {note}")
            continue
        x, cdf = weighted_cdf(data[1] / 1000, data[2])
        empty = float(cdf[0]) if x[0] == 0 else 0.0
        ax.plot(np.r_[0.0, x], np.r_[0.0, cdf], color=color(i), lw=1.4, drawstyle="steps-post",
                label=f"{lab}: {bp['port']} \u2192 {bp.get('peer', '?')}, {100 * empty:.0f}% "
                      f"empty, p99 {weighted_quantile(x, cdf, 0.99):,.1f} KB, max "
                      f"{x[-1]:,.0f} KB")
        lowest = min(lowest, empty)
    if len(skipped) == len(runs):
        res.note = "No bottleneck queue to show. " + " ".join(skipped)
        return res
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    bottom = max(0.0, np.floor((min(lowest, 0.99) - 0.02) * 20) / 20)
    ax.set_ylim(bottom, 1.002)
    ax.set_xlabel("queue depth (KB, linear below 1 KB, log above)")
    ax.set_ylabel("fraction of the run (CDF)"
                  + (f", axis starts at {bottom:g}" if bottom > 0 else ""))
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False,
              title="run: bottleneck port \u2192 next hop", title_fontsize=8)
    res.file = save(fig, plots, "queue_cdf.png")
    res.caption = ("CDF of the sampled egress queue of each run's own bottleneck port (the "
                   "switch port with the largest time-averaged queue in that run, named in the "
                   "legend), each sample weighted by the time it stands for; further left and "
                   "higher means shorter queues"
                   + (f"; the y axis starts at {bottom:g} to show the tail" if bottom > 0
                      else "") + "."
                   + (" Not shown: " + " ".join(skipped) if skipped else ""))
    return res
