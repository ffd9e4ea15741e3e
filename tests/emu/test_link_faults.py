"""Faults on the Mininet engine (issue 11, part 4): links that die, degrade and come back on
real packets, rerouted by the os-ken controller as ``fabriclab.faults.Routes`` says, after
``routing.detect_us`` of fabric time.

The emulation tests use the smallest leaf-spine (2 leaves x 2 spines x 2 hosts) and a 2 -> 1
incast from l1's hosts into h0 (every flow crosses a spine), 100G emulated at 10 Mb/s; each
run takes about 8 s.  They need root (CI runs as root).  The first tests need neither root
nor Open vSwitch: the tables the controller installs after a detection, and the parsing of
Open vSwitch's datapath flows.
"""

import os

import pytest

from fabriclab import spec as S
from fabriclab.controllers.routing import (BOUNCE_PRIORITY, LOCAL_ROUTE_PRIORITY,
                                           PATH_PRIORITY, ROUTE_PRIORITY, _out, bucket_ids,
                                           dead_gse_paths, dead_transit, fabric_entries,
                                           switch_table)
from fabriclab.faults import Routes
from fabriclab.topologies import PortId, fat_tree, leaf_spine


def on_mininet(test):
    """The marks of an emulation test (root; nothing left behind afterwards)."""
    for m in (pytest.mark.usefixtures("nothing_left_behind"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.slow, pytest.mark.root):
        test = m(test)
    return test


SIZE = 2_000_000
DETECT_NS = 100_000  # routing.detect_us default
FAULT_NS = 50_000
INCAST = {"name": "incast", "kind": "incast", "receiver": "h0", "senders": ["h2", "h3"],
          "bytes": SIZE}


def _topo(leaves=2, spines=2, hosts=2):
    return leaf_spine(leaves, spines, hosts, 100_000_000_000, 100_000_000_000, 1000)


# -- the controller's tables (no root) ----------------------------------------------------
@pytest.mark.parametrize("gse", [None, "central"])
def test_healthy_entries_are_the_installed_routes(gse):
    """With no dead link the reroute tables equal what the controller installs at start, so
    the first reroute changes only what the failure changes."""
    for topo in (_topo(), _topo(3, 4, 2), fat_tree(4, 100_000_000_000, 100_000_000_000, 1000)):
        entries = fabric_entries(topo, Routes(topo), gse)
        for s in topo.switches:
            table = switch_table(topo, s, gse)
            want = {(r.priority, (("ipv4_dst", r.ip),)): (_out(r.ports),)
                    for r in table.routes}
            want.update({(PATH_PRIORITY, (("ip_dscp", r.dscp),)): (("output", r.output_port),)
                         for r in table.path_rules})
            assert entries[s] == want, s


def test_fabric_reconvergence_follows_routes():
    """l0-s0 dead, reconverge fabric: l1 reaches l0's hosts through s1 only, s0 goes down
    to l1 (with DSCP 0 under GSE: the container must not go back up by its path rule), and
    every next-hop set is Routes.next_hops."""
    topo = _topo()
    routes = Routes(topo, "fabric")
    dead = topo.find_link("l0-s0")
    routes.fail([dead])
    entries = fabric_entries(topo, routes, "central")
    ip = {h: topo.nodes[h].ip for h in topo.hosts}
    assert entries["l1"][(ROUTE_PRIORITY, (("ipv4_dst", ip["h0"]),))] == (("output", 4),)
    assert entries["l1"][(ROUTE_PRIORITY, (("ipv4_dst", ip["h0"]),))] == \
        (_out(tuple(p + 1 for p in routes.next_hops("l1", "h0"))),)
    assert entries["s0"][(ROUTE_PRIORITY, (("ipv4_dst", ip["h0"]),))] == \
        (("dscp0",), ("output", 2))
    assert entries["l0"][(LOCAL_ROUTE_PRIORITY, (("ipv4_dst", ip["h0"]),))] == \
        (("output", 1),)
    # l0's container path 0 (its uplink to s0) is gone: those containers follow the routes
    assert (PATH_PRIORITY, (("ip_dscp", 1),)) not in entries["l0"]
    assert entries["l0"][(PATH_PRIORITY, (("ip_dscp", 2),))] == (("output", 4),)
    assert entries["l1"][(PATH_PRIORITY, (("ip_dscp", 1),))] == (("output", 3),)
    assert dead_transit(topo, {dead}) == {PortId("l0", 2), PortId("s0", 0)}
    # path 0 (spine s0) is dead between l0's and l1's hosts, both ways
    assert dead_gse_paths(topo, {dead}) == {
        "h0": {2: [0], 3: [0]}, "h1": {2: [0], 3: [0]},
        "h2": {0: [0], 1: [0]}, "h3": {0: [0], 1: [0]}}


def test_local_reconvergence_bounces():
    """reconverge local + on_no_path bounce, 3 leaves: s0 (no way to h0 any more) sends
    what comes from one leaf down to the other, which sends it up to s1; a destination with
    no way at all gets no route (the table-miss entry drops it)."""
    topo = _topo(3, 2, 1)
    routes = Routes(topo, "local")
    routes.fail([topo.find_link("l0-s0")])
    entries = fabric_entries(topo, routes, None, "bounce")
    h0 = topo.nodes["h0"].ip
    assert (ROUTE_PRIORITY, (("ipv4_dst", h0),)) not in entries["s0"]
    # s0: ports 0, 1, 2 lead to l0, l1, l2 (OpenFlow 1, 2, 3)
    assert entries["s0"][(BOUNCE_PRIORITY, (("in_port", 2), ("ipv4_dst", h0)))] == \
        (("dscp0",), ("dec_ttl",), ("output", 3))
    assert entries["s0"][(BOUNCE_PRIORITY, (("in_port", 3), ("ipv4_dst", h0)))] == \
        (("dscp0",), ("dec_ttl",), ("output", 2))
    # l1 and l2 send what s0 bounced (it comes in by their uplink to s0) up to s1
    for leaf in ("l1", "l2"):
        up_s0, up_s1 = 1 + 1, 2 + 1  # one host port, then the uplinks
        assert entries[leaf][(BOUNCE_PRIORITY, (("in_port", up_s0), ("ipv4_dst", h0)))] == \
            (("dscp0",), ("dec_ttl",), ("output", up_s1))
    # local: l1 itself still sends towards s0 (it does not know)
    assert entries["l1"][(ROUTE_PRIORITY, (("ipv4_dst", h0),))] == (("group", (2, 3)),)


def test_bucket_ids_keep_the_healthy_numbering():
    """A leaf's uplinks keep the bucket ids of its healthy group (0, 1, ...), so a group
    without a dead member keeps every other flow where it was (resilient hashing)."""
    topo = _topo(2, 4, 2)
    assert bucket_ids(topo, "l0") == {1: 1001, 2: 1002, 3: 0, 4: 1, 5: 2, 6: 3}


def test_datapath_flow_parsing():
    from fabriclab.emu.faults import _FLOW_RE, _outputs
    line = ("recirc_id(0),in_port(8),packet_type(ns=0,id=0),eth_type(0x0800),ipv4(src=10.0.1.1,"
            "dst=10.0.0.1,proto=17,frag=no),udp(src=52008,dst=4791), packets:387, "
            "bytes:93654, used:0.008s, actions:6")
    m = _FLOW_RE.match(line)
    assert m and m.group("pkts") == "387" and m.group("used") == "0.008s"
    assert _outputs(m.group("acts")) == [6]
    assert _outputs("set(ipv4(tos=0/0xfc)),12") == [12]
    assert _outputs("drop") == []
    line2 = ("recirc_id(0),in_port(6),eth_type(0x0800),ipv4(dst=10.0.1.1,frag=no), "
             "packets:0, bytes:0, used:never, flags:S, actions:3,4")
    m = _FLOW_RE.match(line2)
    assert m and m.group("used") == "never" and _outputs(m.group("acts")) == [3, 4]


def test_receive_drops_leave_out_only_the_dead_link():
    """What Open vSwitch dropped on receive, per port (``dump-ports``): a dead link's own
    interfaces are that link's loss (counted under dead_link); every other port's drops
    still count against the emulation (before, any run with a dead link counted none)."""
    from fabriclab.emu.network import intf_name
    from fabriclab.emu.runner import rx_dropped, rx_drops_by_port
    dump = ("OFPST_PORT reply (OF1.3) (xid=0x2): 3 ports\n"
            "  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0\n"
            "           tx pkts=0, bytes=0, drop=0, errs=0, coll=0\n"
            "  port  3: rx pkts=120, bytes=128400, drop=7, errs=0, frame=0, over=0, crc=0\n"
            "           tx pkts=118, bytes=126260, drop=2, errs=0, coll=0\n"
            "  port  1: rx pkts=5, bytes=300, drop=4, errs=0, frame=0, over=0, crc=0\n"
            "           tx pkts=5, bytes=300, drop=0, errs=0, coll=0\n")
    by_port = rx_drops_by_port(dump)
    assert by_port == {"LOCAL": 0, "3": 7, "1": 4}  # tx drops are not receive drops
    topo = _topo()
    dead = {intf_name(topo, "l0", 2): [0, 0]}  # model port 2 = OpenFlow port 3
    assert rx_dropped(topo, {"l0": by_port, "l1": {"1": 5}}, dead) == 4 + 5
    assert rx_dropped(topo, {"l0": by_port, "l1": {"1": 5}}, {}) == 7 + 4 + 5


def test_loss_is_refused_on_the_emulator():
    with pytest.raises(S.SpecError, match="loss: random loss runs on engine sim only"):
        S.validate({"engine": "mininet", "workload": [INCAST], "loss": {"rate": 0.01},
                    "topology": {"leaves": 2, "spines": 2, "hosts_per_leaf": 2}}, "test")


# -- on real packets ------------------------------------------------------------------------
def _spec(scheme: str, faults: list, engine: str = "mininet", size: int = SIZE, **extra):
    return S.validate({
        "name": f"faults-{scheme}", "engine": engine, "scheme": scheme,
        "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2},
        "workload": [dict(INCAST, bytes=size)], "faults": faults,
        "emu": {"timeout_s": 120}, **extra}, "test")


def _emulate(spec):
    from fabriclab.emu.runner import emulate
    return emulate(spec, progress=False)


def _simulate(spec):
    """The same spec on the simulator, with the emulation's packet sizes; None if the
    simulator cannot run it (its side of faults is not there)."""
    import fabriclab
    from fabriclab.metrics.agreement import align_sim_to_emulation
    from fabriclab.wire import roce as P
    header = P.DATA_OVERHEAD + (P.GSE_TAG.size if spec.scheme == "gse" else 0)
    assert align_sim_to_emulation(spec)[:2] == [f"switch.mtu_bytes={spec.emu.mtu_bytes}",
                                                f"switch.header_bytes={header}"]
    sim = spec.model_copy(update={"engine": "sim", "switch": spec.switch.model_copy(
        update={"mtu_bytes": spec.emu.mtu_bytes, "header_bytes": header})})
    try:
        return fabriclab.run(sim).summary
    except (S.SpecError, NotImplementedError) as e:
        pytest.skip(f"the simulator does not run this fault spec yet: {e}")


def _rows(result, table: str, columns: list[str]):
    cols, rows = result.tables[table]
    idx = [cols.index(c) for c in ["time_ns", *columns]]
    return [[row[i] for i in idx] for row in rows]


def _completion_over_bound(summary) -> float:
    (c,) = summary["collectives"]
    return c["completion_over_bound"]


@pytest.fixture(scope="module")
def link_down():
    """ECMP + DCQCN; l0-s0 dies at 50 us of fabric time."""
    if os.geteuid() != 0:
        pytest.skip("the Mininet engine needs root")
    spec = _spec("ecmp_dcqcn", [{"at_us": FAULT_NS / 1000, "kind": "link_down",
                                 "target": "l0-s0"}])
    return _emulate(spec)


@on_mininet
def test_link_down_is_routed_around(link_down):
    """A leaf-spine link dies under ECMP + DCQCN: the controller routes around it
    routing.detect_us later, traffic leaves it, every flow completes."""
    r = link_down
    s = r.summary
    # the run completes: every flow finished, every byte delivered
    assert s["stopped"] == "completed" and s["flows_completed"] == 2, s["stopped"]
    assert s["payload_delivered_bytes"] == 2 * SIZE
    (rec,) = s["faults"]
    assert rec["kind"] == "link_down" and rec["target"] == "l0-s0"
    # applied on time, detected no sooner than routing.detect_us, rerouted soon after
    assert FAULT_NS <= rec["at_ns"] < FAULT_NS + 5_000, rec
    assert rec["detected_ns"] - rec["at_ns"] >= DETECT_NS, rec
    assert rec["detected_ns"] - rec["at_ns"] < DETECT_NS + 20_000, rec
    assert rec["reroute_ns"] == rec["detected_ns"] - rec["at_ns"]
    # traffic was on the link (Open vSwitch's hash is deterministic: if this fails, its
    # hash changed and no flow uses l0-s0 any more; pick another link) and left it by the
    # time the new forwarding was in place (the datapath is polled every 2 us of fabric)
    assert rec["lost_pkts"] > 0, "no frame was sent onto l0-s0: the test tests nothing"
    assert rec["detected_ns"] - 50_000 < rec["traffic_left_ns"] <= rec["detected_ns"] + 3_000
    assert s["drops"] == rec["lost_pkts"] and s["drop_reasons"] == {"dead_link": s["drops"]}, (
        s["drop_reasons"], rec["lost_pkts"], s["emulation"].get("frames_by_kind"))
    # nothing crosses the dead link after the fault: its two ports are silent (the port
    # counters), and s1 carries l1 -> l0 traffic after the detection
    after = [row for row in _rows(r, "timeseries/link_util.csv", ["l0:2", "s0:0", "s1:0"])
             if row[0] > rec["at_ns"] + 2_000]
    assert after and all(row[1] == 0 and row[2] == 0 for row in after), after[:5]
    assert any(row[3] > 0.5 for row in after if row[0] > rec["detected_ns"])
    # the controller's own account
    (rr,) = s["emulation"]["faults"]["reroutes"]
    assert rr["down"] == ["l0-s0"] and rr["installed_ns"] == rec["detected_ns"]
    assert rr["acted_ns"] - rr["port_status_ns"] >= DETECT_NS


@on_mininet
def test_degraded_link_runs_at_its_fraction():
    """h0's link runs at a quarter of its rate from 50 us on: h0's goodput falls from the
    line rate to about a quarter of it, and the run's completion / bound agrees with the
    simulator's (metrics.agreement's tolerance)."""
    from fabriclab.metrics.agreement import COMPLETION_TOL
    from fabriclab.wire import roce as P
    frac = 0.25
    spec = _spec("ecmp_dcqcn", [{"at_us": 50, "kind": "link_degrade", "target": "l0-h0",
                                 "fraction": frac}], size=1_000_000)
    r = _emulate(spec)
    s = r.summary
    assert s["stopped"] == "completed" and s["flows_completed"] == 2
    (rec,) = s["faults"]
    assert rec["kind"] == "link_degrade" and 50_000 <= rec["at_ns"] < 55_000
    goodput = _rows(r, "timeseries/host_goodput_gbps.csv", ["h0"])
    end = s["collectives"][0]["end_ns"]
    line = 100 * spec.emu.mtu_bytes / (spec.emu.mtu_bytes + P.DATA_OVERHEAD)
    before = [g for t, g in goodput if 10_000 < t < rec["at_ns"]]
    after = [g for t, g in goodput if rec["at_ns"] + 20_000 < t < end - 10_000]
    assert before and after
    assert abs(sum(before) / len(before) - line) < 0.15 * line, before
    assert abs(sum(after) / len(after) - frac * line) < 0.15 * frac * line, after
    sim = _simulate(spec)
    a, b = _completion_over_bound(s), _completion_over_bound(sim)
    assert abs(a - b) <= COMPLETION_TOL * max(a, b), (a, b)


@on_mininet
def test_gse_stops_spraying_over_the_dead_spine():
    """GSE (central GSOS): after the detection GSOS grants no container path over s0 and
    the GSPs spray none there, so l1's uplink to s0 falls silent although that link is
    alive (once the grants given before are used); the incast completes and agrees with
    the simulator."""
    from fabriclab.metrics.agreement import COMPLETION_TOL
    spec = _spec("gse", [{"at_us": FAULT_NS / 1000, "kind": "link_down", "target": "l0-s0"}])
    r = _emulate(spec)
    s = r.summary
    assert s["stopped"] == "completed" and s["flows_completed"] == 2
    assert s["payload_delivered_bytes"] == 2 * SIZE
    assert s["gse"]["fell_back_to_egress"] == {}
    (rec,) = s["faults"]
    assert rec["detected_ns"] - rec["at_ns"] >= DETECT_NS
    util = _rows(r, "timeseries/link_util.csv", ["l1:2", "l1:3"])
    before = [row for row in util if 5_000 < row[0] < rec["at_ns"]]
    # containers granted before the detection still go that way (s0 sends them down to l1,
    # which sends them up to s1): the grants' lead, some 10 us
    after = [row for row in util if row[0] > rec["detected_ns"] + 20_000]
    assert any(row[1] > 0.2 for row in before), "containers did not use s0 before the fault"
    assert after and all(row[1] == 0 for row in after), after[:5]
    assert any(row[2] > 0.5 for row in after)
    sim = _simulate(spec)
    a, b = _completion_over_bound(s), _completion_over_bound(sim)
    assert abs(a - b) <= COMPLETION_TOL * max(a, b), (a, b)
