"""GSE: the sans-IO pieces against their definitions, and the simulator against the white
paper's claims (incast at the physical bound with no PFC, even spraying, exactly-once
in-order delivery, all-reduce near line rate)."""

import random

import pytest

from fabriclab.cc_algorithms.gse import EgressScheduler, GseParams, ReorderBuffer, TransitTracker, Voq
from fabriclab.nic import Nic
from fabriclab.sim import network as sim_network
from fabriclab.units import wire_bytes

from helpers import make_spec, run_result

G = 100_000_000_000


def test_egress_scheduler_never_exceeds_the_port_and_is_round_robin():
    """Grants to 5 greedy sources: the granted wire bytes never exceed rate x elapsed (+ one
    grant), and every source gets its turn in order."""
    s = EgressScheduler(G, 4096, 64, 1.0)
    for src in "abcde":
        for _ in range(20):
            s.request(src, 65536)
    t, order, total = 0, [], 0
    while s.has_pending():
        t = s.next_time(t)
        src, n, at = s.grant(t)
        assert at == t
        order.append(src)
        total += wire_bytes(n, 4096, 64)
        assert total * 8e9 / G <= t + wire_bytes(65536, 4096, 64) * 8e9 / G + 1
    assert order[:10] == list("abcdeabcde")
    assert {order.count(x) for x in "abcde"} == {20}


def test_voq_pipelines_and_sizes_the_tail():
    """Never more than max_outstanding grants asked for or held; the last request asks only
    for what is left."""
    v = Voq(GseParams.defaults(container_bytes=1000, grant_bytes=1000, max_outstanding_grants=3), 4)
    assert v.requests_to_send(10_500) == [1000, 1000, 1000]
    assert v.requests_to_send(10_500) == []
    v.on_grant(1000)
    assert v.requests_to_send(10_500) == []  # 2 asked + 1 held = 3
    for _ in range(2):
        v.tag(500, False)
    assert v.credit == 0
    assert v.requests_to_send(9_500) == [1000]
    v = Voq(GseParams.defaults(container_bytes=1000, grant_bytes=1000), 2)
    assert v.requests_to_send(1_300) == [1000, 300]


def test_voq_containers_close_when_full_and_alternate_paths():
    v = Voq(GseParams.defaults(container_bytes=3000, grant_bytes=9000, spray="round_robin"), 3)
    v.on_grant(9000)
    tags = [v.tag(1000, False) for _ in range(9)]
    assert [t[0] for t in tags] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # container sequence
    assert [t[1] for t in tags[::3]] == [0, 1, 2]  # one path each, round-robin
    assert [t[3] for t in tags] == [False, False, True] * 3  # last packet marked
    v.on_grant(9000, path=2)
    assert v.tag(1000, True)[1:] == (2, 0, True)  # GSOS's path; no more data: closes


def test_reorder_buffer_restores_order_exactly_once():
    """Containers arrive in a random order (packets inside one in order): the output is the
    original sequence, every packet once, and what waited is measured."""
    rng = random.Random(3)
    containers = [[(c, i) for i in range(rng.randint(1, 5))] for c in range(60)]
    arrivals = []
    lanes = [[] for _ in range(4)]  # 4 paths, each FIFO
    for c, pk in enumerate(containers):
        lanes[c % 4].append(pk)
    while any(lanes):  # interleave the paths at random
        lane = rng.choice([x for x in lanes if x])
        arrivals.extend(lane.pop(0))
    rb = ReorderBuffer()
    out = []
    for t, (c, i) in enumerate(arrivals):
        last = i == len(containers[c]) - 1
        out.extend(rb.accept(t, c, i, last, (c, i), 100))
    assert out == [p for pk in containers for p in pk]
    assert rb.max_held_bytes > 0 and rb.delays and rb.held_bytes == 0


def test_transit_tracker_takes_the_path_free_soonest():
    tt = TransitTracker()
    for link in "abcd":
        tt.add_link(link, G)
    tt.reserve(["a", "b"], 0, 125_000)  # 10 us on a and b
    assert tt.earliest([["a", "b"], ["c", "d"]]) == (1, 0.0)
    tt.reserve(["c", "d"], 0, 250_000)
    assert tt.earliest([["a", "b"], ["c", "d"]])[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("placement,scheduler", [("nic", "central"), ("nic", "egress"),
                                                 ("leaf", "central"), ("leaf", "egress")])
def test_gse_incast_at_the_bound_with_short_queue_and_no_pfc(placement, scheduler):
    """HPCC paper's incast (60 x 500 KB into one 100G host): GSE completes within 5% of the
    physical bound, the destination port's queue stays within one container (GSOS) or two
    (egress schedulers, whose GRANTs cross the fabric), PFC never fires, nothing is dropped,
    and no sender may use the unscheduled window (every grant had others waiting)."""
    spec = make_spec(scheme="gse", topology={"leaves": 8, "spines": 8, "hosts_per_leaf": 8},
                     gse={"placement": placement, "scheduler": scheduler},
                     workload=[{"kind": "incast", "receiver": "h0", "senders": 60,
                                "bytes": 500_000}])
    net, res = run_result(spec)
    c = res.summary["collectives"][0]
    assert 1.0 <= c["completion_over_bound"] <= 1.05
    container = wire_bytes(spec.gse.container_bytes, spec.switch.mtu_bytes,
                           spec.switch.header_bytes)
    q = net.switches["l0"].ports[0].max_qbytes
    assert q <= (container if scheduler == "central" else 2 * container), q
    assert res.summary["pfc_pause_frames"] == 0 and res.summary["drops"] == 0
    g = res.summary["gse"]
    assert g["grants"] >= 60 * 500_000 // spec.gse.container_bytes
    assert g["unscheduled_containers"] == 0


def test_egress_scheduler_spaces_grants_where_the_data_arrives():
    """Two sources, one 2.7 us farther from the port than the other: each grant is handed
    out its source's reach before its data's turn, so the data arrives back to back at the
    port's rate (no overlap: no queue; no gap: no lost capacity), round-robin."""
    reach = {"near": 0.0, "far": 2667.0}
    s = EgressScheduler(G, 4096, 64, 1.0, reach=reach.__getitem__)
    for src in ("near", "far"):
        for _ in range(5):
            s.request(src, 32768)
    t, arrivals = 0, []
    per = wire_bytes(32768, 4096, 64) * 8e9 / G
    while s.has_pending():
        t = s.next_time(t)
        src, n, at = s.grant(t)
        assert at >= t
        arrivals.append((at + reach[src], src))
    assert [x for _, x in arrivals] == ["near", "far"] * 5
    gaps = [b - a for (a, _), (b, _) in zip(arrivals, arrivals[1:])]
    assert per <= gaps[0] <= reach["far"]  # asked at 0: "far" could not come sooner
    assert all(per - 1 <= g <= per + 1 for g in gaps[1:]), gaps


def test_voq_unscheduled_window_needs_an_idle_grant_and_a_fresh_drain():
    """The unscheduled first window: taken only by a VOQ whose last grant said no one else
    was waiting, within the lease of its running dry, with no credit or request out; once
    per idle grant."""
    p = GseParams.defaults(container_bytes=2000, grant_bytes=1000, unscheduled_bytes=2000,
                           lease_ns=10_000)
    v = Voq(p, 2)
    assert v.take_unscheduled(0, 5000) == 0  # never granted
    v.requests_to_send(1000)
    v.on_grant(1000, 0, idle=True)
    v.tag(1000, True, now=100)  # ran dry at 100
    assert v.drained_at == 100 and v.credit == 0
    assert v.take_unscheduled(100 + 10_001, 5000) == 0  # too late
    assert v.take_unscheduled(5000, 1500) == 1500  # the message is smaller than the window
    assert v.credit == 1500 and not v.lease
    tags = [v.tag(500, False, now=5000 + i) for i in range(3)]
    assert [t[3] for t in tags] == [False, False, True]  # one unscheduled container
    assert v.unscheduled_containers == 1
    assert v.take_unscheduled(6000, 5000) == 0  # used: the lease is gone
    w = Voq(p, 2)
    w.requests_to_send(1000)
    w.on_grant(1000, 1, idle=False)  # someone else was waiting
    w.tag(1000, True, now=100)
    assert w.take_unscheduled(200, 5000) == 0


@pytest.mark.parametrize("k", [6])
def test_gse_permutation_tail_at_three_tiers(k):
    """A k-ary fat-tree (3 tiers, 100G, 1 us links), every host sending 2 MB in a
    permutation: GSE's slowest flow within 1.15 x the single-flow ideal (htsim's UEC
    spraying: 1.14 x at 1,024 hosts).  GSOS reserving each grant's path at its port's turn
    and 32 KiB containers bring it there (it was 1.38 x at k=6, docs/gse.md)."""
    spec = make_spec(scheme="gse", topology={"kind": "fat_tree", "k": k},
                     workload=[{"kind": "permutation", "bytes": 2_000_000}])
    net, res = run_result(spec)
    cols, rows = res.tables["flows.csv"]
    fct = max(r[cols.index("fct_ns")] for r in rows)
    ideal = max(r[cols.index("ideal_fct_ns")] for r in rows)
    assert fct <= 1.15 * ideal, fct / ideal
    s = res.summary
    assert s["drops"] == 0 and s["pfc_pause_frames"] == 0 and s["nacks"] == 0


def test_gse_ring_allreduce_with_1mb_steps():
    """Ring all-reduce over 16 hosts, 1 MB per step: the unscheduled first window (a VOQ
    whose port was its alone sends its next message's first 64 KB before the grant comes)
    hides the request/grant round trip each dependent step paid: bus bandwidth >= 93 % of
    the 100G line; without it, about 90 %."""
    def busbw(lease_us):
        spec = make_spec(scheme="gse", topology={"leaves": 4, "spines": 4, "hosts_per_leaf": 4},
                         gse={"unscheduled_lease_us": lease_us},
                         workload=[{"kind": "ring_allreduce", "bytes": 16_000_000}])
        _, res = run_result(spec)
        return res.summary["collectives"][0]["busbw_gbps"], res.summary["gse"]
    bw, g = busbw(10.0)
    assert bw >= 93.0 and g["unscheduled_containers"] > 0
    bw0, g0 = busbw(0.0)
    assert bw0 < 91.0 and bw - bw0 > 3.0 and g0["unscheduled_containers"] == 0


@pytest.mark.parametrize("placement", ["nic", "leaf"])
def test_gse_sprays_evenly_where_ecmp_collides(placement):
    """Permutation of 2 MB flows on a 1:1 leaf-spine: per-flow ECMP loads the spine uplinks
    unevenly (max/mean > 1.3) and stretches the tail; GSE keeps max/mean <= 1.1 and the p99
    FCT close to the single-flow ideal."""
    def run(scheme):
        return run_result(make_spec(scheme=scheme, gse={"placement": placement},
                                    topology={"leaves": 4, "spines": 4, "hosts_per_leaf": 4},
                                    workload=[{"kind": "permutation", "bytes": 2_000_000}]))[1]
    ecmp, gse = run("ecmp_dcqcn").summary, run("gse").summary
    assert ecmp["uplink_load_max_over_mean"] > 1.3
    assert gse["uplink_load_max_over_mean"] <= 1.1
    assert gse["slowdown_p99"] <= 1.3 < ecmp["slowdown_p99"]
    assert gse["drops"] == 0 and gse["pfc_pause_frames"] == 0
    # every container back in order before the transport: no NACK, nothing resent (a leaf
    # reorders per source leaf *and* destination port: sequence numbers are per VOQ)
    assert gse["nacks"] == 0 and gse["retransmitted_bytes"] == 0


def test_gse_delivers_every_byte_once_in_order_despite_reordering(monkeypatch):
    """All-to-all, egress schedulers granting at 2x the port rate and containers sprayed
    round-robin (so queues, and so path delays, differ): containers overtake each other on
    the way (the reorder buffers hold data), yet the transport sees each flow's bytes
    exactly once and in order -- no NACK, no gap, no duplicate, no retransmission."""
    seen = {}

    class RecordingNic(Nic):  # a subclass: the compiled Nic's methods cannot be patched
        def on_data(self, now, frame):  # what the transport is handed, after reordering
            seen.setdefault(frame.flow.id, []).append(frame.psn)
            super().on_data(now, frame)

    monkeypatch.setattr(sim_network, "Nic", RecordingNic)
    spec = make_spec(scheme="gse", gse={"grant_overcommit": 2.0, "container_bytes": 16384,
                                        "scheduler": "egress"},
                     topology={"leaves": 4, "spines": 4, "hosts_per_leaf": 2},
                     workload=[{"kind": "all_to_all", "bytes": 300_000}])
    net, res = run_result(spec)
    s = res.summary
    assert s["gse"]["reorder_packets_delayed"] > 0 and s["gse"]["reorder_max_bytes"] > 0
    spines = [p.max_qbytes for sw in ("s0", "s1", "s2", "s3") for p in net.switches[sw].ports]
    assert max(spines) > 0 and len(set(spines)) > 1  # the paths did queue, unequally
    for f in net.flows:
        seqs = seen[f.id]
        assert seqs == sorted(set(seqs)), f.id  # increasing: in order, no duplicate
        assert f.rcv_nxt == f.size
    assert s["nacks"] == 0 and s["retransmitted_bytes"] == 0 and s["timeouts"] == 0


@pytest.mark.slow
def test_gse_ring_allreduce_near_line_rate():
    """Ring all-reduce on a 1:1 fabric: bus bandwidth >= 90% of the 100G host link."""
    net, res = run_result(make_spec(scheme="gse",
                                    topology={"leaves": 4, "spines": 4, "hosts_per_leaf": 4},
                                    workload=[{"kind": "ring_allreduce", "bytes": 64_000_000}]))
    c = res.summary["collectives"][0]
    assert c["busbw_gbps"] >= 90.0


def test_reorder_buffer_gives_up_on_a_container_with_a_lost_packet():
    """Container 0 loses its packet 1: containers 1 and 2 wait, until the timeout releases
    them in order; nothing is delivered twice."""
    rb = ReorderBuffer()
    out = rb.accept(0, 0, 0, False, "0.0", 10)  # 0.1 (last) is lost
    out += rb.accept(1, 1, 0, True, "1.0", 10)
    out += rb.accept(2, 2, 0, False, "2.0", 10)
    out += rb.accept(3, 2, 1, True, "2.1", 10)
    assert out == ["0.0"]
    assert rb.release_stale(10, 100) == []  # not yet
    assert rb.release_stale(101, 100) == ["1.0", "2.0", "2.1"]
    assert rb.held_bytes == 0 and rb.expected == 3 and rb.skipped == 1
    assert rb.accept(102, 3, 0, True, "3.0", 10) == ["3.0"]


def test_gse_recovers_from_drops_without_pfc():
    """PFC off and a small buffer, GSE with 2x overcommit so queues overflow: packets are
    lost inside containers, the reorder buffers give up on them after the timeout, go-back-N
    resends, and every flow still completes with all its bytes."""
    spec = make_spec(scheme="gse", gse={"grant_overcommit": 3.0, "scheduler": "egress"},
                     topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
                     switch={"buffer_bytes": 200_000, "pfc": {"enabled": False}},
                     workload=[{"kind": "incast", "receiver": "h0", "senders": 7,
                                "bytes": 1_000_000}])
    net, res = run_result(spec)
    s = res.summary
    assert s["drops"] > 0
    assert all(f.rcv_nxt == f.size and f.end_ns is not None for f in net.flows)
    assert s["retransmitted_bytes"] > 0
