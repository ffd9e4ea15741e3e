"""Plots and HTML pages for results directories.

``make_report(run_dir)`` writes ``<run_dir>/plots/*.png`` and ``<run_dir>/report.html``;
``make_comparison(run_dirs, out_dir)`` writes ``<out_dir>/plots/*.png`` and
``<out_dir>/index.html``, one column per run.  Pages are self-contained (inline CSS, relative
links); plots are drawn on matplotlib's Agg canvas without touching pyplot's global state.
"""

from __future__ import annotations

from .pages import make_comparison, make_report

__all__ = ["make_report", "make_comparison"]
