"""The agreement section of an engines comparison page."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..metrics.agreement import compare_engines
from .html import fmt_float, fmt_int, grid_table


def _peak_queue(run_dir: Path) -> int:
    with open(run_dir / "ports.csv", newline="") as fh:
        return max((int(float(r["max_queue_bytes"] or 0)) for r in csv.DictReader(fh)
                    if r["role"] != "nic"), default=0)


def load_agreement(runs: dict, line_gbps: float) -> dict:
    data = {k: {"summary": json.loads((Path(p) / "summary.json").read_text()),
                "peak_queue": _peak_queue(Path(p))} for k, p in runs.items()}
    return compare_engines(data, line_gbps)


def agreement_section(a: dict) -> str:
    """HTML for :func:`load_agreement`'s result."""

    def val(key, v):
        if v is None:
            return "\u2014"
        if key in ("peak_queue_bytes", "pfc_pause_frames", "drops", "pfc_paused_ns_total"):
            return fmt_int(v)
        return fmt_float(v, 3)

    mark = {True: "yes", False: "NO", None: "(not judged)"}
    unfaithful = a.get("unfaithful") or []
    rows = [(f"{k}/{s}", f"{s}: {k}",
             [val(k, x), val(k, y), "(emulation unfaithful)" if s in unfaithful else mark[ok]])
            for k, s, x, y, ok in a["rows"]]
    note = (f"<p><b>Not compared: the emulation of {', '.join(unfaithful)} was not faithful"
            f"</b> (its own run report says why and what to change); its rows are shown, "
            f"not judged, and it takes no part in the ranking.</p>" if unfaithful else "")
    rank = "; ".join(f"{eng}: " + " < ".join("=".join(g) for g in groups)
                     for eng, groups in a["ranking"].items())
    t = a["tolerances"]
    return "\n".join([
        "<h2>Agreement between the engines</h2>",
        f"<p>Verdict: <b>{'the engines agree' if a['all_agree'] else 'the engines DISAGREE'}"
        f"</b> (ranking by worst completion / bound: {rank}; same ranking: "
        f"{'yes' if a['same_ranking'] else 'NO'}).  Tolerances: completion / bound within "
        f"{t['completion_over_bound_rel']:.0%} (relative), bus bandwidth / line rate within "
        f"{t['busbw_over_line_abs']:.2f}, peak queue within a factor "
        f"{t['peak_queue_factor']:g} (or both under {t['queue_floor_bytes'] // 1024} KiB); "
        f"PFC (where the emulation ran it): no drops on the emulator where the simulator has "
        f"none, PAUSE frames within a factor {t['pfc_pause_factor']:g} (or both at most "
        f"{t['pfc_pause_floor']}), total paused time within {t['pfc_paused_rel']:.0%}; an "
        f"open-ended flow's goodput in its second phase over its first within "
        f"{t.get('goodput_ratio_abs', 0.1):.2f}.</p>",
        note, grid_table(["metric", "sim", "mininet", "agree"], rows, cls="compare")])
