"""Plots and HTML pages for results directories.

``make_report(run_dir)`` writes ``<run_dir>/plots/*.png`` (each with an ``.svg`` twin) and
``<run_dir>/report.html``; ``make_comparison(run_dirs, out_dir)`` writes ``<out_dir>/plots/``
and ``<out_dir>/index.html``, one column per run, opening with the experiment's question;
``make_sweep_page(param, values, run_dirs, out_dir)`` plots the headline metrics against one
spec parameter.  Pages are self-contained (inline CSS, relative links); plots are drawn on
matplotlib's Agg canvas without touching pyplot's global state.  A figure whose data a
results directory lacks (an older fabriclab, a scheme without it) is replaced by a sentence
saying why.
"""

from __future__ import annotations

from .pages import make_comparison, make_report
from .sweep import make_sweep_page

__all__ = ["make_report", "make_comparison", "make_sweep_page"]
