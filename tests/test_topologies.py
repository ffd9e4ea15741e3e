"""The topology model: sizes, naming contract, equal-cost paths, ECMP hashing."""

import itertools

from fabriclab.topologies import ecmp_hash, fat_tree, leaf_spine, switch_seed


def test_leaf_spine_naming_and_ports():
    """Leaf l has its hosts on ports 0..H-1 and spine s on port H+s; spine port l is leaf l."""
    t = leaf_spine(3, 2, 4, 100, 400, 1000)
    assert t.hosts == [f"h{i}" for i in range(12)]
    assert sorted(t.switches) == ["l0", "l1", "l2", "s0", "s1"]
    assert t.tor_of("h5") == "l1"
    assert t.peer("l1", 1).node == "h5"
    assert t.peer("l2", 4 + 1).node == "s1"
    assert t.peer("s1", 2).node == "l2"
    assert t.nodes["h5"].ip == "10.0.1.2"
    assert abs(t.oversubscription - 4 * 100 / (2 * 400)) < 1e-12


def test_leaf_spine_paths():
    """Inter-leaf pairs have one path per spine; hosts under one leaf have exactly one path."""
    t = leaf_spine(2, 4, 2, 1, 1, 1)
    assert len(t.all_paths("h0", "h3")) == 4
    assert len(t.all_paths("h0", "h1")) == 1
    assert all(len(p) == 4 for p in t.all_paths("h0", "h3"))  # NIC, leaf, spine, leaf


def test_fat_tree_sizes_and_paths():
    """k=4: 16 hosts, 20 switches, 48 links; (k/2)^2 = 4 paths between pods, k/2 within a pod."""
    t = fat_tree(4, 1, 1, 1)
    assert len(t.hosts) == 16 and len(t.switches) == 20 and len(t.links) == 48
    assert len(t.all_paths("h0", "h15")) == 4
    assert len(t.all_paths("h0", "h2")) == 2  # same pod, other edge
    assert len(t.all_paths("h0", "h1")) == 1  # same edge
    # every switch uses exactly k ports
    assert all(len(t.nodes[s].ports) == 4 for s in t.switches)
    k8 = fat_tree(8, 1, 1, 1)
    assert len(k8.hosts) == 128 and len(k8.all_paths("h0", "h127")) == 16


def test_flow_path_is_one_of_the_equal_cost_paths_and_spreads():
    """Per-flow ECMP picks a valid shortest path, and different flows use every spine."""
    t = leaf_spine(2, 4, 1, 1, 1, 1)
    seeds = {s: switch_seed(1, s) for s in t.switches}
    paths = set(t.all_paths("h0", "h1"))
    used = set()
    for sport in range(49152, 49152 + 64):
        p = t.flow_path("h0", "h1", ("10.0.0.1", "10.0.1.1", sport, 4791, 17), seeds)
        assert p in paths
        used.add(p)
    assert used == paths


def test_ecmp_hash_is_keyed_and_stable():
    """The same 5-tuple and seed always hash alike; another seed reorders choices."""
    ft = ("10.0.0.1", "10.0.1.1", 50000, 4791, 17)
    assert ecmp_hash(ft, 7) == ecmp_hash(ft, 7)
    choices = [[ecmp_hash(("a", "b", p, 4791, 17), seed) % 4 for p in range(200)]
               for seed in (1, 2)]
    assert choices[0] != choices[1]
    # roughly uniform over 4 buckets
    for seed_choices in choices:
        counts = [seed_choices.count(b) for b in range(4)]
        assert min(counts) > 25


def test_switch_seeds_differ():
    seeds = {switch_seed(1, f"l{i}") for i in range(32)}
    assert len(seeds) == 32 and switch_seed(1, "l0") != switch_seed(2, "l0")


def test_every_pair_reachable_in_fat_tree():
    t = fat_tree(4, 1, 1, 1)
    for a, b in itertools.combinations(t.hosts, 2):
        assert t.all_paths(a, b)


def test_round_trip_and_openflow_contract():
    """to_dict/from_dict keeps every port number; dpids, OpenFlow ports and MACs follow the
    naming contract the controller and the Mininet builder share."""
    from fabriclab.topologies import Topology
    for t in (leaf_spine(3, 2, 4, 100, 400, 1000), fat_tree(4, 1, 2, 3)):
        u = Topology.from_dict(t.to_dict())
        assert u.links == t.links and u.hosts == t.hosts and u.switches == t.switches
        assert [u.dpid(s) for s in u.switches] == list(range(1, len(t.switches) + 1))
        assert all(u.switch_of_dpid(u.dpid(s)) == s for s in u.switches)
        macs = {u.host_mac(h) for h in u.hosts}
        assert len(macs) == len(u.hosts)
    assert leaf_spine(1, 1, 1, 1, 1, 1).host_mac("h0") == "02:00:00:00:00:01"
    assert Topology.ofport(0) == 1


def _brute_paths(t, src, dst):
    """Every shortest host-to-host path by plain enumeration of simple paths, shortest kept
    (hosts never forward): what all_paths must give, in port order."""
    best, out = None, []
    stack = [(src, (), {src})]
    while stack:
        node, acc, seen = stack.pop()
        if best is not None and len(acc) > best:
            continue
        if node == dst:
            if best is None or len(acc) < best:
                best, out = len(acc), []
            out.append(acc)
            continue
        if t.nodes[node].is_host and node != src:
            continue
        for i in range(len(t.nodes[node].ports)):
            p = t.peer(node, i).node
            if p not in seen:
                stack.append((p, acc + ((node, i),), seen | {p}))
    return sorted(out)


def test_paths_and_next_hops_against_enumeration():
    """all_paths and next_hops (which share distances per ToR, not per host) give exactly the
    shortest paths a plain enumeration finds, on both fabrics, from hosts and switches."""
    for t in (fat_tree(4, 1, 1, 1), leaf_spine(3, 2, 2, 1, 1, 1)):
        hosts = t.hosts
        for src, dst in itertools.product(hosts[:6], hosts[-5:]):
            if src == dst:
                continue
            got = sorted(tuple((p.node, p.port) for p in path) for path in t.all_paths(src, dst))
            assert got == _brute_paths(t, src, dst), (src, dst)
            # next_hops at every switch on those paths: the ports the paths take from there
            for path in got:
                for node, port in path[1:]:
                    assert port in t.next_hops(node, dst)
        sw = t.tor_of(hosts[0])
        assert t.next_hops(sw, hosts[0]) == (t.peer(hosts[0], 0).port,)


def test_all_paths_leaves_no_reference_cycle():
    """The simulator runs with the cyclic collector off (sim/runner.py): a path search must
    not leave garbage only the collector frees (a self-calling closure kept every path list
    of a 1,024-host run alive, 28 MB)."""
    import gc
    t = fat_tree(8, 1, 1, 1)
    gc.collect()
    gc.disable()
    try:
        for dst in t.hosts[64:80]:
            assert len(t.all_paths("h0", dst)) == 16
        assert gc.collect() == 0
    finally:
        gc.enable()
