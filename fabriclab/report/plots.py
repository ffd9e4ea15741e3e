"""The plots of one run's report; each returns a PlotResult (skipped, with a note, when its
data is empty)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from ..metrics.stats import max_over_mean, slowdown_by_size
from .data import Run, clip_to_activity, num, rebin_rates
from .figures import PlotResult, color, new_figure, outside_legend, plain_log_y, save

MAX_HOSTS = 8
MAX_QUEUES = 6
MAX_FLOWS = 8
MAX_PFC_PORTS = 30
GOODPUT_BINS = 250

PLOT_FILES = ["goodput.png", "queues.png", "slowdown.png", "uplinks.png", "pfc.png",
              "flow_rate.png"]


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
    title = "Queue depth at the busiest switch ports"
    res = PlotResult("queues", title)
    s = run.series("queue_bytes")
    by_port = {p["port"]: p for p in run.ports}
    ranked = sorted(((num(by_port[n]["max_queue_bytes"]) or 0, n) for n in (s.names if s else [])
                     if n in by_port), reverse=True)
    busy = [(m, n) for m, n in ranked if m > 0]
    if s is None or not busy:
        res.note = "No packet was ever queued at a switch port."
        return res
    shown = busy[:MAX_QUEUES]
    cols = np.stack([s.column(n) for _, n in shown], axis=1)
    t, cols, clipped = clip_to_activity(s.t, cols)
    fig, ax = new_figure()
    for i, (m, n) in enumerate(shown):
        p = by_port[n]
        ax.plot(_us(t), cols[:, i] / 1000, color=color(i), lw=1.0,
                label=f"{n} \u2192 {_peer_node(p)} ({p['role']}, max {m / 1000:,.0f} KB)")
    subset = _subset(len(shown), len(busy), "port that queued", "ports that queued", "top",
                     ", by max queue")
    ax.set_title(f"{title} ({subset})", fontsize=11)
    ax.set_xlabel("time (\u00b5s)")
    ax.set_ylabel("queue depth (KB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    outside_legend(ax, title="port \u2192 next hop")
    res.file = save(fig, plots, "queues.png")
    res.caption = (f"Sampled egress queue (data priority) of the {subset}; the legend's max "
                   "is the exact maximum from the port counters, which a sample can miss"
                   + ("; the x axis ends after the last queued packet" if clipped else "") + ".")
    return res


def slowdown(run: Run, plots: Path) -> PlotResult:
    title = "FCT slowdown per flow size"
    res = PlotResult("slowdown", title)
    sizes, slowdowns = run.completed_sizes_slowdowns()
    if not sizes:
        res.note = "No flow completed, so there is no flow-completion-time slowdown to plot."
        return res
    bins = slowdown_by_size(sizes, slowdowns)
    fig, ax = new_figure()
    x = np.arange(len(bins))
    width = 0.26
    values = []
    for j, (q, shade) in enumerate((("p50", "#9ecae1"), ("p95", "#4292c6"), ("p99", "#08519c"))):
        ys = [b[2 + j] for b in bins]
        values += ys
        ax.bar(x + (j - 1) * width, ys, width, color=shade, label=q)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="ideal (1)")
    plain_log_y(ax)
    ax.set_ylim(min(0.9, min(values) * 0.9), max(values) * 1.5)
    ax.set_xticks(x, [f"{b[0]}\n(n={b[1]})" for b in bins], fontsize=9)
    ax.set_xlabel("flow size")
    ax.set_ylabel("slowdown (FCT / ideal FCT, log)")
    ax.set_title(f"{title} ({len(sizes)} completed flows)", fontsize=11)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    res.file = save(fig, plots, "slowdown.png")
    res.caption = ("Flow completion time divided by the FCT the flow would have alone on an idle "
                   "fabric; percentiles per flow-size bin (n = completed flows in the bin).")
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


def pfc(run: Run, plots: Path) -> PlotResult:
    title = "PFC paused time per port"
    res = PlotResult("pfc", title)
    sim = run.sim_time_ns
    paused = sorted(((num(p["paused_ns"]) or 0, p) for p in run.ports),
                    key=lambda bp: -bp[0])
    paused = [(b, p) for b, p in paused if b > 0]
    if not paused or sim <= 0:
        enabled = run.spec_get("switch", "pfc", "enabled", default=True)
        why = " (PFC is disabled in this spec)" if enabled is False else ""
        if run.summary.get("engine") == "mininet":
            why = " (the Mininet engine does not emulate PFC: its switch ports are drop-tail)"
        frames = run.summary.get("pfc_pause_frames", 0)
        res.note = (f"No PFC pauses: no port was paused during the run{why}; "
                    f"{frames} pause frames were sent.")
        return res
    shown = paused[:MAX_PFC_PORTS]
    roles = sorted({p["role"] for _, p in shown})
    fig, ax = new_figure(width=max(8.0, min(14.0, 0.35 * len(shown))))
    x = np.arange(len(shown))
    ax.bar(x, [100 * b / sim for b, _ in shown],
           color=[color(roles.index(p["role"])) for _, p in shown])
    ax.set_xticks(x, [p["port"] for _, p in shown], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("port")
    ax.set_ylabel("time paused (% of the run)")
    subset = _subset(len(shown), len(paused), "paused port", "paused ports", "top")
    total = sum(b for b, _ in paused)
    ax.set_title(f"{title} ({subset}; total {total / 1000:,.1f} \u00b5s)",
                 fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(color=color(i), label=f"role {r}") for i, r in enumerate(roles)],
              fontsize=8, loc="upper right")
    res.file = save(fig, plots, "pfc.png")
    res.caption = ("Share of the run during which each port could not send data because its "
                   "peer had sent a PFC pause (nic = a host's NIC, host/down/up = switch ports).")
    return res


def flow_rate(run: Run, plots: Path) -> PlotResult:
    title = "Sender rate of the tracked flows"
    res = PlotResult("flow_rate", title)
    s = run.series("flow_rate_gbps")
    flows = {f"f{f['flow_id']}": f for f in run.flows}
    cands = [n for n in (s.names if s else []) if s is not None and np.nanmax(s.column(n)) > 0]
    if s is None or not cands:
        res.note = "No tracked flow sent anything (or timeseries/flow_rate_gbps.csv is empty)."
        return res
    cands.sort(key=lambda n: (-(num(flows.get(n, {}).get("bytes")) or float("inf")),
                              int(n[1:]) if n[1:].isdigit() else 0))
    shown = cands[:MAX_FLOWS]
    cols = np.stack([s.column(n) for n in shown], axis=1)
    t, cols, clipped = clip_to_activity(s.t, cols)
    active = np.where(cols > 0, cols, np.nan)
    fig, ax = new_figure()
    for i, n in enumerate(shown):
        f = flows.get(n, {})
        size = num(f.get("bytes"))
        label = (f"{n} {f.get('src', '?')}\u2192{f.get('dst', '?')} "
                 f"{'unlimited' if size is None else f'{size / 1e6:,.2f} MB'}")
        ax.plot(_us(t), active[:, i], color=color(i), lw=1.1, drawstyle="steps-post", label=label)
    pos = active[np.isfinite(active)]
    log_y = pos.size and pos.max() / pos.min() > 20
    if log_y:
        plain_log_y(ax)
    else:
        ax.set_ylim(bottom=0, top=pos.max() * 1.1)
    subset = _subset(len(shown), len(cands), "tracked flow", "tracked flows", "largest")
    ax.set_title(f"{title} ({subset})", fontsize=11)
    ax.set_xlabel("time (\u00b5s)")
    ax.set_ylabel("sending rate (Gb/s" + (", log)" if log_y else ")"))
    ax.grid(alpha=0.3, which="both")
    outside_legend(ax, title="flow src\u2192dst size")
    res.file = save(fig, plots, "flow_rate.png")
    total = len(run.flows)
    res.caption = (f"The rate each sender NIC allows the flow (the DCQCN rate under ecmp_dcqcn, "
                   f"line rate without congestion control) while the flow is active; {subset}"
                   + (f" (the run tracks the first {len(s.names)} of {total} flows, "
                      "metrics.max_flow_series)" if total > len(s.names) else "")
                   + ("; the x axis ends after the last active flow" if clipped else "") + ".")
    return res


RUN_PLOTS = [goodput, queues, slowdown, uplinks, pfc, flow_rate]
