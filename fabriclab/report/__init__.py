"""Plots and HTML pages for results directories.

``make_report(run_dir)`` writes ``<run_dir>/plots/*.png`` and ``<run_dir>/report.html``;
``make_comparison(run_dirs, out_dir)`` writes ``<out_dir>/plots/*.png`` and
``<out_dir>/index.html``, one column per run; ``make_sweep_page(param, values, run_dirs,
out_dir)`` plots the headline metrics against one spec parameter.  Pages are self-contained (inline CSS, relative
links); plots are drawn on matplotlib's Agg canvas without touching pyplot's global state.
"""

from __future__ import annotations

from .pages import make_comparison, make_report
from .sweep import make_sweep_page

__all__ = ["make_report", "make_comparison", "make_sweep_page"]
