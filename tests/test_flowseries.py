"""The results both engines derive from their flow samples (fabriclab.metrics.flowseries and
.ports): the victim flow's goodput per phase, the flows that matter, the goodput into the
contended port, and the bottleneck port, checked against bounds and conservation."""

from __future__ import annotations

import numpy as np
import pytest

from fabriclab.metrics import flowseries
from fabriclab.metrics.flowseries import FlowSamples, FlowSeries, select_tracked
from fabriclab.metrics.summarize import FlowRecord
from fabriclab.spec import load

from helpers import make_spec, run_result

MTU, HDR = 4096, 64
PAYLOAD_GBPS = 100 * MTU / (MTU + HDR)  # what a 100G link carries of payload


@pytest.fixture(scope="module")
def victim():
    spec = load("experiments/victim_flow.yaml")
    net, res = run_result(spec, sample_ns=2_000)
    return net, res.summary


def test_victim_goodput_per_phase_drops_during_the_burst(victim):
    """The victim (h1 -> h16, never through R's port) has half of l0's uplink before the
    burst, loses at least a quarter of it while the burst pauses the uplink, and recovers
    after; the phases tile its run and their bytes add up to what it delivered."""
    net, s = victim
    v = next(o for o in s["open_flows"] if (o["src"], o["dst"]) == ("h1", "h16"))
    labels = [p["label"] for p in v["phases"]]
    assert labels == ["before burst", "during burst", "after burst"]
    before, during, after = (p["goodput_gbps"] for p in v["phases"])
    assert before == pytest.approx(PAYLOAD_GBPS / 2, rel=0.05)
    assert during < 0.75 * before
    assert after > during
    ph = v["phases"]
    assert ph[0]["start_ns"] == 0 and ph[-1]["end_ns"] == s["sim_time_ns"]
    assert all(a["end_ns"] == b["start_ns"] for a, b in zip(ph, ph[1:]))
    burst = next(c for c in s["collectives"] if c["name"] == "burst")
    assert (ph[1]["start_ns"], ph[1]["end_ns"]) == (burst["start_ns"], burst["end_ns"])
    moved = sum(p["goodput_gbps"] * (p["end_ns"] - p["start_ns"]) / 8 for p in ph)
    assert moved == pytest.approx(net.flows[v["flow_id"]].rcv_nxt, rel=1e-9)


def test_open_ended_flows_are_tracked_and_the_run_counts_as_complete(victim):
    """Flows meant to run until stop.time_us are tracked (both open flows, and the burst's
    most cut and slowest), and a run whose finite flows all finished is not unfinished."""
    net, s = victim
    assert s["open_ended"] and s["flows_unfinished"] == 0 and s["stopped"] == "stop.time_us"
    tracked = {t["flow_id"]: t for t in s["tracked_flows"]}
    assert {0, 1} <= set(tracked)
    burst = [f for f in net.flows if f.group == "burst"]
    slowest = max(burst, key=lambda f: (f.end_ns - f.started_ns) / f.ideal_fct_ns)
    assert "slowest in burst" in tracked[slowest.id]["reasons"]
    cut = next(t for t in s["tracked_flows"] if "most cut in burst" in t["reasons"])
    assert cut["min_rate_gbps"] < 100  # DCQCN cut it
    assert s["sender_rate"]["meaning"] and s["sender_rate"]["note"] is None


def _records(*rows):
    return [FlowRecord(i, src, dst, size, start, end, ideal, group, delivered)
            for i, (src, dst, size, start, end, ideal, group, delivered) in enumerate(rows)]


def test_flows_that_matter_are_chosen_per_workload_item():
    """Per item, the flow whose rate fell lowest is 'most cut', the largest slowdown is
    'slowest', the middle one is the median; repeated incasts count as one item; the limit
    keeps open-ended flows first; a run that fits the limit tracks every flow."""
    recs = _records(("h1", "h0", 1000, 0, 400, 100, "incast#0", 1000),   # slowdown 4
                    ("h2", "h0", 1000, 0, 200, 100, "incast#0", 1000),   # slowdown 2
                    ("h3", "h0", 1000, 0, 300, 100, "incast#1", 1000),   # slowdown 3
                    ("h4", "h5", None, 0, None, None, "bg", 5000))
    smp = FlowSamples()
    smp.add(0, [0, 1, 2, 3], [100e9, 100e9, 100e9, 100e9], [0, 0, 0, 0])
    smp.add(100, [0, 1, 2, 3], [60e9, 10e9, 80e9, 100e9], [250, 500, 333, 1000])
    fs = FlowSeries(smp, recs, 1000)
    got = {t["flow_id"]: t["reasons"] for t in select_tracked(fs, recs, True, 4)}
    assert got == {0: ["slowest in incast"], 1: ["most cut in incast"],
                   2: ["median slowdown in incast"], 3: ["open-ended", "the one flow of bg"]}
    assert [t["flow_id"] for t in select_tracked(fs, recs, True, 2)] == [1, 3]
    # without a sending rate nothing is "most cut", so h2's flow is not chosen
    assert {t["flow_id"] for t in select_tracked(fs, recs, False, 3)} == {0, 2, 3}
    everything = select_tracked(fs, recs, False, 5)
    assert [t["flow_id"] for t in everything] == [0, 1, 2, 3] and everything[1]["reasons"] == []


def test_goodput_into_the_contended_port_is_conserved_and_bounded():
    """All-reduce + incast into h15: the contended port is h15's, each group's goodput into
    it integrates to the bytes that group delivered to h15, and together they never exceed
    the port's payload rate by more than sampling can explain."""
    spec = load("experiments/allreduce_incast.yaml", reduced=True)
    net, res = run_result(spec, sample_ns=1_000)
    s = res.summary
    assert s["contended_port"]["host"] == "h15"
    cols, rows = res.tables["timeseries/contended_goodput_gbps.csv"]
    assert cols[1:] == ["allreduce", "incast"]
    a = np.asarray(rows, dtype=float)
    t = np.concatenate([[net.sampler.times[0]], a[:, 0]])
    dt = np.diff(t)
    for j, g in enumerate(cols[1:], start=1):
        moved = float(np.sum(a[:, j] * dt) / 8)
        want = sum(f.rcv_nxt for f in net.flows if f.dst == "h15" and f.group == g)
        assert moved == pytest.approx(want, rel=1e-6), g
    # Over any 10 us the port delivers at most its payload rate, give or take one packet
    # at each end (deliveries are whole packets, samples are not).
    cum = np.concatenate([[0.0], np.cumsum(a[:, 1:].sum(axis=1) * dt / 8)])
    k = 10
    window = (cum[k:] - cum[:-k]) * 8 / (t[k:] - t[:-k])
    slack = 2 * MTU * 8 / (t[k:] - t[:-k])
    assert np.all(window <= PAYLOAD_GBPS + slack)
    assert window.max() >= 0.9 * PAYLOAD_GBPS  # and it was the bottleneck: full for a while


@pytest.mark.parametrize("scheme", ["ecmp_dcqcn", "hpcc", "gse", "udp"])
def test_incast_bottleneck_is_the_receivers_port(scheme):
    """On the incast experiment every pushing scheme's bottleneck port is the leaf port
    facing the receiver, and it is also the contended port.  GSE's grants are spaced where
    the data arrives, so the incast queues nowhere beyond store and forward: no bottleneck
    is named."""
    spec = load("experiments/incast.yaml", [f"scheme={scheme}"], reduced=True)
    net, res = run_result(spec, sample_ns=1_000)
    b, c = res.summary["bottleneck_port"], res.summary["contended_port"]
    if scheme == "gse":
        frame = spec.switch.mtu_bytes + spec.switch.header_bytes
        assert b is None and c is None
        assert net.switches["l0"].ports[0].max_qbytes <= 2 * frame
        return
    assert (b["peer"], b["role"]) == ("h0", "host")
    assert c["port"] == b["port"] and c["host"] == "h0"
    assert 0 < b["mean_queue_bytes"] <= b["p99_queue_bytes"] <= b["max_queue_bytes"]


def test_no_queue_means_no_bottleneck():
    """One flow alone on an idle fabric queues nowhere: no bottleneck is named."""
    spec = make_spec(topology={"leaves": 1, "spines": 1, "hosts_per_leaf": 2},
                     workload=[{"kind": "flows", "flows": [{"src": "h0", "dst": "h1",
                                                            "bytes": 100_000}]}])
    _, res = run_result(spec, sample_ns=1_000)
    assert res.summary["bottleneck_port"] is None and res.summary["contended_port"] is None


def test_flow_samples_stay_bounded_and_exact(monkeypatch):
    """With a small entry budget the sampler halves its samples to stay under it, and every
    flow's goodput series still integrates to exactly what it delivered."""
    monkeypatch.setattr("fabriclab.sim.sampler.MAX_FLOW_ENTRIES", 200)
    spec = make_spec(topology={"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
                     workload=[{"kind": "permutation", "bytes": 300_000}],
                     metrics={"max_flow_series": 8})
    net, res = run_result(spec, sample_ns=100)
    assert net.sampler.flows.entries <= 200
    assert net.sampler.interval > 100
    cols, rows = res.tables["timeseries/flow_goodput_gbps.csv"]
    a = np.asarray(rows, dtype=float)
    t = np.concatenate([[net.sampler.times[0]], a[:, 0]])
    for j, name in enumerate(cols[1:], start=1):
        f = net.flows[int(name[1:])]
        assert float(np.sum(a[:, j] * np.diff(t)) / 8) == pytest.approx(f.rcv_nxt, rel=1e-9)


def test_schemes_without_a_sending_rate_say_why():
    """GSE and udp have no congestion-control rate to plot; the summary says why."""
    for name, word in (("gse", "grant"), ("udp", "line rate")):
        r = flowseries.sender_rate(name)
        assert r["meaning"] is None and word in r["note"]
