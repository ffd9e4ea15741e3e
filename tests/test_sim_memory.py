"""What keeps a 1,024-host run within htsim's memory (benchmarks/vs_htsim.py measures it):
the network is freed before the results are assembled, and numpy is not imported while
the events run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import pytest

from fabriclab.sim import network as sim_network
from fabriclab.sim import runner

from helpers import make_spec

ROOT = Path(__file__).resolve().parents[1]

SPEC = dict(scheme="gse", topology={"kind": "fat_tree", "k": 4},
            workload=[{"kind": "permutation", "bytes": 200_000}])


@pytest.mark.parametrize("scheme", ["gse", "ecmp_dcqcn", "hpcc"])
def test_the_network_is_gone_before_the_results_are_assembled(monkeypatch, scheme):
    nets = []

    class Watched(sim_network.Network):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            nets.append(weakref.ref(self))

    alive_at_assembly = []
    real = runner.assemble

    def assemble(**parts):
        alive_at_assembly.append(nets[0]() is not None)
        return real(**parts)

    monkeypatch.setattr(runner, "Network", Watched)
    monkeypatch.setattr(runner, "assemble", assemble)
    result = runner.simulate(make_spec(**dict(SPEC, scheme=scheme)), progress=False)
    assert result.summary["stopped"] == "completed"
    assert alive_at_assembly == [False]  # nothing handed to assemble() refers to it


def test_numpy_is_not_imported_while_the_events_run():
    code = """
import sys
from fabriclab import api
from fabriclab.sim import network
seen = []
real = network.Network.run
def run(self, *a, **kw):
    seen.append('numpy' in sys.modules)
    return real(self, *a, **kw)
network.Network.run = run
spec = api.load('experiments/incast.yaml', [], True, None, 'gse')
api.run(spec, out=sys.argv[1], report=False, progress=False)
print(seen, 'numpy' in sys.modules)
"""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", code, f"{d}/out"], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[False]", "True"]  # imported after the run, for the results
