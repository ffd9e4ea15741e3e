"""Faults and routing around them, sans-IO: the one model both engines follow.

A spec's ``faults`` list becomes a :class:`FaultPlan`: a time-ordered list of
:class:`FaultEvent` (fabric time in ns, the links each one touches) plus, for every link
that goes down, the time switches detect it (``routing.detect_us`` later).  The engines
carry the events out (the simulator on its event loop; the emulator on veths, HTB classes
and OpenFlow) and route with :class:`Routes`:

* until a dead link is detected, packets hashed onto it are lost;
* after detection, with ``routing.reconverge: fabric``, every switch forwards over the
  equal-cost next hops that are left (shortest paths of the fabric without its dead links);
  with ``local`` only the two switches at the dead link's ends know, the others keep
  sending towards it;
* a switch with no next hop left towards a destination drops the packet
  (``routing.on_no_path: drop``) or bounces it (``bounce``): down to another switch of
  the tier below, which sends it up over another of its uplinks.

Flows keep their path unless it crosses a dead link (resilient hashing: a dead member's
flows are rehashed over the members left, the others stay), and go back to their
healthy path when the link comes back.  Degraded links carry traffic at a fraction of
their rate; ECMP does not see that, GSE's scheduler does (it reserves each link for the
time its bytes take at the link's rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from .topologies.model import Link, Topology, ecmp_hash

MAX_BOUNCE_HOPS = 16  # a packet rerouted past this many hops is dropped (no_path)

#: Loss causes, as the results name them (summary drop_reasons, ports.csv columns).
LOSS_CAUSES = ("dead_link", "random_loss", "watchdog", "no_path")


@dataclass(frozen=True)
class FaultEvent:
    t_ns: int
    index: int  # position in spec.faults
    kind: str  # a Fault kind, or "detect" (switches notice dead links)
    target: str | None
    links: tuple[Link, ...]
    fraction: float | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind


class FaultPlan:
    """What happens when: the spec's faults resolved against the topology, and the
    detection that follows each link or switch going down."""

    def __init__(self, spec, topo: Topology):
        self.topo = topo
        r = spec.routing
        self.detect_ns = round(r.detect_us * 1000)
        self.reconverge = r.reconverge
        self.on_no_path = r.on_no_path
        events = []
        for i, f in enumerate(spec.faults):
            t = round(f.at_us * 1000)
            if f.kind in ("link_down", "link_up", "link_degrade"):
                links = (topo.find_link(f.target),)
            elif f.kind in ("switch_down", "switch_up"):
                links = tuple(topo.nodes[f.target].ports)
            else:
                links = ()
            events.append(FaultEvent(t, i, f.kind, f.target, links, f.fraction))
            if f.kind in ("link_down", "switch_down"):
                events.append(FaultEvent(t + self.detect_ns, i, "detect", f.target, links))
            elif f.kind in ("link_up", "switch_up"):
                # a link that comes back is used again after the same detection time
                events.append(FaultEvent(t + self.detect_ns, i, "detect_up", f.target, links))
        self.events = sorted(events, key=lambda e: (e.t_ns, e.index, e.kind != "detect"))
        self.loss: dict[Link, float] = {}
        for k in topo.links:
            p = spec.loss.rate
            for name, q in spec.loss.links.items():
                if topo.find_link(name) == k:
                    p = q
            if p > 0:
                self.loss[k] = p

    def __bool__(self) -> bool:
        return bool(self.events or self.loss)

    @property
    def has_link_faults(self) -> bool:
        return any(e.links for e in self.events)


class Routes:
    """Next hops towards each host given the dead links switches know of.

    ``fail(links)`` / ``restore(links)`` are the detections; :meth:`next_hops` the ports a
    switch may use towards a host; :meth:`pick` the one a flow uses there (resilient: its
    healthy choice while that is usable, else a hash over what is left); :meth:`bounce`
    the way around when there is none."""

    def __init__(self, topo: Topology, reconverge: str = "fabric"):
        self.topo = topo
        self.mode = reconverge
        self.dead: set[Link] = set()
        self._nh: dict = {}
        self._dist: dict = {}

    # -- what is known --------------------------------------------------------------------
    def fail(self, links) -> None:
        self.dead.update(links)
        self._nh.clear()
        self._dist.clear()

    def restore(self, links) -> None:
        self.dead.difference_update(links)
        self._nh.clear()
        self._dist.clear()

    def knows_dead(self, node: str, port: int) -> bool:
        """Whether ``node`` knows its ``port``'s link is dead."""
        return self.topo.nodes[node].ports[port] in self.dead

    # -- routing ----------------------------------------------------------------------------
    def _distances_to(self, dst: str) -> dict[str, int]:
        dist = self._dist.get(dst)
        if dist is None:
            dist = self._dist[dst] = self.topo._distances_to(dst, self.dead)
        return dist

    def next_hops(self, node: str, dst: str) -> tuple[int, ...]:
        """The ports ``node`` may forward on towards host ``dst`` (empty: no path)."""
        key = (node, dst)
        hops = self._nh.get(key)
        if hops is None:
            topo = self.topo
            ports = topo.nodes[node].ports
            if self.mode == "fabric" and self.dead:
                dist = self._distances_to(dst)
                d = dist.get(node)
                hops = () if d is None else tuple(
                    i for i, k in enumerate(ports) if k not in self.dead
                    and dist.get(topo.peer(node, i).node, -1) == d - 1)
            else:
                hops = tuple(i for i in topo.next_hops(node, dst) if ports[i] not in self.dead)
            self._nh[key] = hops
        return hops

    def pick(self, node: str, dst: str, key: int, healthy: int | None = None) -> int | None:
        """The port a flow (``key``: a hash of it) takes at ``node`` towards ``dst``: its
        ``healthy`` port while that may be used, else one of those left; None if none is."""
        hops = self.next_hops(node, dst)
        if not hops:
            return None
        if healthy is not None and healthy in hops:
            return healthy
        return hops[key % len(hops)]

    def bounce_options(self, node: str, dst: str) -> list[tuple[int, tuple[int, ...]]]:
        """The ways down-up around a dead link from ``node`` towards host ``dst``: per port
        down to a live switch L of the tier below (not ``dst``'s ToR), L's live uplinks to
        switches other than ``node``; only options with an uplink left."""
        topo, dead = self.topo, self.dead
        tier = topo.nodes[node].tier
        dst_tor = topo.tor_of(dst)
        out = []
        for i, k in enumerate(topo.nodes[node].ports):
            low = topo.peer(node, i).node
            if k in dead or not 0 < topo.nodes[low].tier < tier or low == dst_tor:
                continue
            ups = tuple(u for u, kk in enumerate(topo.nodes[low].ports) if kk not in dead
                        and topo.nodes[topo.peer(low, u).node].tier > topo.nodes[low].tier
                        and topo.peer(low, u).node != node)
            if ups:
                out.append((i, ups))
        return out

    def bounce(self, node: str, dst: str, key: int, came_from: str | None = None
               ) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """One of :meth:`bounce_options`, by ``key``: ``(node, port down to L), (L, port
        up)``, preferring an L other than ``came_from``; None if there is none."""
        opts = self.bounce_options(node, dst)
        if not opts:
            return None
        topo = self.topo
        others = [o for o in opts if topo.peer(node, o[0]).node != came_from]
        pool = others or opts
        down, ups = pool[key % len(pool)]
        return (node, down), (topo.peer(node, down).node, ups[key % len(ups)])

    def path(self, src: str, dst: str, five_tuple: tuple, seeds: dict[str, int]
             ) -> tuple[tuple[str, int], ...] | None:
        """A flow's path as ``(node, egress port)`` hops, source NIC first: per switch its
        healthy ECMP choice if still usable, else a rehash over the next hops left
        (resilient hashing); None when some switch on the way has no path."""
        topo = self.topo
        out = [(src, 0)]
        node = topo.peer(src, 0).node
        for _ in range(MAX_BOUNCE_HOPS):
            if node == dst:
                return tuple(out)
            healthy_hops = topo.next_hops(node, dst)
            h = ecmp_hash(five_tuple, seeds[node])
            healthy = healthy_hops[h % len(healthy_hops)]
            port = self.pick(node, dst, h, healthy)
            if port is None:
                return None
            out.append((node, port))
            node = topo.peer(node, port).node
        return None


def flow_key(flow_id: int, salt: int = 0) -> int:
    """A deterministic hash of a flow for rerouting decisions (Python's hash() of a string
    changes between processes)."""
    return ((flow_id + 1) * 2654435761 + salt * 40503) & 0xFFFFFFFF
