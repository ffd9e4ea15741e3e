"""The agreement rules between the engines (``fabriclab compare --engines sim,mininet``):
what counts as agreeing, ties and rankings.  The end-to-end check on real runs is in
tests/emu/test_engines_agree.py."""

from fabriclab.wire import roce as P
from fabriclab.metrics import agreement as A
from fabriclab import spec as S


def _run(completion, queue, busbw=None):
    c = {"name": "x", "completion_over_bound": completion}
    if busbw is not None:
        c["busbw_gbps"] = busbw
    return {"summary": {"collectives": [c], "pfc_pause_frames": 0}, "peak_queue": queue}


def test_tolerances_judge_both_ways():
    runs = {("a", "sim"): _run(1.00, 10_000, 90), ("a", "mininet"): _run(1.14, 30_000, 81),
            ("b", "sim"): _run(1.50, 200_000, 60), ("b", "mininet"): _run(1.80, 500_000, 45)}
    a = A.compare_engines(runs, 100)
    verdict = {(r[1], r[0]): r[4] for r in a["rows"]}
    assert verdict[("a", "x: completion / bound")] is True  # 14 % of 1.14 < 15 %
    assert verdict[("a", "peak_queue_bytes")] is True  # both under one OVS burst
    assert verdict[("a", "x: bus bandwidth / line rate")] is True  # 0.09 apart
    assert verdict[("b", "x: completion / bound")] is False  # 0.30 > 15 % of 1.80
    assert verdict[("b", "peak_queue_bytes")] is False  # factor 2.5
    assert verdict[("b", "x: bus bandwidth / line rate")] is False  # 0.15 apart
    assert verdict[("a", "pfc_pause_frames")] is None  # no PFC in that emulation: not judged
    assert a["same_ranking"] and not a["all_agree"]


def _pfc_run(drops, pauses, paused_ns, emulated_pfc=True):
    r = _run(1.1, 10_000)
    r["summary"].update(drops=drops, pfc_pause_frames=pauses, pfc_paused_ns_total=paused_ns)
    if emulated_pfc:
        r["summary"]["emulation"] = {"pfc": {"poll_ns": 250}}
    return r


def test_pfc_is_judged_where_the_emulation_ran_it():
    def verdicts(sim, emu):
        a = A.compare_engines({("u", "sim"): sim, ("u", "mininet"): emu}, 100)
        return {r[0]: r[4] for r in a["rows"]}

    # the incast measured in docs/mininet.md: 137 vs 112 pauses, 651 vs 644 us paused
    v = verdicts(_pfc_run(0, 137, 651_092), _pfc_run(0, 112, 644_355))
    assert v["drops"] and v["pfc_pause_frames"] and v["pfc_paused_ns_total"]
    # lossless on the simulator, not on the emulator: disagreement
    v = verdicts(_pfc_run(0, 137, 651_092), _pfc_run(3, 112, 644_355))
    assert v["drops"] is False
    # pause counts a factor 2 apart, paused time 40 % apart
    v = verdicts(_pfc_run(0, 200, 1_000_000), _pfc_run(0, 100, 600_000))
    assert v["pfc_pause_frames"] is False and v["pfc_paused_ns_total"] is False
    # a few pauses either side: agree (below the floors)
    v = verdicts(_pfc_run(0, 3, 5_000), _pfc_run(0, 9, 9_000))
    assert v["pfc_pause_frames"] and v["pfc_paused_ns_total"]
    # an emulation without PFC: shown, not judged; drops on the simulator: not judged
    v = verdicts(_pfc_run(0, 137, 651_092), _pfc_run(5, 0, 0, emulated_pfc=False))
    assert v["drops"] is None and v["pfc_pause_frames"] is None
    v = verdicts(_pfc_run(4, 137, 651_092), _pfc_run(9, 112, 644_355))
    assert v["drops"] is None


def test_ranking_with_ties_and_a_swap():
    assert A.ranking({"a": 1.0, "b": 1.02, "c": 1.5}) == [["a", "b"], ["c"]]
    same = {("a", "sim"): _run(1.00, 0), ("b", "sim"): _run(1.02, 0), ("c", "sim"): _run(1.5, 0),
            ("a", "mininet"): _run(1.02, 0), ("b", "mininet"): _run(1.0, 0),
            ("c", "mininet"): _run(1.45, 0)}
    assert A.compare_engines(same, 100)["same_ranking"]  # a, b tied: their order is free
    swap = dict(same)
    swap[("c", "mininet")] = _run(0.9, 0)
    out = A.compare_engines(swap, 100)
    assert not out["same_ranking"] and not out["all_agree"]


def test_simulator_is_aligned_to_the_emulations_packets():
    sp = S.load("experiments/incast.yaml", ["scheme=hpcc"], reduced=True)
    sets = dict(o.split("=", 1) for o in A.align_sim_to_emulation(sp))
    assert sets["switch.mtu_bytes"] == str(sp.emu.mtu_bytes)
    assert sets["switch.header_bytes"] == str(P.DATA_OVERHEAD)
    assert "topology.link_delay_ns" not in sets  # the emulation has the link delays too
    # HPCC's T: the largest RTT, with the delays, of the emulation's frames (4 hops here)
    t = int(sets["hpcc.base_rtt_ns"])
    assert 4 * 2 * sp.topology.link_delay_ns < t < 4 * 2 * sp.topology.link_delay_ns + 1000
    gse = S.load("experiments/incast.yaml", ["scheme=gse"], reduced=True)
    sets = dict(o.split("=", 1) for o in A.align_sim_to_emulation(gse))
    assert sets["switch.header_bytes"] == str(P.DATA_OVERHEAD + P.GSE_TAG.size)


def _victim(before, during):
    r = _run(1.1, 10_000)
    r["summary"]["open_flows"] = [{"flow_id": 1, "group": "victim", "phases": [
        {"label": "before burst", "goodput_gbps": before},
        {"label": "during burst", "goodput_gbps": during},
        {"label": "after burst", "goodput_gbps": before * 2}]}]
    return r


def test_an_open_flows_loss_of_goodput_is_judged_on_its_ratio():
    key = "victim f1: goodput during burst / before burst"

    def verdict(sim, emu):
        rows = A.compare_engines({("a", "sim"): sim, ("a", "mininet"): emu}, 100)["rows"]
        return {r[0]: r for r in rows}

    # absolute rates differ, the victim's loss (71 % vs 70 %) does not
    v = verdict(_victim(46.8, 13.4), _victim(40.0, 12.0))
    assert v[key][2] == 13.4 / 46.8 and v[key][4] is True
    assert not any("after burst" in k for k in v)  # the last phase depends on the stop
    v = verdict(_victim(46.8, 13.4), _victim(46.8, 13.4 + 0.11 * 46.8))
    assert v[key][4] is False
