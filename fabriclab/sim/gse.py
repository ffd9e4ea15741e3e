"""GSE in the simulator: the GSP in the NIC (``gse.placement: nic``), the grant schedulers
(GSOS in ``central`` mode, the egress GSP in ``egress`` mode), container spraying and edge
reordering.  The decisions are the sans-IO objects of ``fabriclab.cc_algorithms.gse``; this
module only moves their messages and packets around.

Messages: a REQUEST (GSP -> scheduler) asks for ``n`` grants towards one destination port;
a GRANT (scheduler -> GSP) gives one grant's credit, and in central mode the path its
container takes.  In ``central`` mode they travel the control network to GSOS with a one-way
latency of ``gse.control_latency_ns`` (not through the fabric); in ``egress`` mode they are
control frames through the fabric to and from the destination's NIC.  Both are counted as
overhead.
"""

from __future__ import annotations

from collections import defaultdict, deque
from heapq import heappush

from ..cc_algorithms.gse import GseParams, ReorderBuffer, Voq
from ..cc_algorithms.gsos import Grant, Gsos
from .fabric import DATA, Host, Packet, Switch

GSE_REQ = "gse_req"
GSE_GRANT = "gse_grant"


class GsosDriver:
    """Drives one :class:`~fabriclab.cc_algorithms.gsos.Gsos` from the event loop: each of
    its timers is one loop event, on which the grant it gives is handed to
    ``deliver(grant)``.  One event per timer, rather than one at ``next_time()`` for all
    the timers due then: grants then interleave with the loop's other events of the same
    ns in the order their timers were armed, and a run's results do not depend on how
    many timers fall in one ns."""

    def __init__(self, loop, gsos: Gsos, deliver):
        self.loop, self.gsos, self.deliver = loop, gsos, deliver

    def request(self, src, dst, sizes: list[int]) -> None:
        self.gsos.request(self.loop.now, src, dst, sizes)
        self._schedule()

    def _schedule(self) -> None:
        loop = self.loop
        for t in self.gsos.take_wakeups():
            heappush(loop.heap, (t, next(loop.seq), self._wake, None))

    def _wake(self, _) -> None:
        for g in self.gsos.due(self.loop.now, most=1):
            self.deliver(g)
        self._schedule()


class GseContext:
    """What the GSPs of one network share: parameters, paths, GSOS, counters."""

    def __init__(self, net, params: GseParams):
        self.net = net
        self.loop = net.loop
        self.params = params
        sw = net.spec.switch
        self.mtu, self.header = sw.mtu_bytes, sw.header_bytes
        self._paths: dict = {}
        self._back: dict = {}  # (leaf, leaf) -> route of the GRANT frames between them
        self.reorder_timeout = params.reorder_timeout_ns
        self.central = params.scheduler == "central"
        self.gsos = (GsosDriver(self.loop, Gsos(net.topo.host_rate_bps, self.mtu, self.header,
                                                params.grant_overcommit, self._transit,
                                                wakeups=True),
                                self._gsos_deliver) if self.central else None)
        # counters
        self.requests = 0
        self.grants = 0
        self.control_bytes = 0
        self.grant_latency: list[int] = []
        self.switch_control_sent = 0  # leaf placement: REQUEST/GRANT frames between leaves
        self.switch_control_received = 0
        self.reorder: dict = {}  # dst -> {src: ReorderBuffer}

    def paths(self, src: str, dst: str) -> list[tuple]:
        """Every equal-cost path from src to dst, as routes of Port objects."""
        key = (src, dst)
        p = self._paths.get(key)
        if p is None:
            ports = self.net.ports
            p = [tuple(ports[(x.node, x.port)] for x in path)
                 for path in self.net.topo.all_paths(src, dst)]
            self._paths[key] = p
        return p

    def leaf_paths(self, leaf: str, dst: str) -> list[tuple]:
        """Every equal-cost path from a leaf (its GSP) to host ``dst``, as routes."""
        key = (leaf, dst)
        p = self._paths.get(key)
        if p is None:
            topo = self.net.topo
            if topo.tor_of(dst) == leaf:
                p = [(self.net.ports[(leaf, topo.peer(dst, 0).port)],)]
            else:
                h = next(x for x in topo.hosts if topo.tor_of(x) == leaf)
                p = [route[1:] for route in self.paths(h, dst)]
            self._paths[key] = p
        return p

    def leaf_route_back(self, from_leaf: str, to_leaf: str) -> tuple:
        """A route from one leaf to another (for GRANT frames), excluding host hops."""
        key = (from_leaf, to_leaf)
        route = self._back.get(key)
        if route is None:
            topo = self.net.topo
            a = next(x for x in topo.hosts if topo.tor_of(x) == from_leaf)
            b = next(x for x in topo.hosts if topo.tor_of(x) == to_leaf)
            route = self._back[key] = self.paths(a, b)[0][1:-1] if from_leaf != to_leaf else ()
        return route

    def gsp(self, name: str):
        return self.net.hosts.get(name) or self.net.switches[name]

    def _transit(self, src: str, dst: str) -> list[list]:
        """Per path from GSP ``src`` (a host or a leaf) to host ``dst``, its
        switch-to-switch ports and their rates (what GSOS tracks)."""
        routes = (self.leaf_paths(src, dst) if src in self.net.switches
                  else self.paths(src, dst))
        return [[(p, p.rate) for p in route if p.role in ("up", "down")] for route in routes]

    def egress_gsos(self, port_rate, deliver) -> GsosDriver:
        """Egress mode: the scheduler of one GSP's own ports (no transit tracking)."""
        return GsosDriver(self.loop, Gsos(port_rate, self.mtu, self.header,
                                          self.params.grant_overcommit, wakeups=True), deliver)

    def gsos_request(self, src: str, dst: str, sizes: list[int]) -> None:
        """GSOS receives a REQUEST (after the control latency)."""
        self.gsos.request(src, dst, sizes)

    def _gsos_deliver(self, g: Grant) -> None:
        loop = self.loop
        self.control_bytes += self.header  # the GRANT message back to the GSP
        heappush(loop.heap, (loop.now + self.params.control_latency_ns, next(loop.seq),
                             self.gsp(g.src_gsp).on_grant, (g.dst_port, g.nbytes, g.path)))


class Gsp:
    """What a GSP does wherever it sits (NIC or leaf): its VOQs, its requests, the grants it
    receives, and the reorder buffers of its egress side.  Subclasses say how much data a
    VOQ holds (``_pending``), how many paths it sprays over (``_n_paths``), how a REQUEST
    frame leaves in egress mode (``_request_frame``) and what a grant lets go
    (``_granted``)."""

    def _gsp_setup(self, ctx: GseContext, clock) -> None:
        self.ctx = ctx
        self._clock = clock  # the event loop (hosts and switches name it differently)
        self.voqs: dict[str, Voq] = {}
        self.req_times: dict[str, deque] = defaultdict(deque)
        self.reorder: dict[str, ReorderBuffer] = {}
        self.egress: GsosDriver | None = None  # egress mode: the scheduler of its own ports

    def _voq(self, dst: str) -> Voq:
        v = self.voqs.get(dst)
        if v is None:
            v = self.voqs[dst] = Voq(self.ctx.params, self._n_paths(dst))
        return v

    def _ask(self, dst: str) -> None:
        """Send the requests that keep enough credit coming for ``dst``'s VOQ."""
        sizes = self._voq(dst).requests_to_send(self._pending(dst))
        if not sizes:
            return
        ctx, loop = self.ctx, self._clock
        ctx.requests += len(sizes)
        self.req_times[dst].extend([loop.now] * len(sizes))
        if ctx.central:
            ctx.control_bytes += ctx.header  # one REQUEST message carries them all
            heappush(loop.heap, (loop.now + ctx.params.control_latency_ns, next(loop.seq),
                                 self._gsos_request, (dst, sizes)))
        else:
            self._request_frame(dst, sizes)

    def _gsos_request(self, arg) -> None:
        dst, sizes = arg
        self.ctx.gsos_request(self.name, dst, sizes)

    def on_grant(self, arg) -> None:
        """A grant of ``nbytes`` of credit towards ``dst`` (from GSOS, with its path)."""
        dst, nbytes, path = arg
        ctx = self.ctx
        ctx.grants += 1
        times = self.req_times[dst]
        if times:
            ctx.grant_latency.append(self._clock.now - times.popleft())
        self._voq(dst).on_grant(nbytes, path)
        self._granted(dst)

    def _reorder(self, src: str) -> ReorderBuffer:
        rb = self.reorder.get(src)
        if rb is None:
            rb = self.reorder[src] = ReorderBuffer()
        return rb

    def _egress_request(self, src: str, dst: str, sizes: list[int]) -> None:
        """Egress mode: a REQUEST for one of this GSP's ports reached it."""
        if self.egress is None:
            self.egress = self.ctx.egress_gsos(self._port_rate, self._send_grant)
        self.egress.request(src, dst, sizes)


class GseNic(Gsp, Host):
    """A NIC with a GSP: a VOQ per destination port, sends only against grants, cuts the
    data into containers sprayed over every path, and reorders what it receives."""

    def __init__(self, net, name, cfg, ctx: GseContext):
        super().__init__(net, name, cfg)
        self._gsp_setup(ctx, self.loop)
        self.voq_flows: dict[str, list] = defaultdict(list)
        self.rr_voq = 0
        self.flow_rr: dict[str, int] = defaultdict(int)
        self.handlers[GSE_REQ] = self._on_request
        self.handlers[GSE_GRANT] = self._on_grant_frame
        self.stale_checks: set[str] = set()

    # -- sender side (GSP) ---------------------------------------------------------------
    def _n_paths(self, dst: str) -> int:
        return len(self.ctx.paths(self.name, dst))

    def _activate(self, f) -> None:
        if not f.active:
            flows = self.voq_flows[f.dst]
            if f not in flows:
                flows.append(f)
        super()._activate(f)
        self._ask(f.dst)

    def _pending(self, dst: str) -> int:
        return sum(f.size - f.snd_nxt for f in self.voq_flows[dst] if f.active)

    def _request_frame(self, dst: str, sizes: list[int]) -> None:
        ctx, loop = self.ctx, self.loop
        ctx.control_bytes += self.hdr
        pkt = Packet(GSE_REQ, None, 0, 0, self.hdr, self.ctrl_prio, ctx.paths(self.name, dst)[0])
        pkt.meta = (self.name, dst, sizes)
        self.port.ctrl.append(pkt)
        # Not port.kick() here: _ask runs inside the port's own _send (via next_data), and a
        # nested _send would put two frames on the wire at once.
        heappush(loop.heap, (loop.now, next(loop.seq), self._kick, None))

    def _kick(self, _) -> None:
        self.port.kick()

    def _granted(self, dst: str) -> None:
        self._ask(dst)
        self.port.kick()

    def next_data(self, now: int):
        """Round-robin over the VOQs that hold credit, then over their flows."""
        dsts = [d for d, v in self.voqs.items() if v.credit > 0 and self.voq_flows[d]]
        n = len(dsts)
        for k in range(n):
            dst = dsts[(self.rr_voq + k) % n]
            flows = self.voq_flows[dst]
            start = self.flow_rr[dst]
            for i in range(len(flows)):
                f = flows[(start + i) % len(flows)]
                if f.active and f.snd_nxt < f.size:
                    self.rr_voq = (self.rr_voq + k + 1) % n
                    self.flow_rr[dst] = (start + i + 1) % len(flows)
                    return self._container_packet(f, dst, now)
        return None

    def _container_packet(self, f, dst: str, now: int) -> Packet:
        pkt = self._data_packet(f, now, self.active.index(f))
        voq = self.voqs[dst]
        if f.snd_nxt >= f.size:
            self.voq_flows[dst].remove(f)
        seq, path, index, last = voq.tag(pkt.payload, not self.voq_flows[dst])
        pkt.route = self.ctx.paths(self.name, dst)[path]
        pkt.meta = (self.name, seq, index, last)
        if last:
            self._ask(dst)
        return pkt

    # -- receiver side (egress GSP) ------------------------------------------------------
    def _on_data(self, pkt: Packet) -> None:
        tag = pkt.meta
        if tag is None:
            return super()._on_data(pkt)
        src, seq, index, last = tag
        rb = self._reorder(src)
        for p in rb.accept(self.loop.now, seq, index, last, pkt, pkt.size):
            Host._on_data(self, p)
        if rb.held and src not in self.stale_checks:
            self._check_stale(src)

    def _check_stale(self, src: str) -> None:
        """While packets wait in ``src``'s reorder buffer, look again every timeout."""
        loop, rb = self.loop, self.reorder[src]
        for p in rb.release_stale(loop.now, self.ctx.reorder_timeout):
            Host._on_data(self, p)
        if rb.held:
            self.stale_checks.add(src)
            heappush(loop.heap, (loop.now + self.ctx.reorder_timeout, next(loop.seq),
                                 self._stale_event, src))
        else:
            self.stale_checks.discard(src)

    def _stale_event(self, src: str) -> None:
        self.stale_checks.discard(src)
        self._check_stale(src)

    def _on_request(self, pkt: Packet) -> None:
        self._egress_request(*pkt.meta)

    def _port_rate(self, dst: str) -> int:
        return self.port.rate

    def _send_grant(self, g: Grant) -> None:
        pkt = Packet(GSE_GRANT, None, 0, 0, self.hdr, self.ctrl_prio,
                     self.ctx.paths(self.name, g.src_gsp)[0])
        pkt.meta = (g.dst_port, g.nbytes, g.path)
        self.ctx.control_bytes += self.hdr
        self.port.ctrl.append(pkt)
        self.port.kick()

    def _on_grant_frame(self, pkt: Packet) -> None:
        self.on_grant(pkt.meta)


class GseLeaf(Gsp, Switch):
    """A leaf switch with a GSP (``gse.placement: leaf``; NICs are plain and send at line
    rate).  Data from its hosts waits in a VOQ per destination port -- in the switch buffer,
    so PFC pauses a host whose VOQs fill -- until grants let it go, as containers sprayed
    over the uplinks.  Containers from other leaves are reordered per source leaf before
    they go down to the host."""

    def __init__(self, net, name, cfg, ctx: GseContext):
        super().__init__(net, name, cfg)
        self._gsp_setup(ctx, net.loop)
        self.voq_pkts: dict[str, deque] = defaultdict(deque)
        self.voq_bytes: dict[str, int] = defaultdict(int)
        self.host_port: dict[str, object] = {}  # local host -> the port facing it

    def receive(self, pkt: Packet) -> None:
        kind = pkt.kind
        if kind is GSE_REQ or kind is GSE_GRANT:
            if pkt.hop < len(pkt.route):
                return super().receive(pkt)  # passing through
            self.ctx.switch_control_received += pkt.size
            self.net.packet_gone(pkt, dropped=False)
            return self._on_request(pkt) if kind is GSE_REQ else self.on_grant(pkt.meta)
        if kind is not DATA:
            return super().receive(pkt)
        if pkt.meta is None and pkt.in_port.role == "host":  # from a local host: into a VOQ
            dst = pkt.flow.dst
            out = pkt.route[pkt.hop]  # for accounting only: the VOQ is not a port queue
            if not self.admit(pkt, out):
                return
            self.voq_pkts[dst].append(pkt)
            self.voq_bytes[dst] += pkt.payload
            self._ask(dst)
            self._release(dst)
            return
        if pkt.meta is not None and pkt.flow.dst in self.host_port:  # at the egress GSP
            out = self.host_port[pkt.flow.dst]
            if not self.admit(pkt, out):
                return
            src, seq, index, last = pkt.meta
            for p in self._reorder(src).accept(self.net.loop.now, seq, index, last, pkt,
                                               pkt.size):
                self.put(p, out)
            return
        super().receive(pkt)

    # -- GSP sender side ------------------------------------------------------------------
    def _n_paths(self, dst: str) -> int:
        return len(self.ctx.leaf_paths(self.name, dst))

    def _pending(self, dst: str) -> int:
        return self.voq_bytes[dst]

    def _request_frame(self, dst: str, sizes: list[int]) -> None:
        ctx = self.ctx
        route = ctx.leaf_paths(self.name, dst)[0][:-1]  # up to the destination's leaf
        pkt = Packet(GSE_REQ, None, 0, 0, ctx.header, self.net.cfg.ctrl_prio, route)
        pkt.meta = (self.name, dst, sizes)
        ctx.control_bytes += ctx.header
        self._send_control(pkt, self.net.topo.tor_of(dst))

    def _send_control(self, pkt: Packet, to: str) -> None:
        """A REQUEST or GRANT from this leaf to leaf ``to`` (itself when the port is local)."""
        self.net.in_flight += 1
        self.ctx.switch_control_sent += pkt.size
        if to == self.name:
            pkt.hop = len(pkt.route)
            heappush(self.net.loop.heap, (self.net.loop.now, next(self.net.loop.seq),
                                          self.receive, pkt))
            return
        pkt.hop = 1
        self.put(pkt, pkt.route[0])

    def _granted(self, dst: str) -> None:
        self._release(dst)
        self._ask(dst)

    def _release(self, dst: str) -> None:
        """Move what the credit allows from the VOQ to the container's path."""
        voq, q = self._voq(dst), self.voq_pkts[dst]
        paths = self.ctx.leaf_paths(self.name, dst)
        while q and voq.credit > 0:
            pkt = q.popleft()
            self.voq_bytes[dst] -= pkt.payload
            seq, path, index, last = voq.tag(pkt.payload, not q)
            pkt.meta = (self.name, seq, index, last)
            pkt.route = paths[path]
            pkt.hop = 1
            self.put(pkt, paths[path][0])
            if last:
                self._ask(dst)

    # -- egress GSP: the scheduler of its hosts' ports (egress mode) ----------------------
    def _on_request(self, pkt: Packet) -> None:
        self._egress_request(*pkt.meta)

    def _port_rate(self, dst: str) -> int:
        return self.host_port[dst].rate

    def _send_grant(self, g: Grant) -> None:
        route = self.ctx.leaf_route_back(self.name, g.src_gsp)
        pkt = Packet(GSE_GRANT, None, 0, 0, self.ctx.header, self.net.cfg.ctrl_prio, route)
        pkt.meta = (g.dst_port, g.nbytes, g.path)
        self.ctx.control_bytes += self.ctx.header
        self._send_control(pkt, g.src_gsp)


def gse_summary(ctx: GseContext) -> dict:
    """What GSE costs: grant latency, request/grant overhead, reorder depth and delay."""
    from ..metrics.stats import percentile
    gsps = list(ctx.net.hosts.values()) + list(ctx.net.switches.values())
    bufs = [rb for g in gsps for rb in getattr(g, "reorder", {}).values()]
    delays = [d for rb in bufs for d in rb.delays]
    data = sum(h.rx_goodput for h in ctx.net.hosts.values())
    return {
        "placement": ctx.params.placement, "scheduler": ctx.params.scheduler,
        "container_bytes": ctx.params.container_bytes, "grant_bytes": ctx.params.grant_bytes,
        "requests": ctx.requests, "grants": ctx.grants,
        "control_bytes": ctx.control_bytes,
        "control_overhead": ctx.control_bytes / data if data else None,
        "grant_latency_p50_ns": percentile(ctx.grant_latency, 50),
        "grant_latency_p99_ns": percentile(ctx.grant_latency, 99),
        "reorder_max_bytes": max((rb.max_held_bytes for rb in bufs), default=0),
        "reorder_packets_delayed": len(delays),
        "reorder_delay_p50_ns": percentile(delays, 50),
        "reorder_delay_p99_ns": percentile(delays, 99),
    }
