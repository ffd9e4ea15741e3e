"""The topology model shared by both engines: named nodes, numbered ports, links, paths.

A :class:`Topology` is a pure graph.  It knows nothing of packets or of Mininet; the
simulator (``fabriclab.sim``) and the Mininet builder (``fabriclab.emu``) both build from it.

Naming contract (kept by every builder in this package):

* hosts are ``h0 .. h{N-1}``; host ``i`` has exactly one port, port 0, to its ToR switch,
  and the IPv4 address given by the builder (``Node.ip``);
* switches carry a ``tier``: 1 for ToR (leaf / edge), 2 for spine / aggregation, 3 for core;
* on every switch, ports are numbered from 0 upwards, downward-facing ports first
  (to hosts or to the tier below), then upward-facing ports;
* a link joins (node A, port a) and (node B, port b) with one rate and one propagation
  delay, full duplex;
* for OpenFlow (the Mininet engine): switch ``i`` in ``switches`` order has datapath id
  ``i + 1``; model port ``p`` is OpenFlow port ``p + 1``; host ``h<n>`` has MAC
  ``02:00:00:00:HH:LL`` with HHLL = n + 1 (locally administered).
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    """A full-duplex point-to-point link between two ports."""

    a: str
    a_port: int
    b: str
    b_port: int
    rate_bps: int
    delay_ns: int


@dataclass
class Node:
    """A host or a switch.  ``ports[i]`` is the :class:`Link` attached to port ``i``."""

    name: str
    kind: str  # "host", "leaf", "spine", "edge", "agg", "core"
    tier: int  # 0 host, 1 ToR, 2 spine/aggregation, 3 core
    ip: str | None = None
    ports: list[Link] = field(default_factory=list)

    @property
    def is_host(self) -> bool:
        return self.tier == 0


@dataclass(frozen=True)
class PortId:
    node: str
    port: int


class Topology:
    """Nodes, ports and links, plus equal-cost shortest-path next hops towards each host."""

    def __init__(self, kind: str, description: str):
        self.kind = kind
        self.description = description
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self._dist_cache: dict[str, dict[str, int]] = {}
        self._nh_cache: dict[tuple[str, str], tuple[int, ...]] = {}
        self._hops_interned: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._adj: dict | None = None  # node -> ((port, peer node, link), ...), once built
        self._up_counts: list[int] | None = None
        self.oversubscription = 1.0

    # -- construction -------------------------------------------------------------------
    def add_node(self, name: str, kind: str, tier: int, ip: str | None = None) -> Node:
        if name in self.nodes:
            raise ValueError(f"duplicate node name {name!r}")
        node = Node(name, kind, tier, ip)
        self.nodes[name] = node
        return node

    def connect(self, a: str, b: str, rate_bps: int, delay_ns: int) -> Link:
        """Join the next free port of ``a`` to the next free port of ``b``."""
        na, nb = self.nodes[a], self.nodes[b]
        link = Link(a, len(na.ports), b, len(nb.ports), rate_bps, delay_ns)
        na.ports.append(link)
        nb.ports.append(link)
        self.links.append(link)
        self._adj = self._up_counts = None
        return link

    def _adjacency(self) -> dict:
        """Per node, (port, peer node, link) of each port: the searches below read it
        instead of resolving each link's far end again (1,024 searches of 6,144 ports each at
        k=16)."""
        adj = self._adj
        if adj is None:
            adj = self._adj = {n: tuple((i, self.peer(n, i).node, link)
                                        for i, link in enumerate(node.ports))
                               for n, node in self.nodes.items()}
        return adj

    # -- queries ------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.is_host]

    @property
    def switches(self) -> list[str]:
        return [n.name for n in self.nodes.values() if not n.is_host]

    def peer(self, node: str, port: int) -> PortId:
        """The (node, port) at the other end of ``node``'s ``port``."""
        link = self.nodes[node].ports[port]
        if link.a == node and link.a_port == port:
            return PortId(link.b, link.b_port)
        return PortId(link.a, link.a_port)

    def port_role(self, node: str, port: int) -> str:
        """What ``node``'s ``port`` faces, as ports.csv says: "nic" (a host's own port),
        "host" (a switch port to a host), "up" (to a higher tier) or "down"."""
        tier = self.nodes[node].tier
        if tier == 0:
            return "nic"
        ptier = self.nodes[self.peer(node, port).node].tier
        return "host" if ptier == 0 else ("up" if ptier > tier else "down")

    @staticmethod
    def link_name(link: Link) -> str:
        """A link's name in specs and results: ``<a>-<b>``, the lower tier first (``l0-s1``,
        ``e0_1-a0_0``, ``l0-h3``); :meth:`find_link` takes either order."""
        return f"{link.a}-{link.b}"

    def link_names(self) -> list[str]:
        """Names of the switch-to-switch links, then of the host links."""
        fabric = [self.link_name(k) for k in self.links
                  if not (self.nodes[k.a].is_host or self.nodes[k.b].is_host)]
        return fabric + [self.link_name(k) for k in self.links if self.nodes[k.a].is_host
                         or self.nodes[k.b].is_host]

    def find_link(self, name: str) -> Link | None:
        """The link ``name`` (``a-b`` or ``b-a``) names, None if there is none."""
        if not isinstance(name, str) or name.count("-") != 1:
            return None
        a, b = name.split("-")
        for k in self.nodes[a].ports if a in self.nodes else ():
            if {k.a, k.b} == {a, b}:
                return k
        return None

    def tor_of(self, host: str) -> str:
        return self.peer(host, 0).node

    def host_rate_bps(self, host: str) -> int:
        return self.nodes[host].ports[0].rate_bps

    def _distances_to(self, dst: str, dead=()) -> dict[str, int]:
        """Hop count from every node to ``dst`` (BFS), over the links not in ``dead``;
        cached per destination when no link is dead."""
        dist = None if dead else self._dist_cache.get(dst)
        if dist is None:
            dist = {dst: 0}
            todo = deque([dst])
            adj, nodes = self._adjacency(), self.nodes
            while todo:
                n = todo.popleft()
                # Hosts never forward: a path may end at a host but not cross one.
                if nodes[n].is_host and n != dst:
                    continue
                d = dist[n] + 1
                for _, p, link in adj[n]:
                    if p not in dist and link not in dead:
                        dist[p] = d
                        todo.append(p)
            if not dead:
                self._dist_cache[dst] = dist
        return dist

    def next_hops(self, node: str, dst: str) -> tuple[int, ...]:
        """Egress ports of ``node`` on a shortest path to ``dst`` (the ECMP set), in port order."""
        cache = self._nh_cache
        hit = cache.get((node, dst))
        if hit is not None:
            return hit
        target = dst
        dnode = self.nodes[dst]
        if dnode.is_host and len(dnode.ports) == 1 and node != dst:
            # Every shortest path to a single-homed host ends with its ToR's link: short of
            # the ToR, the next hops are the ToR's, shared by all the hosts under it (at
            # 1,024 hosts, distances per ToR instead of per host save 23 MB).
            tor = self.peer(dst, 0).node
            if node == tor:  # the ToR itself: its ports to the host (no distances per host:
                # at 1,024 hosts they took 26 MB)
                hops = tuple(i for i, p, _ in self._adjacency()[node] if p == dst)
                cache[(node, dst)] = hops
                return hops
            target = tor
            hit = cache.get((node, tor))
            if hit is not None:
                return hit
        dist = self._distances_to(target)
        if node not in dist:
            raise ValueError(f"{dst} is unreachable from {node}")
        d = dist[node]
        hops = tuple(i for i, p, _ in self._adjacency()[node] if dist.get(p, -1) == d - 1)
        # one tuple for equal hop sets (e.g. every uplink, to every other pod): at 1,024
        # hosts 19,000 cached entries share a few hundred tuples
        hops = self._hops_interned.setdefault(hops, hops)
        cache[(node, target)] = hops
        return hops

    def all_paths(self, src: str, dst: str) -> list[tuple[PortId, ...]]:
        """Every equal-cost shortest path as the sequence of egress ports, source NIC first."""
        # Depth first with a stack, not a recursive closure: a closure that calls itself is
        # a reference cycle, and with the collector off during a simulation (sim/runner.py)
        # every path list it built stayed alive (28 MB at 1,024 hosts).
        out: list[tuple[PortId, ...]] = []
        stack: list[tuple[str, tuple[PortId, ...]]] = [(src, ())]
        while stack:
            node, acc = stack.pop()
            if node == dst:
                out.append(acc)
                continue
            hops = self.next_hops(node, dst)
            for p in reversed(hops):  # popped in port order, as the recursion visited them
                stack.append((self.peer(node, p).node, acc + (PortId(node, p),)))
        return out

    def uplinks(self, switch: str) -> tuple[int, ...]:
        """Ports of ``switch`` that lead to a switch of a higher tier, in port order."""
        tier, nodes = self.nodes[switch].tier, self.nodes
        return tuple(i for i, p, _ in self._adjacency()[switch] if nodes[p].tier > tier)

    def uplink_counts(self) -> list[int]:
        """Uplinks per switch at tiers 1, 2, ... below the top (the same for every switch of
        a tier here): ``[spines]`` for a leaf-spine, ``[k/2, k/2]`` for a k-ary fat-tree."""
        if self._up_counts is None:
            self._up_counts = self._count_uplinks()
        return self._up_counts

    def _count_uplinks(self) -> list[int]:
        top = max(self.nodes[s].tier for s in self.switches)
        out = []
        for tier in range(1, top):
            counts = {len(self.uplinks(s)) for s in self.switches
                      if self.nodes[s].tier == tier}
            if len(counts) != 1:
                raise ValueError(f"tier-{tier} switches differ in uplinks ({sorted(counts)}): "
                                 f"numbered container paths need a regular fabric")
            out.append(counts.pop())
        return out

    def container_paths(self, src: str, dst: str) -> list[tuple[PortId, ...]]:
        """The shortest paths from host ``src`` to host ``dst`` (as :meth:`all_paths`) in GSE's
        container path order: path k goes up, at tier t, by uplink
        ``(k // (n_1 ... n_(t-1))) % n_t`` (n_i: :meth:`uplink_counts`), then down the only
        way.  A leaf-spine's path k is spine k; a k-ary fat-tree's path k between pods takes
        edge uplink ``k % (k/2)`` and aggregation uplink ``k // (k/2)``.  The emulator's
        switches follow it by DSCP (``k + 1``); the numbering is the same on both engines."""
        counts = self.uplink_counts()
        nodes = self.nodes
        by_index: dict[int, tuple[PortId, ...]] = {}
        for path in self.all_paths(src, dst):
            k, weight = 0, 1
            for p in path[1:]:  # the switches' egress ports (path[0] is the host's NIC)
                tier = nodes[p.node].tier
                if nodes[self.peer(p.node, p.port).node].tier > tier:  # up
                    k += self.uplinks(p.node).index(p.port) * weight
                    weight *= counts[tier - 1]
            if k in by_index:
                raise ValueError(f"two paths from {src} to {dst} share container path {k}")
            by_index[k] = path
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"the container paths from {src} to {dst} are not numbered "
                             f"0..{len(by_index) - 1}: {sorted(by_index)}")
        return [by_index[k] for k in range(len(by_index))]

    def flow_path(self, src: str, dst: str, five_tuple: tuple, seeds: dict[str, int]
                  ) -> tuple[PortId, ...]:
        """The path per-flow ECMP gives a flow: at each switch, hash(5-tuple, switch seed)
        picks one of the equal-cost next hops (what a switch's hash does per packet, computed
        once per flow)."""
        path = [PortId(src, 0)]
        node = self.peer(src, 0).node
        while node != dst:
            hops = self.next_hops(node, dst)
            port = hops[ecmp_hash(five_tuple, seeds[node]) % len(hops)] if len(hops) > 1 else hops[0]
            path.append(PortId(node, port))
            node = self.peer(node, port).node
        return tuple(path)

    def reach_ns(self, src: str, dst: str, frame_bytes: int, whole: bool = False) -> float:
        """How long after a frame of ``frame_bytes`` starts to leave ``src`` (a host, or a
        switch) it is whole at the last switch before host ``dst`` (at ``dst`` itself with
        ``whole``): per link of a shortest path, its delay and the frame's serialisation
        (store and forward).  In these fabrics every shortest path takes as long."""
        last = dst if whole else self.tor_of(dst)
        node, t = src, 0.0
        while node != last:
            port = self.next_hops(node, dst)[0]
            link = self.nodes[node].ports[port]
            t += link.delay_ns + frame_bytes * 8e9 / link.rate_bps
            node = self.peer(node, port).node
        return t

    def base_rtt_ns(self, data_bytes: int, ack_bytes: int, with_delay: bool = True) -> int:
        """The largest base RTT between two hosts: along a longest shortest path, per hop
        the propagation delay both ways (unless ``with_delay`` is false: an emulation without
        link delay) plus one data packet out and one ACK back."""
        hosts = self.hosts
        src = hosts[0]
        dist = self._distances_to(src)
        dst = max(hosts, key=lambda h: (dist.get(h, -1), -hosts.index(h)))
        if dst == src:
            return 0
        rtt, node, port = 0, src, 0
        while True:
            link = self.nodes[node].ports[port]
            rtt += (2 * link.delay_ns if with_delay else 0) + \
                -(-(data_bytes + ack_bytes) * 8_000_000_000 // link.rate_bps)
            node = self.peer(node, port).node
            if node == dst:
                return rtt
            port = self.next_hops(node, dst)[0]

    # -- OpenFlow naming contract (see the module docstring) -----------------------------
    def dpid(self, switch: str) -> int:
        return self.switches.index(switch) + 1

    def switch_of_dpid(self, dpid: int) -> str:
        return self.switches[dpid - 1]

    @staticmethod
    def ofport(port: int) -> int:
        return port + 1

    def host_mac(self, host: str) -> str:
        n = self.hosts.index(host) + 1
        return f"02:00:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"

    # -- serialisation (the controller process receives the topology as JSON) -------------
    def to_dict(self) -> dict:
        return {"kind": self.kind, "description": self.description,
                "oversubscription": self.oversubscription,
                "nodes": [{"name": n.name, "kind": n.kind, "tier": n.tier, "ip": n.ip}
                          for n in self.nodes.values()],
                "links": [[k.a, k.b, k.rate_bps, k.delay_ns] for k in self.links]}

    @classmethod
    def from_dict(cls, d: dict) -> "Topology":
        """Rebuild a topology; links are re-added in order, so port numbers are the same."""
        t = cls(d["kind"], d["description"])
        for n in d["nodes"]:
            t.add_node(n["name"], n["kind"], n["tier"], n.get("ip"))
        for a, b, rate, delay in d["links"]:
            t.connect(a, b, rate, delay)
        t.oversubscription = d.get("oversubscription", 1.0)
        return t

    def summary(self) -> dict:
        return {"kind": self.kind, "description": self.description,
                "hosts": len(self.hosts), "switches": len(self.switches), "links": len(self.links)}


def ecmp_hash(five_tuple: tuple, seed: int) -> int:
    """A 64-bit keyed hash of a flow's 5-tuple (src ip, dst ip, src port, dst port, proto).

    Keyed BLAKE2b, so switches with different seeds choose independently (no hash
    polarisation) and the result is the same on every run and machine.
    """
    src, dst, sport, dport, proto = five_tuple
    data = src.encode() + b"|" + dst.encode() + struct.pack("!HHB", sport, dport, proto)
    key = struct.pack("!Q", seed & 0xFFFFFFFFFFFFFFFF)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "big")


def switch_seed(base_seed: int, switch: str) -> int:
    """The per-switch ECMP hash seed derived from the experiment seed."""
    h = hashlib.blake2b(f"{base_seed}/{switch}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")
