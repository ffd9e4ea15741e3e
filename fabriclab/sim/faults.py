"""Faults in the simulator: links that fail, come back or degrade, random loss, routing
around dead links, the PFC watchdog, and finding a PFC deadlock.

What happens when, and how switches route around a dead link, is
:mod:`fabriclab.faults`' (the same model as the emulator's); this module carries it out on
the event loop:

* **A link goes down**: frames that arrive over it from then on -- in flight when it
  died, or sent onto it afterwards -- are lost (``dead_link``, counted at the port that
  sent them).  PFC state across it is forgotten (a dead MAC pauses nothing), so its queues
  drain into the dead link until switches detect it.
* **Detection** (``routing.detect_us`` later): the switches that know route around it
  (:class:`fabriclab.faults.Routes`).  Each switch checks a frame's next hop against the
  next hops it may use and, if it may not, rehashes the frame over those left, or bounces
  it, or drops it (``no_path``); with ``routing.reconverge: fabric`` the NICs' flows also
  take their new paths from the first hop, and GSE's scheduler stops granting paths that
  cross the dead link.
* **Degradation**: the link's two ports serialise at the fraction of their rate; GSE's
  scheduler reserves the link for as long as its bytes take at that rate.
* **Random loss**: a frame arriving over a link with loss probability p is lost with
  probability p (``random_loss``); PFC frames are not (they are loop events here).
* **PFC watchdog** (``switch.pfc.watchdog_us``): a switch queue paused without a break
  that long is disabled for ``watchdog_restore_us``: what it holds and what arrives for
  it is dropped (``watchdog``; SONiC's drop action), so the buffers it held up drain.
* **Deadlock** (``switch.pfc.deadlock_detect_us``): a cycle of switch ports, each paused
  by the next and holding frames that wait for the next, none of which has sent for that
  long: the run stops and reports the cycle.

Switches and hosts get these checks by subclassing (:func:`faulty`) only in runs that have
faults, loss or a watchdog, so a healthy run executes exactly the code it did before.
"""

from __future__ import annotations

import random

from ..faults import LOSS_CAUSES, MAX_BOUNCE_HOPS, FaultPlan, Routes, flow_key
from ..metrics.assemble import FaultRecord
from ..topologies import switch_seed
from .host import Host

CAUSE = {c: i for i, c in enumerate(LOSS_CAUSES)}
_FRAME_KINDS = ("data", "ack", "nack", "cnp")


class FaultySwitch:
    """Mixed into a switch class in runs with faults: lost frames, rerouting, watchdog."""

    fx: "SimFaults"

    def receive(self, pkt) -> None:
        fx = self.fx
        inp = pkt.in_port
        if inp.down:
            return fx.lose(inp.peer, pkt, "dead_link")
        if inp.loss and fx.rand() < inp.loss:
            return fx.lose(inp.peer, pkt, "random_loss")
        if fx.rerouting and not fx.route_ok(self, pkt):
            return
        super().receive(pkt)

    def admit(self, pkt, out) -> bool:
        if out.wd_until > self.net.loop.now:
            self.fx.lose(out, pkt, "watchdog")
            return False
        return super().admit(pkt, out)

    def _send_pfc(self, inp, on: bool) -> None:
        if inp.down:  # nothing crosses a dead link; remember the state only
            inp.pause_sent = on
            return
        super()._send_pfc(inp, on)


class FaultyHost(Host):
    """A host whose link may be down or lossy."""

    fx: "SimFaults"

    def receive(self, pkt) -> None:
        inp = pkt.in_port
        if inp.down:
            return self.fx.lose(inp.peer, pkt, "dead_link")
        if inp.loss and self.fx.rand() < inp.loss:
            return self.fx.lose(inp.peer, pkt, "random_loss")
        super().receive(pkt)


_FAULTY: dict = {}


def faulty(cls):
    """``cls`` (a switch class) with :class:`FaultySwitch`'s checks in front."""
    sub = _FAULTY.get(cls)
    if sub is None:
        sub = _FAULTY[cls] = type(f"Faulty{cls.__name__}", (FaultySwitch, cls), {})
    return sub


def needed(spec, plan: FaultPlan) -> bool:
    """Whether a run needs the fault-aware switches and hosts."""
    return bool(plan) or (spec.switch.pfc.enabled and spec.switch.pfc.watchdog_us is not None)


class SimFaults:
    """The faults of one simulated network: applies the plan's events, loses frames,
    reroutes, and keeps what the results report."""

    def __init__(self, net, plan: FaultPlan):
        self.net = net
        self.plan = plan
        self.loop = net.loop
        self.routes = Routes(net.topo, plan.reconverge)
        self.rerouting = False
        self.rand = random.Random(f"{net.spec.seed}/loss").random
        self.records = [FaultRecord(i, f.kind, f.target, round(f.at_us * 1000))
                        for i, f in enumerate(net.spec.faults)]
        self.link_lost: dict = {}  # link -> [frames, bytes, last time] lost on it while dead
        self._detour: dict = {}
        self._seeds = None

    # -- set-up (after the network is built) ------------------------------------------------
    def attach(self) -> None:
        net = self.net
        self.link_ports = {}
        for k in net.topo.links:
            self.link_ports[k] = (net.ports[(k.a, k.a_port)], net.ports[(k.b, k.b_port)])
        self.port_link = {p: k for k, ps in self.link_ports.items() for p in ps}
        for p in net.ports.values():
            p.lost = [0] * len(LOSS_CAUSES)
        for k, prob in self.plan.loss.items():
            for p in self.link_ports[k]:
                p.loss = prob
        for e in self.plan.events:
            self.loop.push(e.t_ns, self._apply, e)

    # -- losing frames -------------------------------------------------------------------
    def lose(self, port, pkt, cause: str, sent: bool = True) -> None:
        """``pkt`` is lost for ``cause``; counted at ``port`` (the port that sent it onto a
        link, or the switch port it was to leave by)."""
        port.drops += 1
        port.drop_bytes += pkt.size
        port.lost[CAUSE[cause]] += 1
        if cause == "dead_link":
            k = self.port_link[port]
            rec = self.link_lost.setdefault(k, [0, 0, 0])
            rec[0] += 1
            rec[1] += pkt.size
            if sent:
                # when it started onto the link (its last bit left one serialisation later)
                rec[2] = self.loop.now - port.delay - pkt.size * 8_000_000_000 // port.rate
        reasons = self.net.drop_reasons
        reasons[cause] = reasons.get(cause, 0) + 1
        self.net.packet_gone(pkt, dropped=True)

    # -- routing -------------------------------------------------------------------------
    def route_ok(self, sw, pkt) -> bool:
        """Whether ``sw`` may forward ``pkt`` as its route says; if not, give it a new way
        on (True) or lose it (False)."""
        kind = pkt.kind
        if kind not in _FRAME_KINDS:
            return True  # GSE's REQUEST/GRANT frames follow their route
        flow = pkt.flow
        dst = flow.dst if kind == "data" else flow.src
        if sw.spray_rng is not None and pkt.prio == sw.data_prio:
            if sw.next_hops[dst]:
                return True
            self.lose(pkt.in_port, pkt, "no_path")
            return False
        route, hop = pkt.route, pkt.hop
        if hop < len(route):
            out = route[hop]
            if out.index in self.routes.next_hops(sw.name, dst):
                return True
        else:
            out = pkt.in_port
        if hop > MAX_BOUNCE_HOPS:
            self.lose(out, pkt, "no_path")
            return False
        key = flow_key(flow.id, kind != "data")
        suffix = self.detour(sw.name, dst, key, pkt.in_port.peer.node.name)
        if suffix is None:
            self.lose(out, pkt, "no_path")
            return False
        pkt.route = route[:hop] + suffix
        return True

    def detour(self, node: str, dst: str, key: int, came_from: str):
        """The rest of a route from ``node`` to host ``dst`` over what is left (a bounce if
        ``node`` has no next hop and routing.on_no_path is bounce); None if there is none."""
        ck = (node, dst, key, came_from)
        hit = self._detour.get(ck, False)
        if hit is not False:
            return hit
        routes, topo, ports = self.routes, self.net.topo, self.net.ports
        port = routes.pick(node, dst, key)
        if port is not None:
            hops = [(node, port)]
        elif self.plan.on_no_path == "bounce":
            b = routes.bounce(node, dst, key, came_from)
            hops = list(b) if b else None
        else:
            hops = None
        if hops is not None:
            at = topo.peer(*hops[-1]).node
            while at != dst and len(hops) < MAX_BOUNCE_HOPS:
                port = routes.pick(at, dst, key)
                if port is None:
                    break  # the switch there decides (drop or bounce) when the frame arrives
                hops.append((at, port))
                at = topo.peer(at, port).node
        suffix = tuple(ports[h] for h in hops) if hops is not None else None
        self._detour[ck] = suffix
        return suffix

    def _reroute_flows(self) -> None:
        """``reconverge: fabric``: every flow's NICs send on its path over what is left
        (its healthy path where that is whole)."""
        net, topo = self.net, self.net.topo
        if self._seeds is None:
            self._seeds = {s: switch_seed(net.spec.seed, s) for s in topo.switches}
        ports, cache = net.ports, {}
        for f in net.flows:
            fwd5, rev5 = net.flow_tuples[f.id]
            for st, src, dst, five in ((f.send, f.src, f.dst, fwd5), (f.recv, f.dst, f.src, rev5)):
                path = self.routes.path(src, dst, five, self._seeds)
                if path is not None:
                    st.route = cache.setdefault(path, tuple(ports[h] for h in path))

    def _refresh_routing(self) -> None:
        net = self.net
        self.rerouting = bool(self.routes.dead)
        self._detour.clear()
        for sname, s in net.switches.items():
            if s.spray_rng is not None:
                for h in net.hosts:
                    s.next_hops[h] = tuple(s.ports[i] for i in self.routes.next_hops(sname, h))
        if self.plan.reconverge == "fabric":
            self._reroute_flows()
        if net.gse is not None:
            dead_ports = {p for k in self.routes.dead for p in self.link_ports[k]}
            net.gse.links_down(dead_ports)

    # -- the plan's events ---------------------------------------------------------------
    def _apply(self, e) -> None:
        now = self.loop.now
        rec = self.records[e.index]
        if e.kind in ("link_down", "switch_down"):
            for k in e.links:
                for p in self.link_ports[k]:
                    self._port_down(p, now)
        elif e.kind in ("link_up", "switch_up"):
            for k in e.links:
                for p in self.link_ports[k]:
                    p.down = False
                    p.kick()
        elif e.kind == "link_degrade":
            for k in e.links:
                for p in self.link_ports[k]:
                    p.rate = max(1, round(p.nominal_rate * e.fraction))
                    p.pfc_frame_ns = -(-64 * 8_000_000_000 // p.rate)
                    if self.net.gse is not None:
                        self.net.gse.link_rate(p, p.rate)
        elif e.kind == "detect":
            self.routes.fail(e.links)
            rec.detected_ns = now
            self._refresh_routing()
            for k in e.links:  # a switch flushes the queues of a port it knows is down
                for p in self.link_ports[k]:
                    if p.down and hasattr(p, "queues"):
                        self._flush(p)
        elif e.kind == "detect_up":
            self.routes.restore(e.links)
            rec.detected_ns = now
            self._refresh_routing()

    def _port_down(self, p, now: int) -> None:
        p.down = True
        for prio in range(8):  # a dead link pauses nothing: drain into it
            if p.paused[prio]:
                p.paused[prio] = False
                p.paused_ns += now - p.pause_start[prio]
        p.kick()

    def _flush(self, p) -> None:
        sw = p.node
        for q in filter(None, p.queues):
            while q:
                pkt = q.popleft()
                sw.unqueue(p, pkt)
                self.lose(p, pkt, "dead_link", sent=False)

    def fault_records(self) -> list[FaultRecord]:
        """The results' faults: per fault, what was lost on its links while they were dead
        (frames sent onto them, or flushed from their queues at detection), and the last
        time a frame was sent onto them."""
        downs = {e.index: e.links for e in self.plan.events
                 if e.kind in ("link_down", "switch_down")}
        for i, links in downs.items():
            rec = self.records[i]
            for k in links:
                n, b, last = self.link_lost.get(k, (0, 0, 0))
                rec.lost_pkts += n
                rec.lost_bytes += b
                if n and (rec.traffic_left_ns is None or last > rec.traffic_left_ns):
                    rec.traffic_left_ns = last
        return self.records


class PfcWatch:
    """Looks, every quarter of the shorter of the two times, for queues paused too long:
    the PFC watchdog's, and deadlocked cycles."""

    def __init__(self, net, deadlock_ns: int | None, watchdog_ns: int | None,
                 restore_ns: int, fx: SimFaults | None):
        self.net, self.loop = net, net.loop
        self.deadlock_ns, self.watchdog_ns, self.restore_ns = deadlock_ns, watchdog_ns, restore_ns
        self.fx = fx
        self.period = max(1000, min(t for t in (deadlock_ns, watchdog_ns) if t) // 4)
        self.ports = [p for s in net.switches.values() for p in s.ports]
        self.deadlock = None
        self.watchdog_fired: list[dict] = []

    def start(self) -> None:
        self.loop.push(self.loop.now + self.period, self._tick, None)

    def _tick(self, _) -> None:
        now, d = self.loop.now, self.net.cfg.data_prio
        stuck = [p for p in self.ports if p.paused[d] and p.qbytes[d]]
        if stuck:
            if self.watchdog_ns:
                for p in stuck:
                    if now - p.pause_start[d] >= self.watchdog_ns:
                        self._watchdog(p, now, d)
            if self.deadlock_ns:
                cycle = self._cycle([p for p in stuck if p.paused[d]
                                     and now - p.pause_start[d] >= self.deadlock_ns], d)
                if cycle:
                    self.deadlock = {"t_ns": now, "ports": [p.name for p in cycle],
                                     "links": [f"{p.node.name}->{p.peer.node.name}"
                                               for p in cycle],
                                     "paused_since_ns": min(p.pause_start[d] for p in cycle)}
                    self.net.loop.stop()
                    return
        if self.loop.pending() and not self.net.finished:
            self.loop.push(now + self.period, self._tick, None)

    @staticmethod
    def _cycle(cands: list, d: int) -> list | None:
        """A cycle among paused ports: P -> Q when Q is on the switch P sends to and holds a
        frame that came in from P (so Q's pause keeps P's peer from draining)."""
        on = set(cands)
        nxt = {}
        for p in cands:
            inp = p.peer
            nxt[p] = [q for q in inp.node.ports if q in on and any(
                f.in_port is inp for f in q.queues[d])]
        state: dict = {}
        for start in cands:
            if start in state:
                continue
            stack = [(start, iter(nxt[start]))]
            path = [start]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                q = next(it, None)
                if q is None:
                    state[node] = 2
                    stack.pop()
                    path.pop()
                elif state.get(q) == 1:
                    return path[path.index(q):]
                elif q not in state:
                    state[q] = 1
                    stack.append((q, iter(nxt[q])))
                    path.append(q)
        return None

    def _watchdog(self, p, now: int, d: int) -> None:
        """Disable ``p``'s lossless queue for a while: drop what it holds and what arrives
        for it (the pause state it receives is still kept, so that it does not overrun its
        peer when it is enabled again)."""
        sw = p.node
        p.wd_until = now + self.restore_ns
        n = 0
        while p.queues[d]:
            pkt = p.queues[d].popleft()
            sw.unqueue(p, pkt)
            n += 1
            self.fx.lose(p, pkt, "watchdog")
        self.watchdog_fired.append({"t_ns": now, "port": p.name, "dropped": n})
