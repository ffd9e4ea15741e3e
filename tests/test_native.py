"""The compiled simulator core (fabriclab/native.py): the same modules compiled with Cython
give byte-identical results to the pure-Python ones, and a compiled module built from
older sources is never used.

scripts/setup.sh builds the core, so these tests expect it built and current (after editing
a compiled module, `fabriclab build-core` makes it current again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fabriclab import native

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = ("flows.csv", "ports.csv", "hosts.csv", "collectives.csv")
#: summary fields that are the wall clock's or say how the core ran
NOT_RESULTS = {"wall_s", "wall_run_s", "packet_hops_per_s", "sim_core"}

# (experiment, scheme, overrides), reduced: every scheme, PFC pauses and the watchdog, ECN,
# INT, GSE's request/grant and reordering, a link failure (rerouting, go-back-N) and random
# loss (selective repeat)
CASES = [
    ("permutation", "ecmp_dcqcn", ["topology={kind: fat_tree, k: 4}"]),
    ("permutation", "hpcc", ["topology={kind: fat_tree, k: 4}"]),
    ("permutation", "gse", ["topology={kind: fat_tree, k: 4}"]),
    ("victim_flow", "ecmp_dcqcn", []),  # PFC pauses spreading, ECN
    ("pfc_deadlock", "ecmp_dcqcn", []),  # a PFC deadlock, the watchdog's drops
    ("incast", "gse", []),
    ("allreduce", "hpcc", []),
    ("link_failure", "ecmp_dcqcn", []),
    ("loss", "hpcc", ["nic.loss_recovery=selective_repeat", "loss.rate=1e-3"]),
]


def test_the_compiled_core_is_built_and_current():
    assert native.status() == "compiled", (
        f"the compiled simulator core is not in use: {native.reason()}; `bash scripts/setup.sh` "
        f"or `fabriclab build-core` builds it")
    import fabriclab.sim.fabric as fabric
    assert fabric.__file__.endswith(native.EXT_SUFFIX)


def _run(tmp: Path, exp: str, scheme: str, sets: list[str], pure: bool) -> Path:
    out = tmp / f"{exp}-{scheme}-{'pure' if pure else 'compiled'}"
    env = dict(os.environ)
    env.pop(native.ENV_PURE, None)
    if pure:
        env[native.ENV_PURE] = "1"
    cmd = [sys.executable, "-m", "fabriclab.cli", "-q", "run", f"experiments/{exp}.yaml",
           "--reduced", "--scheme", scheme, "--no-report", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("exp,scheme,sets", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_compiled_and_pure_python_give_identical_results(tmp_path, exp, scheme, sets):
    compiled = _run(tmp_path, exp, scheme, sets, pure=False)
    pure = _run(tmp_path, exp, scheme, sets, pure=True)
    s_c = json.loads((compiled / "summary.json").read_text())
    s_p = json.loads((pure / "summary.json").read_text())
    assert (s_c["sim_core"], s_p["sim_core"]) == ("compiled", "python")
    for name in RESULT_FILES:
        if (pure / name).exists() or (compiled / name).exists():
            assert (compiled / name).read_bytes() == (pure / name).read_bytes(), name
    assert ({k: v for k, v in s_c.items() if k not in NOT_RESULTS}
            == {k: v for k, v in s_p.items() if k not in NOT_RESULTS})


def _which(pkg_root: Path) -> list[str]:
    code = ("import fabriclab, fabriclab.sim.core as c, fabriclab.sim.host as h; "
            "print(fabriclab.native.status(), c.__file__.rsplit('.', 1)[-1], "
            "h.__file__.rsplit('.', 1)[-1])")
    env = {"PYTHONPATH": str(pkg_root), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], cwd=pkg_root, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_a_stale_compiled_core_is_never_used(tmp_path):
    """Edit one compiled module's source: every module (not only that one) runs as Python,
    since the compiled modules read each other's C layout."""
    assert native.status() == "compiled", native.reason()
    shutil.copytree(ROOT / "fabriclab", tmp_path / "fabriclab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert _which(tmp_path) == ["compiled", "so", "so"]
    src = tmp_path / "fabriclab" / "sim" / "fabric.py"
    src.write_text(src.read_text() + "\n# edited\n")
    assert _which(tmp_path) == ["python", "py", "py"]
    (tmp_path / "fabriclab" / "native.json").unlink()
    src.write_text(src.read_text().replace("\n# edited\n", ""))
    assert _which(tmp_path) == ["python", "py", "py"]  # no record of the build: Python
