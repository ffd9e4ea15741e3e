"""GSE in the simulator: where its messages go, and the GSP in the leaf.

The GSP itself (VOQs, requests, grants, containers, reordering, the egress scheduler) is
:mod:`fabriclab.nic.gsp`'s, the same code the emulator's agents run; GSOS is
:mod:`fabriclab.cc_algorithms.gsos`'s, the same code the os-ken controller runs.  This
module moves their messages: in ``central`` mode a REQUEST reaches GSOS, and a GRANT the
GSP, over the control network after ``gse.control_latency_ns`` (not through the fabric); in
``egress`` mode they are frames through the fabric.  Both are counted as overhead.

``placement: leaf`` puts the GSP in the leaf switch (:class:`GseLeaf`): the NICs stay plain,
data from a leaf's hosts waits in the leaf's VOQs -- in its buffer, so PFC pauses a host
whose VOQs fill -- until grants let it go, as containers sprayed over the uplinks.
"""

from __future__ import annotations

from ..cc_algorithms.gse import GseParams
from ..cc_algorithms.gsos import Gsos
from ..nic.gsp import NicGsp
from ..nic.leaf import LeafGsp
from ..wire.frames import new_tag
from .fabric import Switch
from .host import SimFrames


class GsosDriver:
    """Drives one :class:`~fabriclab.cc_algorithms.gsos.Gsos` from the event loop: each of
    its timers is one loop event, on which the grant it gives is handed to
    ``deliver(grant)``.  One event per timer, rather than one at ``next_time()`` for all
    the timers due then: grants then interleave with the loop's other events of the same
    ns in the order their timers were armed."""

    def __init__(self, loop, gsos: Gsos, deliver):
        self.loop, self.gsos, self.deliver = loop, gsos, deliver

    def request(self, src, dst, sizes: list[int]) -> None:
        """A REQUEST from GSP ``src`` reaches GSOS now."""
        self.gsos.request(self.loop.now, src, dst, sizes)
        self._schedule()

    def request_event(self, arg) -> None:
        """:meth:`request` as a loop event: ``arg`` is ``(src, dst, sizes)``."""
        self.request(*arg)

    def _schedule(self) -> None:
        loop = self.loop
        for t in self.gsos.take_wakeups():
            loop.push(t, self._wake, None)

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
        self.gsps: dict = {}  # GSP id -> Gsp
        frame = self.mtu + self.header
        self.gsos = GsosDriver(self.loop, Gsos(net.topo.host_rate_bps, self.mtu, self.header,
                                               params.grant_overcommit, self._transit,
                                               wakeups=True,
                                               reach=lambda s, d: net.topo.reach_ns(s, d, frame)),
                               self._gsos_deliver)
        self.gsos_control_bytes = 0  # GSOS's GRANT messages
        self.switch_control_sent = 0  # leaf placement: REQUEST/GRANT frames between leaves
        self.switch_control_received = 0

    # -- paths ---------------------------------------------------------------------------
    def paths(self, src: str, dst: str) -> list[tuple]:
        """Every equal-cost path from src to dst, as routes of Port objects."""
        key = (src, dst)
        p = self._paths.get(key)
        if p is None:
            ports = self.net.ports
            p = [tuple(ports[(x.node, x.port)] for x in path)
                 for path in self.net.topo.container_paths(src, dst)]
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
                p = [route[1:] for route in self.paths(self.host_under(leaf), dst)]
            self._paths[key] = p
        return p

    def leaf_route_back(self, from_leaf: str, to_leaf: str) -> tuple:
        """A route from one leaf to another (for GRANT frames), excluding host hops."""
        key = (from_leaf, to_leaf)
        route = self._back.get(key)
        if route is None:
            a, b = self.host_under(from_leaf), self.host_under(to_leaf)
            route = self._back[key] = self.paths(a, b)[0][1:-1] if from_leaf != to_leaf else ()
        return route

    def _transit(self, src: str, dst: str) -> list[list]:
        """Per path from GSP ``src`` (a host or a leaf) to host ``dst``, its
        switch-to-switch ports and their rates (what GSOS tracks)."""
        routes = (self.leaf_paths(src, dst) if src in self.net.switches
                  else self.paths(src, dst))
        return [[(p, p.rate) for p in route if p.role in ("up", "down")] for route in routes]

    # -- faults --------------------------------------------------------------------------
    def links_down(self, dead_ports: set) -> None:
        """Switches detected these ports' links dead: GSOS grants no path across them, the
        GSPs spray no container over one."""
        self.gsos.gsos.links_down(dead_ports)
        for g in self.gsps.values():
            g.paths_down(lambda dst, g=g: frozenset(
                i for i, route in enumerate(g.paths(dst)) if any(p in dead_ports for p in route)))

    def link_rate(self, port, rate_bps: int) -> None:
        self.gsos.gsos.link_rate(port, rate_bps)

    # -- GSPs ----------------------------------------------------------------------------
    def _gsp_kw(self, gsp_id, paths, port_rate_of) -> dict:
        topo, frame, ctl = self.net.topo, self.mtu + self.header, self.header

        def reach(src):  # egress mode: the GRANT to src, then src's data back to this port
            back = topo.reach_ns(gsp_id, src, ctl, whole=True) if src != gsp_id else 0.0
            return back + topo.reach_ns(src, self.host_under(gsp_id), frame)
        return dict(gsp_id=gsp_id, params=self.params, frames=SimFrames, timers=self.loop,
                    paths=paths, port_rate_of=port_rate_of, mtu=self.mtu, header=self.header,
                    control_bytes=self.header, ctrl_prio=self.net.cfg.ctrl_prio,
                    to_gsos=self.request_from(gsp_id), reach=reach)

    def host_under(self, node: str) -> str:
        """``node`` if it is a host, else the first host under leaf ``node`` (the paths of a
        leaf's GSP are its hosts' paths without their first hop)."""
        topo = self.net.topo
        if topo.nodes[node].is_host:
            return node
        return next(h for h in topo.hosts if topo.tor_of(h) == node)

    def attach_nic(self, host) -> NicGsp:
        """The GSP in ``host``'s NIC (placement nic)."""
        name = host.name
        rate = host.port.rate
        g = NicGsp(host.nic, lambda h: h, **self._gsp_kw(
            name, lambda peer: self.paths(name, peer), lambda _dst: rate))
        self.gsps[name] = g
        return g

    # -- GSOS (central mode): over the control network -----------------------------------
    def request_from(self, src):
        """How GSP ``src`` sends a REQUEST to GSOS: it arrives after the control latency."""
        def send(now: int, dst, sizes: list[int]) -> None:
            self.loop.push(now + self.params.control_latency_ns, self.gsos.request_event,
                           (src, dst, sizes))
        return send

    def _gsos_deliver(self, g) -> None:
        loop = self.loop
        self.gsos_control_bytes += self.header  # the GRANT message back to the GSP
        loop.push(loop.now + self.params.control_latency_ns, self._grant_arrives, g)

    def _grant_arrives(self, g) -> None:
        self.gsps[g.src_gsp].on_grant(self.loop.now, g.dst_port, g.nbytes, g.path, g.idle)


class GseLeaf(Switch):
    """A leaf switch with a GSP (``gse.placement: leaf``; NICs are plain and send at line
    rate).  Data from its hosts waits in a VOQ per destination port until grants let it go,
    as containers sprayed over the uplinks.  Containers from other leaves are reordered per
    source leaf before they go down to the host."""

    def __init__(self, net, name, cfg, ctx: GseContext):
        super().__init__(net, name, cfg)
        self.ctx = ctx
        self.host_port: dict[str, object] = {}  # local host -> the port facing it
        self.gsp = _LeafGsp(self, forward=self._forward, **ctx._gsp_kw(
            name, lambda dst: ctx.leaf_paths(name, dst),
            lambda dst: self.host_port[dst].rate))
        ctx.gsps[name] = self.gsp

    def receive(self, pkt) -> None:
        kind = pkt.kind
        if kind == "gse_request" or kind == "gse_grant":
            if pkt.hop < len(pkt.route):
                return super().receive(pkt)  # passing through
            self.ctx.switch_control_received += pkt.size
            self.net.packet_gone(pkt, dropped=False)
            return self.gsp.on_control(self.net.loop.now, pkt)
        if kind != "data":
            return super().receive(pkt)
        if pkt.tag is None and pkt.in_port.role == "host":  # from a local host: into a VOQ
            out = pkt.route[pkt.hop]  # for accounting only: the VOQ is not a port queue
            if not self.admit(pkt, out):
                return
            self.gsp.enqueue(self.net.loop.now, pkt.flow.dst, pkt, pkt.payload)
            return
        if pkt.tag is not None and pkt.flow.dst in self.host_port:  # at the egress GSP
            out = self.host_port[pkt.flow.dst]
            if not self.admit(pkt, out):
                return
            for p in self.gsp.reorder_accept(self.net.loop.now, pkt, pkt, pkt.flow.dst):
                self.put(p, out)
            return
        super().receive(pkt)

    def _forward(self, pkt, dst: str, tag: tuple, now: int) -> None:
        """A packet leaves its VOQ as part of a container, on the container's path."""
        paths = self.ctx.leaf_paths(self.name, dst)
        route = paths[tag[4]]
        pkt.tag = new_tag(tag)
        pkt.route = route
        pkt.hop = 1
        self.put(pkt, route[0])

    def send_control(self, pkt, to: str) -> None:
        """A REQUEST or GRANT from this leaf to leaf ``to`` (itself when the port is local)."""
        net = self.net
        net.in_flight += 1
        self.ctx.switch_control_sent += pkt.size
        if to == self.name:
            pkt.hop = len(pkt.route)
            net.loop.push(net.loop.now, self.receive, pkt)
            return
        pkt.hop = 1
        self.put(pkt, pkt.route[0])


class _LeafGsp(LeafGsp):
    """The shared :class:`~fabriclab.nic.leaf.LeafGsp` in a :class:`GseLeaf`: its REQUESTs
    and GRANTs (egress mode) go leaf to leaf."""

    def __init__(self, leaf: GseLeaf, **kw):
        super().__init__(**kw)
        self.leaf = leaf

    def emit(self, frame, now: int) -> None:
        ctx, topo = self.leaf.ctx, self.leaf.net.topo
        if frame.kind == "gse_request":
            frame.route = ctx.leaf_paths(self.id, frame.dst_port)[0][:-1]  # to dst's leaf
            to = topo.tor_of(frame.dst_port)
        else:
            to = frame.src_gsp
            frame.route = ctx.leaf_route_back(self.id, to)
        self.leaf.send_control(frame, to)
