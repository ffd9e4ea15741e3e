"""Run a spec on the simulator and turn what it measured into the results schema."""

from __future__ import annotations

import logging
import time

from ..metrics import schema
from ..metrics.results import RunResult, provenance
from ..metrics.flowseries import flow_results
from ..metrics.ports import bottleneck_ports
from ..metrics.stats import max_over_mean
from ..metrics.summarize import (FlowRecord, collective_table, flow_stats, flow_table,
                                 summary_head)
from ..progress import SimProgress
from ..spec import Spec, resolved_yaml
from ..wire.frames import Frame
from .gse import gse_summary
from .network import Network
from .sampler import Sampler

log = logging.getLogger(__name__)


def simulate(spec: Spec, progress: bool | None = None, label: str | None = None) -> RunResult:
    """Run ``spec`` (engine sim) to its stop condition; return the results."""
    t0 = time.perf_counter()
    net = Network(spec)
    net.sampler = Sampler(net, round(spec.metrics.sample_interval_us * 1000))
    until = spec.stop.time_us if spec.stop.time_us is not None else None
    bar = SimProgress(label or f"{spec.name} [{spec.scheme}]",
                      round(until * 1000) if until else None, enabled=progress)
    t_run = time.perf_counter()
    try:
        net.run(progress=bar if bar.shown else None)
    finally:
        bar.close()
    wall_run = time.perf_counter() - t_run
    net.sampler.sample()
    result = collect(net, spec, wall_s=time.perf_counter() - t0, wall_run_s=wall_run)
    return result


def flow_records(net: Network) -> list[FlowRecord]:
    return [FlowRecord(f.id, f.src, f.dst, f.size if f.finite else None, f.started_ns,
                       f.end_ns, f.ideal_fct_ns if f.finite else None, f.group, f.rcv_nxt)
            for f in net.flows]


def collect(net: Network, spec: Spec, wall_s: float, wall_run_s: float) -> RunResult:
    now = net.loop.now
    mtu, hdr = spec.switch.mtu_bytes, spec.switch.header_bytes
    records = flow_records(net)
    flow_rows, slowdowns, fcts = flow_table(records)
    coll_rows, coll_summary = collective_table(
        net.workload.collectives, {r.id: r for r in records}, net.topo.host_rate_bps, mtu, hdr)
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
    nics = [h.nic for h in net.hosts.values()]
    host_rows = [[h.name, h.port.tx_bytes, n.rx_bytes, n.goodput_bytes, n.cnps_sent, n.cnps_rx,
                  n.nacks_sent, n.timeouts, n.retx_bytes] for h, n in zip(net.hosts.values(), nics)]
    # ---- summary
    sw_ports = [p for s in net.switches.values() for p in s.ports]
    uplinks = [p.tx_bytes for p in sw_ports if p.role == "up" and p.node is not None
               and net.topo.nodes[p.node.name].tier == 1]
    sent = sum(h.port.tx_bytes for h in net.hosts.values())
    delivered = sum(n.rx_bytes for n in nics)
    if net.gse is not None:  # GSE in the leaves also sends REQUEST/GRANT frames
        sent += net.gse.switch_control_sent
        delivered += net.gse.switch_control_received
    # Counted where the bytes are (queues and wires), not as a difference, so that
    # sent = delivered + dropped + in flight is a real check.
    queued = sum(sum(p.qbytes) for p in sw_ports)
    on_wire = sum(e[3].size for e in net.loop.heap if isinstance(e[3], Frame))
    hops = sum(p.tx_pkts for p in ports)
    if net.finished:
        stopped = "completed"
    elif spec.stop.time_us is not None:
        stopped = "stop.time_us"
    elif net.idle:
        stopped = "idle (nothing left to simulate, workload unfinished)"
    else:
        stopped = "stop.max_time_us (workload unfinished)"
    summary = {
        **summary_head(spec, net.topo, "sim", net.load_balancing, stopped),
        "sim_time_ns": now, "workload_done_ns": net.workload_done_ns,
        "wall_s": round(wall_s, 3), "wall_run_s": round(wall_run_s, 3),
        "events": net.loop.events, "packet_hops": hops,
        "packet_hops_per_s": round(hops / wall_run_s) if wall_run_s > 0 else None,
        "drops": net.drops, "drop_bytes": net.drop_bytes,
        "drop_reasons": dict(sorted(net.drop_reasons.items())),
        "pfc_pause_frames": sum(p.pfc_pause_tx for p in sw_ports),
        "pfc_paused_ns_total": sum(r[13] for r in port_rows),
        "ecn_marks": sum(p.ecn_marks for p in sw_ports),
        "cnps": sum(n.cnps_sent for n in nics),
        "nacks": sum(n.nacks_sent for n in nics),
        "timeouts": sum(n.timeouts for n in nics),
        "retransmitted_bytes": sum(n.retx_bytes for n in nics),
        **flow_stats(records, slowdowns, fcts),
        "uplink_load_max_over_mean": max_over_mean(uplinks) if uplinks and sum(uplinks) else None,
        "bytes_sent": sent, "bytes_delivered": delivered, "bytes_dropped": net.drop_bytes,
        "bytes_in_flight": queued + on_wire,
        "collectives": coll_summary,
    }
    smp = net.sampler
    bottleneck, contended = bottleneck_ports(
        port_rows, smp.times, [p.name for p in smp.switch_ports], smp.queue, now,
        mtu + hdr + net.cfg.int_bytes)
    flow_summary, flow_tables = flow_results(
        smp.flows, records, now, spec.scheme, spec.metrics.max_flow_series,
        contended["host"] if contended else None)
    summary.update(flow_summary, bottleneck_port=bottleneck, contended_port=contended)
    if net.gse is not None:
        summary["gse"] = gse_summary(net.gse)
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
    tables.update(flow_tables)
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
    return out
