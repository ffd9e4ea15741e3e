"""The controller's per-switch tables (pure: no os-ken, no OVS)."""

import json

import pytest

from fabriclab.controllers import switch_tables
from fabriclab.wire.ready import read_ready_file
from fabriclab.controllers.routing import load_topology
from fabriclab.topologies import Topology, fat_tree, leaf_spine


def _leaf_spine():
    return leaf_spine(2, 2, 2, 100_000_000_000, 100_000_000_000, 1000)


def _fat_tree():
    return fat_tree(4, 100_000_000_000, 100_000_000_000, 1000)


TOPOS = {"leaf_spine_2x2x2": _leaf_spine, "fat_tree_k4": _fat_tree}


@pytest.fixture(params=sorted(TOPOS))
def topo(request) -> Topology:
    return TOPOS[request.param]()


def _egress(table, ip):
    """The OpenFlow ports a packet to ``ip`` may leave by: every bucket of a group."""
    route = table.route_to(ip)
    ports = table.group(route.group_id).ports if route.group_id is not None else (
        route.output_port,)
    assert ports == route.ports
    return ports


def test_every_switch_routes_every_host(topo):
    tables = switch_tables(topo)
    assert sorted(tables) == list(range(1, len(topo.switches) + 1))
    ips = [topo.nodes[h].ip for h in topo.hosts]
    for dpid, table in tables.items():
        assert table.switch == topo.switch_of_dpid(dpid)
        assert [r.ip for r in table.routes] == ips
        for r in table.routes:
            assert list(r.ports) == sorted(r.ports)
            # Multi-port sets go through a group, single ports are direct.
            assert (r.group_id is None) == (len(r.ports) == 1)


def test_groups_are_shared_per_port_set(topo):
    for table in switch_tables(topo).values():
        port_sets = [g.ports for g in table.groups]
        assert len(set(port_sets)) == len(port_sets)
        assert all(len(p) > 1 for p in port_sets)
        assert [g.group_id for g in table.groups] == list(range(1, len(table.groups) + 1))
        used = {r.group_id for r in table.routes if r.group_id is not None}
        assert used == {g.group_id for g in table.groups}


def test_leaf_spine_uplink_sets():
    topo = _leaf_spine()
    tables = switch_tables(topo)
    for leaf in ("l0", "l1"):
        table = tables[topo.dpid(leaf)]
        for h in topo.hosts:
            r = table.route_to(topo.nodes[h].ip)
            if topo.tor_of(h) == leaf:
                assert r.group_id is None
            else:  # one bucket per spine, on the leaf's uplinks (model ports 2, 3)
                assert r.ports == (3, 4)
                assert len(table.group(r.group_id).ports) == 2
        assert len(table.groups) == 1
    for spine in ("s0", "s1"):
        assert not tables[topo.dpid(spine)].groups


def test_fat_tree_uplink_sets():
    k = 4
    topo = _fat_tree()
    tables = switch_tables(topo)
    for s in topo.switches:
        table = tables[topo.dpid(s)]
        node = topo.nodes[s]
        for h in topo.hosts:
            r = table.route_to(topo.nodes[h].ip)
            if node.kind == "edge" and topo.tor_of(h) != s:
                assert len(r.ports) == k // 2
            elif node.kind == "agg" and topo.tor_of(h)[1:].split("_")[0] != s[1:].split("_")[0]:
                assert len(r.ports) == k // 2  # leaving the pod: one per core above it
            else:
                assert len(r.ports) == 1  # downwards there is one way only


def _walk(topo, tables, node, ip, hops, seen, ends):
    """Follow every bucket towards ``ip``; record (host reached, hops) at each end."""
    if topo.nodes[node].is_host:
        ends.append((node, hops))
        return
    assert node not in seen, f"loop at {node} towards {ip}"
    for ofport in _egress(tables[topo.dpid(node)], ip):
        _walk(topo, tables, topo.peer(node, ofport - 1).node, ip, hops + 1, seen | {node},
              ends)


def test_every_branch_reaches_destination_in_shortest_hops(topo):
    """Walk every bucket choice from each host's ToR: all walks end at the destination
    host, and each takes exactly the shortest-path hop count."""
    tables = switch_tables(topo)
    for src in topo.hosts:
        for dst in topo.hosts:
            if src == dst:
                continue
            shortest = len(topo.all_paths(src, dst)[0])  # egress ports incl. the source NIC
            ends = []
            _walk(topo, tables, topo.tor_of(src), topo.nodes[dst].ip, 1, frozenset(), ends)
            assert ends and all(e == (dst, shortest) for e in ends), (src, dst, ends)
            assert len(ends) == len(topo.all_paths(src, dst))


def test_tables_are_deterministic(topo):
    a = switch_tables(topo)
    b = switch_tables(Topology.from_dict(json.loads(json.dumps(topo.to_dict()))))
    assert a == b


def test_load_topology_and_ready_file(tmp_path):
    topo = _leaf_spine()
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(topo.to_dict()))
    assert switch_tables(load_topology(path)) == switch_tables(topo)

    ready = tmp_path / "ready.jsonl"
    assert read_ready_file(ready) == set()
    ready.write_text('{"dpid": 1, "switch": "l0"}\n{"dpid": 3}\n{"dpid": 1}\n{"dpid": 2')
    assert read_ready_file(ready) == {1, 3}  # the unfinished last line does not count
