"""Plots of the flows that matter: each collective's throughput into the contended host
(summary "contended_port"), the sending rate of the tracked flows (summary
"tracked_flows"), and the goodput of open-ended flows per phase (summary "open_flows")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import GOODPUT_BINS, Run, clip_to_activity, group_name, num, rebin_rates
from .figures import PlotResult, color, new_figure, outside_legend, plain_log_y, save
from .html import DASH, fmt_gbps, fmt_us, table

MAX_GROUPS = 4
MAX_PER_GROUP = 8
STYLES = ["-", "--", ":", "-."]  # tracked flows of one group often overlap
OLD = "(it was written by an older fabriclab; run the spec again to get it)"


def _by_group(names: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Columns summed per workload group, repeated incasts ("name#k") as one."""
    groups = list(dict.fromkeys(group_name(n) for n in names))
    out = np.zeros((values.shape[0], len(groups)))
    for j, n in enumerate(names):
        out[:, groups.index(group_name(n))] += np.nan_to_num(values[:, j])
    return groups, out


def contended_series(run: Run) -> tuple[dict | None, str | None, tuple | None]:
    """(contended_port, note, (t, groups, Gb/s per group)); the note says what is missing."""
    if not run.has("contended_port"):
        return None, f"This results directory has no summary \"contended_port\" {OLD}.", None
    cp = run.summary["contended_port"]
    if not cp:
        return None, ("No host-facing switch port queued, so there is no port where the "
                      "collectives meet."), None
    s = run.series("contended_goodput_gbps")
    if s is None or not s.names:
        return cp, (f"The contended port is {cp.get('port')} (to {cp.get('host')}), but "
                    "timeseries/contended_goodput_gbps.csv is missing or empty."), None
    groups, cols = _by_group(s.names, s.values)
    return cp, None, (s.t, groups, cols)


def _draw_contended(ax, run: Run, t, groups, cols) -> bool:
    t, cols, clipped = clip_to_activity(t, cols)
    t, cols = rebin_rates(t, cols, GOODPUT_BINS)
    for j, g in enumerate(groups):
        ax.plot(t / 1000, cols[:, j], color=color(j), lw=1.2, label=g)
    if len(groups) > 1:
        ax.plot(t / 1000, cols.sum(axis=1), color="k", lw=0.8, ls=":", label="all groups")
    rate = num((run.port(run.summary["contended_port"].get("port")) or {}).get("rate_gbps"))
    if rate:
        ax.axhline(rate, color="#888", lw=0.8, ls="--", label=f"link rate {rate:g} Gb/s")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (\u00b5s)")
    ax.grid(alpha=0.3)
    return clipped


def contended(run: Run, plots: Path) -> PlotResult:
    title = "Throughput per collective at the contended port"
    res = PlotResult("contended", title)
    cp, note, data = contended_series(run)
    if data is None:
        res.note = note
        return res
    fig, ax = new_figure()
    clipped = _draw_contended(ax, run, *data)
    ax.set_ylabel(f"goodput into {cp.get('host', '?')} (Gb/s)")
    ax.set_title(f"{title}: {cp.get('port')} \u2192 {cp.get('host')}", fontsize=11)
    outside_legend(ax, title="workload group")
    res.file = save(fig, plots, "contended.png")
    res.caption = (f"Goodput each workload group delivered into {cp.get('host')} through "
                   f"{cp.get('port')}, the host-facing port where the collectives meet"
                   + (f" ({cp['why']})" if cp.get("why") else "")
                   + f"; averaged over {GOODPUT_BINS} time bins at most"
                   + ("; the x axis ends after the last delivery" if clipped else "") + ".")
    return res


def compare_contended(runs: list[Run], labels: list[str], plots: Path) -> PlotResult:
    title = "Throughput per collective at each run's contended port"
    res = PlotResult("contended", title)
    found = [(r, lab, contended_series(r)) for r, lab in zip(runs, labels)]
    drawn = [(r, lab, cp, data) for r, lab, (cp, _, data) in found if data is not None]
    if not drawn:
        res.note = "No run has a contended port to show. " + " ".join(
            f"{lab}: {note}" for _, lab, (_, note, _) in found)
        return res
    fig, axes = new_figure(width=min(16.0, 4.2 * len(drawn) + 1.5), height=3.8,
                           ncols=len(drawn), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (r, lab, cp, data) in zip(axes, drawn):
        _draw_contended(ax, r, *data)
        ax.set_title(f"{lab}: {cp.get('port')} \u2192 {cp.get('host')}", fontsize=9)
    axes[0].set_ylabel("goodput into the host (Gb/s)")
    outside_legend(axes[-1], title="workload group")
    fig.suptitle(title, fontsize=11)
    res.file = save(fig, plots, "contended.png")
    missing = [f"{lab}: {note}" for _, lab, (_, note, data) in found if data is None]
    res.caption = ("Goodput each workload group delivered into the host behind each run's "
                   "contended port (where the collectives meet), one panel per run."
                   + (" Not shown: " + " ".join(missing) if missing else ""))
    return res


def _flow_label(f: dict, reasons: list[str]) -> str:
    size = num(f.get("bytes"))
    return (f"f{f.get('flow_id', '?')} {f.get('src', '?')}\u2192{f.get('dst', '?')} "
            f"{'unlimited' if size is None else f'{size / 1e6:,.2f} MB'}"
            + (f": {', '.join(reasons)}" if reasons else ""))


def tracked_rates(run: Run, plots: Path) -> PlotResult:
    title = "Sending rate of the flows that matter"
    res = PlotResult("flow_rate", title)
    meaning = (run.summary.get("sender_rate") or {}).get("meaning")
    if run.has("sender_rate") and meaning is None:
        note = (run.summary.get("sender_rate") or {}).get("note")
        res.note = ("No sending-rate plot. "
                    + (note or f"{run.scheme} has no sending rate of its own").rstrip(".") + ".")
        return res
    s = run.series("flow_rate_gbps")
    flows = {f"f{f['flow_id']}": f for f in run.flows}
    if run.has("tracked_flows"):
        tracked = [(f"f{t['flow_id']}", group_name(t.get("group")), t.get("reasons") or [])
                   for t in run.summary["tracked_flows"] or []]
    else:  # an older results directory: every flow it tracked, without reasons
        tracked = [(n, group_name(flows.get(n, {}).get("group")), [])
                   for n in (s.names if s else [])]
    tracked = [tr for tr in tracked if s is not None and tr[0] in s.names
               and np.nan_to_num(s.column(tr[0])).max() > 0]
    if not tracked:
        res.note = "No tracked flow sent anything (or timeseries/flow_rate_gbps.csv is empty)."
        return res
    groups = list(dict.fromkeys(g for _, g, _ in tracked))
    shown_groups = groups[:MAX_GROUPS]
    # per group the flows with a reason first (the ones chosen as mattering), then the rest
    per_group = {g: sorted((i for i, tr in enumerate(tracked) if tr[1] == g),
                           key=lambda i: not tracked[i][2])[:MAX_PER_GROUP] for g in groups}
    hidden_flows = sum(sum(1 for tr in tracked if tr[1] == g) - len(per_group[g])
                       for g in shown_groups)
    cols = np.stack([s.column(n) for n, _, _ in tracked], axis=1)
    t, cols, clipped = clip_to_activity(s.t, cols)
    active = np.where(cols > 0, cols, np.nan)
    fig, axes = new_figure(width=9.0, height=2.6 * len(shown_groups) + 0.6,
                           nrows=len(shown_groups), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, g in zip(axes, shown_groups):
        idx = per_group[g]
        for k, i in enumerate(idx):
            n, _, reasons = tracked[i]
            ax.plot(t / 1000, active[:, i], color=color(k), lw=1.6 - 0.3 * (k % 3),
                    ls=STYLES[k % len(STYLES)], drawstyle="steps-post",
                    label=_flow_label(flows.get(n, {"flow_id": n[1:]}), reasons))
        pos = active[:, idx][np.isfinite(active[:, idx])]
        if pos.size and pos.max() / pos.min() > 20:
            plain_log_y(ax)
        else:
            ax.set_ylim(0, pos.max() * 1.1 if pos.size else 1)
        ax.set_title(f"group {g}", fontsize=9, loc="left")
        ax.grid(alpha=0.3, which="both")
        outside_legend(ax)
    axes[-1].set_xlabel("time (\u00b5s)")
    unit = meaning or "sending rate"
    if len(axes) > 1:
        fig.supylabel(f"{unit} (Gb/s)", fontsize=9)
        fig.suptitle(title, fontsize=11)
        fig.subplots_adjust(top=1 - 0.55 / fig.get_figheight(), hspace=0.3)
    else:
        axes[0].set_ylabel(f"{unit} (Gb/s)", fontsize=9)
        axes[0].set_title("", loc="left")
        axes[0].set_title(f"{title}: group {shown_groups[0]}", fontsize=11)
    res.file = save(fig, plots, "flow_rate.png")
    hidden = groups[MAX_GROUPS:]
    res.caption = (f"{unit[0].upper() + unit[1:]} of the tracked flows, one panel per workload "
                   "group, while each flow is active"
                   + ("; the legend says why each flow was tracked (the most cut: lowest "
                      "minimum rate; the slowest: largest slowdown)" if run.has("tracked_flows")
                      else "; this older results directory tracked the first flows, not the "
                      "ones that matter")
                   + (f"; {hidden_flows} more tracked flows not drawn (at most {MAX_PER_GROUP} "
                      "per group, those with a reason first)" if hidden_flows else "")
                   + (f"; groups not shown: {', '.join(hidden)}" if hidden else "")
                   + ("; the x axis ends after the last active flow" if clipped else "") + ".")
    return res


def _open_name(f: dict) -> str:
    """An open-ended flow as "f1 victim h1→h16"."""
    return f"f{f.get('flow_id')} {f.get('group', '')} {f.get('src', '?')}\u2192{f.get('dst', '?')}"


def open_flows_table(run: Run) -> str:
    """HTML: each open-ended flow's goodput per phase (summary "open_flows"), or ''."""
    rows, keys = [], []
    for f in run.summary.get("open_flows") or []:
        phases = f.get("phases") or []
        base = phases[0].get("goodput_gbps") if phases else None
        for ph in phases:
            g = ph.get("goodput_gbps")
            change = (f"{100 * (g / base - 1):+.0f}%" if base and g is not None and ph is not
                      phases[0] else DASH)
            rows.append([_open_name(f), str(ph.get("label")),
                         f"{fmt_us(ph.get('start_ns'))} \u2013 {fmt_us(ph.get('end_ns'))}",
                         fmt_gbps(g), change])
            keys.append(f"open.f{f.get('flow_id')}.{ph.get('label')}")
    if not rows:
        return ""
    return ("<h2>Open-ended flows</h2><p>Flows that run until the stop time, with their "
            "goodput in each phase of the workload (phases are cut where a finite collective "
            "starts and ends).</p>"
            + table(["flow", "phase", "time", "goodput", "vs first phase"], rows, keys, left=3))


def compare_open_flows(runs: list[Run], labels: list[str]) -> str:
    """HTML: the open-ended flows' goodput per phase, one column per run, or ''."""
    rows: dict[tuple, list[str]] = {}
    for i, r in enumerate(runs):
        for f in r.summary.get("open_flows") or []:
            for ph in f.get("phases") or []:
                key = (_open_name(f), str(ph.get("label")))
                rows.setdefault(key, [DASH] * len(runs))[i] = fmt_gbps(ph.get("goodput_gbps"))
    if not rows:
        return ""
    return ("<h2>Open-ended flows</h2><p>Goodput of each flow that runs until the stop time, "
            "per phase of the workload.</p>"
            + table(["flow", "phase"] + labels, [[f, p] + v for (f, p), v in rows.items()],
                    [f"open.{f.split()[0]}.{p}" for f, p in rows], left=2))
