"""Selective repeat (``nic.loss_recovery: selective_repeat``, IRN-style) against go-back-N
on the simulator: what spraying needs (reordering is not loss), what loss costs each, and
that on a lossless fabric the two differ only by selective repeat's in-flight cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabriclab import spec as S
from fabriclab.nic import transport
from fabriclab.sim import network as sim_network
from fabriclab.sim.network import Network
from fabriclab.sim.runner import simulate

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
WALL_CLOCK = {"wall_s", "wall_run_s", "packet_hops_per_s"}


def _run(experiment: str, overrides: list[str], reduced: bool = False):
    spec = S.load(EXPERIMENTS / experiment, overrides, reduced=reduced)
    return simulate(spec, progress=False)


def _permutation(k: int, lb: str, recovery: str, size: int = 2_000_000):
    return _run("permutation.yaml", ["topology.kind=fat_tree", f"topology.k={k}", "seed=1",
                                     f"workload.0.bytes={size}", "scheme=ecmp_dcqcn",
                                     f"switch.load_balancing={lb}",
                                     f"nic.loss_recovery={recovery}"]).summary


@pytest.mark.parametrize("k", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_spraying_with_selective_repeat_beats_ecmp_with_go_back_n(k):
    """Permutation of 2 MB flows on a 3-tier k-ary fat-tree (k=8: 128 hosts) under DCQCN,
    PFC on.  Per-flow ECMP hashes flows onto the same uplinks (max/mean uplink load >= 2),
    so colliding flows get at most half a link: the p99 slowdown is >= 2.  Spraying every
    packet with selective repeat loads the uplinks evenly and keeps every flow near its
    ideal FCT (p99 slowdown <= 1.4), so it beats ECMP + go-back-N on the median and, by far,
    on the p99 FCT; the reordering spraying causes is not taken for loss beyond 1 % of the
    data.  Both deliver every byte with no drop.  Fails if spraying or selective repeat
    stops working (go-back-N under spraying retransmits several times the data, see the
    next test), or ECMP stops colliding.  k=8 measured: ECMP+GBN p50/p99 438/3276 us,
    spray+SR 216/226 us, 0.053 % retransmitted; k=4: 345/581 us vs 199/206 us, none."""
    ecmp = _permutation(k, "ecmp", "go_back_n")
    spray = _permutation(k, "packet_spray", "selective_repeat")
    n = k ** 3 // 4
    for s in (ecmp, spray):
        assert s["flows_completed"] == s["flows_total"] == n
        assert s["payload_delivered_bytes"] == n * 2_000_000
        assert s["drops"] == 0
    assert ecmp["uplink_load_max_over_mean"] >= 2 and ecmp["slowdown_p99"] >= 2
    assert ecmp["retransmitted_bytes"] == 0  # one path per flow: nothing out of order
    assert spray["uplink_load_max_over_mean"] <= 1.15 and spray["slowdown_p99"] <= 1.4
    assert spray["fct_p50_ns"] <= 0.7 * ecmp["fct_p50_ns"]
    assert spray["fct_p99_ns"] <= 0.5 * ecmp["fct_p99_ns"]
    assert spray["retransmitted_bytes"] < 0.01 * spray["payload_delivered_bytes"]


def test_spraying_needs_selective_repeat():
    """The same permutation (k=4, 500 KB flows) sprayed, under each loss recovery.  With
    go-back-N every overtaken packet looks like a loss: the receiver NACKs, the sender goes
    back, and it retransmits more than the whole data (measured 9x), so even its median FCT
    is worse than selective repeat's p99; selective repeat keeps the overtaking packets and
    resends < 1 %.  Neither drops anything (PFC).  Fails if go-back-N stopped resending on
    reordering (then the previous test would not show selective repeat's worth) or
    selective repeat took reordering for loss."""
    gbn = _permutation(4, "packet_spray", "go_back_n", 500_000)
    sr = _permutation(4, "packet_spray", "selective_repeat", 500_000)
    for s in (gbn, sr):
        assert s["flows_completed"] == 16 and s["payload_delivered_bytes"] == 16 * 500_000
        assert s["drops"] == 0
    assert gbn["retransmitted_bytes"] > gbn["payload_delivered_bytes"] and gbn["nacks"] > 0
    assert sr["retransmitted_bytes"] < 0.01 * sr["payload_delivered_bytes"]
    assert sr["fct_p99_ns"] < gbn["fct_p50_ns"]


def _lossy_incast(recovery: str):
    return _run("incast.yaml", ["switch.pfc.enabled=false", "switch.buffer_bytes=300000",
                                "workload.0.senders=7", f"nic.loss_recovery={recovery}"],
                reduced=True)


def test_selective_repeat_resends_only_what_was_lost():
    """Incast 7 x 200 KB into one host (experiments/incast.yaml reduced), PFC off and a
    300 KB buffer: the switch drops data in both runs.  Every dropped data packet must be
    sent again, so each mode retransmits at least the dropped payload (drops are data
    frames: dropped wire bytes - a header each).  Per-flow ECMP keeps each flow on one
    FIFO path, so a packet that a later one overtook was lost: selective repeat resends
    exactly the dropped payload, no more; go-back-N also resends what arrived after each
    gap, so strictly more.  Both still deliver every byte of every flow, and every byte
    sent was delivered or dropped.  Fails if selective repeat resends what arrived (or
    misses a loss), or either mode loses data."""
    runs = {m: _lossy_incast(m).summary for m in ("go_back_n", "selective_repeat")}
    hdr = 64  # switch.header_bytes
    for s in runs.values():
        assert s["drops"] > 0 and set(s["drop_reasons"]) == {"buffer_full"}
        assert s["flows_completed"] == s["flows_total"] == 7
        assert s["payload_delivered_bytes"] == 7 * 200_000
        assert s["bytes_sent"] == s["bytes_delivered"] + s["bytes_dropped"]
        assert s["bytes_in_flight"] == 0
        assert s["retransmitted_bytes"] >= s["drop_bytes"] - s["drops"] * hdr
    gbn, sr = runs["go_back_n"], runs["selective_repeat"]
    assert sr["retransmitted_bytes"] == sr["drop_bytes"] - sr["drops"] * hdr
    assert gbn["retransmitted_bytes"] > gbn["drop_bytes"] - gbn["drops"] * hdr
    assert sr["retransmitted_bytes"] < gbn["retransmitted_bytes"]


def test_lossless_runs_are_identical_under_either_recovery():
    """Incast 7 x 500 KB into one host with PFC on and a 300 KB buffer: PFC pauses the
    senders (pause frames > 0) and nothing is lost.  Without loss and without reordering
    (one path per flow), selective repeat differs from go-back-N only by its cap of a
    bandwidth-delay product in flight, and PFC keeps every sender below it here; so the two
    runs must be identical, every table and every figure of the summary but wall-clock
    time and the simulator's event count (selective repeat's timeout looks every RTO_low,
    IRN's short timeout, while go-back-N's looks every rto).  Fails if selective repeat acknowledges, paces or schedules differently when
    nothing is lost."""
    runs = {}
    for mode in ("go_back_n", "selective_repeat"):
        runs[mode] = _run("incast.yaml", ["switch.buffer_bytes=300000", "workload.0.senders=7",
                                          "workload.0.bytes=500000",
                                          f"nic.loss_recovery={mode}"], reduced=True)
    gbn, sr = runs["go_back_n"], runs["selective_repeat"]
    s = gbn.summary
    assert s["pfc_pause_frames"] > 0 and s["drops"] == 0
    assert s["retransmitted_bytes"] == s["nacks"] == s["timeouts"] == 0
    assert s["payload_delivered_bytes"] == 7 * 500_000
    assert gbn.tables == sr.tables
    same = WALL_CLOCK | {"events"}
    assert {k: v for k, v in s.items() if k not in same} == \
        {k: v for k, v in sr.summary.items() if k not in same}


def test_lossless_but_more_than_a_bdp_in_flight(monkeypatch):
    """Incast 6 x 200 KB into one host, PFC on and the default (large) buffer: nothing is
    lost and PFC never pauses, so DCQCN's go-back-N senders get more than a
    bandwidth-delay product in flight while the receiver's queue builds; selective repeat
    caps each flow at its bdp_pkts.  The runs then differ in timing, but not in what is
    invariant without loss: every byte delivered, no retransmission, NACK or timeout, no
    drop.  Fails if the cap is not applied in the simulator or the cap causes recovery."""
    worst: dict = {}

    class WatchedNic(transport.Nic):  # a subclass: the compiled Nic cannot be patched
        def data_frame(self, st, now, j):
            frame = super().data_frame(st, now, j)
            worst[st.id] = max(worst.get(st.id, 0), st.nxt - st.una)
            return frame

    monkeypatch.setattr(sim_network, "Nic", WatchedNic)
    over = {}
    for mode in ("go_back_n", "selective_repeat"):
        worst.clear()
        spec = S.load(EXPERIMENTS / "incast.yaml", [f"nic.loss_recovery={mode}"], reduced=True)
        net = Network(spec)
        net.run()
        assert net.drops == 0 and all(f.rcv_nxt == f.size for f in net.flows)
        nics = [h.nic for h in net.hosts.values()]
        assert sum(n.retx_bytes + n.nacks_sent + n.timeouts for n in nics) == 0
        assert sum(p.pfc_pause_tx for s in net.switches.values() for p in s.ports) == 0
        over[mode] = max(worst[f.id] - f.send.bdp_pkts for f in net.flows)
    assert over["go_back_n"] > 0 >= over["selective_repeat"]
