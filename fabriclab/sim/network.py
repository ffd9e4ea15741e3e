"""Build a simulated network from a spec: nodes, ports, flows, and run it.

``Network(spec).run()`` is the whole simulator.  Everything it measures is read from the
objects afterwards by :mod:`fabriclab.sim.runner`, which turns it into the results schema.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from .. import workloads
from ..cc_algorithms import CONGESTION_CONTROL
from ..schemes import get_scheme
from ..cc_algorithms.gse import GseParams
from ..cc_algorithms.hpcc import base_rtt_ns
from ..spec import Spec, pfc_headroom_bytes
from ..metrics.summarize import ideal_fct_ns
from ..topologies import Topology, from_spec, switch_seed
from .core import EventLoop
from ..nic import Nic, NicParams
from ..units import BIT_NS
from .gse import GseContext, GseLeaf
from .fabric import UNLIMITED_BYTES, SprayingSwitch, Switch, int_stamper
from .host import Host, SimFrames
from ..faults import FaultPlan
from .faults import FaultyHost, PfcWatch, SimFaults, faulty, needed

log = logging.getLogger(__name__)

ROCE_UDP_PORT = 4791


@dataclass
class NodeConfig:
    """Settings shared by the simulator's switches and hosts (derived from the spec); the
    NICs' own are :class:`fabriclab.nic.params.NicParams`."""

    seed: int
    data_prio: int
    ctrl_prio: int
    prio_order: tuple
    buffer_bytes: int
    queue_limit_bytes: int | None
    pfc_enabled: bool
    pfc_alpha: float
    pfc_reserve: int
    pfc_resume_offset: int
    int_bytes: int = 0

    def rng_for(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}")


class Flow:
    """One flow as the results see it: its route, its bound, when it started, was sent and
    was delivered.  Its transport state lives in the NICs at both ends (``send`` at the
    sender's, ``recv`` at the receiver's); this object is also what frames name as their
    flow (it has ``id``, ``src``, ``dst``)."""

    __slots__ = ("id", "src", "dst", "size", "finite", "start_ns", "group", "route", "rroute",
                 "ideal_fct_ns", "started_ns", "sent_ns", "end_ns", "send", "recv")

    def __init__(self, fd: workloads.FlowDef):
        self.id = fd.id
        self.src = fd.src
        self.dst = fd.dst
        self.finite = fd.size is not None
        self.size = fd.size if self.finite else UNLIMITED_BYTES
        self.start_ns = fd.start_ns
        self.group = fd.group
        self.route = self.rroute = ()
        self.ideal_fct_ns = 0
        self.started_ns = None
        self.sent_ns = None  # when its last byte was first handed to the NIC
        self.end_ns = None
        self.send = self.recv = None

    @property
    def cc(self):
        """The sender's congestion-control object (None before the flow starts)."""
        return self.send.cc

    @property
    def sender_done_ns(self) -> int | None:
        """When the sender got the ACK of its last packet (None until then)."""
        return self.send.done_ns if self.send is not None else None

    @property
    def rcv_nxt(self) -> int:
        """Payload bytes delivered in order to the receiver."""
        return self.recv.delivered


class Network:
    def __init__(self, spec: Spec, topo: Topology | None = None):
        self.spec = spec
        self.scheme = get_scheme(spec.scheme)
        self.topo = topo or from_spec(spec.topology)
        self.loop = EventLoop()
        sw, nic = spec.switch, spec.nic
        ctrl, data = nic.control_priority, nic.data_priority
        order = (ctrl, data)  # control frames are always served first
        self.cfg = NodeConfig(
            seed=spec.seed, data_prio=data, ctrl_prio=ctrl, prio_order=order,
            buffer_bytes=sw.buffer_bytes, queue_limit_bytes=sw.queue_limit_bytes,
            pfc_enabled=sw.pfc.enabled, pfc_alpha=sw.pfc.alpha, pfc_reserve=sw.pfc.reserve_bytes,
            pfc_resume_offset=sw.pfc.resume_offset_bytes,
            int_bytes=spec.hpcc.int_header_bytes if self.scheme.int_telemetry else 0)
        self.switches: dict[str, Switch] = {}
        self.hosts: dict[str, Host] = {}
        self.ports: dict[tuple[str, int], object] = {}
        plan = FaultPlan(spec, self.topo)
        self.faults = SimFaults(self, plan) if needed(spec, plan) else None
        self._build_nodes()
        if self.faults is not None:
            self.faults.attach()
        pfc = spec.switch.pfc
        self.watch = None
        if pfc.enabled and (pfc.deadlock_detect_us or pfc.watchdog_us):
            ns = (lambda v: round(v * 1000) if v else None)
            self.watch = PfcWatch(self, ns(pfc.deadlock_detect_us), ns(pfc.watchdog_us),
                                  ns(pfc.watchdog_restore_us), self.faults)
        self.in_flight = 0
        self.drops = 0
        self.drop_bytes = 0
        self.drop_reasons: dict[str, int] = {}
        self.finished = False
        self.idle = False
        self.workload_done_ns = None
        self.workload = workloads.build(spec, self.topo)
        self.flows = [Flow(fd) for fd in self.workload.flows]
        self.live: dict[int, Flow] = {}  # started, not yet delivered (in start order)
        self.finite_left = sum(f.finite for f in self.flows)
        self.has_unlimited = any(not f.finite for f in self.flows)
        self._setup_flows()
        self.sampler = None

    # -- construction ----------------------------------------------------------------------
    def _build_nodes(self) -> None:
        topo, cfg, spec = self.topo, self.cfg, self.spec
        lb = spec.switch.load_balancing
        if lb == "scheme":
            lb = self.scheme.load_balancing
        switch_cls = SprayingSwitch if lb == "packet_spray" else Switch
        leaf_cls, host_cls = GseLeaf, Host
        if self.faults is not None:
            switch_cls, leaf_cls, host_cls = faulty(switch_cls), faulty(GseLeaf), FaultyHost
        self.load_balancing = lb
        self.gse = None
        gse_nic = gse_leaf = False
        if spec.scheme == "gse":
            self.gse = GseContext(self, GseParams.from_spec(spec.gse))
            gse_nic, gse_leaf = spec.gse.placement == "nic", spec.gse.placement == "leaf"
            self.load_balancing = (f"gse ({spec.gse.placement}): containers of "
                                   f"{spec.gse.container_bytes} B sprayed over every path")
        for name, node in topo.nodes.items():
            if node.is_host:
                self.hosts[name] = host_cls(self, name)
            elif gse_leaf and node.tier == 1:
                self.switches[name] = leaf_cls(self, name, cfg, self.gse)
            else:
                self.switches[name] = switch_cls(self, name, cfg)
            if self.faults is not None:
                (self.hosts.get(name) or self.switches[name]).fx = self.faults
        for name, node in topo.nodes.items():
            for i, link in enumerate(node.ports):
                if node.is_host:
                    port = self.hosts[name].attach(link.rate_bps, link.delay_ns)
                else:
                    port = self.switches[name].add_port(i, link.rate_bps, link.delay_ns,
                                                        topo.port_role(name, i))
                self.ports[(name, i)] = port
        for (name, i), port in self.ports.items():
            peer = topo.peer(name, i)
            port.connect(self.ports[(peer.node, peer.port)])
            if isinstance(self.switches.get(name), GseLeaf) and port.role == "host":
                self.switches[name].host_port[peer.node] = port
        self._build_nics(gse_nic)
        if issubclass(switch_cls, SprayingSwitch):
            for sname, s in self.switches.items():
                for h in self.hosts:
                    s.next_hops[h] = tuple(s.ports[i] for i in topo.next_hops(sname, h))
        ecn = spec.switch.ecn
        stamp = int_stamper(self.loop) if self.scheme.int_telemetry else None
        for s in self.switches.values():
            s.on_dequeue = stamp
            if ecn.enabled:
                for p in s.ports:
                    p.configure_ecn(*ecn.thresholds(p.rate))
            # The spec validator has checked that headroom and reserve fit in the buffer.
            s.finish_pfc(lambda p: pfc_headroom_bytes(spec, p.rate, p.delay))

    def _build_nics(self, gse_nic: bool) -> None:
        """One sans-IO NIC per host, driven by this event loop (fabriclab.nic)."""
        spec, scheme = self.spec, self.scheme
        int_bytes = spec.hpcc.int_header_bytes if scheme.int_telemetry else 0
        self.nic_params = NicParams.from_spec(spec, scheme, spec.switch.header_bytes,
                                              spec.switch.header_bytes, int_bytes)
        self.base_rtt = base_rtt_ns(spec, self.topo, self.cfg.int_bytes)
        factory = CONGESTION_CONTROL[scheme.congestion_control]
        for name, h in self.hosts.items():
            rate = h.port.rate
            nic = Nic(name, self.nic_params,
                      lambda rate=rate: factory(spec, rate, self.base_rtt),
                      self.loop, SimFrames, rate)
            nic.observer = self
            h.connect_nic(nic)
            if gse_nic:
                self.gse.attach_nic(h)

    def _setup_flows(self) -> None:
        topo, spec = self.topo, self.spec
        seeds = {s: switch_seed(spec.seed, s) for s in topo.switches}
        rng = random.Random(f"{spec.seed}/udp-source-ports")
        mtu, hdr = spec.switch.mtu_bytes, spec.switch.header_bytes
        path_cache = {}
        self.flow_tuples = {}  # flow id -> (forward, reverse) 5-tuple, for rerouting
        for fd, f in zip(self.workload.flows, self.flows):
            src_ip, dst_ip = topo.nodes[f.src].ip, topo.nodes[f.dst].ip
            sport = rng.randrange(49152, 65536)
            fwd = topo.flow_path(f.src, f.dst, (src_ip, dst_ip, sport, ROCE_UDP_PORT, 17), seeds)
            rev = topo.flow_path(f.dst, f.src, (dst_ip, src_ip, sport, ROCE_UDP_PORT, 17), seeds)
            if self.faults is not None:
                self.flow_tuples[f.id] = ((src_ip, dst_ip, sport, ROCE_UDP_PORT, 17),
                                          (dst_ip, src_ip, sport, ROCE_UDP_PORT, 17))
            f.route = path_cache.setdefault(fwd, tuple(self.ports[(p.node, p.port)] for p in fwd))
            f.rroute = path_cache.setdefault(rev, tuple(self.ports[(p.node, p.port)] for p in rev))
            hops = [(p.rate, p.delay) for p in f.route]
            if f.finite:
                f.ideal_fct_ns = ideal_fct_ns(f.size, hops, mtu, hdr)
            rtt = sum(2 * d + -(-(mtu + 2 * hdr) * BIT_NS // r) for r, d in hops)
            f.send = self.hosts[f.src].nic.add_sender(f, f.size, f.start_ns, f.route, rtt,
                                                      fd.deps)
            f.recv = self.hosts[f.dst].nic.add_receiver(f, f.size, f.rroute, rtt)
        for f in self.flows:
            if f.send.deps_left == 0:
                self.hosts[f.src].nic.schedule_start(f.send)

    # -- what the NICs report (fabriclab.nic's observer) ------------------------------------
    def flow_started(self, f: Flow, now: int) -> None:
        f.started_ns = now
        self.live[f.id] = f

    def flow_sent(self, f: Flow, now: int) -> None:
        """Every byte of ``f`` has been handed to its sender's NIC once."""
        f.sent_ns = now

    def flow_delivered(self, f: Flow, now: int) -> None:
        f.end_ns = now
        self.live.pop(f.id, None)
        if not f.finite:
            return
        self.finite_left -= 1
        if self.finite_left == 0 and not self.has_unlimited:
            self.finished = True
            self.workload_done_ns = now
            if self.in_flight == 0:
                self.loop.stop()

    def packet_gone(self, pkt, dropped: bool) -> None:
        """A packet left the network: delivered to a host, or dropped at a switch."""
        self.in_flight -= 1
        if dropped:
            self.drops += 1
            self.drop_bytes += pkt.size
        if self.finished and self.in_flight == 0:
            self.loop.stop()

    def run(self, progress=None) -> int:
        """Run to the stop condition; returns simulated end time (ns)."""
        stop = self.spec.stop
        until = round((stop.time_us if stop.time_us is not None else stop.max_time_us) * 1000)
        if self.sampler is not None:
            self.sampler.start()
        if self.watch is not None:
            self.watch.start()
        self.loop.run(until, progress=progress)
        if stop.time_us is not None:
            self.loop.now = max(self.loop.now, until)
        self.idle = not self.loop.pending() and not self.finished
        if self.watch is not None and self.watch.deadlock is not None:
            d = self.watch.deadlock
            log.warning("PFC deadlock at %d ns: %s paused each other since %d ns; stopped "
                        "(switch.pfc.watchdog_us breaks deadlocks by dropping)", d["t_ns"],
                        " -> ".join(d["links"]), d["paused_since_ns"])
        elif stop.time_us is None and self.idle:
            left = sum(1 for f in self.flows if f.finite and f.end_ns is None)
            log.warning("nothing left to simulate at %d ns but %d flows are unfinished (lost "
                        "packets are not retransmitted by scheme %s)", self.loop.now, left,
                        self.spec.scheme)
        elif stop.time_us is None and not self.finished:
            left = sum(1 for f in self.flows if f.finite and f.end_ns is None)
            log.warning("stopped at stop.max_time_us = %g us with %d of %d flows unfinished",
                        stop.max_time_us, left, len(self.flows))
        return self.loop.now
