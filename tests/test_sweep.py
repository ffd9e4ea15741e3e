"""`fabriclab sweep`: one run per value, one page; the GSE container-size sweep moves the
request/grant overhead as grants per byte predict."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_container_size_sweep(tmp_path):
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "-q", "sweep",
                        str(ROOT / "experiments/allreduce.yaml"), "--reduced", "--scheme", "gse",
                        "--param", "gse.container_bytes=4096,65536", "--out", str(out),
                        "--jobs", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    runs = [out / "gse.container_bytes-4096", out / "gse.container_bytes-65536"]
    small, large = (json.loads((d / "summary.json").read_text()) for d in runs)
    html = (out / "index.html").read_text()
    assert html.count("gse.container_bytes=") >= 2 and (out / "plots" / "sweep0.png").is_file()
    # Grants of container size: 16x smaller containers need ~16x the grants (a little less:
    # the tail of each step is a partial grant either way), and at least that much more
    # request/grant traffic per data byte (small grants also batch fewer requests).
    grants = small["gse"]["grants"] / large["gse"]["grants"]
    assert 12 <= grants <= 16, grants
    assert small["gse"]["control_overhead"] >= 12 * large["gse"]["control_overhead"]
    # both deliver everything, losslessly
    for s in (small, large):
        assert s["flows_completed"] == s["flows_total"] and s["drops"] == 0
