"""The command line: an error names the --set it came from (and the file only for its own
problems), --set can switch the topology kind, `report` refuses a directory that is not a
result, --help describes both engines, and a run with open-ended flows ends with each
one's goodput per phase."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fabriclab import api, cli, outdir

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"name": "t", "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 1,
                                  "hosts_per_leaf": 2},
        "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "bytes": 20000}]}


def _cli(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabriclab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def specs(tmp_path) -> Path:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    bad = yaml.safe_load(yaml.safe_dump(GOOD))
    bad["topology"]["leaves"] = 0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    return tmp_path


@pytest.mark.parametrize("cmd,args,first_line", [
    # a --set that breaks a field is blamed on that --set
    ("validate", ["good.yaml", "--set", "topology.leaves=0"],
     "fabriclab: error in --set topology.leaves=0: topology.leaves = 0: input should be "
     "greater than or equal to 1"),
    # the same problem written in the file is blamed on the file
    ("validate", ["bad.yaml"], "fabriclab: error in bad.yaml: topology.leaves = 0: input"),
    # a --set that makes a check across fields fail is blamed on it
    ("validate", ["good.yaml", "--set", "topology.hosts_per_leaf=70"],
     "fabriclab: error in --set topology.hosts_per_leaf=70: topology: a leaf needs"),
    # a --set on a parent blamed for the problem below it
    ("validate", ["good.yaml", "--set", "topology={kind: fat_tree, k: 5}"],
     "fabriclab: error in --set topology={kind: fat_tree, k: 5}: topology.k: "),
    ("validate", ["good.yaml", "--engine", "mininet", "--set", "scheme=gse", "--set",
                  "gse.placement=leaf", "--set", "gse.scheduler=egress"],
     "fabriclab: error in --set gse.placement=leaf: gse.placement = 'leaf' on engine "
     "mininet runs with gse.scheduler = 'central' only"),
    # options that set a field are named as the option
    ("run", ["good.yaml", "--scheme", "nope", "--out", "r"],
     "fabriclab: error in --scheme nope: scheme"),
    # a --set that fixes the file's problem leaves nothing to blame
    ("validate", ["bad.yaml", "--set", "topology.leaves=2", "--set", "scheme=udp"], None),
])
def test_errors_name_their_source(specs, cmd, args, first_line):
    """Each problem is reported against where it came from: the --set (or option) whose
    field it is about, else the YAML file; nothing is written."""
    r = _cli([cmd, *args], specs)
    if first_line is None:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2
    assert r.stderr.startswith(first_line), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in specs.iterdir()) == ["bad.yaml", "good.yaml"]


def test_errors_from_file_and_set_each_named(specs):
    """A problem in the file and one from a --set: both listed, each with its source."""
    r = _cli(["validate", "bad.yaml", "--set", "scheme=foo"], specs)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "fabriclab: errors in bad.yaml and its overrides:", r.stderr
    assert any(ln.startswith("  - in --set scheme=foo: scheme: unknown scheme 'foo'")
               for ln in lines), r.stderr
    assert any(ln.startswith("  - in bad.yaml: topology.leaves = 0") for ln in lines), r.stderr


def test_topology_kind_switch_runs(tmp_path):
    """--set topology.kind=fat_tree --set topology.k=4 on a leaf-spine spec runs a 16-host
    fat-tree: the leaf-spine fields are dropped (said on the log), the shared ones kept; the
    mapping form gives the same topology."""
    spec = str(ROOT / "experiments/incast.yaml")
    r = _cli(["-q", "run", spec, "--reduced", "--set", "topology.kind=fat_tree",
              "--set", "topology.k=4", "--set", "topology.link_delay_ns=500", "--no-report",
              "--out", "ft"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"dropped leaves, spines, hosts_per_leaf", r.stderr), r.stderr
    s = json.loads((tmp_path / "ft/summary.json").read_text())
    assert s["topology"]["kind"] == "fat_tree" and s["topology"]["hosts"] == 16
    assert s["flows_completed"] == s["flows_total"] > 0
    resolved = yaml.safe_load((tmp_path / "ft/spec.yaml").read_text())["topology"]
    assert "leaves" not in resolved and resolved["link_delay_ns"] == 500
    mapping = api.load(spec, ["topology={kind: fat_tree, k: 4, link_delay_ns: 500}"],
                       reduced=True)
    assert mapping.topology.model_dump() == resolved


def _tiny_result(d: Path) -> Path:
    return api.run(api.load(ROOT / "experiments/incast.yaml", ["workload.0.senders=2"],
                            reduced=True)).save(d, report=False)


def test_report_refuses_what_is_not_a_result(tmp_path, capsys):
    """`fabriclab report` on the parent of two results names them and asks for one (exit 2,
    nothing written); on an unrelated directory it says it is not a result."""
    parent = tmp_path / "results"
    _tiny_result(parent / "a")
    _tiny_result(parent / "b")
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))
    assert cli.main(["report", str(parent)]) == 2
    err = capsys.readouterr().err
    assert "not a fabriclab result" in err and "a, b" in err and "give one of them" in err, err
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other/data.csv").write_text("x\n")
    assert cli.main(["report", str(tmp_path / "other")]) == 2
    assert "not a fabriclab result" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["data.csv"]
    assert cli.main(["report", str(parent / "a")]) == 0
    assert (parent / "a/report.html").is_file() and outdir.inspect(parent / "a").foreign == []


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["compare", "--help"]])
def test_help_describes_both_engines(args, tmp_path):
    """--help (and a subcommand's) says what the two engines are and that mininet needs root."""
    r = _cli(args, tmp_path)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "sim the packet-level discrete-event simulator (the default)" in text, text
    assert "mininet real packets" in text and "needs root" in text, text


def test_headline_gives_open_flows_goodput(tmp_path):
    """The victim-flow run's last line gives each open-ended flow's goodput before, during
    and after the burst, as in summary.json; the victim's drops during the burst; the flow
    count separates the open-ended flows from the finite ones."""
    r = _cli(["-q", "run", str(ROOT / "experiments/victim_flow.yaml"), "--reduced",
              "--no-report", "--out", "v"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "v/summary.json").read_text())
    victim = next(f for f in s["open_flows"] if f["group"] == "victim")
    before, during, after = (p["goodput_gbps"] for p in victim["phases"])
    line = (f"victim f{victim['flow_id']} {victim['src']}->{victim['dst']}: {before:.1f} Gb/s "
            f"before burst, {during:.1f} during burst, {after:.1f} after burst")
    assert line in r.stderr, r.stderr
    assert during < 0.8 * before
    # the two open-ended flows are counted apart from the finite ones, all done
    assert f"flows {s['flows_completed']}/{s['flows_completed']} (+2 open-ended)" in r.stderr


def test_headline_without_open_flows():
    """A summary from before open_flows existed still gives its line, with no goodput part."""
    s = {"scheme": "udp", "engine": "sim", "sim_time_ns": 1000, "wall_s": 0.1,
         "flows_completed": 1, "flows_total": 1, "drops": 0, "pfc_pause_frames": 0,
         "collectives": [], "slowdown_p99": None}
    assert cli.headline(s) == ("udp (sim): simulated 1.0 us in 0.1 s, flows 1/1, drops 0, "
                               "PFC pauses 0")
