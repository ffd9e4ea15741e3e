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
(:mod:`fabriclab.wire.roce`).  **Path k is** ``Topology.container_paths``' **k-th: at tier t
on the way up it takes uplink** ``(k // (n_1 ... n_(t-1))) % n_t`` (n_i uplinks per switch
of tier i, in OpenFlow = model port order); **in a leaf-spine that is spine k, in a k-ary
fat-tree edge uplink k % (k/2) and aggregation uplink k // (k/2)**, after which the way
down is forced.  Everyone uses this meaning: the path flows below, :func:`transit_paths`
(what GSOS reserves), :func:`n_paths` and the simulator.  With GSE on, every switch below
the top tier (leaf / edge, and a fat-tree's aggregation switches) gets, on top of the ECMP
table, by priority:

==========================  ==================================================================
``GSE_PUNT_PRIORITY`` 400   central mode, leaves only: ``in_port=<host port>, udp, udp_dst=4792`` ->
                            CONTROLLER (whole packet): the REQUESTs go to GSOS.  If the
                            controller is gone the switch (fail-mode secure) drops them; the
                            host agents' fallback deals with that, not the switches.
                            Placement leaf: ``in_port=<GSP port>`` instead (the GSP sends the
                            REQUESTs; the hosts are plain).
``GSP_PRIORITY`` 350        placement leaf only, leaves only (see below): ``in_port=<host
                            port>, udp, udp_dst=4791, ip_ecn=2`` -> the GSP port (RoCE data of
                            a plain host, ECT(0), goes into the GSP's VOQs; its ACK / NACK /
                            CNP are not ECN-capable and keep to the routes), and
                            ``ipv4_dst=<own host>, ip_dscp=k+1`` -> the GSP port for every
                            path k (a container coming down goes through the GSP's reorder
                            buffer; the GSP sends it on with DSCP 0, which the local route
                            below delivers).
``LOCAL_ROUTE_PRIORITY``    the /32 routes of the hosts the switch reaches downwards only (a
300                         leaf's own hosts, an aggregation switch's pod) are installed here
                            instead of at ``ROUTE_PRIORITY``, so a frame on its way down is
                            delivered whatever its DSCP (a same-leaf container has DSCP 1).
``PATH_PRIORITY`` 200       ``ip, ip_dscp=k+1`` -> output the uplink path k takes at this
                            tier, for each path k.  Only frames going up reach these.
``ROUTE_PRIORITY`` 100      the ECMP routes as without GSE (DSCP 0: ordinary traffic, and
                            REQUEST/GRANT datagrams in egress mode).
``TABLE_MISS_PRIORITY`` 0   drop.
==========================  ==================================================================

A DSCP with no rule (0, or above the number of paths) falls through to ECMP.  The top tier
(spines, cores) gets nothing new: it has one way down.  DSCP has 6 bits: at most 63 paths
(a fat-tree up to k = 14).

Placement (``FABRICLAB_GSE_PLACEMENT`` = ``nic`` | ``leaf``; unset or empty = ``nic``)
----------------------------------------------------------------------------------------
``nic``: the GSP is in each host agent, and the table above is all.  ``leaf`` (central mode
only): the hosts run plain RoCE agents and a GSP daemon sits beside each leaf, attached to
its bridge by one more port, the *GSP port*: OpenFlow port ``len(ports) + 1``, one after the
last model port (:func:`gsp_ofport`).  Its GSP id is the index of the leaf's first host
(:func:`leaf_gsp_id`).  The leaf then gets the ``GSP_PRIORITY`` flows, punts REQUESTs from
the GSP port only, and keeps its path flows and raised local routes: containers the GSP
sends up carry DSCP ``path + 1``.  A frame the GSP sends back to one of its own leaf's hosts
must carry DSCP 0: with a DSCP of 1.. the ``GSP_PRIORITY`` flow would send it out of the
port it came in by, which Open vSwitch does not do (the frame is dropped).  Spines,
aggregation and core switches are the same in both placements.
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
# Faults (see ecmp_app): rerouting is on when ENV_DETECT_S is set.
ENV_DETECT_S = "FABRICLAB_DETECT_S"  # routing.detect_us in real seconds (x time dilation)
ENV_RECONVERGE = "FABRICLAB_RECONVERGE"  # routing.reconverge: fabric | local
ENV_ON_NO_PATH = "FABRICLAB_ON_NO_PATH"  # routing.on_no_path: drop | bounce
ENV_EVENTS_FILE = "FABRICLAB_EVENTS_FILE"  # JSON lines: one per reroute the controller made
ENV_GSE_PLACEMENT = "FABRICLAB_GSE_PLACEMENT"  # "nic" | "leaf" | unset: nic
GSE_MODES = ("central", "egress")
GSE_PLACEMENTS = ("nic", "leaf")

# IPv4 flows sit above the table-miss entry (priority 0); one fixed priority is enough for
# the routes since every match is an exact /32 and no two entries overlap.  The GSE flows
# (see the module docstring) sit above them.
GSE_PUNT_PRIORITY = 400
GSP_PRIORITY = 350  # placement leaf: to the leaf's GSP port
LOCAL_ROUTE_PRIORITY = 300
PATH_PRIORITY = 200
ROUTE_PRIORITY = 100
TABLE_MISS_PRIORITY = 0
ETH_TYPE_IPV4 = 0x0800
IP_PROTO_UDP = 17
ROCE_PORT = 4791  # RoCEv2's UDP destination port
ECN_ECT0 = 2  # the ECN codepoint plain RoCE hosts mark their data with


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
class GspRule:
    """Placement leaf: ``ip, <match>`` -> out of ``output_port`` (the GSP port), at
    ``GSP_PRIORITY``.  ``match``: (field, value) pairs, os-ken ``OFPMatch`` field names,
    ``eth_type=0x0800`` implied."""

    match: tuple[tuple[str, int | str], ...]
    output_port: int  # OpenFlow port


@dataclass(frozen=True)
class SwitchTable:
    dpid: int
    switch: str
    groups: tuple[Group, ...]
    routes: tuple[Route, ...]  # in host order
    gse: str | None = None  # the GSE mode the GSE flows below were computed for
    path_rules: tuple[PathRule, ...] = ()  # GSE on, tier-1 switches only; by path
    punt_ports: tuple[int, ...] = ()  # central mode, tier-1 only: ports punting REQUESTs
    gsp_port: int | None = None  # placement leaf, tier-1 only: the GSP's OpenFlow port
    gsp_rules: tuple[GspRule, ...] = ()  # placement leaf, tier-1 only

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
            if self.gsp_port is not None:
                out.update(gsp_port=self.gsp_port, gsp_rules=len(self.gsp_rules))
        return out


def check_gse_mode(mode: str | None) -> str | None:
    """``None`` (GSE off) for None or "", the mode if it is one of :data:`GSE_MODES`."""
    if not mode:
        return None
    if mode not in GSE_MODES:
        raise ValueError(f"{ENV_GSE} must be one of {', '.join(GSE_MODES)} or unset, "
                         f"not {mode!r}")
    return mode


def check_gse_placement(placement: str | None, gse: str | None = None) -> str:
    """``"nic"`` for None or "", the placement if it is one of :data:`GSE_PLACEMENTS`;
    ValueError otherwise, and for placement leaf with GSE mode ``gse`` egress (on Mininet
    a leaf's GSP runs with the central scheduler only)."""
    if not placement:
        return "nic"
    if placement not in GSE_PLACEMENTS:
        raise ValueError(f"{ENV_GSE_PLACEMENT} must be one of {', '.join(GSE_PLACEMENTS)} "
                         f"or unset, not {placement!r}")
    if placement == "leaf" and gse == "egress":
        raise ValueError("gse.placement leaf on Mininet runs with gse.scheduler central only")
    return placement


def gsp_ofport(topo: Topology, leaf: str) -> int:
    """The OpenFlow port of ``leaf``'s GSP port (placement leaf): one after the last model
    port (model port i is OpenFlow port i + 1)."""
    return len(topo.nodes[leaf].ports) + 1


def leaf_gsp_id(topo: Topology, leaf: str) -> int:
    """The GSP id of ``leaf``'s GSP (placement leaf): the index in ``topo.hosts`` of its
    first host, as the wire numbers GSPs."""
    for i, h in enumerate(topo.hosts):
        if topo.tor_of(h) == leaf:
            return i
    raise ValueError(f"{leaf} has no host: no GSP")


def gsp_leaf(topo: Topology, gsp_id: int) -> str:
    """The leaf whose GSP has id ``gsp_id`` (placement leaf); the inverse of
    :func:`leaf_gsp_id` on the ids it gives."""
    return topo.tor_of(topo.hosts[gsp_id])


def uplinks(topo: Topology, switch: str) -> tuple[int, ...]:
    """Model ports of ``switch`` that lead to a switch of a higher tier, in port order.
    On a leaf, path k leaves by ``uplinks(...)[k % len(...)]``."""
    return topo.uplinks(switch)


def host_ports(topo: Topology, switch: str) -> tuple[int, ...]:
    """Model ports of ``switch`` that face a host, in port order."""
    return tuple(p for p in range(len(topo.nodes[switch].ports))
                 if topo.nodes[topo.peer(switch, p).node].is_host)


def max_gse_paths(topo: Topology) -> int:
    """The most container paths between two hosts: the product of the uplinks per tier
    (spines in a leaf-spine, (k/2)^2 in a k-ary fat-tree).  DSCP (6 bits) carries 63."""
    n = 1
    for c in topo.uplink_counts():
        n *= c
    return n


def gse_path_rules(topo: Topology, switch: str) -> tuple[PathRule, ...]:
    """The container path flows of ``switch`` (tiers below the top): DSCP ``k + 1`` goes up
    by uplink ``(k // (n_1 ... n_(t-1))) % n_t`` at tier t, n_i being the uplinks per switch
    of tier i.  In a leaf-spine that is spine k; in a k-ary fat-tree the edge takes uplink
    ``k % (k/2)`` and the aggregation ``k // (k/2)``, and the core's way down is forced, so
    the DSCP pins the whole path."""
    tier = topo.nodes[switch].tier
    counts = topo.uplink_counts()
    if not 1 <= tier <= len(counts):
        return ()
    n = max_gse_paths(topo)
    if n > 63:
        raise ValueError(f"{n} container paths between two hosts; DSCP (6 bits) encodes 63")
    below = 1
    for c in counts[:tier - 1]:
        below *= c
    ups = uplinks(topo, switch)
    return tuple(PathRule(k, k + 1, Topology.ofport(ups[(k // below) % len(ups)]))
                 for k in range(n))


def _gse_local(topo: Topology, switch: str, host: str) -> bool:
    """Whether ``switch`` (one with GSE path flows) reaches ``host`` downwards only: its
    route then sits above the path flows, so a container on its way down is not sent up."""
    return all(topo.port_role(switch, p) in ("host", "down")
               for p in topo.next_hops(switch, host))


def gsp_rules(topo: Topology, leaf: str) -> tuple[GspRule, ...]:
    """The ``GSP_PRIORITY`` flows of ``leaf`` (placement leaf), in this order: per host port
    (port order) its ECT(0) RoCE data, then per own host (host order) and per path k its
    containers (DSCP k + 1), all to the GSP port."""
    gsp = gsp_ofport(topo, leaf)
    rules = [GspRule((("in_port", Topology.ofport(p)), ("ip_proto", IP_PROTO_UDP),
                      ("udp_dst", ROCE_PORT), ("ip_ecn", ECN_ECT0)), gsp)
             for p in host_ports(topo, leaf)]
    n = max_gse_paths(topo)
    for h in topo.hosts:
        if topo.tor_of(h) == leaf:
            rules += [GspRule((("ipv4_dst", topo.nodes[h].ip), ("ip_dscp", d)), gsp)
                      for d in range(1, n + 1)]
    return tuple(rules)


def switch_table(topo: Topology, switch: str, gse: str | None = None,
                 placement: str | None = "nic") -> SwitchTable:
    """The table of one switch; ``gse`` (a :data:`GSE_MODES` value or None) adds the GSE
    flows described in the module docstring, for the GSP ``placement`` (a
    :data:`GSE_PLACEMENTS` value; ignored with GSE off; leaf needs central mode)."""
    gse = check_gse_mode(gse)
    placement = check_gse_placement(placement, gse)
    is_leaf = topo.nodes[switch].tier == 1
    leaf_gsp = gse is not None and placement == "leaf" and is_leaf
    hosts = topo.hosts
    ecmp: dict[str, tuple[int, ...]] = {
        h: tuple(sorted(Topology.ofport(p) for p in topo.next_hops(switch, h))) for h in hosts}
    multi = sorted({ports for ports in ecmp.values() if len(ports) > 1})
    gid = {ports: i + 1 for i, ports in enumerate(multi)}
    path_rules = gse_path_rules(topo, switch) if gse is not None else ()
    routes = []
    for h in hosts:
        ip = topo.nodes[h].ip
        if not ip:
            raise ValueError(f"host {h} has no IPv4 address")
        ports = ecmp[h]
        if not ports:
            raise ValueError(f"{switch} has no path to {h}")
        local = bool(path_rules) and _gse_local(topo, switch, h)
        routes.append(Route(h, ip, ports, gid.get(ports),
                            LOCAL_ROUTE_PRIORITY if local else ROUTE_PRIORITY))
    punt: tuple[int, ...] = ()
    gsp_port, rules = None, ()
    if leaf_gsp:
        gsp_port, rules = gsp_ofport(topo, switch), gsp_rules(topo, switch)
        punt = (gsp_port,)
    elif gse == "central" and is_leaf:
        punt = tuple(Topology.ofport(p) for p in host_ports(topo, switch))
    return SwitchTable(topo.dpid(switch), switch,
                       tuple(Group(gid[p], p) for p in multi), tuple(routes), gse,
                       path_rules, punt, gsp_port, rules)


def switch_tables(topo: Topology, gse: str | None = None,
                  placement: str | None = "nic") -> dict[int, SwitchTable]:
    """Every switch's table, keyed by datapath id (``gse``, ``placement``: see
    :func:`switch_table`)."""
    check_gse_placement(placement, check_gse_mode(gse))
    return {topo.dpid(s): switch_table(topo, s, gse, placement) for s in topo.switches}


# -- GSE: paths and rates, as GSOS sees them ---------------------------------------------
def _is_transit(topo: Topology, port: PortId) -> bool:
    """A switch egress port whose peer is a switch (a fabric link, one direction)."""
    return (not topo.nodes[port.node].is_host
            and not topo.nodes[topo.peer(port.node, port.port).node].is_host)


def transit_paths(topo: Topology, src: str, dst: str) -> list[list[PortId]]:
    """The paths a container from host ``src`` to host ``dst`` may take, indexed by path
    number (the DSCP - 1 the switches' path flows follow, :func:`gse_path_rules`), each as
    its transit links: the switch-to-switch egress ports (``PortId`` with model ports; one
    id per link direction), in hop order.

    Path k takes, at each tier t on the way up, uplink ``(k // (n_1 ... n_(t-1))) % n_t``,
    and the forced way down: in a leaf-spine path k is spine k; in a k-ary fat-tree the
    (k/2)^2 paths between pods are every edge uplink x aggregation uplink, and the k/2
    within a pod every edge uplink.  Two hosts on the same leaf have one path, with no
    transit links: ``[[]]``.
    """
    if src == dst:
        raise ValueError(f"no path from {src} to itself")
    if topo.tor_of(dst) == topo.tor_of(src):
        return [[]]
    return [[p for p in path if _is_transit(topo, p)]
            for path in topo.container_paths(src, dst)]


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


# -- faults: the tables after a detection ---------------------------------------------------
#
# When switches detect dead links (routing.detect_us after a port went down), the controller
# installs what :class:`fabriclab.faults.Routes` says -- the one routing-around-failures model
# both engines follow -- as changes to the tables above.  The routes are written here as
# plain entries, ``{(priority, match): actions}`` per switch, so that the app only has to
# diff two of them and translate the difference into OpenFlow:
#
# * ``match``: ``(("ipv4_dst", ip),)``, ``(("in_port", ofport), ("ipv4_dst", ip))`` for
#   the bounce rules, ``(("ip_dscp", path + 1),)`` for GSE's container paths (a path whose
#   uplink is dead has none: its containers follow the routes);
# * ``actions``: a tuple of ``("dscp0",)`` (set the IPv4 DSCP to 0), ``("dec_ttl",)``,
#   ``("output", ofport)`` or ``("group", ports)`` (a SELECT group over those OpenFlow
#   ports, sorted).  A destination a switch has no way to is left without a route: the
#   table-miss entry drops it (counted as "no route").
#
# With no dead link these entries are exactly the routes :func:`switch_table` installs.
BOUNCE_PRIORITY = 250  # above PATH_PRIORITY: a bounced GSE container ignores its DSCP
DSCP0 = ("dscp0",)
DEC_TTL = ("dec_ttl",)


def _out(ports: tuple[int, ...]) -> tuple:
    return ("output", ports[0]) if len(ports) == 1 else ("group", ports)


def fabric_entries(topo: Topology, routes, gse: str | None = None,
                   on_no_path: str = "drop") -> dict[str, dict[tuple, tuple]]:
    """Every switch's route entries (see above) given ``routes`` (a
    :class:`fabriclab.faults.Routes` that knows the dead links).

    * Towards each host a switch forwards over ``routes.next_hops`` (ECMP over what is left;
      in ``reconverge: local`` mode only the dead link's own ends change anything).
    * GSE on: a spine whose way to a host is no longer its healthy one (fabric mode sends it
      down to another leaf and up again) also sets the DSCP to 0, so that the leaf below
      does not send a container back up by its path rule (a loop: Open vSwitch does not
      decrement TTLs); the receiving agent does not read the DSCP.
    * ``on_no_path: bounce``: a switch with no way to a host sends a frame that came in by
      port p down to a switch of the tier below that is neither the destination's ToR nor
      p's peer (``in_port=p`` rules), and that switch sends what comes from above for that
      host up by another of its uplinks: the candidates of
      :meth:`fabriclab.faults.Routes.bounce`, among which Open vSwitch's group hash picks
      (the simulator's hash picks one by flow).  Bounced frames get DSCP 0 and a TTL
      decrement (64 bounces at most: no endless loop).
    """
    dead = routes.dead
    out: dict[str, dict[tuple, tuple]] = {s: {} for s in topo.switches}
    rules = {s: gse_path_rules(topo, s) if gse is not None else () for s in topo.switches}
    for s in topo.switches:
        node = topo.nodes[s]
        entries = out[s]
        for h in topo.hosts:
            ip = topo.nodes[h].ip
            hops = routes.next_hops(s, h)
            if not hops:
                if on_no_path == "bounce":
                    _bounce_entries(topo, routes, s, h, out)
                continue
            local = bool(rules[s]) and _gse_local(topo, s, h)  # rules: GSE on
            prio = LOCAL_ROUTE_PRIORITY if local else ROUTE_PRIORITY
            ports = tuple(sorted(Topology.ofport(p) for p in hops))
            acts = (_out(ports),)
            if gse is not None and node.tier >= 2 and set(hops) != set(topo.next_hops(s, h)):
                acts = (DSCP0,) + acts
            entries[(prio, (("ipv4_dst", ip),))] = acts
        # a container path whose uplink is dead falls to the routes above (the switch
        # knows its own link is dead: the simulator's leaf detours such a container)
        for rule in rules[s]:
            if node.ports[rule.output_port - 1] not in dead:  # OpenFlow port = model + 1
                entries[(PATH_PRIORITY, (("ip_dscp", rule.dscp),))] = \
                    (("output", rule.output_port),)
    return out


def _bounce_entries(topo: Topology, routes, s: str, h: str, out: dict) -> None:
    """``s`` has no way to host ``h``: the bounce rules of ``s`` and of the switches below
    it, over :meth:`fabriclab.faults.Routes.bounce_options` (Open vSwitch's group hash
    picks among them where the simulator's picks one by flow)."""
    ip = topo.nodes[h].ip
    opts = routes.bounce_options(s, h)
    for p, link in enumerate(topo.nodes[s].ports):
        if link in routes.dead or topo.nodes[topo.peer(s, p).node].is_host:
            continue
        came = topo.peer(s, p).node
        choice = tuple(sorted(Topology.ofport(i) for i, _ in opts
                              if topo.peer(s, i).node != came))
        if choice:
            out[s][(BOUNCE_PRIORITY, (("in_port", Topology.ofport(p)), ("ipv4_dst", ip)))] = \
                (DSCP0, DEC_TTL, _out(choice))
    for i, ups in opts:
        low = topo.peer(s, i)
        out[low.node][(BOUNCE_PRIORITY, (("in_port", Topology.ofport(low.port)),
                                         ("ipv4_dst", ip)))] = \
            (DSCP0, DEC_TTL, _out(tuple(sorted(Topology.ofport(u) for u in ups))))


def bucket_ids(topo: Topology, switch: str) -> dict[int, int]:
    """The bucket id each OpenFlow port of ``switch`` has in every SELECT group: its index
    in the healthy group it belongs to (as :func:`switch_table`'s groups number them), else
    1000 + the port.  Open vSwitch picks a bucket by a hash of the flow and the bucket id
    (highest score among the live buckets), so a group that loses a member keeps every other
    flow on its bucket (resilient hashing, as :class:`fabriclab.faults.Routes` wants)."""
    ids: dict[int, int] = {}
    for g in switch_table(topo, switch).groups:
        for i, p in enumerate(g.ports):
            ids.setdefault(p, i)
    for p in range(len(topo.nodes[switch].ports)):
        ids.setdefault(Topology.ofport(p), 1000 + Topology.ofport(p))
    return ids


def link_ports(topo: Topology, link) -> list[PortId]:
    """The switch ends of ``link`` (a fabric link has two, a host link one)."""
    return [PortId(n, p) for n, p in ((link.a, link.a_port), (link.b, link.b_port))
            if not topo.nodes[n].is_host]


def dead_transit(topo: Topology, dead) -> set[PortId]:
    """GSOS's ids (switch egress ports) of the transit links among ``dead``."""
    return {p for k in dead for p in link_ports(topo, k) if _is_transit(topo, p)}


def dead_gse_paths(topo: Topology, dead) -> dict[str, dict[int, list[int]]]:
    """Per source host, per destination (host index, as GSPs number them), the container
    paths (:func:`transit_paths` indices) that cross a link in ``dead``; pairs with none
    left out.  What GSPs must stop spraying over once the switches have routed around."""
    if not dead:
        return {}
    hosts = topo.hosts
    by_leaves: dict[tuple[str, str], list[int]] = {}
    out: dict[str, dict[int, list[int]]] = {}
    for src in hosts:
        for j, dst in enumerate(hosts):
            ls, ld = topo.tor_of(src), topo.tor_of(dst)
            if ls == ld:
                continue
            key = (ls, ld)
            bad = by_leaves.get(key)
            if bad is None:
                bad = by_leaves[key] = [
                    k for k, path in enumerate(transit_paths(topo, src, dst))
                    if any(topo.nodes[p.node].ports[p.port] in dead for p in path)]
            if bad:
                out.setdefault(src, {})[j] = bad
    return out
