"""Run a spec on the simulator and turn what it measured into the results schema."""

from __future__ import annotations

import logging
import time

from ..metrics import schema
from ..metrics.results import RunResult, provenance
from ..metrics.stats import max_over_mean, percentile
from ..progress import SimProgress
from ..spec import Spec, resolved_yaml
from ..units import wire_bytes
from ..workloads.collectives import bus_bandwidth_factor
from .fabric import Packet
from .network import Network
from .sampler import Sampler

log = logging.getLogger(__name__)


def simulate(spec: Spec, progress: bool | None = None, label: str | None = None) -> RunResult:
    """Run ``spec`` (engine sim) to its stop condition; return the results."""
    t0 = time.perf_counter()
    net = Network(spec)
    net.sampler = Sampler(net, round(spec.metrics.sample_interval_us * 1000),
                          spec.metrics.max_flow_series)
    until = spec.stop.time_us if spec.stop.time_us is not None else None
    bar = SimProgress(label or f"{spec.name} [{spec.scheme}]",
                      round(until * 1000) if until else None, enabled=progress)
    t_run = time.perf_counter()
    try:
        net.run(progress=bar)
    finally:
        bar.close()
    wall_run = time.perf_counter() - t_run
    net.sampler.sample()
    result = collect(net, spec, wall_s=time.perf_counter() - t0, wall_run_s=wall_run)
    return result


def _ns_or_none(x):
    return None if x is None else int(x)


def collect(net: Network, spec: Spec, wall_s: float, wall_run_s: float) -> RunResult:
    now = net.loop.now
    mtu, hdr = spec.switch.mtu_bytes, spec.switch.header_bytes
    # ---- flows
    flow_rows, slowdowns, fcts = [], [], []
    for f in net.flows:
        fct = f.end_ns - f.started_ns if f.end_ns is not None else None
        sd = fct / f.ideal_fct_ns if fct is not None and f.ideal_fct_ns else None
        if sd is not None:
            slowdowns.append(sd)
            fcts.append(fct)
        flow_rows.append([f.id, f.src, f.dst, f.size if f.finite else None, f.started_ns,
                          f.end_ns, fct, f.ideal_fct_ns if f.finite else None, sd, f.group,
                          f.rcv_nxt])
    # ---- collectives
    by_id = {f.id: f for f in net.flows}
    coll_rows, coll_summary = [], []
    for c in net.workload.collectives:
        fl = [by_id[i] for i in c.flow_ids]
        starts = [f.started_ns for f in fl if f.started_ns is not None]
        start = min(starts) if starts else None
        done = all(f.end_ns is not None for f in fl) and fl
        end = max(f.end_ns for f in fl) if done else None
        n = len(c.hosts)
        if c.kind == "incast":
            moved = sum(f.size for f in fl if f.finite)
            rx = net.topo.host_rate_bps(c.hosts[-1])
            bound = sum(wire_bytes(f.size, mtu, hdr) for f in fl if f.finite) * 8e9 / rx
            factor = 1.0
        else:
            moved = c.bytes
            factor = bus_bandwidth_factor(c.kind, n)
            rate = min(net.topo.host_rate_bps(h) for h in c.hosts)
            # every rank must send factor x S bytes (plus headers) through its own link
            per_rank = sum(wire_bytes(by_id[i].size, mtu, hdr) for i in c.flow_ids
                           if by_id[i].src == c.hosts[0])
            bound = per_rank * 8e9 / rate
        dur = end - start if end is not None else None
        algbw = moved * 8 / dur if dur else None
        busbw = algbw * factor if algbw is not None else None
        coll_rows.append([c.name, c.kind, n, c.bytes, start, end, algbw, busbw])
        coll_summary.append({
            "name": c.name, "kind": c.kind, "hosts": n, "bytes": c.bytes,
            "start_ns": start, "end_ns": end, "completion_ns": dur,
            "bound_ns": round(bound), "completion_over_bound": dur / bound if dur else None,
            "algbw_gbps": algbw, "busbw_gbps": busbw})
    # ---- ports
    ports = [p for s in net.switches.values() for p in s.ports] + [h.port for h in
                                                                    net.hosts.values()]
    port_rows = []
    for p in ports:
        sw = hasattr(p, "drops")
        port_rows.append([p.name, p.node.name, p.peer.name, p.role, p.rate / 1e9, p.tx_bytes,
                          p.tx_pkts, p.drops if sw else 0, p.drop_bytes if sw else 0,
                          p.ecn_marks if sw else 0, p.pfc_pause_tx if sw else 0,
                          p.pfc_resume_tx if sw else 0, p.pfc_pause_rx, p.paused_ns_at(now),
                          p.max_qbytes if sw else 0])
    host_rows = [[h.name, h.port.tx_bytes, h.rx_bytes, h.rx_goodput, h.cnps_sent, h.cnps_rx,
                  h.nacks_sent, h.timeouts, h.retx_bytes] for h in net.hosts.values()]
    # ---- summary
    sw_ports = [p for s in net.switches.values() for p in s.ports]
    uplinks = [p.tx_bytes for p in sw_ports if p.role == "up" and p.node is not None
               and net.topo.nodes[p.node.name].tier == 1]
    sent = sum(h.port.tx_bytes for h in net.hosts.values())
    delivered = sum(h.rx_bytes for h in net.hosts.values())
    # Counted where the bytes are (queues and wires), not as a difference, so that
    # sent = delivered + dropped + in flight is a real check.
    queued = sum(sum(p.qbytes) for p in sw_ports)
    on_wire = sum(e[3].size for e in net.loop.heap if isinstance(e[3], Packet))
    hops = sum(p.tx_pkts for p in ports)
    finite = [f for f in net.flows if f.finite]
    if net.finished:
        stopped = "completed"
    elif spec.stop.time_us is not None:
        stopped = "stop.time_us"
    elif net.idle:
        stopped = "idle (nothing left to simulate, workload unfinished)"
    else:
        stopped = "stop.max_time_us (workload unfinished)"
    summary = {
        "name": spec.name, "scheme": spec.scheme, "engine": "sim", "seed": spec.seed,
        "topology": net.topo.summary() | {"oversubscription": net.topo.oversubscription},
        "load_balancing": net.load_balancing,
        "stopped": stopped,
        "sim_time_ns": now, "workload_done_ns": net.workload_done_ns,
        "wall_s": round(wall_s, 3), "wall_run_s": round(wall_run_s, 3),
        "events": net.loop.events, "packet_hops": hops,
        "packet_hops_per_s": round(hops / wall_run_s) if wall_run_s > 0 else None,
        "drops": net.drops, "drop_bytes": net.drop_bytes,
        "drop_reasons": dict(sorted(net.drop_reasons.items())),
        "pfc_pause_frames": sum(p.pfc_pause_tx for p in sw_ports),
        "pfc_paused_ns_total": sum(r[13] for r in port_rows),
        "ecn_marks": sum(p.ecn_marks for p in sw_ports),
        "cnps": sum(h.cnps_sent for h in net.hosts.values()),
        "nacks": sum(h.nacks_sent for h in net.hosts.values()),
        "timeouts": sum(h.timeouts for h in net.hosts.values()),
        "retransmitted_bytes": sum(h.retx_bytes for h in net.hosts.values()),
        "flows_total": len(net.flows), "flows_completed": len(fcts),
        "flows_unfinished": sum(1 for f in finite if f.end_ns is None),
        "fct_p50_ns": percentile(fcts, 50), "fct_p99_ns": percentile(fcts, 99),
        "slowdown_p50": percentile(slowdowns, 50), "slowdown_p95": percentile(slowdowns, 95),
        "slowdown_p99": percentile(slowdowns, 99),
        "uplink_load_max_over_mean": max_over_mean(uplinks) if uplinks and sum(uplinks) else None,
        "bytes_sent": sent, "bytes_delivered": delivered, "bytes_dropped": net.drop_bytes,
        "bytes_in_flight": queued + on_wire,
        "collectives": coll_summary,
    }
    if spec.switch.pfc.enabled and net.drop_reasons.get("pfc_headroom_overflow"):
        log.warning("PFC is on but %d packets overflowed the PFC headroom: raise "
                    "switch.pfc.headroom_bytes (or leave it 'auto')",
                    net.drop_reasons["pfc_headroom_overflow"])
    tables = {
        "flows.csv": (schema.FLOW_COLUMNS, flow_rows),
        "collectives.csv": (schema.COLLECTIVE_COLUMNS, coll_rows),
        "ports.csv": (schema.PORT_COLUMNS, port_rows),
        "hosts.csv": (schema.HOST_COLUMNS, host_rows),
    }
    tables.update(_timeseries(net))
    spec_yaml = resolved_yaml(spec, {"generated_by": provenance() | {"engine": "sim"}})
    return RunResult(spec_yaml, summary, tables)


def _rates(times, cum, scale_per_col):
    """Per-interval rates from cumulative counters: rows for samples 1..n."""
    rows = []
    for i in range(1, len(times)):
        dt = times[i] - times[i - 1]
        prev, cur = cum[i - 1], cum[i]
        rows.append([times[i]] + [(c - p) * s / dt if dt else 0.0
                                  for c, p, s in zip(cur, prev, scale_per_col)])
    return rows


def _timeseries(net: Network) -> dict:
    s = net.sampler
    t = s.times
    port_names = [p.name for p in s.ports]
    out = {}
    out["timeseries/link_util.csv"] = (
        ["time_ns"] + port_names, _rates(t, s.tx, [8 / p.rate * 1e9 for p in s.ports]))
    out["timeseries/queue_bytes.csv"] = (
        ["time_ns"] + [p.name for p in s.switch_ports],
        [[ti] + q for ti, q in zip(t, s.queue)])
    out["timeseries/pfc_paused_frac.csv"] = (
        ["time_ns"] + port_names, _rates(t, s.paused, [1.0] * len(s.ports)))
    out["timeseries/host_goodput_gbps.csv"] = (
        ["time_ns"] + [h.name for h in s.hosts], _rates(t, s.goodput, [8.0] * len(s.hosts)))
    fcols = [f"f{f.id}" for f in s.flows]
    out["timeseries/flow_rate_gbps.csv"] = (
        ["time_ns"] + fcols, [[ti] + [r / 1e9 for r in rr] for ti, rr in zip(t, s.flow_rate)])
    out["timeseries/flow_goodput_gbps.csv"] = (
        ["time_ns"] + fcols, _rates(t, s.flow_rx, [8.0] * len(s.flows)))
    return out
