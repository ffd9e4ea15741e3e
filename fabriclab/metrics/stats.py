"""Statistics used by both engines' results and by the report."""

from __future__ import annotations

import math

from .lazy_numpy import np


def percentile(values, q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default); None when empty."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def jain_index(xs) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 = perfectly fair, 1/n = one takes all."""
    xs = [float(x) for x in xs]
    if not xs or not any(xs):
        return float("nan")
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def max_over_mean(xs) -> float:
    xs = [float(x) for x in xs]
    m = sum(xs) / len(xs) if xs else 0.0
    return max(xs) / m if m > 0 else math.nan


# Flow-size bins for slowdown plots (bytes, upper edges), after the HPCC evaluation's figures.
SIZE_BINS = [10_000, 100_000, 1_000_000, 10_000_000, float("inf")]


def size_bin_label(upper: float, lower: float) -> str:
    def fmt(x):
        if x == float("inf"):
            return "inf"
        for unit, div in (("MB", 1e6), ("KB", 1e3)):
            if x >= div:
                return f"{x / div:g}{unit}"
        return f"{x:g}B"
    return f"{fmt(lower)}-{fmt(upper)}"


def slowdown_by_size(sizes, slowdowns, bins=SIZE_BINS):
    """[(label, n, p50, p95, p99)] per flow-size bin (empty bins omitted)."""
    out = []
    lower = 0
    for upper in bins:
        sel = [s for b, s in zip(sizes, slowdowns) if lower < b <= upper]
        if sel:
            out.append((size_bin_label(upper, lower), len(sel), percentile(sel, 50),
                        percentile(sel, 95), percentile(sel, 99)))
        lower = upper
    return out
