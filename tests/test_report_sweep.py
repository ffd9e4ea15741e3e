"""The sweep page's axes, checked on the matplotlib figures it saves: runs that agree draw a
flat line whose tick labels carry the actual values (no offset notation, no magnified
noise), byte sizes sit on a base-2 log axis labelled in KiB, and a metric that is zero in
every run becomes a sentence instead of a panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fabriclab import spec as S
from fabriclab.metrics.results import write_atomic
from fabriclab.report import make_sweep_page, sweep
from fabriclab.sim.runner import simulate

from test_report import parse

SIZES = [16384, 65536]


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures make_sweep_page saves, by file name."""
    seen: dict = {}
    real = sweep.save

    def capture(fig, plots_dir, name):
        seen[name] = fig
        return real(fig, plots_dir, name)
    monkeypatch.setattr(sweep, "save", capture)
    return seen


@pytest.fixture(scope="module")
def equal_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A DCQCN incast swept over GSE's container size, which DCQCN never reads: the runs are
    identical, and no PFC pause happens (the default buffer is large enough)."""
    base = tmp_path_factory.mktemp("sweep")
    dirs = []
    for v in SIZES:
        spec = S.validate({"scheme": "ecmp_dcqcn", "gse": {"container_bytes": v},
                           "topology": {"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
                           "workload": [{"kind": "incast", "receiver": "h0", "senders": 6,
                                         "bytes": 200_000},
                                        {"kind": "ring_allreduce", "bytes": 400_000}]})
        dirs.append(write_atomic(simulate(spec, progress=False),
                                 base / f"gse.container_bytes-{v}"))
    return base, dirs


def _visible_ticks(ax) -> list[float]:
    """The y tick labels inside the axis range, parsed as numbers (fails on '1e-6+1.3')."""
    lo, hi = ax.get_ylim()
    return [float(t.get_text().replace("\u2212", "-"))
            for pos, t in zip(ax.get_yticks(), ax.get_yticklabels()) if lo <= pos <= hi]


def _check_flat_panel(ax) -> float:
    (line,) = ax.lines
    ys = np.asarray(line.get_ydata(), dtype=float)
    value = float(ys[0])
    lo, hi = ax.get_ylim()
    ticks = _visible_ticks(ax)
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert len(ticks) >= 2 and min(ticks) <= value <= max(ticks)
    # not noise magnified to fill the panel: the axis spans at least 10 % of the value
    assert hi - lo >= 0.1 * abs(value) - 1e-12 and lo <= value <= hi
    return float(np.ptp(ys) / (hi - lo))


def test_equal_runs_draw_flat_lines_with_real_numbers(equal_runs, figures):
    """Identical runs: every panel is a flat line; its tick labels are plain numbers that
    bracket the value; byte sizes are on a base-2 log axis labelled 16 KiB and 64 KiB; the
    always-zero PFC count is a sentence; the table keeps every metric's values."""
    base, dirs = equal_runs
    page = make_sweep_page("gse.container_bytes", SIZES, dirs, base)
    assert figures
    panels = [ax for fig in figures.values() for ax in fig.axes]
    titles = [ax.get_title() for ax in panels]
    assert not any("PFC pause frames" in t for t in titles)
    for ax in panels:
        assert _check_flat_panel(ax) == 0.0
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert [t.get_text() for t in ax.get_xticklabels()] == ["16 KiB", "64 KiB"]
    text = page.read_text(encoding="utf-8")
    assert "every run gave 0: PFC pause frames" in text
    cells = parse(page).cells
    assert cells[("PFC pause frames", "0")] == "0.000"
    assert cells[("slowdown p99", "0")] == cells[("slowdown p99", "1")]
    for f in figures:
        assert (base / "plots" / f).is_file()
        assert (base / "plots" / f).with_suffix(".svg").is_file()


def test_parts_per_million_stay_flat(tmp_path, figures):
    """Two values 3 ppm apart (hand-made: what the engine gives for runs that differ only in
    rounding) draw a flat line, not a rise across the whole panel, with no offset text."""
    results = sweep.sweep_plots("seed", [1, 2], [{"x / bound": 1.3614658},
                                                 {"x / bound": 1.3614691}], tmp_path)
    assert [r.file for r in results] == ["sweep0.png"]
    (ax,) = figures["sweep0.png"].axes
    assert _check_flat_panel(ax) < 1e-4
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_a_real_trend_fills_its_panel(tmp_path, figures):
    """Values that differ by a factor of two are not squashed by the minimum span: the
    line spans most of the axis, and large x values are labelled without an offset."""
    sweep.sweep_plots("stop.time_us", [1_000_000, 1_000_100],
                      [{"m": 10.0}, {"m": 20.0}], tmp_path)
    (ax,) = figures["sweep0.png"].axes
    lo, hi = ax.get_ylim()
    assert (20.0 - 10.0) / (hi - lo) > 0.6
    assert ax.xaxis.get_offset_text().get_text() == ""
    labels = [float(t.get_text().replace(",", "")) for t in ax.get_xticklabels()
              if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert labels and all(999_000 < v < 1_001_000 for v in labels)
