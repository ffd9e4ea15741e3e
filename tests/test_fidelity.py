"""The fidelity verdict of an emulated run (fabriclab.metrics.fidelity), the agreement's
handling of an unfaithful emulation, and ``emu.link_mbps: auto`` (fabriclab.emu.autorate).
The emulated runs that produce these inputs are in tests/emu/test_emu_fidelity.py."""

from __future__ import annotations

import pytest

from fabriclab import spec as S
from fabriclab.emu import autorate
from fabriclab.metrics import agreement, fidelity
from fabriclab.topologies import from_spec

WINDOW = 1_000_000  # 1 ms of fabric time
FULL = 100 * WINDOW / 8  # what a 100G link carries in it, bytes


def port(name, expected, sent, busy=WINDOW):
    return {"port": name, "rate_gbps": 100.0, "busy_ns": busy, "expected_bytes": expected,
            "sent_bytes": sent}


def verdict(ports=(), late=None, lost=0):
    return fidelity.judge(window_ns=WINDOW, time_dilation=10_000, link_mbps=10,
                          ports=list(ports), agents_late_ns=late or {}, lost_inside_ovs=lost)


def test_a_busy_link_below_its_rate_is_unfaithful_and_says_the_fix():
    v = verdict([port("l0:0", FULL, 0.96 * FULL), port("l0:1", FULL, 0.90 * FULL)])
    assert v["verdict"] == "unfaithful"
    assert v["checks"]["links"]["worst_link"] == "l0:1"
    assert v["checks"]["links"]["below"] == {"l0:1": 0.9}
    assert "emu.link_mbps=5" in v["fix"] and "--reduced" in v["fix"]
    ok = verdict([port("l0:0", FULL, 0.96 * FULL), port("l0:1", FULL, 1.01 * FULL)])
    assert ok["verdict"] == "faithful" and ok["fix"] is None


def test_a_port_busy_for_a_short_part_of_the_run_is_not_judged():
    short = fidelity.BUSY * 0.8 * WINDOW
    v = verdict([port("s0:0", FULL, 0.5 * FULL, busy=short)])
    assert v["checks"]["links"]["busy_links"] == 0 and v["verdict"] == "faithful"
    v = verdict([port("s0:0", FULL, 0.5 * FULL, busy=short * 2)])
    assert v["checks"]["links"]["busy_links"] == 1 and v["verdict"] == "unfaithful"


def test_late_agents_and_frames_lost_inside_open_vswitch_are_unfaithful():
    edge = fidelity.LATE_FRACTION * WINDOW
    assert verdict(late={"h0": edge * 0.9, "h1": 0})["verdict"] == "faithful"
    v = verdict(late={"h0": edge * 0.9, "h1": edge * 1.5})
    assert v["verdict"] == "unfaithful" and v["checks"]["agents"]["worst_host"] == "h1"
    assert list(v["checks"]["agents"]["over"]) == ["h1"]
    v = verdict(lost=3)
    assert v["verdict"] == "unfaithful" and v["reasons"][0].startswith("3 frames lost inside the emulator")
    assert "NOT faithful" in fidelity.line({"emulation": {"fidelity": v}})


def test_pfc_drops_in_fifos_capped_below_the_buffer_are_unfaithful():
    v = fidelity.judge(window_ns=WINDOW, time_dilation=1e4, link_mbps=10, ports=[],
                       agents_late_ns={}, lost_inside_ovs=0,
                       capped_fifo_drops={"l0": (12, 1_677_721), "s0": (0, 1_677_721)})
    assert v["verdict"] == "unfaithful" and v["checks"]["buffer"]["drops_in_capped_fifos"] == {
        "l0": 12}
    assert "switch.buffer_bytes of at most 1,677,721" in v["fix"]
    v = fidelity.judge(window_ns=WINDOW, time_dilation=1e4, link_mbps=10, ports=[],
                       agents_late_ns={}, lost_inside_ovs=0,
                       capped_fifo_drops={"l0": (0, 1_677_721)})
    assert v["verdict"] == "faithful"


def _summary(completion, verdict_):
    return {"summary": {"drops": 0, "pfc_pause_frames": 0, "pfc_paused_ns_total": 0,
                        "collectives": [{"name": "incast", "completion_over_bound": completion}],
                        "emulation": {"fidelity": {"verdict": verdict_}}},
            "peak_queue": 10_000}


def test_an_unfaithful_emulation_is_not_a_disagreement():
    runs = {("udp", "sim"): _summary(1.0, None), ("udp", "mininet"): _summary(2.0, "faithful")}
    a = agreement.compare_engines(runs, 100)
    assert not a["all_agree"] and a["unfaithful"] == []
    runs[("udp", "mininet")] = _summary(2.0, "unfaithful")
    a = agreement.compare_engines(runs, 100)
    assert a["unfaithful"] == ["udp"]
    assert all(r[4] is None for r in a["rows"] if r[1] == "udp")
    assert "udp" not in sum(a["ranking"].get("mininet", []), [])


def _topo(leaves, spines, hpl, fabric_gbps=100):
    s = S.validate({"name": "x", "topology": {"kind": "leaf_spine", "leaves": leaves,
                                              "spines": spines, "hosts_per_leaf": hpl,
                                              "fabric_link_gbps": fabric_gbps},
                    "workload": [{"kind": "permutation", "bytes": 1000}],
                    "emu": {"link_mbps": "auto"}}, "test")
    return s, from_spec(s.topology)


@pytest.mark.parametrize("cpus", [1, 2, 8])
def test_auto_rate_keeps_the_fabric_within_the_budget_and_falls_with_size(cpus):
    last = None
    for size in [(2, 2, 2), (4, 4, 4), (8, 4, 4), (8, 8, 8), (16, 8, 8)]:
        s, t = _topo(*size)
        units = autorate.load_units(t, s.topology.host_link_gbps * 1e9)
        # both directions of every link: hosts and leaf-spine links at the host rate
        assert units == 2 * (size[0] * size[2] + size[0] * size[1])
        r = autorate.auto_link_mbps(t, s.topology.host_link_gbps * 1e9, cpus)
        assert r in autorate.RATES
        assert r * units ** autorate.EXPONENT <= autorate.BUDGET_PER_CPU * cpus \
            or r == autorate.RATES[-1]
        assert last is None or r <= last
        last = r


def test_auto_rate_on_the_reference_machine_matches_the_benchmark():
    # docs/mininet.md, 2 CPUs: 4x2x4 faithful at 10 Mb/s, 4x4x4 at the edge of 10, 8x4x4
    # only at 2; with PFC, 4x4x4 at 5; the labs' 8 hosts at 10
    for size, pfc, rate in (((4, 2, 4), False, 10.0), ((4, 4, 4), False, 5.0),
                            ((8, 4, 4), False, 2.0), ((4, 4, 4), True, 5.0),
                            ((2, 2, 4), True, 10.0)):
        s, t = _topo(*size)
        assert autorate.auto_link_mbps(t, s.topology.host_link_gbps * 1e9, 2, pfc) == rate


def test_auto_rate_resolves_in_the_spec_and_a_number_is_kept():
    s, t = _topo(2, 2, 2)
    resolved, note = autorate.resolve(s, t)
    assert isinstance(resolved.emu.link_mbps, float) and "auto" in note
    fixed = s.model_copy(update={"emu": s.emu.model_copy(update={"link_mbps": 3.0})})
    assert autorate.resolve(fixed, t) == (fixed, None)
    with pytest.raises(S.SpecError):
        S.validate({"name": "x", "workload": [{"kind": "permutation", "bytes": 1},],
                    "emu": {"link_mbps": "fast"}}, "test")


def test_the_verdict_reaches_the_run_line_and_the_report():
    from fabriclab.cli import headline
    from fabriclab.report.pages import emulation_rows
    v = verdict([port("l0:1", FULL, 0.90 * FULL)], lost=2)
    s = {"scheme": "udp", "engine": "mininet", "sim_time_ns": 100_000, "wall_s": 3.0,
         "flows_completed": 1, "flows_total": 1, "drops": 0, "pfc_pause_frames": 0,
         "collectives": [], "emulation": {"fidelity": v}}
    line = headline(s)
    assert line.endswith(fidelity.line(s)) and "NOT faithful" in line and "l0:1" in line
    row = dict((k, val) for k, _, val in emulation_rows(s))["emu.fidelity"]
    assert row.startswith("unfaithful") and "0.900" in row
    s["emulation"]["fidelity"] = verdict([port("l0:1", FULL, FULL)])
    assert headline(s).endswith("emulation faithful")
