"""Spec loading and validation: every bad input gets one message naming the field, the
value and what is allowed; the CLI exits 2 and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fabriclab import spec as S

GOOD = {
    "name": "t",
    "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2},
    "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "bytes": 100000}],
}

BAD = [
    # (override, words that must appear in the message)
    ("topology.leafs=3", ["unknown key", "topology.leafs", "leaves"]),
    ("topology.leaves=-1", ["topology.leaves", "-1", "greater than or equal to 1"]),
    ("topology.host_link_gbps=0", ["topology.host_link_gbps", "0", "greater than 0"]),
    ("topology.fabric_link_gbps=-100", ["topology.fabric_link_gbps", "-100", "greater than 0"]),
    ("topology.spines=abc", ["topology.spines", "abc", "integer"]),
    ("topology.hosts_per_leaf=70", ["hosts_per_leaf", "switch.ports = 64", "72"]),
    ("topology.leaves=100", ["topology.leaves = 100", "switch.ports = 64"]),
    ("scheme=foo", ["scheme", "foo", "ecmp_dcqcn", "udp"]),
    ("workload.0.kind=bogus", ["workload.0.kind", "bogus", "incast", "ring_allreduce"]),
    ("workload.0.senders=9", ["workload.0.senders = 9", "4 hosts"]),
    ("workload.0.receiver=h99", ["workload.0.receiver", "h99", "h0..h3"]),
    ("workload.0.bytes=0", ["workload.0.bytes", "0"]),
    ("workload.0.bytes=unlimited", ["stop.time_us", "unlimited"]),
    ("switch.buffer_bytes=1000", ["switch.buffer_bytes = 1000", "headroom"]),
    ("switch.ecn.kmin_bytes=900000", ["switch.ecn", "kmin_bytes", "kmax_bytes"]),
    ("switch.ecn.pmax=1.5", ["switch.ecn.pmax", "1.5"]),
    ("nic.data_priority=7", ["data_priority", "control_priority"]),
    ("nic.rto_low_us=2000", ["rto_low_us", "2000", "rto_us", "1000"]),
    ("engine=ns3", ["engine", "ns3", "sim"]),
    ("topology.kind=torus", ["topology.kind", "torus", "leaf_spine", "fat_tree"]),
]


@pytest.mark.parametrize("override,words", BAD)
def test_bad_spec_messages(override, words):
    """Each bad case raises SpecError whose single line names field, value and fix."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    S.apply_override(data, override)
    with pytest.raises(S.SpecError) as e:
        S.validate(data, "t.yaml")
    msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)


def test_fat_tree_odd_k_and_radix():
    with pytest.raises(S.SpecError, match="k must be even"):
        S.validate({**GOOD, "topology": {"kind": "fat_tree", "k": 5}})
    with pytest.raises(S.SpecError, match="switch.ports"):
        S.validate({**GOOD, "topology": {"kind": "fat_tree", "k": 8}, "switch": {"ports": 4}})


def test_gse_on_mininet_fat_trees_up_to_the_dscp():
    """Issue 14: GSE runs on Mininet fat-trees (faults included) while (k/2)^2 container
    paths fit the DSCP's 63 values; past that one message names the problem and the way
    out."""
    gse = {**GOOD, "engine": "mininet", "scheme": "gse"}
    for k in (4, 14):
        S.validate({**gse, "topology": {"kind": "fat_tree", "k": k}, "switch": {"ports": k}})
    with pytest.raises(S.SpecError) as e:
        S.validate({**gse, "topology": {"kind": "fat_tree", "k": 16}, "switch": {"ports": 16}})
    assert "64 container paths" in str(e.value) and "k <= 14" in str(e.value)
    S.validate({**gse, "topology": {"kind": "fat_tree", "k": 4},
                "faults": [{"at_us": 10, "kind": "link_down", "target": "a0_0-c0"}]})


def test_defaults_and_overrides():
    """--set reaches nested fields and list items; values parse as YAML."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for o in ("topology.leaves=4", "workload.0.bytes=2000", "switch.pfc.enabled=false",
              "dcqcn.rate_ai_mbps=5.5"):
        S.apply_override(data, o)
    sp = S.validate(data)
    assert sp.topology.leaves == 4 and sp.workload[0].bytes == 2000
    assert sp.switch.pfc.enabled is False and sp.dcqcn.rate_ai_mbps == 5.5
    assert sp.dcqcn.g == 1 / 256 and sp.switch.mtu_bytes == 4096  # defaults filled in
    # the resolved YAML round-trips to an equal spec
    again = S.validate(yaml.safe_load(S.resolved_yaml(sp)))
    assert again == sp


def test_ecn_thresholds_scale_with_rate_and_paper_set_expressible():
    sp = S.validate(GOOD)
    assert sp.switch.ecn.thresholds(100_000_000_000) == (400_000, 1_600_000, 0.2)
    paper = S.validate({**GOOD, "switch": {"ecn": {"kmin_bytes": 5000, "kmax_bytes": 200000,
                                                   "pmax": 0.01, "scale_with_rate": False}}})
    assert paper.switch.ecn.thresholds(40_000_000_000) == (5000, 200000, 0.01)
    per = S.validate({**GOOD, "switch": {"ecn": {"per_rate_gbps": {
        100: {"kmin_bytes": 1, "kmax_bytes": 2, "pmax": 1}}}}})
    assert per.switch.ecn.thresholds(100_000_000_000) == (1, 2, 1)
    assert per.switch.ecn.thresholds(25_000_000_000) == (100_000, 400_000, 0.2)


def test_reduced_block_applies():
    data = {**GOOD, "reduced": {"topology.leaves": 3, "workload.0.bytes": 5}}
    p = Path(os.environ.get("TMPDIR", "/tmp")) / f"fl-reduced-{os.getpid()}.yaml"
    p.write_text(yaml.safe_dump(data))
    try:
        sp = S.load(p, reduced=True)
        assert sp.topology.leaves == 3 and sp.workload[0].bytes == 5
        assert S.load(p).topology.leaves == 2
    finally:
        p.unlink()


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "fabriclab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override", [b[0] for b in BAD[:8]])
def test_cli_bad_spec_exit_2_nothing_written(tmp_path, override):
    """`fabriclab run` with a bad --set: exit status 2, one message naming that --set, no
    results directory."""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(GOOD))
    r = _cli(["run", "s.yaml", "--set", override], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"fabriclab: error in --set {override}: "), r.stderr
    assert r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_cli_missing_file_and_bad_yaml(tmp_path):
    r = _cli(["run", "nope.yaml"], tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr
    (tmp_path / "b.yaml").write_text("topology: [1, 2\n")
    r = _cli(["run", "b.yaml"], tmp_path)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = _cli(["run", "b.yaml", "--set", "novalue"], tmp_path)
    assert r.returncode == 2
    assert not (tmp_path / "results").exists()


def test_results_spec_reruns_as_written(tmp_path):
    """The resolved spec a run writes (with its provenance block) loads back to the same spec."""
    sp = S.load("experiments/incast.yaml", ["hpcc.base_rtt_ns=9000"], reduced=True)
    p = tmp_path / "spec.yaml"
    p.write_text(S.resolved_yaml(sp, {S.PROVENANCE_KEY: {"engine": "sim", "git": "x"}}))
    again = S.load(p)
    assert again == sp
    assert again.hpcc.base_rtt_ns == 9000 and again.topology.leaves == 2


@pytest.mark.parametrize("overrides,words", [
    (["scheme=gse", "gse.placement=leaf", "gse.scheduler=egress"],
     ["gse.placement", "leaf", "central", "engine sim"]),
    (["scheme=gse", "gse.placement=leaf", "topology={kind: fat_tree, k: 4}"],
     ["gse.placement", "leaf", "leaf-spine", "placement nic"]),
    (["scheme=gse", "topology={kind: fat_tree, k: 16}", "switch.ports=16"],
     ["gse", "mininet", "64 container paths", "63", "k <= 14"]),
    (["emu.kill_controller_at_us=-1"], ["emu.kill_controller_at_us"]),
])
def test_mininet_only_what_it_can_emulate(overrides, words):
    """GSE on Mininet: the GSP in the NIC, on leaf-spine; anything else is refused up front."""
    data = {"engine": "mininet", "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2,
                                              "hosts_per_leaf": 2},
            "workload": [{"kind": "incast", "receiver": "h0", "senders": 3, "bytes": 1000}]}
    for o in overrides:
        S.apply_override(data, o)
    with pytest.raises(S.SpecError) as e:
        S.validate(data, "t.yaml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    for scheme in ("hpcc", "gse"):  # both accepted on the emulation as they stand
        S.validate({**data, "scheme": scheme, "emu": {}, "gse": {},
                    "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2,
                                 "hosts_per_leaf": 2}}, "t.yaml")


def test_question_field():
    """`question` is a top-level string, empty by default, kept in the resolved spec."""
    assert S.validate(GOOD).question == ""
    sp = S.validate({**GOOD, "question": "Does PFC hurt a bystander?"})
    assert yaml.safe_load(S.resolved_yaml(sp))["question"] == "Does PFC hurt a bystander?"
    with pytest.raises(S.SpecError, match="question"):
        S.validate({**GOOD, "question": ["not", "a", "string"]})
