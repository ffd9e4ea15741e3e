"""Results: schema, determinism for a seed, atomic writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fabriclab.metrics import results as R
from fabriclab.metrics.schema import validate_results
from fabriclab.sim.runner import simulate

from helpers import make_spec

SPEC = {
    "name": "det",
    "seed": 7,
    "topology": {"leaves": 4, "spines": 4, "hosts_per_leaf": 2},
    "workload": [{"kind": "permutation", "bytes": 300000},
                 {"kind": "background", "cdf": "websearch", "load": 0.3, "duration_us": 300}],
}
VOLATILE = {"wall_s", "wall_run_s", "packet_hops_per_s"}


def _run(tmp, name, seed=None):
    spec = dict(SPEC)
    if seed is not None:
        spec["seed"] = seed
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "-q", "run", f"{name}.yaml",
                        "--out", name, "--no-report"], cwd=tmp, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return tmp / name


def _files(d: Path):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_results(tmp_path):
    """Two runs of one spec and seed: every file identical except wall-clock fields."""
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b")
    assert validate_results(a) == [] and validate_results(b) == []
    assert _files(a) == _files(b)
    for f in _files(a):
        if f == "summary.json":
            sa, sb = (json.loads((d / f).read_text()) for d in (a, b))
            for k in VOLATILE:
                sa.pop(k), sb.pop(k)
            assert sa == sb
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = _run(tmp_path, "c", seed=8)
    assert (a / "flows.csv").read_bytes() != (c / "flows.csv").read_bytes()


def test_spec_yaml_is_resolved_with_provenance(tmp_path):
    d = _run(tmp_path, "a")
    doc = yaml.safe_load((d / "spec.yaml").read_text())
    assert doc["generated_by"]["fabriclab_version"]
    assert doc["generated_by"]["git_revision"]
    assert doc["dcqcn"]["g"] == 1 / 256  # defaults are written out
    assert doc["seed"] == 7


def test_killed_write_leaves_nothing_that_looks_whole(tmp_path, monkeypatch):
    """If writing fails half-way, neither the target nor a partial directory remains, and
    a previous complete result stays untouched."""
    result = simulate(make_spec(**{k: v for k, v in SPEC.items() if k != "name"}),
                      progress=False)
    out = tmp_path / "run"
    R.write_atomic(result, out)
    before = (out / "flows.csv").read_bytes()

    def boom(self, name, f):
        raise KeyboardInterrupt

    monkeypatch.setattr(R.RunResult, "write_csv", boom)
    with pytest.raises(KeyboardInterrupt):
        R.write_atomic(result, out)
    assert (out / "flows.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    monkeypatch.undo()
    new = tmp_path / "new"
    monkeypatch.setattr(R.RunResult, "write_csv", boom)
    with pytest.raises(KeyboardInterrupt):
        R.write_atomic(result, new)
    assert not new.exists()


def test_summary_counts_match_tables(tmp_path):
    d = _run(tmp_path, "a")
    s = json.loads((d / "summary.json").read_text())
    import csv
    flows = list(csv.DictReader(open(d / "flows.csv")))
    ports = list(csv.DictReader(open(d / "ports.csv")))
    assert s["flows_total"] == len(flows)
    assert s["flows_completed"] == sum(1 for f in flows if f["end_ns"])
    assert s["drops"] == sum(int(p["drops"]) for p in ports)
    assert s["ecn_marks"] == sum(int(p["ecn_marks"]) for p in ports)
    nic_tx = sum(int(p["tx_bytes"]) for p in ports if p["role"] == "nic")
    assert s["bytes_sent"] == nic_tx
