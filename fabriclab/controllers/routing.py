"""What the controller installs on each switch, computed from the topology alone.

Pure (no os-ken import), so it is unit-tested without OpenFlow and the os-ken app stays a
thin translation of these tables into OpenFlow messages.

For every switch and every destination host the ECMP set is ``Topology.next_hops`` (model
ports), turned into OpenFlow ports with ``Topology.ofport``.  A set of one port becomes a
direct output; every distinct set of several ports becomes one SELECT group, shared by all
destinations that use the same set (a leaf sends every remote host through the same
"all spines" group).  Group ids are per switch (each switch has its own group table),
numbered 1, 2, ... in the order of the sorted port sets, so two builds of the same topology
give the same ids.

The ready file (see :mod:`fabriclab.controllers.ecmp_app`) is JSON lines, one object per
switch that finished installing; :func:`fabriclab.wire.ready.read_ready_file` parses it.

GSE (``FABRICLAB_GSE`` = ``central`` | ``egress``; unset or empty = off)
-----------------------------------------------------------------------
A GSP sends each packet container on one path it chose (egress mode) or GSOS chose (central
mode), and writes ``path + 1`` in the IPv4 DSCP of its frames
(:mod:`fabriclab.wire.roce`).  **Path k is the k-th uplink of the source leaf, in
OpenFlow (= model) port order; in a leaf-spine that is spine k.**  Everyone uses this
meaning: the leaf flows below, :func:`transit_paths` (what GSOS reserves) and
:func:`n_paths`.  With GSE on, every tier-1 switch (leaf / edge) gets, on top of the ECMP
table, by priority:

==========================  ==================================================================
``GSE_PUNT_PRIORITY`` 400   central mode only: ``in_port=<host port>, udp, udp_dst=4792`` ->
                            CONTROLLER (whole packet): the REQUESTs go to GSOS.  If the
                            controller is gone the switch (fail-mode secure) drops them; the
                            host agents' fallback deals with that, not the switches.
``LOCAL_ROUTE_PRIORITY``    the /32 routes of the leaf's *own* hosts are installed here instead
300                         of at ``ROUTE_PRIORITY``, so a frame to a local host is delivered
                            locally whatever its DSCP (a same-leaf container has DSCP 1).
``PATH_PRIORITY`` 200       ``ip, ip_dscp=k+1`` -> output uplink k, for each uplink k.  Only
                            remote destinations reach these (local ones matched above).
``ROUTE_PRIORITY`` 100      the ECMP routes as without GSE (DSCP 0: ordinary traffic, and
                            REQUEST/GRANT datagrams in egress mode).
``TABLE_MISS_PRIORITY`` 0   drop.
==========================  ==================================================================

A DSCP with no rule (0, or above the number of uplinks) falls through to ECMP.  Spines (and
the upper tiers of a fat-tree) get nothing new: in a leaf-spine a spine has one way down.  In
a fat-tree the DSCP pins the edge uplink only; further up, ECMP still hashes (see
:func:`transit_paths`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fabriclab.topologies import PortId, Topology
from fabriclab.wire.roce import GSE_PORT  # noqa: F401  (used by ecmp_app and tests)

# How run.py hands its arguments to the os-ken app (os-ken instantiates apps itself).
ENV_TOPOLOGY = "FABRICLAB_TOPOLOGY"
ENV_READY_FILE = "FABRICLAB_READY_FILE"

ENV_GSE = "FABRICLAB_GSE"  # "central" | "egress" | unset: off
ENV_EMU_SCALE = "FABRICLAB_EMU_SCALE"  # emulated rate / fabric (topology) rate, float
ENV_GSE_OVERCOMMIT = "FABRICLAB_GSE_OVERCOMMIT"  # gse.grant_overcommit, float
ENV_GSE_MTU = "FABRICLAB_GSE_MTU"  # payload bytes per packet GSOS assumes (wire_bytes)
ENV_GSE_HEADER = "FABRICLAB_GSE_HEADER"  # header bytes per packet GSOS assumes
ENV_GSOS_STATS = "FABRICLAB_GSOS_STATS"  # JSON file GSOS writes its counters to
GSE_MODES = ("central", "egress")

# IPv4 flows sit above the table-miss entry (priority 0); one fixed priority is enough for
# the routes since every match is an exact /32 and no two entries overlap.  The GSE flows
# (see the module docstring) sit above them.
GSE_PUNT_PRIORITY = 400
LOCAL_ROUTE_PRIORITY = 300
PATH_PRIORITY = 200
ROUTE_PRIORITY = 100
TABLE_MISS_PRIORITY = 0
ETH_TYPE_IPV4 = 0x0800
IP_PROTO_UDP = 17


@dataclass(frozen=True)
class Group:
    """A SELECT group: one bucket (weight 1, single output) per port."""

    group_id: int
    ports: tuple[int, ...]  # OpenFlow port numbers, sorted, at least two


@dataclass(frozen=True)
class Route:
    """``ipv4_dst=ip/32`` goes to ``group_id`` if set, otherwise straight out of ``ports[0]``."""

    host: str
    ip: str
    ports: tuple[int, ...]  # OpenFlow port numbers of the ECMP set, sorted
    group_id: int | None
    priority: int = ROUTE_PRIORITY  # LOCAL_ROUTE_PRIORITY: a leaf's own host, GSE on

    @property
    def output_port(self) -> int | None:
        return self.ports[0] if self.group_id is None else None


@dataclass(frozen=True)
class PathRule:
    """GSE container path: ``ip, ip_dscp=dscp`` -> out of ``output_port`` (uplink ``path``)."""

    path: int
    dscp: int  # path + 1
    output_port: int  # OpenFlow port


@dataclass(frozen=True)
class SwitchTable:
    dpid: int
    switch: str
    groups: tuple[Group, ...]
    routes: tuple[Route, ...]  # in host order
    gse: str | None = None  # the GSE mode the GSE flows below were computed for
    path_rules: tuple[PathRule, ...] = ()  # GSE on, tier-1 switches only; by path
    punt_ports: tuple[int, ...] = ()  # central mode, tier-1 only: host ports punting REQUESTs

    def group(self, group_id: int) -> Group:
        for g in self.groups:
            if g.group_id == group_id:
                return g
        raise KeyError(group_id)

    def route_to(self, ip: str) -> Route:
        for r in self.routes:
            if r.ip == ip:
                return r
        raise KeyError(ip)

    def summary(self) -> dict:
        out = {"dpid": self.dpid, "switch": self.switch, "groups": len(self.groups),
               "routes": len(self.routes),
               "group_routes": sum(r.group_id is not None for r in self.routes),
               "direct_routes": sum(r.group_id is None for r in self.routes)}
        if self.gse:
            out.update(gse=self.gse, path_rules=len(self.path_rules),
                       punt_ports=len(self.punt_ports),
                       local_routes=sum(r.priority == LOCAL_ROUTE_PRIORITY
                                        for r in self.routes))
        return out


def check_gse_mode(mode: str | None) -> str | None:
    """``None`` (GSE off) for None or "", the mode if it is one of :data:`GSE_MODES`."""
    if not mode:
        return None
    if mode not in GSE_MODES:
        raise ValueError(f"{ENV_GSE} must be one of {', '.join(GSE_MODES)} or unset, "
                         f"not {mode!r}")
    return mode


def uplinks(topo: Topology, switch: str) -> tuple[int, ...]:
    """Model ports of ``switch`` that lead to a switch of a higher tier, in port order.
    On a leaf, path k leaves by ``uplinks(...)[k]``."""
    tier = topo.nodes[switch].tier
    return tuple(p for p in range(len(topo.nodes[switch].ports))
                 if topo.nodes[topo.peer(switch, p).node].tier > tier)


def host_ports(topo: Topology, switch: str) -> tuple[int, ...]:
    """Model ports of ``switch`` that face a host, in port order."""
    return tuple(p for p in range(len(topo.nodes[switch].ports))
                 if topo.nodes[topo.peer(switch, p).node].is_host)


def switch_table(topo: Topology, switch: str, gse: str | None = None) -> SwitchTable:
    """The table of one switch; ``gse`` (a :data:`GSE_MODES` value or None) adds the GSE
    flows described in the module docstring."""
    gse = check_gse_mode(gse)
    is_leaf = topo.nodes[switch].tier == 1
    hosts = topo.hosts
    ecmp: dict[str, tuple[int, ...]] = {
        h: tuple(sorted(Topology.ofport(p) for p in topo.next_hops(switch, h))) for h in hosts}
    multi = sorted({ports for ports in ecmp.values() if len(ports) > 1})
    gid = {ports: i + 1 for i, ports in enumerate(multi)}
    routes = []
    for h in hosts:
        ip = topo.nodes[h].ip
        if not ip:
            raise ValueError(f"host {h} has no IPv4 address")
        ports = ecmp[h]
        if not ports:
            raise ValueError(f"{switch} has no path to {h}")
        local = gse is not None and is_leaf and topo.tor_of(h) == switch
        routes.append(Route(h, ip, ports, gid.get(ports),
                            LOCAL_ROUTE_PRIORITY if local else ROUTE_PRIORITY))
    path_rules: tuple[PathRule, ...] = ()
    punt: tuple[int, ...] = ()
    if gse is not None and is_leaf:
        ups = uplinks(topo, switch)
        if len(ups) > 63:
            raise ValueError(f"{switch} has {len(ups)} uplinks; DSCP (6 bits) encodes 63 paths")
        path_rules = tuple(PathRule(k, k + 1, Topology.ofport(p)) for k, p in enumerate(ups))
        if gse == "central":
            punt = tuple(Topology.ofport(p) for p in host_ports(topo, switch))
    return SwitchTable(topo.dpid(switch), switch,
                       tuple(Group(gid[p], p) for p in multi), tuple(routes), gse,
                       path_rules, punt)


def switch_tables(topo: Topology, gse: str | None = None) -> dict[int, SwitchTable]:
    """Every switch's table, keyed by datapath id (``gse``: see :func:`switch_table`)."""
    return {topo.dpid(s): switch_table(topo, s, gse) for s in topo.switches}


# -- GSE: paths and rates, as GSOS sees them ---------------------------------------------
def _is_transit(topo: Topology, port: PortId) -> bool:
    """A switch egress port whose peer is a switch (a fabric link, one direction)."""
    return (not topo.nodes[port.node].is_host
            and not topo.nodes[topo.peer(port.node, port.port).node].is_host)


def transit_paths(topo: Topology, src: str, dst: str) -> list[list[PortId]]:
    """The paths a container from host ``src`` to host ``dst`` may take, indexed by path
    number, each as its transit links: the switch-to-switch egress ports (``PortId`` with
    model ports; one id per link direction), in hop order.

    Path k leaves the source leaf by its k-th uplink (:func:`uplinks`).  Two hosts on the
    same leaf have one path, with no transit links: ``[[]]``.  In a leaf-spine each uplink
    is one shortest path, so this is ``topo.all_paths`` with the host hops left out.
    Deeper (fat-tree) the DSCP pins the first uplink only and ECMP picks the rest, so path
    k is the links *every* shortest path through uplink k uses (the uplink itself and the
    hops down to ``dst`` that are forced); the hashed middle is not tracked.
    """
    if src == dst:
        raise ValueError(f"no path from {src} to itself")
    leaf = topo.tor_of(src)
    if topo.tor_of(dst) == leaf:
        return [[]]
    shortest = [[p for p in path if _is_transit(topo, p)] for path in topo.all_paths(src, dst)]
    out = []
    for up in uplinks(topo, leaf):
        first = PortId(leaf, up)
        via = [p for p in shortest if p and p[0] == first]
        if not via:
            raise ValueError(f"uplink {up} of {leaf} is on no shortest path to {dst}")
        common = set(via[0]).intersection(*via[1:])
        out.append([p for p in via[0] if p in common])
    return out


def n_paths(topo: Topology, src: str, dst: str) -> int:
    """How many container paths (DSCP values 1..n) ``src`` has towards ``dst``."""
    return len(transit_paths(topo, src, dst))


def host_port_rates(topo: Topology) -> dict[str, int]:
    """Each host's egress port rate (its host link rate), bits/s, as in the topology."""
    return {h: topo.host_rate_bps(h) for h in topo.hosts}


def fabric_link_rates(topo: Topology) -> dict[PortId, int]:
    """Every transit link (switch-to-switch, one entry per direction) and its rate, bits/s."""
    out = {}
    for s in topo.switches:
        for p in range(len(topo.nodes[s].ports)):
            pid = PortId(s, p)
            if _is_transit(topo, pid):
                out[pid] = topo.nodes[s].ports[p].rate_bps
    return out


def load_topology(path: str | Path) -> Topology:
    """The topology from a JSON file holding ``Topology.to_dict()``."""
    return Topology.from_dict(json.loads(Path(path).read_text()))
