"""Poisson background traffic with flow sizes from an empirical CDF.

CDF files have one ``bytes percentile`` pair per line (``#`` comments allowed); the built-in
ones are WebSearch (DCTCP, SIGCOMM 2010) and FB_Hadoop (Roy et al., SIGCOMM 2015), as used
by the HPCC evaluation.  Sizes are drawn by linear interpolation between CDF points, as the
HPCC simulator's traffic generator does.
"""

from __future__ import annotations

import bisect
import random
from importlib import resources
from pathlib import Path

BUILTIN = ("websearch", "fb_hadoop")


def known_cdf(name: str) -> bool:
    return name in BUILTIN or Path(name).is_file()


class FlowSizeCdf:
    def __init__(self, points: list[tuple[float, float]], name: str):
        if len(points) < 2:
            raise ValueError(f"CDF {name}: needs at least two points")
        xs = [p[0] for p in points]
        ps = [p[1] for p in points]
        if any(b < a for a, b in zip(ps, ps[1:])) or any(b < a for a, b in zip(xs, xs[1:])):
            raise ValueError(f"CDF {name}: sizes and percentiles must not decrease")
        if abs(ps[-1] - 100) > 1e-9:
            raise ValueError(f"CDF {name}: the last percentile must be 100, got {ps[-1]}")
        self.name = name
        self.sizes = xs
        self.pct = ps

    @classmethod
    def load(cls, name: str) -> "FlowSizeCdf":
        if name in BUILTIN:
            text = resources.files("fabriclab.workloads").joinpath(f"cdf/{name}.txt").read_text()
        else:
            text = Path(name).read_text()
        pts = []
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                a, b = line.split()[:2]
                pts.append((float(a), float(b)))
        return cls(pts, name)

    def mean(self) -> float:
        """Mean flow size in bytes (piecewise-linear CDF)."""
        m = 0.0
        for i in range(1, len(self.sizes)):
            dp = (self.pct[i] - self.pct[i - 1]) / 100
            m += dp * (self.sizes[i] + self.sizes[i - 1]) / 2
        return m

    def sample(self, rng: random.Random) -> int:
        u = rng.random() * 100
        i = bisect.bisect_left(self.pct, u)
        i = max(1, min(i, len(self.pct) - 1))
        p0, p1 = self.pct[i - 1], self.pct[i]
        x0, x1 = self.sizes[i - 1], self.sizes[i]
        x = x0 if p1 == p0 else x0 + (x1 - x0) * (u - p0) / (p1 - p0)
        return max(1, round(x))
