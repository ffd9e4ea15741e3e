"""GSE placement leaf in the controller (pure parts, no OVS, no root): the leaves' GSP port
and flows, the punt from the GSP port, GSOS with one GSP per leaf, and where its grants
leave; placement nic is what it was."""

from __future__ import annotations

import itertools

import pytest

from fabriclab.controllers import gsos as G
from fabriclab.controllers.routing import (ENV_GSE_PLACEMENT, GSE_PORT, GSE_PUNT_PRIORITY,
                                           GSP_PRIORITY, LOCAL_ROUTE_PRIORITY, PATH_PRIORITY,
                                           ROUTE_PRIORITY, GspRule, check_gse_placement,
                                           gsp_leaf, gsp_ofport, leaf_gsp_id, max_gse_paths,
                                           switch_table, switch_tables, uplinks)
from fabriclab.topologies import Topology, fat_tree, leaf_spine

GBPS = 1_000_000_000
ROCE = 4791


def _ls() -> Topology:
    return leaf_spine(2, 2, 2, 100 * GBPS, 100 * GBPS, 1000)


def _ft() -> Topology:
    return fat_tree(4, 100 * GBPS, 100 * GBPS, 1000)


TOPOS = {"leaf_spine_2x2x2": _ls, "fat_tree_k4": _ft}


@pytest.fixture(params=sorted(TOPOS))
def topo(request) -> Topology:
    return TOPOS[request.param]()


def _leaves(topo):
    return [s for s in topo.switches if topo.nodes[s].tier == 1]


def _own_hosts(topo, leaf):
    return [h for h in topo.hosts if topo.tor_of(h) == leaf]


def _host_ofport(topo, h):
    return Topology.ofport(topo.peer(h, 0).port)


# -- a switch's decision, from its table ------------------------------------------------------
def _decide(table, *, in_port, ipv4_dst, dscp=0, ecn=0, udp_dst=None):
    """What the switch does with an IPv4 frame: the action of the highest-priority matching
    entry ('port', p) / ('group', ports) / ('controller', None).  Entries overlapping at the
    top priority must agree."""
    pkt = {"in_port": in_port, "ipv4_dst": ipv4_dst, "ip_dscp": dscp, "ip_ecn": ecn,
           "ip_proto": 17 if udp_dst is not None else 6, "udp_dst": udp_dst}
    hits = []
    if udp_dst == GSE_PORT and in_port in table.punt_ports:
        hits.append((GSE_PUNT_PRIORITY, ("controller", None)))
    for rule in table.gsp_rules:
        if all(pkt[f] == v for f, v in rule.match):
            hits.append((GSP_PRIORITY, ("port", rule.output_port)))
    for r in table.routes:
        if r.ip == ipv4_dst:
            hits.append((r.priority, ("group", table.group(r.group_id).ports)
                         if r.group_id is not None else ("port", r.output_port)))
    for rule in table.path_rules:
        if rule.dscp == dscp:
            hits.append((PATH_PRIORITY, ("port", rule.output_port)))
    assert hits
    top = max(p for p, _ in hits)
    winners = {w for p, w in hits if p == top}
    assert len(winners) == 1, f"entries disagree at priority {top}: {winners}"
    return winners.pop()


# -- tables -------------------------------------------------------------------------------------
def test_gsp_ids_and_ports():
    topo = _ls()
    assert [gsp_ofport(topo, s) for s in ("l0", "l1")] == [5, 5]  # 2 hosts + 2 spines, +1
    assert [leaf_gsp_id(topo, s) for s in ("l0", "l1")] == [0, 2]
    assert [gsp_leaf(topo, i) for i in range(4)] == ["l0", "l0", "l1", "l1"]
    ft = _ft()
    assert {gsp_ofport(ft, s) for s in _leaves(ft)} == {5}  # k=4: 2 hosts + 2 uplinks, +1
    ids = [leaf_gsp_id(ft, s) for s in _leaves(ft)]
    assert sorted(ids) == list(range(0, 16, 2))
    assert [gsp_leaf(ft, i) for i in ids] == _leaves(ft)
    with pytest.raises(ValueError):
        leaf_gsp_id(ft, "c0")  # a core switch has no host


def test_placement_checked():
    assert check_gse_placement(None) == "nic" and check_gse_placement("") == "nic"
    assert check_gse_placement("leaf", "central") == "leaf"
    for bad in ("Leaf", "tor", "nic "):
        with pytest.raises(ValueError, match=ENV_GSE_PLACEMENT):
            check_gse_placement(bad)
    msg = "gse.placement leaf on Mininet runs with gse.scheduler central only"
    with pytest.raises(ValueError, match=msg):
        check_gse_placement("leaf", "egress")
    topo = _ls()
    with pytest.raises(ValueError, match=msg):
        switch_tables(topo, "egress", "leaf")
    with pytest.raises(ValueError, match=msg):
        switch_table(topo, "l0", "egress", "leaf")
    with pytest.raises(ValueError, match=msg):
        switch_table(topo, "s0", "egress", "leaf")  # refused on any switch
    with pytest.raises(ValueError, match=ENV_GSE_PLACEMENT):
        switch_tables(topo, "central", "spine")


@pytest.mark.parametrize("mode", ["central", "egress", None])
def test_placement_nic_is_unchanged(topo, mode):
    """The default placement is nic and its tables have no GSP in them: the same groups,
    routes, path flows and punts as a placement-leaf table has wherever leaf changes
    nothing, host ports punting in central mode."""
    nic = switch_tables(topo, mode)
    assert nic == switch_tables(topo, mode, "nic") == switch_tables(topo, mode, "")
    for t in nic.values():
        assert t.gsp_port is None and t.gsp_rules == ()
        assert "gsp_rules" not in t.summary() and "gsp_port" not in t.summary()
        if mode == "central" and topo.nodes[t.switch].tier == 1:
            assert t.punt_ports == tuple(_host_ofport(topo, h)
                                         for h in _own_hosts(topo, t.switch))
        else:
            assert t.punt_ports == ()
    if mode is None:  # GSE off: placement means nothing
        assert switch_tables(topo, None, "leaf") == nic


def test_leaf_tables(topo):
    nic = switch_tables(topo, "central")
    leaf = switch_tables(topo, "central", "leaf")
    n = max_gse_paths(topo)
    assert n == (2 if topo.kind == "leaf_spine" else 4)
    for s in topo.switches:
        t, p = leaf[topo.dpid(s)], nic[topo.dpid(s)]
        # routes, groups and path flows as in placement nic (containers the GSP sends up
        # carry DSCP path + 1; the own hosts' routes stay raised)
        assert (t.groups, t.routes, t.path_rules, t.gse) == (
            p.groups, p.routes, p.path_rules, p.gse)
        if topo.nodes[s].tier != 1:  # spines, aggregation, core: nothing new
            assert t == p
            assert t.gsp_port is None and t.gsp_rules == () and t.punt_ports == ()
            continue
        gsp = len(topo.nodes[s].ports) + 1
        assert t.gsp_port == gsp == gsp_ofport(topo, s)
        assert t.punt_ports == (gsp,)  # REQUESTs come from the GSP only
        own = _own_hosts(topo, s)
        host_ports = [_host_ofport(topo, h) for h in own]
        assert all(r.output_port == gsp for r in t.gsp_rules)
        roce = [r.match for r in t.gsp_rules if dict(r.match).get("udp_dst") == ROCE]
        assert roce == [(("in_port", hp), ("ip_proto", 17), ("udp_dst", ROCE), ("ip_ecn", 2))
                        for hp in sorted(host_ports)]
        down = [r.match for r in t.gsp_rules if "ipv4_dst" in dict(r.match)]
        assert down == [(("ipv4_dst", topo.nodes[h].ip), ("ip_dscp", d))
                        for h in own for d in range(1, n + 1)]
        assert len(t.gsp_rules) == len(roce) + len(down) == len(own) * (1 + n)
        assert all(isinstance(r, GspRule) for r in t.gsp_rules)
        sm = t.summary()
        assert (sm["gsp_port"], sm["gsp_rules"], sm["punt_ports"]) == (
            gsp, len(own) * (1 + n), 1)


def test_leaf_forwarding(topo):
    """Where frames go on a leaf with its GSP: a plain host's RoCE data (ECT(0)) into the
    GSP, its ACKs / CNPs (not ECN-capable) by the routes; containers coming down into the
    GSP, the GSP's DSCP-0 frames to the host, its containers up by their path; REQUESTs
    from the GSP port to the controller, a host's not."""
    tables = switch_tables(topo, "central", "leaf")
    n = max_gse_paths(topo)
    for leaf in _leaves(topo):
        t = tables[topo.dpid(leaf)]
        gsp = gsp_ofport(topo, leaf)
        ups = [Topology.ofport(u) for u in uplinks(topo, leaf)]
        by_dscp = {r.dscp: r.output_port for r in t.path_rules}
        own = _own_hosts(topo, leaf)
        for src, dst in itertools.product(own, topo.hosts):
            if src == dst:
                continue
            ip, hp = topo.nodes[dst].ip, _host_ofport(topo, src)
            local = topo.tor_of(dst) == leaf
            route = ("port", _host_ofport(topo, dst)) if local else ("group", tuple(ups))
            # data from a plain host: into the GSP, whatever the destination
            assert _decide(t, in_port=hp, ipv4_dst=ip, ecn=2, udp_dst=ROCE) == ("port", gsp)
            # ACK / NACK / CNP (ECN 0), and ECT(1) / CE, and other UDP: the routes
            for ecn, dport in ((0, ROCE), (1, ROCE), (3, ROCE), (2, 4000), (0, None)):
                assert _decide(t, in_port=hp, ipv4_dst=ip, ecn=ecn, udp_dst=dport) == route
            # a REQUEST from a host port is not punted in placement leaf
            assert _decide(t, in_port=hp, ipv4_dst=ip, udp_dst=GSE_PORT) == route
            # the GSP's frames: DSCP 0 by the routes (to a local host: delivered), a
            # container for another leaf up by its path
            assert _decide(t, in_port=gsp, ipv4_dst=ip, ecn=2, udp_dst=ROCE) == route
            if not local:
                for k in range(n):
                    assert _decide(t, in_port=gsp, ipv4_dst=ip, dscp=k + 1, ecn=2,
                                   udp_dst=ROCE) == ("port", by_dscp[k + 1])
        # REQUESTs from the GSP port go to GSOS
        assert _decide(t, in_port=gsp, ipv4_dst=topo.nodes[topo.hosts[-1]].ip,
                       udp_dst=GSE_PORT) == ("controller", None)
        # containers coming down to an own host: into the GSP (reorder buffer)
        for h in own:
            for u in ups:
                for d in range(1, n + 1):
                    assert _decide(t, in_port=u, ipv4_dst=topo.nodes[h].ip, dscp=d, ecn=2,
                                   udp_dst=ROCE) == ("port", gsp)
                # DSCP 0 (ordinary traffic, ACKs from afar): delivered
                assert _decide(t, in_port=u, ipv4_dst=topo.nodes[h].ip, udp_dst=ROCE) == (
                    "port", _host_ofport(topo, h))


def test_leaf_placement_priorities():
    assert GSE_PUNT_PRIORITY > GSP_PRIORITY > LOCAL_ROUTE_PRIORITY > PATH_PRIORITY \
        > ROUTE_PRIORITY
    assert GSP_PRIORITY == 350


# -- the flows in OpenFlow (os-ken's parser, no switch) ---------------------------------------
class _FakeDatapath:
    def __init__(self, ofproto, parser):
        self.ofproto, self.ofproto_parser = ofproto, parser
        self.sent = []
        self._xid = itertools.count(1)
        self.id = 1

    def set_xid(self, msg):
        msg.set_xid(next(self._xid))

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()  # every message encodes
        self.sent.append(msg)


@pytest.mark.parametrize("version", ["1.3", "1.5"])
def test_install_sends_the_gsp_flows(version):
    pytest.importorskip("os_ken")
    from os_ken.ofproto import (ofproto_v1_3, ofproto_v1_3_parser, ofproto_v1_5,
                                ofproto_v1_5_parser)

    from fabriclab.controllers.ecmp_app import install
    ofp, parser = ((ofproto_v1_3, ofproto_v1_3_parser) if version == "1.3"
                   else (ofproto_v1_5, ofproto_v1_5_parser))
    topo = _ls()
    for placement in ("leaf", "nic"):
        table = switch_tables(topo, "central", placement)[topo.dpid("l1")]
        dp = _FakeDatapath(ofp, parser)
        install(dp, table)
        flows = [m for m in dp.sent if isinstance(m, parser.OFPFlowMod)
                 and m.command == ofp.OFPFC_ADD]
        gsp = [m for m in flows if m.priority == GSP_PRIORITY]
        punt = [m for m in flows if m.priority == GSE_PUNT_PRIORITY]
        if placement == "nic":
            assert gsp == [] and len(punt) == 2
            continue
        assert len(gsp) == len(table.gsp_rules) == 2 * (1 + 2)
        for m, rule in zip(gsp, table.gsp_rules):
            fields = dict(m.match.items())
            assert fields == {"eth_type": 0x0800, **dict(rule.match)}
            if "udp_dst" in fields:  # OpenFlow prerequisites
                assert fields["ip_proto"] == 17
            (inst,) = m.instructions
            (act,) = inst.actions
            assert act.port == 5
        assert [dict(m.match.items())["in_port"] for m in punt] == [5]


# -- GSOS with one GSP per leaf --------------------------------------------------------------
def _drain(g):
    out = []
    while (t := g.next_time()) is not None:
        out += g.due(t)
    return out


def test_gsos_leaf_same_leaf_pair_including_own_id():
    """Leaf l0's GSP has h0's id: h1 -> h0 traffic makes a REQUEST (0, 0), granted on the
    one path (no transit link); so is (0, 1)."""
    topo = _ls()
    g = G.make_gsos(topo, placement="leaf")
    g.request(1000, 0, 0, [4096, 4096])
    g.request(1000, 0, 1, [1000])
    grants = _drain(g)
    assert sorted((x.src_gsp, x.dst_port, x.nbytes, x.path) for x in grants) == [
        (0, 0, 4096, 0), (0, 0, 4096, 0), (0, 1, 1000, 0)]
    assert g.paths(0, 0) == [()] and g.paths(0, 1) == [()]
    # placement nic still refuses a host to itself
    with pytest.raises(ValueError):
        G.make_gsos(topo).request(0, 0, 0, [4096])


def test_gsos_leaf_remote_pairs_and_refusals():
    topo = _ls()
    g = G.make_gsos(topo, placement="leaf")
    nic = G.make_gsos(topo)
    # l1's GSP (id 2) to h0 and h1: the transit paths of its hosts, spine k = path k
    for dst in (0, 1):
        assert g.paths(2, dst) == nic.paths(2, dst) == nic.paths(3, dst)
        assert len(g.paths(2, dst)) == 2
    g.request(0, 2, 1, [4096] * 4)
    grants = _drain(g)
    assert len(grants) == 4 and {x.path for x in grants} == {0, 1}
    # reach from the leaf: shorter than from its host by the host link
    frame = G.DEFAULT_MTU + G.DEFAULT_HEADER
    assert topo.reach_ns("l1", "h0", frame) < topo.reach_ns("h2", "h0", frame)
    # ids that are no leaf's GSP (h1, h3), and unknown ports: refused, nothing recorded
    for src, dst in ((1, 2), (3, 0), (7, 0), (0, 9)):
        with pytest.raises(ValueError):
            g.request(0, src, dst, [4096])
    assert g.request_messages == 1


def test_gsos_leaf_fat_tree():
    topo = _ft()
    g = G.make_gsos(topo, placement="leaf")
    e0 = topo.tor_of("h0")
    src = leaf_gsp_id(topo, e0)
    assert src == 0
    other_pod = next(i for i, h in enumerate(topo.hosts) if topo.tor_of(h) != e0
                     and not topo.tor_of(h).startswith(e0.split("_")[0]))
    assert len(g.paths(src, other_pod)) == 4 and g.paths(src, 1) == [()]
    g.request(0, src, 0, [1000])
    g.request(0, src, other_pod, [1000])
    assert len(_drain(g)) == 2


def test_make_gsos_placement_checked():
    with pytest.raises(ValueError, match=ENV_GSE_PLACEMENT):
        G.make_gsos(_ls(), placement="spine")
    topo = _ls()
    cfg = G.config_from_env({ENV_GSE_PLACEMENT: "leaf"})
    g = G.make_gsos(topo, **cfg)
    g.request(0, 0, 0, [100])  # accepted: a leaf GSP
    with pytest.raises(ValueError):
        g.request(0, 1, 0, [100])


def test_grant_egress_leaf_points_at_the_gsp_port(topo):
    for leaf in _leaves(topo):
        gid = leaf_gsp_id(topo, leaf)
        assert G.grant_egress(topo, gid, "leaf") == (topo.dpid(leaf), gsp_ofport(topo, leaf))
        # placement nic: the host's own leaf port, as before
        assert G.grant_egress(topo, gid) == G.grant_egress(topo, gid, "nic") == (
            topo.dpid(leaf), _host_ofport(topo, topo.hosts[gid]))
    with pytest.raises(ValueError):
        G.grant_egress(topo, 0, "Leaf")
