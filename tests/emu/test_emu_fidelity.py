"""Every emulated run judges its own fidelity (issue 12, part 6; fabriclab.metrics.fidelity),
and the labs' captures read cleanly in Wireshark with fabriclab's Lua dissector (part 4).

* The labs' specs, reduced, are judged faithful on this machine; tshark finds no malformed
  frame in their captures; the Lua dissector shows lab 2's GSE container tags and, in lab
  1's incast run under HPCC, the INT records the switch ports appended.  Lab 3 under HPCC
  pauses and drops nothing (a closed PFC gate once dropped every frame with an INT area).
* A fabric too large for this machine at its rate (8 hosts every one sending at line rate,
  at 200 Mb/s per host link: about 20 times the frames per second the reference machine
  forwards faithfully) is flagged unfaithful, with the fix; ``emu.link_mbps: auto`` picks a
  rate for it that the run then judges faithful."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, timeout=900):
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _tshark(pcap: Path, *args: str) -> str:
    from fabriclab.wireshark import tshark_args
    r = subprocess.run(["tshark", *tshark_args(), "-r", str(pcap), *args],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "Lua" not in r.stderr, r.stderr
    return r.stdout


def _fidelity(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["emulation"]["fidelity"]


LABS = [("labs/01-ecn-and-dcqcn.yaml", ["--set", "scheme=hpcc"]),
        ("labs/02-gse.yaml", []),
        # under HPCC: paused frames carry an INT area, which the closed PFC gate must pass
        ("labs/03-lossless-ethernet.yaml", ["--set", "scheme=hpcc"])]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark: bash scripts/setup.sh")
@pytest.mark.parametrize("lab,extra", LABS, ids=[Path(s).stem for s, _ in LABS])
def test_reduced_labs_are_faithful_and_their_captures_dissect_cleanly(lab, extra, tmp_path):
    if not (ROOT / lab).is_file():
        pytest.fail(f"{lab} is missing")
    out = tmp_path / "run"
    r = _cli("run", lab, "--reduced", "--engine", "mininet", *extra, "--out", str(out))
    f = _fidelity(out)
    assert f["verdict"] == "faithful", f
    if "02-gse" in lab:
        # GSOS spaces the grants where the data arrives: no port holds a backlog long
        # enough for its link to be judged; the agents and the frames lost decide
        a = f["checks"]["agents"]
        assert a["max_late_fraction"] is not None and a["ok"], f
    else:
        assert f["checks"]["links"]["busy_links"] >= 1  # the bottleneck was judged
    assert "emulation faithful" in r.stderr + r.stdout
    summary = json.loads((out / "summary.json").read_text())
    # a lossless run: every RoCE frame any agent sent reached its receiver, by kind (lab 3
    # stops at stop.time_us with its victim flow running: a few frames are in flight then)
    kinds = summary["emulation"]["frames_by_kind"]
    in_flight = 0 if summary["stopped"] == "completed" else 5
    for kind in ("data", "control"):
        assert kinds[kind]["received"] > 0, kinds
        assert 0 <= kinds[kind]["sent"] - kinds[kind]["received"] <= in_flight, kinds
    assert summary["drops"] == 0, summary["drop_reasons"]
    if "03-lossless" in lab:  # PFC pauses, and loses nothing (HPCC's frames included)
        assert summary["drops"] == 0 and summary["pfc_pause_frames"] > 0, (
            summary["drop_reasons"], summary["pfc_pause_frames"])
    pcaps = sorted((out / "pcap").glob("*.pcap"))
    assert pcaps, "the lab captures no host"
    for pcap in pcaps:
        text = _tshark(pcap)
        assert text.count("\n") > 10
        bad = [line for line in text.splitlines() if "Malformed" in line]
        assert not bad, (pcap.name, bad[:3])
    if "02-gse" in lab:  # the container tag on the receiver's data frames
        rows = _tshark(out / "pcap" / "h0.pcap", "-Y", "fabriclab.gse.tag", "-T", "fields",
                       "-e", "fabriclab.gse.tag.src_gsp", "-e", "fabriclab.gse.tag.seq",
                       "-e", "fabriclab.gse.tag.path").split("\n")
        rows = [r.split("\t") for r in rows if r]
        assert len(rows) > 100
        assert {r[0] for r in rows} == {"1", "2", "3"}  # h1, h2, h3's GSPs
        assert len({r[2] for r in rows}) == 2  # containers over both spines
    if "01-ecn" in lab:  # INT records of the switch ports on the way (HPCC)
        rows = _tshark(out / "pcap" / "h0.pcap", "-Y", "fabriclab.int", "-T", "fields",
                       "-e", "fabriclab.int.hops", "-e", "fabriclab.int.qlen_bytes",
                       "-e", "fabriclab.int.rate_kbps").split("\n")
        rows = [r.split("\t") for r in rows if r]
        assert len(rows) > 100
        # h1's frames cross h0's leaf only; h2's and h3's leaf, spine, leaf
        assert {r[0] for r in rows} == {"1", "3"}
        assert max(max(int(q) for q in r[1].split(",")) for r in rows) > 0  # queues seen
        rate = 100e9 * 10e6 / 100e9 / 1000  # the emulated 10 Mb/s in kb/s
        assert all(int(x) == rate for r in rows for x in r[2].split(","))


OVERLOAD = ["experiments/incast.yaml", "--reduced",
            "--set", "workload=[{kind: permutation, bytes: unlimited}]",
            "--set", "scheme=udp", "--set", "stop.time_us=200", "--set",
            "switch.pfc.enabled=false", "--engine", "mininet"]


def test_a_fabric_too_large_for_the_machine_at_its_rate_is_flagged_unfaithful(tmp_path):
    r = _cli("run", *OVERLOAD, "--set", "emu.link_mbps=200", "--out", str(tmp_path / "fast"))
    f = _fidelity(tmp_path / "fast")
    assert f["verdict"] == "unfaithful", f
    assert f["fix"] and "emu.link_mbps" in f["fix"]
    assert "NOT faithful" in r.stderr and "Fix:" in r.stderr
    # auto: a rate the same fabric is emulated at faithfully
    _cli("run", *OVERLOAD, "--set", "emu.link_mbps=auto", "--out", str(tmp_path / "auto"))
    s = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert s["emulation"]["link_mbps"] <= 10
    assert any("auto" in n for n in s["emulation"]["notes"])
    assert s["emulation"]["fidelity"]["verdict"] == "faithful", s["emulation"]["fidelity"]
