"""The PFC timeline of one run: when each port was paused, and which pause caused which.

A port P is paused by its peer ``P.peer`` (ports.csv), which sent the PAUSE because its
switch had buffered too much from P.  That buffer filled because one of the switch's
*other* egress ports was congested (a queue building at line rate) or was itself paused:
the second case is how a pause propagates.  From the results, a paused sample of P counts
as propagated when another port of the peer's switch was paused in the same sample, and as
congestion otherwise; each port's first pause is explained by the port of the peer's switch
paused earlier, else by that switch's deepest egress queue when the pause began.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from .data import Run, interval_ns, num
from .figures import PlotResult, color, new_figure, save
from .html import fmt_bytes, fmt_us, table

MAX_PORTS = 30
MAX_TABLE = 60
TIME_BINS = 600


@dataclass
class Pause:
    """One paused port: its first pause and why, and when a pause first reached it by
    propagation (another port of the peer's switch paused at the same time)."""

    port: str
    by: str  # the peer port that sent the PAUSE
    first_ns: float
    paused_ns: float
    cause: str  # why the first pause, human-readable
    col: int  # column in pfc_paused_frac.csv
    others: list[int]  # columns of the peer switch's other paused ports
    propagated_ns: float | None = None
    propagated_via: str | None = None


def natural(name: str) -> list:
    """Sort key that puts h9:0 before h10:0."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]


def _why_no_pause(run: Run) -> str:
    """The sentence shown instead of a timeline (PFC disabled, or never triggered)."""
    frames = int(run.summary.get("pfc_pause_frames") or 0)
    if run.summary.get("engine") == "mininet":
        return ("No PFC timeline: the Mininet engine does not emulate PFC (its switch ports "
                "are drop-tail), so no port was paused.")
    if run.spec_get("switch", "pfc", "enabled", default=True) is False:
        return ("No PFC timeline: PFC is disabled in this spec, so no port was paused "
                f"({frames} pause frames were sent; overflowing packets were dropped).")
    return ("No PFC pauses: PFC is enabled but never triggered; no switch buffered enough "
            f"from one ingress port to reach its pause threshold ({frames} pause frames).")


def cascade(run: Run) -> list[Pause]:
    """Every paused port, earliest first pause first (see the module docstring); empty when
    no port was paused or timeseries/pfc_paused_frac.csv is missing."""
    s = run.series("pfc_paused_frac")
    if s is None:
        return []
    paused = np.nan_to_num(s.values) > 0
    cols = np.flatnonzero(paused.any(axis=0))
    if not cols.size:
        return []
    start = s.t - interval_ns(s.t)
    first = {s.names[c]: float(start[i]) for c, i in zip(cols, paused[:, cols].argmax(axis=0))}
    col_of = {s.names[c]: int(c) for c in cols}
    q = run.series("queue_bytes")
    by_node: dict[str, list[str]] = {}
    for p in run.ports:
        by_node.setdefault(p["node"], []).append(p["port"])
    out = []
    for c in cols:
        name = s.names[c]
        row = run.port(name) or {}
        by = row.get("peer") or "?"
        node = by.split(":")[0]
        others = [p for p in by_node.get(node, []) if p != by]
        exact = num(row.get("paused_ns"))
        pause = Pause(name, by, first[name], exact if exact else float(np.nansum(
            s.values[:, c] * interval_ns(s.t))), "", int(c),
            [col_of[o] for o in others if o in col_of])
        pause.cause = _first_cause(run, node, others, pause.first_ns, first, q)
        if pause.others:
            prop = paused[:, c] & paused[:, pause.others].any(axis=1)
            if prop.any():
                i = int(prop.argmax())
                pause.propagated_ns = float(start[i])
                via = [o for o in pause.others if paused[i, o]]
                pause.propagated_via = min((first[s.names[o]], s.names[o]) for o in via)[1]
        out.append(pause)
    out.sort(key=lambda p: (p.first_ns, natural(p.port)))
    return out


def _first_cause(run: Run, node: str, others: list[str], t0: float,
                 first: dict[str, float], q) -> str:
    if not others:
        return f"{node} is a host: its NIC could not take more"
    earlier = [(first[o], o) for o in others if o in first and first[o] <= t0]
    if earlier:
        t, o = max(earlier)
        return f"{node}'s port {o} was paused (since {fmt_us(t)})"
    depth = _queues_at(q, others, t0)
    if depth:
        d, o = max(depth)
        peer = (run.port(o) or {}).get("peer", "?").split(":")[0]
        return f"{node}'s port {o} \u2192 {peer} congested (queue {fmt_bytes(d)})"
    return f"{node}'s buffer filled"


def _queues_at(q, ports: list[str], t0: float) -> list[tuple[float, str]]:
    """(queue bytes, port) of ``ports`` over the samples around ``t0`` (max of the sample
    before and the two after), for the ports that had a queue then."""
    if q is None:
        return []
    i = int(np.searchsorted(q.t, t0))
    lo, hi = max(0, i - 1), min(len(q.t), i + 3)
    out = []
    for o in ports:
        if o in q.names:
            d = float(np.nanmax(q.column(o)[lo:hi])) if hi > lo else 0.0
            if d > 0:
                out.append((d, o))
    return out


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices (end exclusive) of the runs of True in ``mask``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def timeline(run: Run, plots: Path) -> PlotResult:
    title = "PFC timeline: when each port was paused, in order of first pause"
    res = PlotResult("pfc", title)
    pauses = cascade(run)
    if not pauses or run.sim_time_ns <= 0:
        res.note = _why_no_pause(run)
        return res
    s = run.series("pfc_paused_frac")
    paused = np.nan_to_num(s.values) > 0
    shown = pauses[:MAX_PORTS]
    nbins = min(TIME_BINS, len(s.t))
    edges = np.linspace(s.t[0] - interval_ns(s.t)[0], s.t[-1], nbins + 1)
    idx = np.clip(np.searchsorted(edges, s.t, side="left") - 1, 0, nbins - 1)
    fig, ax = new_figure(width=10.0, height=max(2.4, 0.3 * len(shown) + 1.2))
    for row, p in enumerate(shown):
        prop = paused[:, p.col] & (paused[:, p.others].any(axis=1) if p.others else False)
        by_bin = [np.bincount(idx, weights=m, minlength=nbins) > 0
                  for m in (paused[:, p.col] & ~prop, prop)]
        for k, busy in enumerate(by_bin):
            a, b = _runs(busy)
            ax.broken_barh(list(zip(edges[a] / 1000, (edges[b] - edges[a]) / 1000)),
                           (row - 0.38, 0.76), facecolors=color(3 if k else 1), lw=0)
        ax.annotate(f"{p.paused_ns / 1000:,.1f} \u00b5s", (1.0, row),
                    xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(np.arange(len(shown)), [f"{p.port} (paused by {p.by})" for p in shown],
                  fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(edges[0] / 1000, edges[-1] / 1000)
    ax.set_xlabel("time (\u00b5s)")
    ax.grid(axis="x", alpha=0.3)
    kinds = [Patch(color=color(1), label="congestion at the peer's switch"),
             Patch(color=color(3), label="propagated: another port of the peer's switch "
                                         "paused too")]
    ax.legend(handles=kinds if any(p.propagated_via for p in shown) else kinds[:1],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.09, 1.0), frameon=False,
              title="port paused because of", title_fontsize=7)
    more = (f"first {len(shown)} of {len(pauses)} paused ports" if len(pauses) > len(shown)
            else f"{len(pauses)} paused port{'s' if len(pauses) > 1 else ''}")
    ax.set_title(f"PFC pauses per port ({more}; right: total paused time)", fontsize=10)
    res.file = save(fig, plots, "pfc.png")
    binned = len(s.t) > TIME_BINS
    res.caption = ("A bar marks when a port could not send data because its peer (in "
                   "brackets) had sent a PFC PAUSE"
                   + (f" ({(edges[1] - edges[0]) / 1000:,.3g} \u00b5s bins)" if binned else "")
                   + "; red when another port of the peer's switch was paused at the same "
                   "time (the pause propagated), orange otherwise. The table lists the ports "
                   "in the order their first pause began and why the peer's switch paused "
                   "them.")
    listed = pauses[:MAX_TABLE]
    res.extra_html = table(
        ["first paused at", "port", "paused by", "first pause because",
         "propagated to it from", "paused in total"],
        [[fmt_us(p.first_ns), p.port, p.by, p.cause,
          f"{fmt_us(p.propagated_ns)} ({p.propagated_via} paused)" if p.propagated_via
          else "\u2014", fmt_us(p.paused_ns)] for p in listed],
        keys=[f"pfc.{p.port}" for p in listed], left=5) + (
        f"<p>The first {len(listed)} of {len(pauses)} paused ports.</p>"
        if len(pauses) > len(listed) else "")
    return res
