"""Faults on the simulator: random loss, dead and degraded links, dead switches, routing
around them, PFC deadlock and the watchdog (fabriclab.faults, fabriclab.sim.faults)."""

import csv
import io
import math

import pytest

from fabriclab import spec as S
from fabriclab.faults import Routes
from fabriclab.sim.runner import simulate
from fabriclab.topologies import leaf_spine

SMALL = {"name": "faults", "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2,
                                        "hosts_per_leaf": 2},
         "workload": [{"kind": "ring_allreduce", "bytes": 4_000_000}]}

DEADLOCK = {
    "name": "deadlock", "scheme": "udp",
    "topology": {"kind": "leaf_spine", "leaves": 3, "spines": 2, "hosts_per_leaf": 2},
    "switch": {"buffer_bytes": 1_000_000},
    "routing": {"reconverge": "local", "on_no_path": "bounce", "detect_us": 10},
    "workload": [{"kind": "flows", "flows": [
        {"src": a, "dst": b, "bytes": 4_000_000} for _ in range(2) for a, b in
        [("h0", "h2"), ("h1", "h3"), ("h2", "h0"), ("h3", "h1"), ("h4", "h0"), ("h4", "h2"),
         ("h5", "h1"), ("h5", "h3")]]}],
    "faults": [{"at_us": 0, "kind": "link_down", "target": "l0-s0"},
               {"at_us": 0, "kind": "link_down", "target": "l1-s1"}],
    "stop": {"max_time_us": 20000}}


def run(data, *sets):
    return simulate(S.load_data(data, list(sets)), progress=False)


def table(result, name):
    return list(csv.DictReader(io.StringIO(result.csv_text(name))))


def conserved(s):
    return s["bytes_sent"] == s["bytes_delivered"] + s["bytes_dropped"] + s["bytes_in_flight"]


# -- spec ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, expect", [
    ({"at_us": 1, "kind": "link_down", "target": "l0-s7"}, "no such link (valid links: l0-s0"),
    ({"at_us": 1, "kind": "switch_down", "target": "s9"}, "no such switch (valid switches: l0"),
    ({"at_us": 1, "kind": "link_degrade", "target": "l0-s1"}, "needs a fraction"),
    ({"at_us": 1, "kind": "link_up"}, "needs a target"),
    ({"at_us": 1, "kind": "controller_kill"}, "runs on engine mininet only"),
])
def test_bad_faults_are_named(fault, expect):
    with pytest.raises(S.SpecError) as e:
        S.load_data({**SMALL, "faults": [fault]})
    assert expect in str(e.value)


def test_link_names_either_way_and_old_controller_kill():
    spec = S.load_data({**SMALL, "faults": [{"at_us": 5, "kind": "link_down", "target": "s1-l0"}]})
    assert spec.faults[0].target == "s1-l0"
    spec = S.load_data({**SMALL, "engine": "mininet", "emu": {"kill_controller_at_us": 80}})
    assert [(f.kind, f.at_us) for f in spec.faults] == [("controller_kill", 80)]
    with pytest.raises(S.SpecError, match="emu.kill_controller_at_us = -1"):
        S.load_data({**SMALL, "engine": "mininet", "emu": {"kill_controller_at_us": -1}})
    with pytest.raises(S.SpecError, match="loss.links: 'l0-s9'"):
        S.load_data({**SMALL, "loss": {"links": {"l0-s9": 0.1}}})


# -- routing model ------------------------------------------------------------------------
def test_routes_rehash_only_the_dead_members_flows():
    topo = leaf_spine(3, 4, 1, 100_000_000_000, 100_000_000_000, 1000)
    r = Routes(topo)
    dead = topo.find_link("l0-s1")
    up_s1 = next(i for i, k in enumerate(topo.nodes["l0"].ports) if k is dead)
    healthy = r.next_hops("l0", "h1")
    r.fail([dead])
    assert set(r.next_hops("l0", "h1")) == set(healthy) - {up_s1}
    # fabric reconvergence: other leaves stop sending h0's traffic through s1
    assert all(topo.peer("l1", p).node != "s1" for p in r.next_hops("l1", "h0"))
    for p in r.next_hops("l1", "h0"):
        assert r.pick("l1", "h0", 7, healthy=p) == p  # a usable healthy choice is kept
    local = Routes(topo, "local")
    local.fail([dead])
    assert local.next_hops("s1", "h0") == ()  # s1 has no way down to l0 left
    (n1, down), (n2, up) = local.bounce("s1", "h0", 3, came_from="l1")
    assert n1 == "s1" and topo.peer(n1, down).node == n2 == "l2"
    assert topo.peer(n2, up).node not in ("s1",)


# -- loss ------------------------------------------------------------------------------------
def test_random_loss_matches_its_probability():
    p = 0.01
    r = run(SMALL, f"loss.rate={p}", "nic.loss_recovery=selective_repeat")
    s = r.summary
    assert s["stopped"] == "completed" and conserved(s)
    ports = table(r, "ports.csv")
    frames = sum(int(x["tx_pkts"]) for x in ports)
    lost = sum(int(x["drops_random"]) for x in ports)
    assert lost == s["drop_reasons"]["random_loss"]
    sd = math.sqrt(frames * p * (1 - p))
    assert abs(lost - frames * p) <= 4.5 * sd, (lost, frames * p, sd)


def test_loss_on_one_link_only():
    r = run(SMALL, "loss.links={l0-s1: 0.05}")
    lossy = {"l0:3", "s1:0"}  # the two ends of l0-s1 (leaves: hosts first, then spines)
    for x in table(r, "ports.csv"):
        if int(x["drops_random"]):
            assert x["port"] in lossy, x
    assert r.summary["drop_reasons"]["random_loss"] > 0 and conserved(r.summary)


# -- dead links and switches ---------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["ecmp_dcqcn", "hpcc", "gse"])
@pytest.mark.parametrize("fault", [{"kind": "link_down", "target": "l0-s1"},
                                   {"kind": "switch_down", "target": "s1"}])
def test_link_failure_mid_allreduce(scheme, fault):
    r = run({**SMALL, "scheme": scheme, "faults": [{"at_us": 100, **fault}]})
    s = r.summary
    assert s["stopped"] == "completed", s["stopped"]
    assert conserved(s)
    rec, = s["faults"]
    assert rec["detected_ns"] == rec["at_ns"] + 100_000  # routing.detect_us default
    assert rec["lost_bytes"] > 0 and rec["lost_pkts"] == s["drop_reasons"]["dead_link"]
    # nothing is sent onto the dead link after detection (GSE: no container either)
    assert rec["traffic_left_ns"] <= rec["detected_ns"]
    util = table(r, "timeseries/link_util.csv")
    dead = {"l0:3", "s1:0"} if fault["kind"] == "link_down" else {
        "l0:3", "l1:3", "s1:0", "s1:1"}
    late = [row for row in util if int(row["time_ns"]) > rec["detected_ns"] + 2000]
    assert late and all(float(row[p]) == 0 for row in late for p in dead)


def test_gse_selective_repeat_recovers_what_the_dead_link_lost():
    """Packets deemed lost need credit again: the GSP asks for it (it once asked only for
    bytes never sent, and a lost tail waited for grants that never came)."""
    r = run(SMALL, "scheme=gse", "nic.loss_recovery=selective_repeat", "switch.mtu_bytes=1000",
            "switch.header_bytes=70", "workload.0.bytes=2000000",
            "topology.leaves=4", "topology.spines=4", "topology.hosts_per_leaf=4",
            "faults=[{at_us: 250, kind: link_down, target: l0-s1}]")
    s = r.summary
    assert s["stopped"] == "completed" and s["drop_reasons"]["dead_link"] > 0 and conserved(s)


def test_link_comes_back():
    r = run({**SMALL, "faults": [{"at_us": 50, "kind": "link_down", "target": "l0-s1"},
                                 {"at_us": 300, "kind": "link_up", "target": "l0-s1"}]},
            "workload.0.bytes=16000000")
    s = r.summary
    assert s["stopped"] == "completed" and conserved(s)
    down, up = s["faults"]
    assert up["detected_ns"] == up["at_ns"] + 100_000
    util = table(r, "timeseries/link_util.csv")
    # used again once the restored link is detected
    assert any(float(row["l0:3"]) > 0.1 for row in util
               if int(row["time_ns"]) > up["detected_ns"] + 5000)


def test_gse_sends_fewer_containers_over_a_degraded_link():
    data = {**SMALL, "scheme": "gse",
            "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 4, "hosts_per_leaf": 4},
            "workload": [{"kind": "permutation", "bytes": 4_000_000}],
            "faults": [{"at_us": 0, "kind": "link_degrade", "target": "l0-s1",
                        "fraction": 0.25}]}
    r = run(data)
    assert r.summary["stopped"] == "completed"
    tx = {x["port"]: int(x["tx_bytes"]) for x in table(r, "ports.csv")}
    ups = [tx[f"l0:{4 + i}"] for i in range(4)]  # l0's uplinks to s0..s3
    others = (ups[0] + ups[2] + ups[3]) / 3
    share = ups[1] / others
    assert 0.25 * 0.6 <= share <= 0.25 * 1.4, (ups, share)


# -- PFC deadlock and the watchdog ----------------------------------------------------------
def test_bounce_routing_deadlocks_and_reports_the_cycle():
    s = run(DEADLOCK).summary
    assert s["stopped"].startswith("deadlock")
    d = s["deadlock"]
    assert len(d["ports"]) >= 2
    # a cycle: each link's far end is the next link's near end
    hops = [x.split("->") for x in d["links"]]
    assert all(hops[i][1] == hops[(i + 1) % len(hops)][0] for i in range(len(hops)))
    assert d["t_ns"] - d["paused_since_ns"] >= 1_000_000  # switch.pfc.deadlock_detect_us
    assert conserved(s)


def test_watchdog_breaks_the_deadlock_and_reports_its_drops():
    s = run(DEADLOCK, "scheme=hpcc", "switch.pfc.watchdog_us=100",
            "switch.pfc.watchdog_restore_us=100").summary
    assert s["stopped"] == "completed" and s["deadlock"] is None
    flushed = sum(w["dropped"] for w in s["pfc_watchdog"])
    assert s["drop_reasons"]["watchdog"] >= flushed > 0  # and what arrived while disabled
    assert conserved(s)


def test_healthy_run_has_no_fault_section_and_no_deadlock():
    s = run(SMALL).summary
    assert "faults" not in s and s["deadlock"] is None and s["drops"] == 0


def test_report_shows_the_faults_and_the_deadlock(tmp_path):
    import fabriclab
    fabriclab.run(S.load_data(DEADLOCK), out=tmp_path / "d")
    html = (tmp_path / "d" / "report.html").read_text()
    faults = html[html.index("<h2>Faults</h2>"):html.index("<h2>Collectives</h2>")]
    assert "PFC deadlock" in faults and "s1:2" in faults
    assert 'data-key="fault0"' in faults and "link_down l0-s0" in faults
    assert "dead link" in faults
    fabriclab.run(S.load_data(SMALL), out=tmp_path / "h")
    assert "<h2>Faults</h2>" not in (tmp_path / "h" / "report.html").read_text()
