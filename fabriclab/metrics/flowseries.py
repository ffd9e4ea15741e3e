"""Per-flow time series, the flows that matter, and the answers derived from them.

Both engines sample the flows that are active (started, not yet delivered) into one
:class:`FlowSamples`; everything below is computed from it and the flow records, once, for
either engine:

* the **tracked flows** whose rate and goodput series are written (``flow_rate_gbps.csv``,
  ``flow_goodput_gbps.csv``): every flow of a small run, else chosen after the run as the
  flows that matter -- every
  open-ended flow, and per workload item the most cut (lowest sending rate reached), the
  slowest (largest FCT slowdown; lowest goodput when none finished) and the median one;
* each **open-ended flow's goodput per phase**: the run cut at the start and end of the other
  workload items (e.g. a victim flow before, during and after a burst);
* the **goodput per flow group into one host** (``contended_goodput_gbps.csv``): how the
  collectives share the contended port.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field

from .lazy_numpy import np

from ..schemes import get_scheme
from .summarize import FlowRecord

#: More (sample, flow) entries than this and the sampler halves its samples, as it does at
#: MAX_SAMPLES samples: a run of any size keeps a bounded per-flow series.
MAX_FLOW_ENTRIES = 1_000_000
#: Open-ended flows get a goodput per phase when at most this many other workload items run.
MAX_PHASES_ITEMS = 3


@dataclass
class FlowSamples:
    """What a sampler saw of the active flows: at ``times[k]`` the flows ``ids[k]`` were
    active (started, not yet delivered), their senders allowed ``rate[k]`` bit/s (NaN once
    the sender had handed its last byte to the NIC: the rate no longer governs anything)
    and ``rx[k]`` bytes had been delivered in order."""

    times: list[int] = field(default_factory=list)
    ids: list[array] = field(default_factory=list)
    rate: list[array] = field(default_factory=list)
    rx: list[array] = field(default_factory=list)
    entries: int = 0

    def add(self, t: int, ids, rates, rxs) -> None:
        self.times.append(t)
        self.ids.append(array("q", ids))
        self.rate.append(array("d", rates))
        self.rx.append(array("q", rxs))
        self.entries += len(self.ids[-1])

    def thin(self) -> None:
        """Drop every other sample (the sampler's own halving)."""
        for series in (self.times, self.ids, self.rate, self.rx):
            del series[1::2]
        self.entries = sum(len(a) for a in self.ids)

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(time, flow id, rate, rx) of every entry, as aligned arrays."""
        n = [len(a) for a in self.ids]
        if not sum(n):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), empty
        t = np.repeat(np.asarray(self.times, dtype=np.int64), n)
        cat = np.concatenate
        return (t, cat([np.frombuffer(a, dtype=np.int64) for a in self.ids if len(a)]),
                cat([np.frombuffer(a, dtype=np.float64) for a in self.rate if len(a)]),
                cat([np.frombuffer(a, dtype=np.int64) for a in self.rx if len(a)]))


def item_of(group: str) -> str:
    """The workload item a flow group belongs to ('incast#3' -> 'incast')."""
    return re.sub(r"#\d+$", "", group)


def sender_rate(scheme_name: str) -> dict:
    """What the sender-rate series means under a scheme, or why it has none."""
    s = get_scheme(scheme_name)
    if s.congestion_control == "dcqcn":
        return {"meaning": "DCQCN's current rate R_C", "note": None}
    if s.congestion_control == "hpcc":
        return {"meaning": "HPCC's window over the base RTT (W/T)", "note": None}
    if s.load_balancing == "gse":
        return {"meaning": None, "note": (
            "GSE has no sending rate: a GSP sends a container only against credit granted by "
            "the scheduler (GSOS or the destination's egress scheduler), so what it sends "
            "follows the grants; see the grant latency and the goodput per host")}
    return {"meaning": None, "note": (
        f"{scheme_name} has no congestion control: every flow sends at its line rate and only "
        "PFC holds it back; see the goodput per host and the queues")}


class FlowSeries:
    """The samples indexed per flow, with each flow's cumulative delivery at any time."""

    def __init__(self, samples: FlowSamples, records: list[FlowRecord], end_ns: int):
        self.times = np.asarray(samples.times, dtype=np.int64)
        self.records = {r.id: r for r in records}
        self.end_ns = end_ns
        t, ids, rate, rx = samples.flat()
        order = np.argsort(ids, kind="stable")
        self._t, self._ids, self._rate, self._rx = t[order], ids[order], rate[order], rx[order]
        uniq, starts = np.unique(self._ids, return_index=True)
        bounds = np.append(starts, len(self._ids))
        self._span = {int(f): (int(a), int(b)) for f, a, b in zip(uniq, bounds[:-1], bounds[1:])}

    def _slice(self, fid: int) -> slice:
        a, b = self._span.get(fid, (0, 0))
        return slice(a, b)

    def min_rate(self, fid: int) -> float | None:
        r = self._rate[self._slice(fid)]
        r = r[~np.isnan(r)]
        return float(r.min()) if len(r) else None

    def rate_at_samples(self, fid: int) -> np.ndarray:
        """The sender's rate at every sample time (0 while it is not sending)."""
        out = np.zeros(len(self.times))
        s = self._slice(fid)
        out[np.searchsorted(self.times, self._t[s])] = np.nan_to_num(self._rate[s])
        return out

    def delivered_at(self, fid: int, when: np.ndarray) -> np.ndarray:
        """Bytes of ``fid`` delivered in order by each time in ``when`` (interpolated
        between samples; 0 before the flow starts, its final count after it ends)."""
        r = self.records[fid]
        s = self._slice(fid)
        ts, vs = list(self._t[s]), list(self._rx[s])
        if r.started_ns is not None:
            ts, vs = [r.started_ns] + ts, [0] + vs
        last = r.end_ns if r.end_ns is not None else self.end_ns
        if not ts or last > ts[-1]:
            ts, vs = ts + [last], vs + [r.delivered]
        elif last == ts[-1]:
            vs[-1] = r.delivered
        if not ts:
            return np.zeros(len(when))
        return np.interp(when, np.asarray(ts, dtype=float), np.asarray(vs, dtype=float),
                         left=0.0, right=float(vs[-1]))

    def goodput_gbps(self, fid: int, t0: int, t1: int) -> float | None:
        if t1 <= t0:
            return None
        a, b = self.delivered_at(fid, np.array([t0, t1], dtype=float))
        return (b - a) * 8 / (t1 - t0)


def _rates(times: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Per-interval Gb/s from cumulative bytes (rows 1..n; bytes*8/ns is Gb/s)."""
    dt = np.diff(times).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.diff(cum, axis=0) * 8 / dt[:, None]
    return np.where(dt[:, None] > 0, out, 0.0)


def select_tracked(fs: FlowSeries, records: list[FlowRecord], has_rate: bool,
                   limit: int) -> list[dict]:
    """The flows that matter, at most ``limit``: open-ended flows first, then per workload
    item the most cut, the slowest and, for reference, the median one.  A run of at most
    ``limit`` flows tracks them all."""
    picks: dict[int, list[str]] = {}

    def pick(fid: int, reason: str) -> None:
        picks.setdefault(fid, []).append(reason)

    for r in records:
        if r.size is None:
            pick(r.id, "open-ended")
    items: dict[str, list[FlowRecord]] = {}
    for r in records:
        items.setdefault(item_of(r.group), []).append(r)
    for item, rs in items.items():
        if len(rs) == 1:
            pick(rs[0].id, f"the one flow of {item}")
            continue
        if has_rate:
            cut = [(fs.min_rate(r.id), r.id) for r in rs]
            cut = [c for c in cut if c[0] is not None]
            if cut:
                pick(min(cut)[1], f"most cut in {item}")
        done = [((r.end_ns - r.started_ns) / r.ideal_fct_ns, r.id) for r in rs
                if r.end_ns is not None and r.started_ns is not None and r.ideal_fct_ns]
        if done:
            pick(max(done, key=lambda x: (x[0], -x[1]))[1], f"slowest in {item}")
            if len(done) >= 3:
                done.sort()
                pick(done[(len(done) - 1) // 2][1], f"median slowdown in {item}")
        else:
            slow = [(fs.goodput_gbps(r.id, r.started_ns, fs.end_ns), r.id) for r in rs
                    if r.started_ns is not None]
            slow = [s for s in slow if s[0] is not None]
            if slow:
                pick(min(slow)[1], f"lowest goodput in {item}")
    chosen = list(picks)[:limit]
    if len(records) <= limit:  # a small run shows every flow
        chosen = [r.id for r in records]
    out = []
    for fid in sorted(chosen):
        r = fs.records[fid]
        mr = fs.min_rate(fid)
        sd = ((r.end_ns - r.started_ns) / r.ideal_fct_ns
              if r.end_ns is not None and r.started_ns is not None and r.ideal_fct_ns else None)
        out.append({"flow_id": fid, "group": r.group, "src": r.src, "dst": r.dst,
                    "reasons": picks.get(fid, []), "min_rate_gbps": mr / 1e9 if mr is not None and
                    has_rate else None, "slowdown": sd})
    return out


def open_flow_phases(fs: FlowSeries, records: list[FlowRecord]) -> list[dict]:
    """Each open-ended flow's goodput before, during and after the other workload items."""
    spans: dict[str, list[int]] = {}
    for r in records:
        if r.size is None or r.started_ns is None:
            continue
        end = r.end_ns if r.end_ns is not None else fs.end_ns
        lo, hi = spans.get(r.group, (r.started_ns, end))
        spans[r.group] = [min(lo, r.started_ns), max(hi, end)]
    out = []
    for r in records:
        if r.size is not None or r.started_ns is None:
            continue
        start, stop = r.started_ns, fs.end_ns
        others = {g: (max(a, start), min(b, stop)) for g, (a, b) in spans.items()
                  if g != r.group and b > start and a < stop}
        if len(others) > MAX_PHASES_ITEMS or not others:
            cuts = [start, stop]
        else:
            cuts = sorted({start, stop, *(x for ab in others.values() for x in ab)})
        phases = []
        for t0, t1 in zip(cuts, cuts[1:]):
            if t1 <= t0:
                continue
            phases.append({"label": _phase_label(t0, t1, others, start, stop),
                           "start_ns": int(t0), "end_ns": int(t1),
                           "goodput_gbps": fs.goodput_gbps(r.id, t0, t1)})
        out.append({"flow_id": r.id, "group": r.group, "src": r.src, "dst": r.dst,
                    "phases": phases})
    return out


def _phase_label(t0, t1, others: dict, start: int, stop: int) -> str:
    if not others or len(others) > MAX_PHASES_ITEMS:
        return "while it ran"
    during = [g for g, (a, b) in others.items() if a <= t0 and t1 <= b]
    if during:
        return "during " + " + ".join(during)
    before = [g for g, (a, _) in others.items() if t1 <= a]
    after = [g for g, (_, b) in others.items() if t0 >= b]
    if before and not after:
        return "before " + min(before, key=lambda g: others[g][0])
    if after and not before:
        return "after " + max(after, key=lambda g: others[g][1])
    return (f"between {max(after, key=lambda g: others[g][1])} and "
            f"{min(before, key=lambda g: others[g][0])}")


def group_goodput_into(fs: FlowSeries, records: list[FlowRecord], host: str):
    """(column names, rows) of the goodput into ``host`` per flow group over time."""
    groups: dict[str, list[int]] = {}
    for r in records:
        if r.dst == host:
            groups.setdefault(r.group, []).append(r.id)
    names = list(groups)
    if len(fs.times) < 2 or not names:
        return ["time_ns"] + names, []
    when = fs.times.astype(float)
    cum = np.stack([sum(fs.delivered_at(fid, when) for fid in groups[g]) for g in names],
                   axis=1)
    rates = _rates(fs.times, cum)
    return ["time_ns"] + names, [[int(t)] + [float(v) for v in row]
                                 for t, row in zip(fs.times[1:], rates)]


def flow_tables(fs: FlowSeries, tracked: list[dict]) -> dict:
    """flow_rate_gbps.csv and flow_goodput_gbps.csv for the tracked flows."""
    ids = [t["flow_id"] for t in tracked]
    cols = ["time_ns"] + [f"f{i}" for i in ids]
    times = fs.times
    if not len(times):
        return {"timeseries/flow_rate_gbps.csv": (cols, []),
                "timeseries/flow_goodput_gbps.csv": (cols, [])}
    rate = (np.stack([fs.rate_at_samples(i) for i in ids], axis=1) / 1e9 if ids
            else np.zeros((len(times), 0)))
    rate_rows = [[int(t)] + [float(v) for v in row] for t, row in zip(times, rate)]
    good_rows = []
    if len(times) > 1 and ids:
        cum = np.stack([fs.delivered_at(i, times.astype(float)) for i in ids], axis=1)
        good_rows = [[int(t)] + [float(v) for v in row]
                     for t, row in zip(times[1:], _rates(times, cum))]
    elif len(times) > 1:
        good_rows = [[int(t)] for t in times[1:]]
    return {"timeseries/flow_rate_gbps.csv": (cols, rate_rows),
            "timeseries/flow_goodput_gbps.csv": (cols, good_rows)}


def flow_results(samples: FlowSamples, records: list[FlowRecord], end_ns: int, scheme: str,
                 max_flows: int, contended_host: str | None) -> tuple[dict, dict]:
    """The summary keys and timeseries tables this module defines, for either engine."""
    fs = FlowSeries(samples, records, end_ns)
    rate = sender_rate(scheme)
    tracked = select_tracked(fs, records, rate["meaning"] is not None, max_flows)
    summary = {
        "payload_delivered_bytes": sum(r.delivered for r in records),
        "open_ended": any(r.size is None for r in records),
        "open_flows": open_flow_phases(fs, records),
        "tracked_flows": tracked,
        "sender_rate": rate,
    }
    tables = flow_tables(fs, tracked)
    tables["timeseries/contended_goodput_gbps.csv"] = (
        group_goodput_into(fs, records, contended_host) if contended_host
        else (["time_ns"], []))
    return summary, tables
