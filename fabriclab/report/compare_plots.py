"""The plots of the comparison page: one colour per run, the same in every plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import bottleneck, flows
from . import slowdown as SD
from .data import Run
from .figures import PlotResult, color, new_figure, outside_legend, save

COMPARE_FILES = ["collectives.png", "contended.png", "slowdown.png", "slowdown_group.png",
                 "queue_cdf.png", "pfc.png", "uplink_balance.png", "counters.png"]


def _bar_labels(ax, bars, texts, fontsize=7) -> None:
    for b, t in zip(bars, texts):
        ax.annotate(t, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=fontsize, xytext=(0, 2), textcoords="offset points")


def _run_bars(ax, labels: list[str], values: list[float], texts: list[str]) -> None:
    x = np.arange(len(labels))
    bars = ax.bar(x, values, color=[color(i) for i in range(len(labels))])
    _bar_labels(ax, bars, texts, fontsize=8)
    crowded = len(labels) > 3 or max(len(lab) for lab in labels) > 12
    ax.set_xticks(x, labels, rotation=25 if crowded else 0, ha="right" if crowded else "center",
                  fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def collectives(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "Collective completion and bus bandwidth"
    res = PlotResult("collectives", title)
    names: list[str] = []
    for r in runs:
        names += [c["name"] for c in r.summary.get("collectives", []) if c["name"] not in names]
    if not names:
        res.note = "No run has a collective (incast, all-reduce, all-to-all, permutation)."
        return res
    by_run = [{c["name"]: c for c in r.summary.get("collectives", [])} for r in runs]
    fig, (ax1, ax2) = new_figure(width=max(11.0, 2.2 * len(names) * max(1, len(runs)) / 2),
                                 height=4.4, ncols=2)
    x = np.arange(len(names))
    width = 0.8 / len(runs)
    for i, (lab, cs) in enumerate(zip(labels, by_run)):
        pos = x + (i - (len(runs) - 1) / 2) * width
        ratio = [(cs.get(n) or {}).get("completion_over_bound") for n in names]
        done = [v if v is not None else 0.0 for v in ratio]
        bars = ax1.bar(pos, done, width, color=color(i), label=lab)
        _bar_labels(ax1, bars, ["unfinished" if v is None else
                                f"{cs[n]['completion_ns'] / 1000:,.0f} \u00b5s"
                                for v, n in zip(ratio, names)])
        bus = [(cs.get(n) or {}).get("busbw_gbps") for n in names]
        bars = ax2.bar(pos, [b or 0.0 for b in bus], width, color=color(i), label=lab)
        _bar_labels(ax2, bars, ["unfinished" if b is None else f"{b:.0f}" for b in bus])
    ax1.axhline(1.0, color="k", lw=0.8, ls="--", label="physical bound")
    ax1.set_ylabel("completion time / physical bound (\u00d7)")
    ax1.set_title("completion vs bound (labels: completion time)", fontsize=10)
    ax1.set_ylim(0, ax1.get_ylim()[1] * 1.1)
    rates = [r.spec_get("topology", "host_link_gbps") for r in runs]
    rates = [float(v) for v in rates if v is not None]
    if rates:
        ax2.axhline(min(rates), color="k", lw=0.8, ls="--",
                    label=f"host line rate {min(rates):g} Gb/s")
    ax2.set_ylabel("bus bandwidth (Gb/s)")
    ax2.set_title("bus bandwidth (higher is better)", fontsize=10)
    ax2.set_ylim(0, ax2.get_ylim()[1] * 1.1)
    for ax in (ax1, ax2):
        ax.set_xticks(x, names, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    outside_legend(ax2)
    fig.suptitle(title, fontsize=11)
    res.file = save(fig, plots, "collectives.png")
    res.caption = ("Left: each collective's completion time over its physical bound (the time its "
                   "bytes need at line rate through the bottleneck host link; 1 is the best "
                   "possible). Right: bus bandwidth (algorithm bandwidth times the collective's "
                   "bus factor), against the host line rate.")
    return res


def _slowdown(runs: list[Run], labels: list[str], plots: Path, what: str) -> PlotResult:
    by_size = what == "flow size"
    key = "slowdown" if by_size else "slowdown_group"
    title = f"FCT slowdown per {what}"
    res = PlotResult(key, title)
    per_run = [{b.label: b for b in (SD.by_size(r) if by_size else SD.by_group(r))}
               for r in runs]
    labels_seen = [lab for d in per_run for lab in d]
    order = SD.size_order(set(labels_seen)) if by_size else list(dict.fromkeys(labels_seen))
    if not order:
        res.note = "No run completed a flow."
        return res
    fig, axes = new_figure(width=14.0, height=4.4, ncols=3, sharey=True)
    values: list[float] = []
    aligned = [[d.get(c) for c in order] for d in per_run]
    for ax, q in zip(axes, SD.QUANTILES):
        values += SD.draw(ax, order, [(lab, color(i), q, bins) for i, (lab, bins)
                                      in enumerate(zip(labels, aligned))], label_n=True)
        ax.set_title(f"p{q} slowdown", fontsize=10)
        ax.set_xticks(np.arange(len(order)), order, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(what)
    axes[0].set_ylabel("slowdown (FCT / ideal FCT, log)")
    SD.set_range(axes[0], values)
    thin = SD.any_thin(aligned)
    SD.legend(axes[2], thin, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{title} (numbers on the bars: completed flows in the bin)", fontsize=11)
    res.file = save(fig, plots, f"{key}.png")
    res.caption = (f"Percentiles of flow completion time over ideal FCT per {what} "
                   + ("" if by_size else "(repeated incasts count as one group) ")
                   + "for completed flows; the number on each bar is how many flows it comes "
                   "from, and a missing bar means the run completed no flow there. The dashed "
                   "line is the ideal 1." + (" " + SD.CAPTION_THIN if thin else ""))
    return res


def slowdown(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    return _slowdown(runs, labels, plots, "flow size")


def slowdown_group(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    return _slowdown(runs, labels, plots, "workload group")


def pfc(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "PFC paused time"
    res = PlotResult("pfc", title)
    total = [r.summary.get("pfc_paused_ns_total") or 0 for r in runs]
    if not any(total):
        res.note = "No PFC pauses in any run."
        return res
    frames = [r.summary.get("pfc_pause_frames") or 0 for r in runs]
    fig, ax = new_figure(width=max(6.0, 1.3 * len(runs) + 2))
    _run_bars(ax, labels, [t / 1000 for t in total],
              [f"{t / 1000:,.1f} \u00b5s\n{f:,} frames" for t, f in zip(total, frames)])
    ax.set_ylabel("paused time summed over ports (\u00b5s)")
    ax.set_title(f"{title} (summed over all ports)", fontsize=11)
    ax.set_ylim(0, max(total) / 1000 * 1.25)
    res.file = save(fig, plots, "pfc.png")
    res.caption = "Total time ports were held by PFC pauses, with the pause frames sent."
    return res


def uplink_balance(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "Spine uplink load balance"
    res = PlotResult("uplink_balance", title)
    mom = [r.summary.get("uplink_load_max_over_mean") for r in runs]
    if all(m is None for m in mom):
        res.note = "No run sent traffic over spine uplinks."
        return res
    fig, ax = new_figure(width=max(6.0, 1.3 * len(runs) + 2))
    _run_bars(ax, labels, [m or 0.0 for m in mom],
              ["n/a" if m is None else f"{m:.2f}" for m in mom])
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="perfect balance")
    ax.set_ylabel("max / mean bytes per uplink")
    ax.set_title(f"{title} (lower is better)", fontsize=11)
    ax.set_ylim(0, max(m or 0 for m in mom) * 1.2)
    outside_legend(ax)
    res.file = save(fig, plots, "uplink_balance.png")
    res.caption = ("Bytes on the busiest leaf/edge-to-spine uplink over the mean across uplinks; "
                   "1 means the load balancer spread the traffic evenly.")
    return res


def counters(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "Drops and congestion signals"
    res = PlotResult("counters", title)
    keys = [("drops", "packets dropped"), ("ecn_marks", "ECN marks"), ("cnps", "CNPs sent")]
    fig, axes = new_figure(width=max(11.0, 1.2 * len(runs) * 3 + 2), height=4.0, ncols=3)
    for ax, (k, lab) in zip(axes, keys):
        vals = [int(r.summary.get(k) or 0) for r in runs]
        _run_bars(ax, labels, vals, [f"{v:,}" for v in vals])
        ax.set_title(lab, fontsize=10)
        ax.set_ylabel("count")
        ax.set_ylim(0, max(max(vals) * 1.2, 1))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=11)
    res.file = save(fig, plots, "counters.png")
    res.caption = ("Packets dropped by switches, packets ECN-marked by switches, and congestion "
                   "notification packets (CNPs) sent by receivers, per run.")
    return res


COMPARE_PLOTS = [collectives, flows.compare_contended, slowdown, slowdown_group,
                 bottleneck.compare_cdf, pfc, uplink_balance, counters]
