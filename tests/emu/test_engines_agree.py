"""Agreement between the engines (issue 5): the incast and all-reduce experiments, reduced,
on the simulator and on Mininet with every scheme, through ``fabriclab compare --engines
sim,mininet``.  Each scheme's completion / bound, bus bandwidth / line rate and peak queue
must agree within the tolerances of :mod:`fabriclab.metrics.agreement`, and the schemes must
rank the same on both engines.

A test that fails runs once more (pytest-rerunfailures; the CI log says "RERUN").  Open
vSwitch's userspace datapath and 16 agents on two shared cores stall now and then: frames
bunch into every port at once (2026-12-02: 4-16 ports above 20 KB at the same moment, two to
four times in a 30 s run, peak 37-46 KB against the simulator's 5 KB), and a run ends on
the wrong side of a tolerance in about one agreement test of eight per suite.  On a freshly
booted machine later that day none of 20 runs of the reduced all-reduce (ECMP + DCQCN) stalled,
with Open vSwitch's threads at normal priority (peak 3.1-7.5 KB) or at SCHED_FIFO 1 (4.1-9.7
KB: no better, and the agents were later), and its fresh-clone CI reran one test, the
fat-tree incast, for its agents' lateness (now run at 5 Mb/s).  Both runs must fail for the
test to fail."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.flaky(reruns=1),
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("experiment", ["incast", "allreduce"])
def test_engines_agree(experiment, tmp_path):
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "compare",
                        f"experiments/{experiment}.yaml", "--reduced",
                        # udp (PFC alone) is left out: Mininet has no PFC yet, so it loses
                        # frames there that the simulator's lossless fabric keeps
                        "--schemes", "ecmp_dcqcn,hpcc,gse",
                        "--engines", "sim,mininet", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((out / "agreement.json").read_text())
    schemes = {row["scheme"] for row in a["rows"]}
    assert schemes == {"ecmp_dcqcn", "hpcc", "gse"}
    bad = [row for row in a["rows"] if row["agree"] is False]
    assert bad == [], json.dumps(bad, indent=1)
    assert a["same_ranking"], a["ranking"]
    assert a["all_agree"]
    assert "the engines agree" in (out / "index.html").read_text()


@pytest.mark.parametrize("experiment", ["incast", "allreduce"])
def test_engines_agree_on_gse_at_three_tiers(experiment, tmp_path):
    """Issue 14: GSE with the GSP in the NIC on a 4-ary fat-tree (the DSCP pins edge and
    aggregation uplinks, GSOS reserves every transit link) agrees with the simulator.  Only
    GSE: with 20 switches the other schemes' queues overflow the FIFOs Open vSwitch holds
    on this machine, and their emulations say they are not faithful (docs/mininet.md)."""
    out = tmp_path / "cmp"
    # the all-reduce at 1.25 Mb/s: at 2.5 Mb/s, 16 agents and 20 bridges on two cores,
    # Open vSwitch's stalls bunch containers into a host port (peak 69 KB against the
    # simulator's 1 KB on 2026-12-02, completion 1.24-1.55 x bound against 1.18).  The
    # incast at 5 Mb/s, not its default 10: the fidelity benchmark's limit for a 4-ary
    # fat-tree (docs/mininet.md); at 10 Mb/s the agents were late 1.6-7.2 % of the run
    # (over the 5 % line once in five runs), at 5 Mb/s 0.2-0.3 % (2026-12-02)
    mbps = {"allreduce": 1.25, "incast": 5}[experiment]
    rate = ["--set", f"emu.link_mbps={mbps:g}"]
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "compare",
                        f"experiments/{experiment}.yaml", "--reduced",
                        "--set", "topology={kind: fat_tree, k: 4}", *rate, "--schemes", "gse",
                        "--engines", "sim,mininet", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((out / "agreement.json").read_text())
    judged = [row for row in a["rows"] if row["metric"].endswith("completion / bound")]
    assert len(judged) == 1 and judged[0]["agree"] is True, judged
    assert [row for row in a["rows"] if row["agree"] is False] == [], a["rows"]
    emu = json.loads((out / "gse-mininet" / "summary.json").read_text())
    assert emu["topology"]["kind"] == "fat_tree" and emu["drops"] == 0
    assert emu["emulation"]["fidelity"]["verdict"] == "faithful"


def test_gse_fat_tree_link_failure(tmp_path):
    """Issue 14: a core link (a0_0-c0) dies in the middle of the reduced all-reduce on a
    4-ary fat-tree under GSE.  Both engines lose about the same frames to it before the
    switches detect it, all of them on the dead link, then GSOS and the GSPs keep off every
    container path across it (nothing more is lost), and the collective completes.  The
    completion is shown, not judged: it hangs on whether a flow waits for a retransmission
    timeout, which the engines' different timing decides (docs/faults.md)."""
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "compare",
                        "experiments/link_failure.yaml", "--reduced",
                        "--set", "topology={kind: fat_tree, k: 4}",
                        "--set", "faults.0.target=a0_0-c0", "--schemes", "gse",
                        "--engines", "sim,mininet", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {e: json.loads((out / f"gse-{e}" / "summary.json").read_text())
            for e in ("sim", "mininet")}
    for s in runs.values():
        assert s["flows_completed"] == s["flows_total"]
        assert set(s["drop_reasons"]) == {"dead_link"}, s["drop_reasons"]
        f, = s["faults"]
        assert f["detected_ns"] - f["at_ns"] >= 100_000
        assert f["traffic_left_ns"] <= f["detected_ns"] + 10_000, f  # then no more
    assert runs["mininet"]["emulation"]["fidelity"]["verdict"] == "faithful"
    lost = [runs[e]["drop_reasons"]["dead_link"] for e in ("sim", "mininet")]
    assert min(lost) >= 0.75 * max(lost), (lost, _fault_runs(out))


def _fault_runs(out) -> dict:
    """What decides a fault's cost in each run (shown when the engines disagree): which
    flows lost frames to the dead link, their timeouts and NACKs, and when the reroute was
    in place."""
    runs = {}
    for d in sorted(p for p in out.iterdir() if (p / "summary.json").exists()):
        s = json.loads((d / "summary.json").read_text())
        runs[d.name] = {k: s.get(k) for k in ("workload_done_ns", "timeouts", "nacks",
                                              "retransmitted_bytes", "faults")}
    return runs


def test_engines_agree_on_a_link_failure(tmp_path):
    """Issue 11: l0-s1 dies in the middle of the reduced all-reduce.  ECMP+DCQCN and HPCC
    agree on both engines.  GSE is left out: there, one flow's NACK takes the dead uplink on
    one engine and not on the other (their ECMP hashes differ), and that flow waits for a
    1 ms retransmission timeout (docs/faults.md)."""
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "compare",
                        "experiments/link_failure.yaml", "--reduced",
                        "--schemes", "ecmp_dcqcn,hpcc", "--engines", "sim,mininet",
                        "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((out / "agreement.json").read_text())
    # What issue 11 asks of this case: the fault's cost, completion / bound (and the bus
    # bandwidth that follows from it), within the usual tolerance.  The peak queue is
    # shown, not judged here: the simulator's 163 KB into h1 late in the run (after the
    # reroute) does not form on the emulator since control frames got their own class
    # (docs/faults.md).
    bad = [row for row in a["rows"] if row["agree"] is False
           and row["metric"] != "peak_queue_bytes"]
    assert bad == [], json.dumps({"disagree": bad, "runs": _fault_runs(out)}, indent=1)
    judged = [r for r in a["rows"] if r["metric"].endswith("completion / bound")]
    assert len(judged) == 2 and all(r["agree"] for r in judged)
    for scheme in ("ecmp_dcqcn", "hpcc"):
        for engine in ("sim", "mininet"):
            s = json.loads((out / f"{scheme}-{engine}" / "summary.json").read_text())
            f, = s["faults"]
            assert f["detected_ns"] - f["at_ns"] >= 100_000 and s["drop_reasons"]["dead_link"]
            assert s["flows_completed"] == s["flows_total"]
