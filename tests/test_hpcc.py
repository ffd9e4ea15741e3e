"""HPCC: the sans-IO window algorithm against the paper's formulas, and its behaviour in the
simulator (queues near zero, utilisation near eta, no PFC on an incast)."""

import pytest

from fabriclab.cc_algorithms.hpcc import Hpcc, HpccParams

from helpers import make_spec, run_net

G = 100_000_000_000
T = 10_000  # ns


def hpcc(**kw) -> Hpcc:
    return Hpcc(HpccParams.defaults(G, T, **kw))


def hop(ts, tx, q, rate=G):
    return [(ts, tx, q, rate)]


def test_starts_at_line_rate_with_a_bdp_window():
    h = hpcc()
    assert h.rate_bps == G and h.window_bytes == round(G * T / 8e9) == 125_000


def test_overloaded_hop_shrinks_the_window_by_u_over_eta():
    """One hop sending at line rate with a standing queue of one BDP: u = q/(B T) + 1 = 2;
    once U has converged, W = W_c / (U/eta) + W_AI (paper, Algorithm 1)."""
    h = hpcc(eta=0.95, max_stage=0)
    bdp = G * T / 8e9
    ts, tx = 0, 0
    h.on_ack(0, 1000, int_hops=hop(ts, tx, bdp), ack_seq=0, snd_nxt=10)
    for _ in range(40):  # ACKs spanning one full T each, none committing: U -> u = 2
        ts += T
        tx += int(bdp)  # txRate = B
        h.on_ack(ts, 1000, int_hops=hop(ts, tx, bdp), ack_seq=0, snd_nxt=10)
    assert h.U == pytest.approx(2.0, rel=1e-3)
    wc = h.wc
    assert wc == pytest.approx(bdp)  # fast reactions did not move the reference window
    ts += T
    tx += int(bdp)
    h.on_ack(ts, 1000, int_hops=hop(ts, tx, bdp), ack_seq=11, snd_nxt=20)  # commits
    assert h.window_bytes == pytest.approx(wc / (2.0 / 0.95) + h.p.w_ai_bytes, rel=1e-3)
    assert h.wc == pytest.approx(h.window_bytes, abs=1)
    assert h.rate_bps == pytest.approx(h.window_bytes * 8e9 / T, rel=1e-3)


def test_an_ack_stamped_at_the_same_time_measures_nothing():
    """Frames a switch stamped in the same ns (the emulator's dilated clock stamps a batch
    of frames alike) give no rate: such an ACK leaves U, the window and the reference
    records alone, so the next ACK measures over the whole interval.  (Taking it for a
    measurement of u = 0 reset U to 0, and HPCC on the emulator hardly reacted.)"""
    h = hpcc(eta=0.95, max_stage=0)
    bdp = G * T / 8e9
    ts, tx = 0, 0
    h.on_ack(0, 1000, int_hops=hop(ts, tx, bdp), ack_seq=0, snd_nxt=10)
    for _ in range(40):
        ts += T
        tx += int(bdp)
        h.on_ack(ts, 1000, int_hops=hop(ts, tx, bdp), ack_seq=0, snd_nxt=10)
    before = (h.U, h.window_bytes, h.rate_bps, h.prev)
    h.on_ack(ts, 1000, int_hops=hop(ts, tx + 1000, bdp), ack_seq=0, snd_nxt=10)
    assert (h.U, h.window_bytes, h.rate_bps, h.prev) == before
    assert h.U == pytest.approx(2.0, rel=1e-3)


def test_underloaded_hop_grows_additively_then_caps():
    """U below eta: W = W_c + W_AI per committed update, never above the initial BDP window;
    with max_stage additive steps done, the next step is multiplicative."""
    h = hpcc(max_stage=3)
    h.wc = 50_000.0
    ts, tx = 0, 0
    h.on_ack(0, 1, int_hops=hop(0, 0, 0), ack_seq=1, snd_nxt=1)
    seen = []
    for i in range(1, 5):
        ts += T
        tx += int(G * T / 8e9 * 0.5)  # 50% utilisation, no queue
        h.on_ack(ts, 1, int_hops=hop(ts, tx, 0), ack_seq=i + 1, snd_nxt=i + 1)
        seen.append((h.wc, h.inc_stage))
    ai = h.p.w_ai_bytes
    assert seen[0] == (pytest.approx(50_000 + ai), 1)
    assert seen[2] == (pytest.approx(50_000 + 3 * ai), 3)
    assert seen[3][1] == 0  # after max_stage: multiplicative (U < eta enlarges W)
    assert seen[3][0] > seen[2][0]
    for _ in range(2000):
        ts += T
        tx += int(G * T / 8e9 * 0.1)
        h.on_ack(ts, 1, int_hops=hop(ts, tx, 0), ack_seq=10 ** 9, snd_nxt=10 ** 9)
    assert h.window_bytes <= round(h.p.w_init_bytes)


def test_window_commits_once_per_rtt():
    """ACKs for data sent before the last commit react without moving W_c (fast react)."""
    h = hpcc()
    h.on_ack(0, 1, int_hops=hop(0, 0, 0), ack_seq=1, snd_nxt=100)
    h.on_ack(T, 1, int_hops=hop(T, int(G * T / 8e9), 125_000), ack_seq=2, snd_nxt=200)
    wc = h.wc
    h.on_ack(2 * T, 1, int_hops=hop(2 * T, int(2 * G * T / 8e9), 125_000), ack_seq=150,
             snd_nxt=300)  # 150 <= last commit (200): no commit
    assert h.wc == wc
    h.on_ack(3 * T, 1, int_hops=hop(3 * T, int(3 * G * T / 8e9), 125_000), ack_seq=201,
             snd_nxt=400)
    assert h.wc != wc


def test_queue_drains_after_a_flow_joins_and_utilisation_settles_near_eta():
    """In the simulator: a second flow joins a full 100G bottleneck; the queue it causes is
    gone within a few base RTTs, and the link then runs near eta = 0.95 with no PFC."""
    spec = make_spec(scheme="hpcc", topology={"leaves": 1, "spines": 1, "hosts_per_leaf": 3},
                     workload=[{"kind": "flows", "flows": [
                         {"src": "h1", "dst": "h0", "bytes": "unlimited"},
                         {"src": "h2", "dst": "h0", "bytes": "unlimited", "start_us": 100}]}],
                     stop={"time_us": 400})
    net = run_net(spec, sample_ns=500)
    s = net.sampler
    T_ = net.flows[0].cc.p.base_rtt_ns
    port = net.switches["l0"].ports[0]
    qcol, txcol = s.switch_ports.index(port), s.ports.index(port)
    q_after = [(t, row[qcol]) for t, row in zip(s.times, s.queue) if t > 100_000]
    assert max(q for _, q in q_after) > 10_000  # the join did build a queue
    settled = 100_000 + 10 * T_
    assert max(q for t, q in q_after if t > settled) <= 2 * (4096 + 64 + 42)
    i0 = next(i for i, t in enumerate(s.times) if t >= 200_000)
    util = (s.tx[-1][txcol] - s.tx[i0][txcol]) * 8 / (s.times[-1] - s.times[i0]) / 100
    assert 0.90 <= util <= 1.0, util
    assert sum(p.pfc_pause_tx for p in s.switch_ports) == 0


def test_hpcc_incast_triggers_no_pfc():
    """HPCC paper: PFC is almost never triggered -- here, never, on 60 x 500 KB into one host;
    and the INT bytes make it a little slower than the bound, never faster."""
    spec = make_spec(scheme="hpcc", topology={"leaves": 8, "spines": 8, "hosts_per_leaf": 8},
                     workload=[{"kind": "incast", "receiver": "h0", "senders": 60,
                                "bytes": 500_000}])
    net = run_net(spec)
    assert sum(p.pfc_pause_tx for sw in net.switches.values() for p in sw.ports) == 0
    assert net.drops == 0 and all(f.end_ns is not None for f in net.flows)
