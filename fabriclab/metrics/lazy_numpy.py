"""numpy, imported on first use.

A simulation needs numpy only to assemble its results, after the network is freed
(fabriclab/sim/runner.py).  Imported with the metrics modules it would sit in memory during
the whole run: 12 MB of a 1,024-host run's peak (benchmarks/vs_htsim.py)."""

from __future__ import annotations

import importlib


class _Numpy:
    __slots__ = ()

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("numpy"), name)

    def __repr__(self) -> str:
        return "<numpy, imported on first use>"


np = _Numpy()
