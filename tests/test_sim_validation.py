"""The simulator against independent truths: closed-form bounds, published figures,
invariants (PFC => no drops, conservation), and the trends the references describe."""

import statistics

import numpy as np
import pytest

from fabriclab.metrics.stats import jain_index
from fabriclab.units import wire_bytes

from helpers import flow_series, make_spec, run_net, run_result

MTU, HDR = 4096, 64


def total_pauses(net):
    return sum(p.pfc_pause_tx for s in net.switches.values() for p in s.ports)


def test_single_flow_matches_closed_form_and_htsim():
    """A lone 2 MB flow across a k=4 fat-tree at 100G: receiver-side FCT equals the
    store-and-forward bound, and sender-side completion (last ACK) matches UEC htsim's
    published 176.2 us for the same setting (MSS 4096 + 64 B, 1 us links, 12 us RTT)."""
    net = run_net(make_spec(topology={"kind": "fat_tree", "k": 4},
                            workload=[{"kind": "flows", "flows": [
                                {"src": "h0", "dst": "h15", "bytes": 2_000_000}]}]))
    f = net.flows[0]
    w = wire_bytes(2_000_000, MTU, HDR)
    assert f.ideal_fct_ns == int(w * 8 / 100 + 5 * (MTU + HDR) * 8 / 100) + 6 * 1000
    assert f.ideal_fct_ns - 6 <= f.end_ns - f.started_ns <= f.ideal_fct_ns + 6
    assert f.sender_done_ns == pytest.approx(176_200, rel=0.002)


@pytest.mark.parametrize("scheme", ["ecmp_dcqcn", "udp"])
def test_incast_bound_and_pfc_means_no_drops(scheme):
    """HPCC paper's incast: 60 x 500 KB into one 100G host cannot finish before
    60 W(S) 8 / C (2.44 ms with headers); with PFC on nothing is dropped, even with no
    congestion control at all, and PFC does fire."""
    spec = make_spec(scheme=scheme, topology={"leaves": 8, "spines": 8, "hosts_per_leaf": 8},
                     workload=[{"kind": "incast", "receiver": "h0", "senders": 60,
                                "bytes": 500_000}])
    net, res = run_result(spec)
    bound = 60 * wire_bytes(500_000, MTU, HDR) * 8 / 100
    done = [f.end_ns for f in net.flows]
    assert None not in done
    assert max(done) >= bound >= 2_400_000
    assert net.drops == 0 and res.summary["drops"] == 0
    assert total_pauses(net) > 0
    coll = res.summary["collectives"][0]
    assert coll["completion_over_bound"] >= 1.0


@pytest.mark.parametrize("scheme", ["ecmp_dcqcn", "udp"])
def test_no_pfc_small_buffer_drops_and_conservation(scheme):
    """PFC off and a 300 KB buffer: an 8 -> 1 incast drops packets, and every byte the hosts
    sent was either delivered or dropped.  The reliable transport still completes every flow
    (go-back-N and timeouts recover the losses)."""
    spec = make_spec(scheme=scheme, topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 8},
                     switch={"buffer_bytes": 300_000, "pfc": {"enabled": False}},
                     workload=[{"kind": "incast", "receiver": "h0", "senders": 8,
                                "bytes": 500_000}])
    net, res = run_result(spec)
    s = res.summary
    assert net.drops > 0 and s["drops"] == net.drops
    assert s["bytes_sent"] == s["bytes_delivered"] + s["bytes_dropped"]
    assert s["bytes_in_flight"] == 0
    if scheme == "ecmp_dcqcn":
        assert all(f.end_ns is not None for f in net.flows)
        assert s["retransmitted_bytes"] > 0
        assert all(f.rcv_nxt == 500_000 for f in net.flows)


def _fairness_run(n):
    spec = make_spec(topology={"leaves": 1, "spines": 1, "hosts_per_leaf": 9},
                     workload=[{"kind": "incast", "receiver": "h0",
                                "senders": [f"h{i + 1}" for i in range(n)],
                                "bytes": "unlimited", "stagger_us": 500}],
                     stop={"time_us": 100_000})
    return spec, run_net(spec, sample_ns=10_000)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 8])
def test_dcqcn_converges_to_fair_shares(n):
    """n long flows (starting 500 us apart) through one 100G bottleneck under DCQCN: over the
    second half of 100 ms, Jain's index >= 0.95, the link stays full, and the queue is held
    around the ECN marking range (Kmin..Kmax) instead of filling the buffer."""
    spec, net = _fairness_run(n)
    s = net.sampler
    i0 = next(i for i, t in enumerate(s.times) if t >= 50_000_000)
    dt = s.times[-1] - s.times[i0]
    fs = flow_series(net)
    at = np.array([s.times[i0], s.times[-1]], dtype=float)
    gbps = [float(np.diff(fs.delivered_at(f.id, at))[0]) * 8 / dt for f in net.flows]
    assert jain_index(gbps) >= 0.95, gbps
    payload_rate = 100 * MTU / (MTU + HDR)
    assert sum(gbps) >= 0.95 * payload_rate
    port = net.switches["l0"].ports[0]  # towards h0: the bottleneck
    assert port.max_qbytes == max(p.max_qbytes for p in net.switches["l0"].ports)
    col = s.switch_ports.index(port)
    q = [row[col] for row in s.queue[i0:]]
    assert 0.5 * port.kmin <= statistics.mean(q) <= port.kmax
    assert max(q) < port.kmax
    assert net.drops == 0


def test_victim_flow_stalls_while_paused():
    """PFC pause propagation (DCQCN paper §2): a burst into R = h8 makes l1 pause the spine and
    the spine pause l0's uplink; the victim flow h1 -> h16, which never crosses R's port,
    loses most of its throughput while its uplink is paused.  Nothing is dropped."""
    from fabriclab.spec import load
    spec = load("experiments/victim_flow.yaml")
    net = run_net(spec, sample_ns=2_000)
    s = net.sampler
    victim = net.flows[1]
    assert (victim.src, victim.dst) == ("h1", "h16")
    congested = max((p for sw in net.switches.values() for p in sw.ports),
                    key=lambda p: p.max_qbytes)
    assert congested.name == "l1:0"  # l1's port to R
    assert congested not in victim.route
    uplink = victim.route[1]  # l0 -> s0
    assert uplink.name == "l0:8" and uplink.pfc_pause_rx > 0
    col = s.ports.index(uplink)
    rx = flow_series(net).delivered_at(victim.id, np.asarray(s.times, dtype=float))
    before, paused = [], []
    for i in range(1, len(s.times)):
        dt = s.times[i] - s.times[i - 1]
        rate = (rx[i] - rx[i - 1]) * 8 / dt
        frac = (s.paused[i][col] - s.paused[i - 1][col]) / dt
        if 100_000 <= s.times[i] < 500_000:
            before.append(rate)
        elif frac >= 0.5:
            paused.append(rate)
    assert len(paused) >= 20  # the uplink was paused for at least 40 us in total
    assert statistics.mean(paused) < 0.25 * statistics.mean(before)
    assert statistics.mean(before) > 40  # it had its fair half of the uplink before
    assert net.drops == 0


def _permutation(seed, lb="scheme"):
    spec = make_spec(seed=seed, topology={"leaves": 4, "spines": 4, "hosts_per_leaf": 4},
                     switch={"load_balancing": lb},
                     workload=[{"kind": "permutation", "bytes": 1_000_000}])
    return run_result(spec)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ecmp_permutation_collides(seed):
    """Per-flow ECMP on a permutation over a 1:1 leaf-spine: hash collisions leave spine
    uplinks unequally loaded and push the tail FCT above the single-flow ideal (UEC htsim:
    889.9 us with ECMP vs 200.5 us spraying for 2 MB flows)."""
    net, res = _permutation(seed)
    s = res.summary
    assert s["uplink_load_max_over_mean"] > 1.3
    assert s["slowdown_p99"] > 1.5
    assert s["drops"] == 0


def test_packet_spraying_balances_the_same_permutation():
    """The same permutation with per-packet spraying loads the uplinks evenly."""
    _, ecmp = _permutation(1)
    _, spray = _permutation(1, "packet_spray")
    assert spray.summary["uplink_load_max_over_mean"] < 1.15  # random: binomial spread
    assert spray.summary["uplink_load_max_over_mean"] < ecmp.summary["uplink_load_max_over_mean"]


def test_ring_allreduce_respects_bus_bandwidth_bound():
    """Ring all-reduce: bus bandwidth <= host link rate (nccl-tests definition), completion >=
    2(n-1)/n W(S/n)-per-step bound; every step starts only after what it depends on: the
    chunk it received delivered, its own previous send handed to the NIC."""
    spec = make_spec(topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
                     workload=[{"kind": "ring_allreduce", "bytes": 8_000_000}])
    net, res = run_result(spec)
    c = res.summary["collectives"][0]
    assert c["completion_ns"] >= c["bound_ns"]
    assert c["busbw_gbps"] <= 100.0
    assert c["busbw_gbps"] >= 60.0
    by_id = {f.id: f for f in net.flows}
    for fd in net.workload.flows:
        f = by_id[fd.id]
        for d in fd.deps:
            dep = by_id[d]
            if dep.src == f.src:
                assert dep.started_ns < dep.sent_ns <= f.started_ns
            else:
                assert dep.dst == f.src and f.started_ns >= dep.end_ns


def test_every_flow_is_slower_than_its_ideal():
    """Under load, no flow beats the store-and-forward lower bound (slowdown >= 1)."""
    spec = make_spec(topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
                     workload=[{"kind": "background", "cdf": "websearch", "load": 0.5,
                                "duration_us": 1000}])
    net, res = run_result(spec)
    done = [f for f in net.flows if f.end_ns is not None]
    assert len(done) == len(net.flows) > 20
    for f in done:
        assert f.end_ns - f.started_ns >= f.ideal_fct_ns - 8, f.id


def test_all_to_all_bound():
    """All-to-all: each host pushes (n-1) W(S) through its own link, so completion >= that
    time and bus bandwidth (algbw x (n-1)/n) <= the host link rate."""
    spec = make_spec(topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 2},
                     workload=[{"kind": "all_to_all", "bytes": 500_000}])
    net, res = run_result(spec)
    c = res.summary["collectives"][0]
    bound_ns = 3 * wire_bytes(500_000, MTU, HDR) * 8 / 100
    assert c["bound_ns"] == pytest.approx(bound_ns, abs=1)
    assert c["completion_ns"] >= bound_ns
    assert c["busbw_gbps"] <= 100.0
    assert len(net.flows) == 12 and res.summary["drops"] == 0
