"""GSE in the controller, pure parts: the container path flows, the transit paths GSOS
tracks, GSOS's grants, and the REQUEST / GRANT frames."""

from __future__ import annotations

import socket
import struct

import pytest

from fabriclab.cc_algorithms.gse import GseParams
from fabriclab.cc_algorithms.gsos import Gsos
from fabriclab.controllers import gsos as G
from fabriclab.controllers.routing import (GSE_PORT, GSE_PUNT_PRIORITY, LOCAL_ROUTE_PRIORITY,
                                           PATH_PRIORITY, ROUTE_PRIORITY, PathRule, check_gse_mode,
                                           fabric_link_rates, host_port_rates, max_gse_paths, n_paths,
                                           switch_tables, transit_paths, uplinks)
from fabriclab.wire import roce as packets
from fabriclab.topologies import PortId, Topology, fat_tree, leaf_spine
from fabriclab.units import BIT_NS, wire_bytes

GBPS = 1_000_000_000
MTU, HEADER = 1000, 58
T0 = 10**12  # a CLOCK_MONOTONIC-like start time


def _ls(host_rate=100 * GBPS, fabric_rate=100 * GBPS) -> Topology:
    return leaf_spine(2, 2, 2, host_rate, fabric_rate, 1000)


# -- flows ---------------------------------------------------------------------------------
def _lookup(table, dst_ip: str, dscp: int, in_port: int = 1, udp_dport: int | None = None):
    """What the switch does with an IPv4 frame: the highest-priority matching entry, as
    ('port', p) / ('group', ports) / ('controller', None)."""
    hits = []
    if udp_dport == GSE_PORT and in_port in table.punt_ports:
        hits.append((GSE_PUNT_PRIORITY, ("controller", None)))
    for r in table.routes:
        if r.ip == dst_ip:
            what = (("group", table.group(r.group_id).ports) if r.group_id is not None
                    else ("port", r.output_port))
            hits.append((r.priority, what))
    for rule in table.path_rules:
        if rule.dscp == dscp:
            hits.append((PATH_PRIORITY, ("port", rule.output_port)))
    assert hits, (table.switch, dst_ip, dscp)
    top = max(p for p, _ in hits)
    winners = [w for p, w in hits if p == top]
    assert len(winners) == 1, f"overlapping entries at priority {top}: {winners}"
    return winners[0]


@pytest.mark.parametrize("mode", ["central", "egress"])
def test_leaf_container_path_rules(mode):
    topo = _ls()
    tables = switch_tables(topo, mode)
    plain = switch_tables(topo)
    assert GSE_PUNT_PRIORITY > LOCAL_ROUTE_PRIORITY > PATH_PRIORITY > ROUTE_PRIORITY
    for leaf in ("l0", "l1"):
        t = tables[topo.dpid(leaf)]
        # Uplinks are model ports 2, 3 = OpenFlow 3, 4: path k -> spine k.
        assert t.path_rules == (PathRule(0, 1, 3), PathRule(1, 2, 4))
        assert [topo.peer(leaf, p - 1).node for p in (3, 4)] == ["s0", "s1"]
        assert t.punt_ports == ((1, 2) if mode == "central" else ())
        for r in t.routes:
            local = topo.tor_of(r.host) == leaf
            assert r.priority == (LOCAL_ROUTE_PRIORITY if local else ROUTE_PRIORITY)
        # Same routes otherwise.
        assert [(r.ip, r.ports, r.group_id) for r in t.routes] == [
            (r.ip, r.ports, r.group_id) for r in plain[topo.dpid(leaf)].routes]
        s = t.summary()
        assert (s["gse"], s["path_rules"], s["local_routes"]) == (mode, 2, 2)
        for h in topo.hosts:
            ip = topo.nodes[h].ip
            for dscp in range(4):
                got = _lookup(t, ip, dscp)
                if topo.tor_of(h) == leaf:  # local delivery whatever the DSCP
                    assert got == ("port", Topology.ofport(topo.peer(h, 0).port)), (h, dscp)
                elif dscp in (1, 2):
                    assert got == ("port", 2 + dscp), (h, dscp)
                else:  # no container path: ECMP as before
                    assert got == ("group", (3, 4)), (h, dscp)
            # REQUESTs from a host port: punted (central) or routed (egress).
            got = _lookup(t, ip, 0, in_port=1, udp_dport=GSE_PORT)
            if mode == "central":
                assert got == ("controller", None)
            else:
                assert got == _lookup(t, ip, 0)
    for spine in ("s0", "s1"):  # nothing new on spines
        t, p = tables[topo.dpid(spine)], plain[topo.dpid(spine)]
        assert t.path_rules == () and t.punt_ports == () and t.routes == p.routes
        assert t.groups == p.groups


def test_gse_off_is_the_plain_table():
    topo = _ls()
    for t in switch_tables(topo, None).values():
        assert t.gse is None and not t.path_rules and not t.punt_ports
        assert all(r.priority == ROUTE_PRIORITY for r in t.routes)
        assert "gse" not in t.summary()
    assert switch_tables(topo, "") == switch_tables(topo)


def test_gse_mode_checked():
    assert check_gse_mode(None) is None and check_gse_mode("") is None
    assert check_gse_mode("central") == "central"
    with pytest.raises(ValueError, match="FABRICLAB_GSE"):
        check_gse_mode("Central")
    assert GSE_PORT == packets.GSE_PORT == 4792


def test_fat_tree_edges_and_aggregations_get_path_rules():
    """Issue 14: in a k=4 fat-tree DSCP k+1 pins the whole path: the edge goes up by uplink
    k % 2, the aggregation by uplink k // 2, the core's way down is forced.  The
    aggregation's routes to its own pod's hosts sit above the path flows (a container on
    its way down is not sent back up); only the edges punt REQUESTs."""
    topo = fat_tree(4, GBPS, GBPS, 1000)
    tables = switch_tables(topo, "central")
    for s in topo.switches:
        t = tables[topo.dpid(s)]
        tier = topo.nodes[s].tier
        if tier == 1:
            assert [r.output_port for r in t.path_rules] == [3, 4, 3, 4]
            assert t.punt_ports == (1, 2)
        elif tier == 2:
            assert [r.output_port for r in t.path_rules] == [3, 3, 4, 4]
            assert not t.punt_ports
        else:
            assert not t.path_rules and not t.punt_ports
        assert [r.dscp for r in t.path_rules] == ([1, 2, 3, 4] if tier < 3 else [])
        local = {r.host for r in t.routes if r.priority == LOCAL_ROUTE_PRIORITY}
        below = {h for h in topo.hosts
                 if all(topo.port_role(s, p) in ("host", "down") for p in topo.next_hops(s, h))}
        assert local == (below if tier < 3 else set())
    assert max_gse_paths(topo) == 4 and max_gse_paths(fat_tree(16, 1, 1, 1)) == 64
    with pytest.raises(ValueError, match="63"):
        switch_tables(fat_tree(16, GBPS, GBPS, 1000), "central")


# -- paths ---------------------------------------------------------------------------------
def _transit(topo, path):
    return [p for p in path if not topo.nodes[p.node].is_host
            and not topo.nodes[topo.peer(p.node, p.port).node].is_host]


def test_transit_paths_match_all_paths_in_leaf_spine():
    topo = leaf_spine(3, 4, 2, GBPS, GBPS, 1000)
    for src in topo.hosts:
        for dst in topo.hosts:
            if src == dst:
                continue
            got = transit_paths(topo, src, dst)
            want = [_transit(topo, p) for p in topo.all_paths(src, dst)]
            assert got == want, (src, dst)
            if topo.tor_of(src) == topo.tor_of(dst):
                assert got == [[]]
            else:
                leaf = topo.tor_of(src)
                # path k = the k-th uplink = spine k
                assert [p[0] for p in got] == [PortId(leaf, u) for u in uplinks(topo, leaf)]
                assert [topo.peer(p[0].node, p[0].port).node for p in got] == [
                    f"s{k}" for k in range(4)]
                assert n_paths(topo, src, dst) == 4
    with pytest.raises(ValueError):
        transit_paths(topo, "h0", "h0")


def test_transit_paths_fat_tree_are_whole_paths():
    """Between pods: (k/2)^2 = 4 paths, each every transit link of one shortest path (edge
    up, aggregation up, core down, aggregation down), path k by edge uplink k % 2 and
    aggregation uplink k // 2, each shortest path once.  Within a pod: 2 (edge uplinks)."""
    topo = fat_tree(4, GBPS, GBPS, 1000)
    paths = transit_paths(topo, "h0", "h15")
    assert len(paths) == 4 and all(len(links) == 4 for links in paths)
    assert set(map(tuple, paths)) == {tuple(_transit(topo, p))
                                      for p in topo.all_paths("h0", "h15")}
    for k, links in enumerate(paths):
        assert links[0] == PortId("e0_0", uplinks(topo, "e0_0")[k % 2])
        assert links[1] == PortId(links[1].node, uplinks(topo, links[1].node)[k // 2])
    assert len({links[2].node for links in paths}) == 4  # one core each
    within = transit_paths(topo, "h0", "h2")
    assert len(within) == 2 and [links[0].port for links in within] == list(uplinks(topo, "e0_0"))
    assert n_paths(topo, "h0", "h1") == 1


def test_rates():
    topo = leaf_spine(2, 2, 2, 25 * GBPS, 100 * GBPS, 1000)
    assert host_port_rates(topo) == {h: 25 * GBPS for h in topo.hosts}
    links = fabric_link_rates(topo)
    assert len(links) == 8 and set(links.values()) == {100 * GBPS}  # 4 links x 2 directions


# -- GSOS ----------------------------------------------------------------------------------
def _drain(g: Gsos, until: int | None = None):
    """Drive GSOS at each of its own next times; [(time, Grant)]."""
    out = []
    while (t := g.next_time()) is not None and (until is None or t <= until):
        out += [(t, x) for x in g.due(t)]
    return out


def test_grants_respect_the_port_rate():
    scale = 1e-3  # 100 Gb/s in the topology, 100 Mb/s emulated
    topo = _ls()
    g = G.make_gsos(topo, scale=scale, mtu=MTU, header=HEADER)
    rate = 100 * GBPS * scale
    assert g.port_rate[3] == rate
    sizes = [65536, 1000, 30000, 65536]
    for src in (0, 1, 2):
        g.request(T0, src, 3, sizes)
    grants = _drain(g)
    assert len(grants) == 12 and g.grants == 12 and g.pending() == 0
    assert g.next_time() is None
    assert grants[0][0] == T0
    # where the data arrives (each grant's time + its source's reach: h2 shares h3's leaf,
    # h0 and h1 are two switches farther): never faster than the port's rate ...
    arrivals = sorted((t + topo.reach_ns(f"h{x.src_gsp}", "h3", MTU + HEADER) / scale, x)
                      for t, x in grants)
    first = arrivals[0][0]
    cum = 0
    for t, x in arrivals:
        assert x.dst_port == 3
        assert cum * BIT_NS / rate <= t - first + 1, (cum, t - first)
        cum += wire_bytes(x.nbytes, MTU, HEADER)
    # ... and the port kept busy: no idle gap beyond rounding
    assert arrivals[-1][0] - first <= (cum - wire_bytes(arrivals[-1][1].nbytes, MTU, HEADER)) \
        * BIT_NS / rate + len(grants)
    assert g.granted_bytes == 3 * sum(sizes)
    assert g.stats()["requests"] == 12 and g.stats()["request_messages"] == 3


def test_round_robin_among_requesters():
    """The port serves its sources in turn where their data arrives (h2 is on h3's leaf,
    so its grants go out later than it is its turn)."""
    topo = _ls()
    g = G.make_gsos(topo, mtu=MTU, header=HEADER)
    g.request(T0, 0, 3, [1000] * 3)
    g.request(T0, 1, 3, [2000] * 3)
    g.request(T0, 2, 3, [3000] * 3)
    got = sorted((t + topo.reach_ns(f"h{x.src_gsp}", "h3", MTU + HEADER), x.src_gsp, x.nbytes)
                 for t, x in _drain(g))
    assert [x[1:] for x in got] == [(0, 1000), (1, 2000), (2, 3000)] * 3


def test_picks_the_less_reserved_path():
    g = G.make_gsos(_ls(), scale=1e-3, mtu=MTU, header=HEADER)
    links = g.paths(0, 3)
    assert len(links) == 2
    g.tracker.reserve(links[0], T0, 10_000_000)  # path 0 busy for 0.8 s at 100 Mb/s
    g.request(T0, 0, 3, [65536, 65536])
    (t1, a), (t2, b) = _drain(g)
    assert a.path == 1 and b.path == 1  # path 1 frees long before path 0 does
    # same destination port: the second waits for the port, not for path 0
    assert t2 - t1 == pytest.approx(wire_bytes(65536, MTU, HEADER) * BIT_NS / 1e8, abs=2)
    # a same-leaf destination has one path and no transit links
    g.request(T0, 2, 3, [100])
    assert [x.path for _, x in _drain(g)] == [0]


def test_grant_waits_while_transit_is_busy():
    """Both paths reserved for 80 ms: the grant is reserved at once behind what is there,
    and handed out when the path is reserved no further ahead than the grant's own length
    (its wire time at the link rate)."""
    g = G.make_gsos(_ls(), scale=1e-3, mtu=MTU, header=HEADER)
    busy_until = []
    for links in g.paths(0, 3):
        g.tracker.reserve(links, T0, 1_000_000)  # both paths busy for 80 ms
        busy_until.append(max(g.tracker.next_free[k] for k in links))
    g.request(T0, 0, 3, [65536])
    assert g.due(T0) == [] and g.transit_waits == 1
    own = wire_bytes(65536, MTU, HEADER) * BIT_NS / 1e8  # 5.3 ms at 100 Mb/s
    t = g.next_time()
    assert t == int(min(busy_until)) + 1 - int(own)
    for k in g.paths(0, 3)[0]:  # reserved when its turn came, behind the 80 ms
        assert g.tracker.next_free[k] == pytest.approx(busy_until[0] + own)
    assert g.due(t - 1) == []
    (x,) = g.due(t)
    assert x == G.Grant(0, 3, 65536, 0, idle=True)  # nothing else asked for port 3
    assert g.next_time() is None


def test_a_grant_held_for_transit_keeps_its_place():
    """Grants reserve the transit links when their port's turn comes, in that order, even
    while the links are busy: the port's next turn is not lost waiting (the grant used to
    wait for the links and the port's schedule restarted from there), and a later grant
    for the same links goes behind."""
    g = G.make_gsos(_ls(), scale=1e-3, mtu=MTU, header=HEADER)
    busy = []
    for links in g.paths(0, 3):
        g.tracker.reserve(links, T0, 1_000_000)  # 80 ms on both paths from l0 to l1
        busy.append(max(g.tracker.next_free[k] for k in links))
    own = wire_bytes(65536, MTU, HEADER) * BIT_NS / 1e8
    g.request(T0, 0, 3, [65536, 65536])  # h0 -> h3, while the links are busy
    assert g.due(T0 + int(own) + 1) == []  # both turns came: nothing handed out yet ...
    assert g.transit_waits == 2 and g.pending() == 0  # ... but both reserved, one per path
    assert sorted(max(g.tracker.next_free[k] for k in p) for p in g.paths(0, 3)) == \
        pytest.approx(sorted(b + own for b in busy))
    g.request(T0 + 2 * int(own), 1, 2, [65536])  # h1 -> h2 later, over the same links
    (t1, a), (t2, b), (t3, c) = _drain(g)
    assert (a.src_gsp, b.src_gsp, c.src_gsp) == (0, 0, 1) and a.path != b.path
    assert t1 == t2 == int(min(busy)) + 1 - int(own)
    assert t3 >= t1 + own - 1  # behind one of them


def test_late_driver_catches_up_without_exceeding_the_rate():
    g = G.make_gsos(_ls(), scale=1e-3, mtu=MTU, header=HEADER)
    g.request(T0, 0, 2, [65536] * 10)
    per = wire_bytes(65536, MTU, HEADER) * BIT_NS / 1e8
    late = T0 + int(4.5 * per)
    got = g.due(late)  # one wake-up, 4.5 grant times late: the grants of t <= late
    assert len(got) == 5
    assert g.next_time() == pytest.approx(T0 + 5 * per, abs=2)


def test_requests_validated():
    g = G.make_gsos(_ls())
    for args in ((0, 9, [1]), (9, 0, [1]), (1, 1, [1]), (0, 3, [0]), (0, 3, [-5])):
        with pytest.raises(ValueError):
            g.request(T0, *args)
    assert g.stats()["request_messages"] == 0 and g.next_time() is None


def test_same_grants_as_the_simulator():
    """GSOS driven as the controller drives it (host indices, woken at its next time) and
    as the simulator's event loop drives it (host names, one loop event per timer), fed the
    same requests at the same times, gives the same grants at the same times on the same
    paths."""
    from fabriclab.cc_algorithms.gse import GseParams
    from fabriclab.sim.core import EventLoop
    from fabriclab.sim.gse import GsosDriver

    topo = leaf_spine(2, 2, 3, 10 * GBPS, 10 * GBPS, 1000)
    loop = EventLoop()
    rates = fabric_link_rates(topo)

    def links(src, dst):
        return [[(k, rates[k]) for k in path] for path in transit_paths(topo, src, dst)]

    sim_out = []
    sim = GsosDriver(loop, Gsos(topo.host_rate_bps, MTU, HEADER,
                                GseParams.defaults().grant_overcommit, links, wakeups=True,
                                reach=lambda s, d: topo.reach_ns(s, d, MTU + HEADER)),
                     lambda x: sim_out.append((loop.now, x.src_gsp, x.dst_port, x.nbytes,
                                               x.path)))
    reqs = [(0, "h0", "h4", [65536, 65536]), (0, "h1", "h4", [65536, 4000]),
            (1000, "h3", "h4", [65536]), (2000, "h2", "h5", [30000, 65536, 65536]),
            (3000, "h0", "h5", [65536]), (90_000, "h5", "h0", [65536] * 3),
            (90_500, "h4", "h1", [65536] * 2)]

    def on_req(r):
        _, src, dst, sizes = r
        sim.request(src, dst, sizes)

    for r in reqs:
        loop.at(r[0], on_req, r)
    loop.run()

    g = G.make_gsos(topo, mtu=MTU, header=HEADER)
    ours = []
    pending = sorted(reqs, key=lambda r: r[0])
    while pending or g.next_time() is not None:
        nt = g.next_time()
        if pending and (nt is None or pending[0][0] <= nt):  # as the sim: requests first
            t, src, dst, sizes = pending.pop(0)
            g.request(t, G.host_index(src), G.host_index(dst), sizes)
            continue
        ours += [(nt, f"h{x.src_gsp}", f"h{x.dst_port}", x.nbytes, x.path) for x in g.due(nt)]
    assert len(sim_out) == sum(len(r[3]) for r in reqs)
    assert ours == sim_out


# -- config and frames -----------------------------------------------------------------------
def test_grant_overcommit_reaches_the_controller():
    """gse.grant_overcommit travels to the os-ken app (FABRICLAB_GSE_OVERCOMMIT): its GSOS
    then grants one port's worth of containers that much faster."""
    topo = leaf_spine(2, 2, 3, 10 * GBPS, 10 * GBPS, 1000)

    def span(env):
        g = G.make_gsos(topo, **G.config_from_env(env))
        g.request(0, 0, 4, [65536] * 8)
        times = []
        while (t := g.next_time()) is not None:
            times += [t for _ in g.due(t)]
        return times[-1] - times[0]
    base, fast = span({}), span({"FABRICLAB_GSE_OVERCOMMIT": "2.0"})
    assert G.config_from_env({"FABRICLAB_GSE_OVERCOMMIT": "2.0"})["overcommit"] == 2.0
    default = GseParams.defaults().grant_overcommit
    assert fast == pytest.approx(base * default / 2.0, rel=0.05)
    with pytest.raises(ValueError):
        G.config_from_env({"FABRICLAB_GSE_OVERCOMMIT": "0"})


def test_config_from_env():
    assert G.config_from_env({}) == {"scale": 1.0, "mtu": 1000, "header": 58,
                                     "placement": "nic"}
    assert G.config_from_env({"FABRICLAB_EMU_SCALE": "0.001", "FABRICLAB_GSE_MTU": "4096",
                              "FABRICLAB_GSE_HEADER": "62",
                              "FABRICLAB_GSE_PLACEMENT": "leaf"}) == {
        "scale": 0.001, "mtu": 4096, "header": 62, "placement": "leaf"}
    assert G.config_from_env({"FABRICLAB_GSE_PLACEMENT": ""})["placement"] == "nic"
    for bad in ({"FABRICLAB_EMU_SCALE": "x"}, {"FABRICLAB_EMU_SCALE": "0"},
                {"FABRICLAB_EMU_SCALE": "nan"}, {"FABRICLAB_GSE_MTU": "1.5"},
                {"FABRICLAB_GSE_HEADER": "-1"}, {"FABRICLAB_GSE_PLACEMENT": "Leaf"},
                {"FABRICLAB_GSE_PLACEMENT": "switch"}):
        with pytest.raises(ValueError):
            G.config_from_env(bad)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_grant_frame():
    topo = _ls()
    frame = G.grant_frame(topo, G.Grant(2, 1, 65536, 1))
    dst, src, etype = struct.unpack_from("!6s6sH", frame)
    assert dst.hex(":") == topo.host_mac("h2") and src.hex(":") == packets.GSOS_MAC
    assert etype == 0x0800
    ip = frame[14:34]
    assert _csum(ip) == 0xFFFF  # valid header checksum
    assert ip[1] >> 2 == 0 and ip[8] == 64 and ip[9] == 17
    assert socket.inet_ntoa(ip[12:16]) == packets.GSOS_IP
    assert socket.inet_ntoa(ip[16:20]) == topo.nodes["h2"].ip
    sport, dport, length, _ = struct.unpack_from("!HHHH", frame, 34)
    assert sport == dport == 4792 and length == len(frame) - 34
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, length)
    assert _csum(pseudo + frame[34:]) == 0xFFFF  # valid UDP checksum
    assert packets.parse_gse_control(G.udp_payload(frame, 4792)) == \
        ("grant", 2, 1, 65536, 1, False)
    assert G.grant_egress(topo, 2) == (topo.dpid("l1"), 1)
    assert G.parse_request_frame(frame) is None  # a grant is not a request


def test_parse_request_frame():
    topo = _ls()
    body = packets.gse_request(0, 3, [65536, 100])
    f = G.udp_frame(topo.host_mac("h0"), packets.GSOS_MAC, topo.nodes["h0"].ip,
                    packets.GSOS_IP, 40000, 4792, body)
    assert G.parse_request_frame(f) == (0, 3, [65536, 100])
    assert G.parse_request_frame(f + b"\0" * 20) == (0, 3, [65536, 100])  # Ethernet padding
    other = G.udp_frame(topo.host_mac("h0"), packets.GSOS_MAC, topo.nodes["h0"].ip,
                        packets.GSOS_IP, 40000, 4791, body)
    assert G.parse_request_frame(other) is None
    assert G.parse_request_frame(f[:30]) is None
    assert G.parse_request_frame(b"\xff" * 60) is None
