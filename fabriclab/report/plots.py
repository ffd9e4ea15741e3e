"""The plots of one run's report; each returns a PlotResult (skipped, with a note, when its
data is empty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.stats import max_over_mean
from . import bottleneck, flows, pfc
from . import slowdown as SD
from .data import GOODPUT_BINS, Run, clip_to_activity, num, rebin_rates
from .figures import PlotResult, color, new_figure, outside_legend, save
from .html import fmt_bytes

MAX_HOSTS = 8
MAX_QUEUES = 6

PLOT_FILES = ["goodput.png", "contended.png", "slowdown.png", "queues.png", "pfc.png",
              "uplinks.png", "flow_rate.png"]


def _us(t_ns: np.ndarray) -> np.ndarray:
    return t_ns / 1000.0


def _peer_node(port: dict) -> str:
    return port["peer"].split(":")[0]


def _subset(shown: int, total: int, noun: str, plural: str, rank: str, by: str = "") -> str:
    """E.g. 'top 8 of 46 receiving hosts by bytes', 'all 3 ...', 'the one receiving host'."""
    if total > shown:
        return f"{rank} {shown} of {total} {plural}{by}"
    return f"all {total} {plural}" if total > 1 else f"the one {noun}"


def goodput(run: Run, plots: Path) -> PlotResult:
    title = "Goodput per receiving host"
    res = PlotResult("goodput", title)
    s = run.series("host_goodput_gbps")
    rx = sorted(((num(h["goodput_bytes"]) or 0, h["host"]) for h in run.hosts), reverse=True)
    receivers = [(b, h) for b, h in rx if b > 0 and s is not None and h in s.names]
    if s is None or not receivers:
        res.note = "No host received any data (or timeseries/host_goodput_gbps.csv is empty)."
        return res
    shown = receivers[:MAX_HOSTS]
    cols = np.stack([s.column(h) for _, h in shown], axis=1)
    t, cols, clipped = clip_to_activity(s.t, cols)
    bin_us = (t[-1] - t[0]) / GOODPUT_BINS / 1000 if len(t) > GOODPUT_BINS else None
    t, cols = rebin_rates(t, cols, GOODPUT_BINS)
    fig, ax = new_figure()
    for i, (b, h) in enumerate(shown):
        ax.plot(_us(t), cols[:, i], color=color(i), lw=1.2, label=f"{h} ({b / 1e6:,.2f} MB)")
    subset = _subset(len(shown), len(receivers), "receiving host", "receiving hosts", "top",
                     " by bytes")
    ax.set_title(f"{title} ({subset})", fontsize=11)
    ax.set_xlabel("time (\u00b5s)")
    ax.set_ylabel("goodput (Gb/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    outside_legend(ax, title="host (bytes received)")
    res.file = save(fig, plots, "goodput.png")
    res.caption = (f"Application bytes delivered per host, {subset}"
                   + (f", averaged over {bin_us:,.3g} \u00b5s bins" if bin_us else "")
                   + ("; the x axis ends after the last delivery" if clipped else "") + ".")
    return res


def queues(run: Run, plots: Path) -> PlotResult:
    """The busiest ports' queues over time, the bottleneck port (summary) drawn first and
    thick, and the bottleneck's queue distribution beside them."""
    title = "Queue depth at the busiest switch ports"
    res = PlotResult("queues", title)
    s = run.series("queue_bytes")
    ranked = sorted(((num(run.port(n)["max_queue_bytes"]) or 0, n) for n in (s.names if s else [])
                     if run.port(n)), reverse=True)
    busy = [(m, n) for m, n in ranked if m > 0]
    if s is None or not busy:
        res.note = "No packet was ever queued at a switch port."
        return res
    bp, missing, data = bottleneck.queue_of(run)
    shown = busy[:MAX_QUEUES]
    if data is not None:  # the bottleneck first, whatever its rank by maximum
        top = next((b for b in busy if b[1] == bp["port"]),
                   (bp.get("max_queue_bytes") or 0, bp["port"]))
        shown = [top] + [b for b in busy if b is not top][:MAX_QUEUES - 1]
    cols = np.stack([s.column(n) for _, n in shown], axis=1)
    t, cols, clipped = clip_to_activity(s.t, cols)
    fig, axes = new_figure(width=12.5 if data is not None else 8.0, height=4.4,
                           ncols=2 if data is not None else 1)
    ax = axes[0] if data is not None else axes
    for i, (m, n) in enumerate(shown):
        p = run.port(n)
        first = data is not None and i == 0
        ax.plot(_us(t), cols[:, i] / 1000, color=color(i), lw=1.8 if first else 0.9,
                zorder=3 if first else 2,
                label=f"{n} \u2192 {_peer_node(p)} ({p['role']}, max {fmt_bytes(m)})"
                      + (": bottleneck" if first else ""))
    subset = _subset(len(shown), len(busy), "port that queued", "ports that queued", "top",
                     ", by max queue")
    ax.set_title(f"over time ({subset})", fontsize=10)
    ax.set_xlabel("time (\u00b5s)")
    ax.set_ylabel("queue depth (KB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if data is not None:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncols=2,
                  frameon=False, title="port \u2192 next hop", title_fontsize=7)
        bottleneck.draw_cdf(axes[1], data)
        fig.suptitle(f"Queues: bottleneck port {bottleneck.port_label(bp)}", fontsize=11)
    else:
        outside_legend(ax, title="port \u2192 next hop")
        fig.suptitle(title, fontsize=11)
    res.title = title if data is None else f"Queues and the bottleneck port ({bp['port']})"
    res.file = save(fig, plots, "queues.png")
    res.caption = (f"Sampled egress queue (data priority) of the {subset}; the legend's max "
                   "is the exact maximum from the port counters, which a sample can miss"
                   + ("; the x axis ends after the last queued packet" if clipped else "")
                   + ". " + (bottleneck.caption(bp) if data is not None else missing or ""))
    return res


def slowdown(run: Run, plots: Path) -> PlotResult:
    title = "FCT slowdown per flow size and per workload group"
    res = PlotResult("slowdown", title)
    sizes, groups = SD.by_size(run), SD.by_group(run)
    if not sizes:
        res.note = "No flow completed, so there is no flow-completion-time slowdown to plot."
        return res
    n = sum(b.n for b in sizes)
    fig, axes = new_figure(width=12.0, height=4.4, ncols=2, sharey=True)
    values: list[float] = []
    for ax, bins, what in zip(axes, (sizes, groups), ("flow size", "workload group")):
        cats = [f"{b.label}\nn={b.n:,}" for b in bins]
        values += SD.draw(ax, cats, [(f"p{q}", SD.SHADES[q], q, bins) for q in SD.QUANTILES],
                          label_n=False)
        ax.set_xticks(np.arange(len(bins)), cats, fontsize=8,
                      rotation=30 if len(bins) > 4 else 0, ha="right" if len(bins) > 4 else "center")
        ax.set_xlabel(what)
        ax.set_title(f"per {what}", fontsize=10)
    SD.set_range(axes[0], values)
    axes[0].set_ylabel("slowdown (FCT / ideal FCT, log)")
    thin = SD.any_thin([sizes, groups])
    SD.legend(axes[1], thin, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{title} ({n:,} completed flows)", fontsize=11)
    res.file = save(fig, plots, "slowdown.png")
    res.caption = ("Flow completion time divided by the FCT the flow would have alone on an idle "
                   "fabric; percentiles per flow-size bin (left) and per workload group (right; "
                   "repeated incasts count as one group), n = completed flows in the bin."
                   + (" " + SD.CAPTION_THIN if thin else ""))
    return res


def uplinks(run: Run, plots: Path) -> PlotResult:
    title = "Spine uplink utilisation"
    res = PlotResult("uplinks", title)
    ups = run.spine_uplinks()
    sim = run.sim_time_ns
    if not ups or sim <= 0:
        res.note = "This topology has no uplinks from the leaf/edge switches to a higher tier."
        return res
    tx = [num(p["tx_bytes"]) or 0 for p in ups]
    if not any(tx):
        res.note = ("No traffic crossed the spine: "
                    + ("the one uplink" if len(ups) == 1 else f"all {len(ups)} uplinks")
                    + " carried 0 bytes.")
        return res
    util = [100 * b * 8 / ((num(p["rate_gbps"]) or 1) * sim) for b, p in zip(tx, ups)]
    mom = run.summary.get("uplink_load_max_over_mean") or max_over_mean(tx)
    nodes = sorted({p["node"] for p in ups}, key=lambda n: [p["node"] for p in ups].index(n))
    colours = [color(nodes.index(p["node"])) for p in ups]
    fig, ax = new_figure(width=max(8.0, min(16.0, 0.25 * len(ups))))
    x = np.arange(len(ups))
    ax.bar(x, util, color=colours)
    ax.axhline(float(np.mean(util)), color="k", lw=0.8, ls="--",
               label=f"mean {np.mean(util):.1f}%")
    if len(ups) <= 48:
        ax.set_xticks(x, [f"{p['port']}\u2192{_peer_node(p)}" for p in ups], rotation=60,
                      ha="right", fontsize=8)
        ax.set_xlabel("uplink (port \u2192 spine)")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(ups)} uplinks, grouped by switch")
    ax.set_ylabel("mean utilisation over the run (%)")
    ax.set_title(f"{title} (max/mean load = {mom:.2f})", fontsize=11)
    ax.set_ylim(0, max(util) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    res.file = save(fig, plots, "uplinks.png")
    res.caption = ("Bytes each leaf/edge-to-spine uplink sent, as a share of what it could have "
                   f"sent in the {sim / 1000:,.1f} \u00b5s run (colour = switch); "
                   "max/mean = 1 means ECMP spread the load perfectly.")
    return res


RUN_PLOTS = [goodput, flows.contended, slowdown, queues, pfc.timeline, uplinks,
             flows.tracked_rates]
