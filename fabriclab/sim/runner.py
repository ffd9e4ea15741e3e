"""Run a spec on the simulator and gather what it measured into the records the results
are assembled from (:mod:`fabriclab.metrics.assemble`)."""

from __future__ import annotations

import gc
import logging
import time

from ..metrics.assemble import Drops, HostRecord, PortRecord, assemble, gse_summary
from ..metrics.results import RunResult
from ..metrics.summarize import FlowRecord
from ..progress import SimProgress
from ..spec import Spec
from .host import SimFrame, SimGseFrame
from .network import Network
from ..faults import LOSS_CAUSES
from .. import native

LOSS_NONE = (0,) * len(LOSS_CAUSES)
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
    # The cyclic garbage collector is off while the events run: it would traverse the
    # millions of live frames and heap entries again and again (9 % of a 1,024-host run)
    # for almost no cycles; it runs once afterwards.
    gc_on = gc.isenabled()
    gc.disable()
    try:
        net.run(progress=bar if bar.shown else None)
    finally:
        bar.close()
        if gc_on:
            gc.enable()
    wall_run = time.perf_counter() - t_run
    net.sampler.sample()
    parts = collect_parts(net, spec, wall_s=time.perf_counter() - t0, wall_run_s=wall_run)
    # The network is a web of reference cycles (ports and switches, bound methods): free it
    # before the results are assembled (numpy and the tables come in then), not whenever
    # the collector next runs.  Nothing in ``parts`` refers to it.
    del net
    gc.collect()
    _release_free_memory()
    return _assemble(parts)


def _release_free_memory() -> None:
    """Hand the memory freed with the network back to the system (glibc keeps freed heap
    memory for reuse otherwise), so that what the results need next does not add to the
    run's peak (at 1,024 hosts: 12 MB).  A no-op where there is no glibc."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def flow_records(net: Network) -> list[FlowRecord]:
    return [FlowRecord(f.id, f.src, f.dst, f.size if f.finite else None, f.started_ns,
                       f.end_ns, f.ideal_fct_ns if f.finite else None, f.group, f.rcv_nxt)
            for f in net.flows]


def port_records(net: Network) -> list[PortRecord]:
    """Every switch port, then every host's port."""
    now = net.loop.now
    out = [PortRecord(p.name, p.node.name, p.peer.name, p.role, p.nominal_rate / 1e9,
                      p.tx_bytes, p.tx_pkts, p.drops, p.drop_bytes, p.ecn_marks,
                      p.pfc_pause_tx, p.pfc_resume_tx, p.pfc_pause_rx, p.paused_ns_at(now),
                      p.max_qbytes, *(p.lost or LOSS_NONE))
           for s in net.switches.values() for p in s.ports]
    for h in net.hosts.values():
        p = h.port
        out.append(PortRecord(p.name, p.node.name, p.peer.name, p.role, p.nominal_rate / 1e9,
                              p.tx_bytes, p.tx_pkts, p.drops, p.drop_bytes,
                              pfc_pause_rx=p.pfc_pause_rx, paused_ns=p.paused_ns_at(now)))
        if p.lost:
            (out[-1].drops_dead_link, out[-1].drops_random, out[-1].drops_watchdog,
             out[-1].drops_no_path) = p.lost
    return out


def host_records(net: Network) -> list[HostRecord]:
    out = []
    for h in net.hosts.values():
        n = h.nic
        out.append(HostRecord(h.name, h.port.tx_bytes, n.rx_bytes, n.goodput_bytes, n.cnps_sent,
                              n.cnps_rx, n.nacks_sent, n.timeouts, n.retx_bytes))
    return out


def collect(net: Network, spec: Spec, wall_s: float, wall_run_s: float) -> RunResult:
    """The results of a run of ``net``."""
    return _assemble(collect_parts(net, spec, wall_s, wall_run_s))


def _assemble(parts: dict) -> RunResult:
    if parts["gse"] is not None:
        parts["gse"] = gse_summary(*parts["gse"])
    return assemble(**parts)


def collect_parts(net: Network, spec: Spec, wall_s: float, wall_run_s: float) -> dict:
    """What :func:`~fabriclab.metrics.assemble.assemble` takes, read from ``net`` (plain
    data and the topology: nothing that keeps the network alive)."""
    now = net.loop.now
    flows, ports, hosts = flow_records(net), port_records(net), host_records(net)
    # Counted where the bytes are (queues and wires), not as a difference, so that
    # sent = delivered + dropped + in flight is a real check.
    queued = sum(sum(p.qbytes) for s in net.switches.values() for p in s.ports)
    on_wire = sum(arg.size for _, _, arg in net.loop.pending_events()
                  if isinstance(arg, (SimFrame, SimGseFrame)))
    hops = sum(p.tx_pkts for p in ports)
    deadlock = net.watch.deadlock if net.watch is not None else None
    if net.finished:
        stopped = "completed"
    elif deadlock is not None:
        stopped = "deadlock (PFC: a cycle of paused ports, see the summary's deadlock)"
    elif spec.stop.time_us is not None:
        stopped = "stop.time_us"
    elif net.idle:
        stopped = "idle (nothing left to simulate, workload unfinished)"
    else:
        stopped = "stop.max_time_us (workload unfinished)"
    gse = net.gse
    if spec.switch.pfc.enabled and net.drop_reasons.get("pfc_headroom_overflow"):
        log.warning("PFC is on but %d packets overflowed the PFC headroom: raise "
                    "switch.pfc.headroom_bytes (or leave it 'auto')",
                    net.drop_reasons["pfc_headroom_overflow"])
    mtu, hdr = spec.switch.mtu_bytes, spec.switch.header_bytes
    return dict(
        spec=spec, topo=net.topo, engine="sim", load_balancing=net.load_balancing,
        stopped=stopped,
        sim_time_ns=now, workload_done_ns=net.workload_done_ns,
        run={"wall_s": round(wall_s, 3), "wall_run_s": round(wall_run_s, 3),
             "events": net.loop.events, "packet_hops": hops,
             "packet_hops_per_s": round(hops / wall_run_s) if wall_run_s > 0 else None,
             # how the simulator's hot modules ran (fabriclab.native): same results either way
             "sim_core": native.status()},
        collectives=net.workload.collectives, flows=flows, ports=ports, hosts=hosts,
        samples=net.sampler.samples(), flow_samples=net.sampler.flows,
        drops=Drops(net.drops, net.drop_bytes, dict(sorted(net.drop_reasons.items()))),
        mtu=mtu, header=hdr, frame_bytes=mtu + hdr + net.cfg.int_bytes,
        faults=net.faults.fault_records() if net.faults is not None else None,
        deadlock=deadlock,
        extra={"pfc_watchdog": net.watch.watchdog_fired}
        if net.watch is not None and net.watch.watchdog_ns else None,
        in_flight_bytes=queued + on_wire,
        # GSE in the leaves also sends REQUEST/GRANT frames
        switch_sent_bytes=gse.switch_control_sent if gse else 0,
        switch_received_bytes=gse.switch_control_received if gse else 0,
        # gse_summary's arguments: it imports numpy, so it runs once the network is freed
        gse=(gse.params, [g.summary() for g in gse.gsps.values()],
             sum(h.goodput_bytes for h in hosts), gse.gsos_control_bytes) if gse else None)
