"""Engine-neutral result tables: both engines describe their flows as :class:`FlowRecord`
and get the same flows.csv rows, collective completions and headline statistics."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..units import BIT_NS, wire_bytes
from ..workloads.collectives import bus_bandwidth_factor
from .stats import percentile


@dataclass
class FlowRecord:
    id: int
    src: str
    dst: str
    size: int | None  # None: unlimited
    started_ns: int | None
    end_ns: int | None  # the receiver has every byte, in order
    ideal_fct_ns: int | None
    group: str
    delivered: int


def ideal_fct_ns(size: int, hops: list[tuple[int, int]], mtu: int, header: int) -> int:
    """Lower bound on the time for ``size`` payload bytes to reach the receiver alone.

    ``hops`` lists (rate_bps, delay_ns) from the sender's NIC on.  Store and forward: every
    byte crosses every hop, so for any hop b the bound is the first packet's trip to b, the
    whole message serialised at b, and the last packet's trip after b; the largest over b
    is taken (with equal rates this is W(S)*8/C + (h-1) packet times + propagation).
    """
    n_pkts = max(1, -(-size // mtu))
    wire = size + n_pkts * header
    first = min(size, mtu) + header
    last = size - (n_pkts - 1) * mtu + header
    prop = sum(d for _, d in hops)
    best = Fraction(0)
    for b, (rate, _) in enumerate(hops):
        before = sum(Fraction(first * BIT_NS, r) for r, _ in hops[:b])
        after = sum(Fraction(last * BIT_NS, r) for r, _ in hops[b + 1:])
        best = max(best, before + Fraction(wire * BIT_NS, rate) + after)
    return int(best) + prop


def flow_table(records: list[FlowRecord]):
    """flows.csv rows (FLOW_COLUMNS order), and the slowdowns and FCTs of completed flows."""
    rows, slowdowns, fcts = [], [], []
    for f in records:
        fct = f.end_ns - f.started_ns if f.end_ns is not None and f.started_ns is not None \
            else None
        sd = fct / f.ideal_fct_ns if fct is not None and f.ideal_fct_ns else None
        if sd is not None:
            slowdowns.append(sd)
            fcts.append(fct)
        rows.append([f.id, f.src, f.dst, f.size, f.started_ns, f.end_ns, fct,
                     f.ideal_fct_ns if f.size is not None else None, sd, f.group, f.delivered])
    return rows, slowdowns, fcts


def collective_table(collectives, records: dict[int, FlowRecord], host_rate_bps, mtu: int,
                     header: int):
    """collectives.csv rows and the summary's ``collectives`` list.

    ``bound_ns`` is the physical bound: for an incast, every sender's bytes (with headers)
    through the receiver's link; for all-reduce and all-to-all, what one rank must push
    through its own link.  algbw and busbw follow nccl-tests; for an incast both are the
    aggregate rate into the receiver.
    """
    rows, summary = [], []
    for c in collectives:
        fl = [records[i] for i in c.flow_ids]
        starts = [f.started_ns for f in fl if f.started_ns is not None]
        start = min(starts) if starts else None
        done = bool(fl) and all(f.end_ns is not None for f in fl)
        end = max(f.end_ns for f in fl) if done else None
        n = len(c.hosts)
        if c.kind == "incast":
            moved = sum(f.size for f in fl if f.size is not None)
            bound = sum(wire_bytes(f.size, mtu, header) for f in fl if f.size is not None) \
                * 8e9 / host_rate_bps(c.hosts[-1])
            factor = 1.0
        else:
            moved = c.bytes
            factor = bus_bandwidth_factor(c.kind, n)
            rate = min(host_rate_bps(h) for h in c.hosts)
            per_rank = sum(wire_bytes(f.size, mtu, header) for f in fl if f.src == c.hosts[0])
            bound = per_rank * 8e9 / rate
        dur = end - start if end is not None else None
        algbw = moved * 8 / dur if dur else None
        busbw = algbw * factor if algbw is not None else None
        rows.append([c.name, c.kind, n, c.bytes, start, end, algbw, busbw])
        summary.append({
            "name": c.name, "kind": c.kind, "hosts": n, "bytes": c.bytes,
            "start_ns": start, "end_ns": end, "completion_ns": dur,
            "bound_ns": round(bound), "completion_over_bound": dur / bound if dur else None,
            "algbw_gbps": algbw, "busbw_gbps": busbw})
    return rows, summary


def summary_head(spec, topo, engine: str, load_balancing: str, stopped: str) -> dict:
    """The first keys of every summary.json, the same for both engines: for a scheme whose
    NICs run DCQCN, which variant of its increase (docs/dcqcn.md); for a reliable one, how
    many data packets an ACK answers (docs/nic.md)."""
    from ..schemes import get_scheme
    from ..spec import ack_every_pkts
    head = {"name": spec.name, "scheme": spec.scheme, "engine": engine, "seed": spec.seed,
            "topology": topo.summary() | {"oversubscription": topo.oversubscription},
            "load_balancing": load_balancing, "stopped": stopped}
    scheme = get_scheme(spec.scheme)
    if scheme.congestion_control == "dcqcn":
        head["dcqcn_variant"] = spec.dcqcn.variant
    if scheme.reliable:  # the emulator's packets are smaller: more of them per container
        head["ack_every_pkts"] = ack_every_pkts(
            spec, spec.emu.mtu_bytes if engine == "mininet" else None)
    return head


def flow_stats(records: list[FlowRecord], slowdowns: list[float], fcts: list[int]) -> dict:
    return {
        "flows_total": len(records), "flows_completed": len(fcts),
        "flows_unfinished": sum(1 for f in records if f.size is not None and f.end_ns is None),
        "fct_p50_ns": percentile(fcts, 50), "fct_p99_ns": percentile(fcts, 99),
        "slowdown_p50": percentile(slowdowns, 50), "slowdown_p95": percentile(slowdowns, 95),
        "slowdown_p99": percentile(slowdowns, 99),
    }
