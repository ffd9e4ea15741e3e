"""Every spec in experiments/ runs (reduced) through `fabriclab compare`, as CI runs it, and
its results satisfy the schema and the invariants: PFC on => no drops, conservation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fabriclab.faults import LOSS_CAUSES

from fabriclab.metrics.schema import validate_results

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "experiments").glob("*.yaml"))


def test_there_are_experiments():
    assert len(SPECS) >= 5


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_experiment_runs_reduced(spec, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "-q", "compare", str(spec),
                        "--reduced", "--out", str(out), "--jobs", "1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(spec.read_text())
    assert doc.get("description"), "every experiment says what question it answers"
    schemes = doc.get("compare") or [doc.get("scheme", "ecmp_dcqcn")]
    assert (out / "index.html").is_file()
    for scheme in schemes:
        d = out / scheme
        assert validate_results(d) == [], scheme
        assert (d / "report.html").is_file()
        s = json.loads((d / "summary.json").read_text())
        resolved = yaml.safe_load((d / "spec.yaml").read_text())
        faulty = bool(resolved["faults"]) or resolved["loss"]["rate"] > 0
        if resolved["switch"]["pfc"]["enabled"]:
            # lossless: no queue ever overflows; what faults lose is counted apart
            queue_drops = s["drops"] - sum(s["drop_reasons"].get(c, 0) for c in LOSS_CAUSES)
            assert queue_drops == 0 and (faulty or s["drops"] == 0), (scheme, s["drop_reasons"])
        assert s["bytes_sent"] == s["bytes_delivered"] + s["bytes_dropped"] + s["bytes_in_flight"]
        assert s["bytes_in_flight"] >= 0
        if spec.stem == "pfc_deadlock" and scheme != "gse":
            # PFC plus bounce routing closes a cycle; GSE's scheduler routes around it
            assert s["deadlock"] and len(s["deadlock"]["ports"]) >= 2, scheme
            continue
        assert s["deadlock"] is None, (scheme, s["deadlock"])  # no healthy experiment deadlocks
        if resolved["stop"]["time_us"] is None:
            assert s["flows_completed"] == s["flows_total"], scheme
