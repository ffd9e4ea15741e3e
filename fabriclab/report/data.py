"""Loading a results directory (see ``fabriclab.metrics.schema``) for the report."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

GOODPUT_BINS = 250  # rate plots are averaged over at most this many time bins


@dataclass
class Series:
    """One time-series file: sample times (ns), column names, values (rows x columns)."""

    t: np.ndarray
    names: list[str]
    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def num(text: str | None) -> float | None:
    """A CSV cell as a float; None for an empty cell ("did not happen")."""
    if text is None or text == "":
        return None
    return float(text)


@dataclass
class Run:
    path: Path
    summary: dict
    spec: dict
    flows: list[dict[str, str]]
    ports: list[dict[str, str]]
    hosts: list[dict[str, str]]
    _series: dict[str, Series | None] = field(default_factory=dict, repr=False)
    _by_port: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    @property
    def sim_time_ns(self) -> int:
        return int(self.summary.get("sim_time_ns") or 0)

    @property
    def scheme(self) -> str:
        return str(self.summary.get("scheme", "?"))

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.spec.get("name") or self.path.name)

    @property
    def topology(self) -> str:
        topo = self.summary.get("topology") or {}
        return str(topo.get("description") or topo.get("kind") or "?")

    def spec_get(self, *keys, default=None):
        node = self.spec
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def series(self, name: str) -> Series | None:
        """timeseries/<name>.csv, or None when the file is missing or has no rows."""
        if name not in self._series:
            self._series[name] = _load_series(self.path / "timeseries" / f"{name}.csv")
        return self._series[name]

    def completed_sizes_slowdowns(self) -> tuple[list[float], list[float]]:
        """(bytes, slowdown) of every completed finite flow, as two aligned lists."""
        pairs = [(num(f["bytes"]), num(f["slowdown"])) for f in self.flows]
        pairs = [(b, sd) for b, sd in pairs if b is not None and sd is not None]
        return [b for b, _ in pairs], [sd for _, sd in pairs]

    def completed_groups_slowdowns(self) -> tuple[list[str], list[float]]:
        """(workload group, slowdown) of every completed finite flow, repeated incasts
        ("name#k") counted as one group ("name")."""
        pairs = [(group_name(f.get("group")), num(f["slowdown"])) for f in self.flows]
        pairs = [(g, sd) for g, sd in pairs if sd is not None]
        return [g for g, _ in pairs], [sd for _, sd in pairs]

    def port(self, name: str) -> dict[str, str] | None:
        """The ports.csv row of ``name`` ("node:port"), None when there is none."""
        if not self._by_port:
            self._by_port = {p["port"]: p for p in self.ports}
        return self._by_port.get(name)

    def has(self, key: str) -> bool:
        """True when summary.json has ``key`` (written by a fabriclab that knows it), even
        if its value is null (the thing did not happen)."""
        return key in self.summary

    def tier1_switches(self) -> set[str]:
        """Switches with a host-facing port: the leaves (leaf-spine) or edges (fat-tree)."""
        return {p["node"] for p in self.ports if p["role"] == "host"}

    def spine_uplinks(self) -> list[dict[str, str]]:
        tier1 = self.tier1_switches()
        return [p for p in self.ports if p["role"] == "up" and p["node"] in tier1]


def group_name(group: str | None) -> str:
    """A flow's workload group with the repetition suffix of repeated incasts removed
    ("incast#3" -> "incast"); "(none)" for a flow outside any workload item."""
    g = (group or "").split("#", 1)[0]
    return g or "(none)"


def _load_series(path: Path) -> Series | None:
    if not path.is_file():
        log.debug("no %s", path)
        return None
    try:
        df = pd.read_csv(path, dtype=float)
    except pd.errors.EmptyDataError:
        return None
    if df.empty or df.shape[1] < 1:
        return None
    data = df.to_numpy(dtype=float)
    return Series(t=data[:, 0], names=[str(c) for c in df.columns[1:]], values=data[:, 1:])


def load_run(run_dir: str | Path) -> Run:
    d = Path(run_dir)
    summary = json.loads((d / "summary.json").read_text())
    spec_path = d / "spec.yaml"
    spec = yaml.safe_load(spec_path.read_text()) if spec_path.is_file() else {}
    return Run(path=d, summary=summary, spec=spec if isinstance(spec, dict) else {},
               flows=_rows(d / "flows.csv"), ports=_rows(d / "ports.csv"),
               hosts=_rows(d / "hosts.csv"))


def interval_ns(t: np.ndarray) -> np.ndarray:
    """The length of the interval each sample stands for (the first repeats the second's)."""
    if len(t) < 2:
        return np.ones(len(t))
    dt = np.diff(t)
    return np.concatenate([[dt[0]], dt])


def weighted_cdf(values: np.ndarray, weights: np.ndarray,
                 max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(x, F(x)) of the weighted empirical CDF, thinned to at most ``max_points`` steps
    (the last step of each thinned run is kept, so the curve stays exact at its points)."""
    order = np.argsort(values, kind="stable")
    v, cdf = values[order], np.cumsum(weights[order])
    cdf = cdf / cdf[-1] if len(cdf) and cdf[-1] > 0 else cdf
    last = np.r_[np.flatnonzero(np.diff(v)), len(v) - 1] if len(v) else np.array([], int)
    v, cdf = v[last], cdf[last]
    if len(v) > max_points:
        keep = np.unique(np.r_[np.linspace(0, len(v) - 1, max_points).astype(int), len(v) - 1])
        v, cdf = v[keep], cdf[keep]
    return v, cdf


def weighted_quantile(x: np.ndarray, cdf: np.ndarray, q: float) -> float:
    """The smallest x whose CDF reaches ``q`` (0..1), from :func:`weighted_cdf`'s output."""
    return float(x[min(int(np.searchsorted(cdf, q - 1e-12)), len(x) - 1)])


def active_end(t: np.ndarray, values: np.ndarray) -> float:
    """Time of the last sample where any column is non-zero (the last sample if none is)."""
    busy = np.flatnonzero(np.nan_to_num(values).any(axis=1)) if values.size else []
    if len(busy) == 0:
        return float(t[-1])
    return float(t[min(busy[-1] + 1, len(t) - 1)])


def clip_to_activity(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Drop the idle tail (keeping a 5% margin); True when a noticeable part was dropped."""
    if len(t) < 2:
        return t, values, False
    end = active_end(t, values)
    limit = end + 0.05 * (end - t[0])
    keep = t <= limit
    clipped = limit < t[0] + 0.9 * (t[-1] - t[0])
    return t[keep], values[keep], clipped


def rebin_rates(t: np.ndarray, values: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-weighted averages of per-interval rates over ``nbins`` equal time bins.

    Row i of a rate series covers (t[i-1], t[i]]; empty bins are dropped.
    """
    if len(t) <= nbins:
        return t, values
    dt = interval_ns(t)
    edges = np.linspace(t[0] - dt[0], t[-1], nbins + 1)
    idx = np.clip(np.searchsorted(edges, t, side="left") - 1, 0, nbins - 1)
    weight = np.bincount(idx, weights=dt, minlength=nbins)
    acc = np.zeros((nbins, values.shape[1]))
    np.add.at(acc, idx, np.nan_to_num(values) * dt[:, None])
    keep = weight > 0
    return edges[1:][keep], acc[keep] / weight[keep][:, None]
