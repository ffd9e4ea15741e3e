"""The run report (``report.html``) and the comparison page (``index.html``)."""

from __future__ import annotations

import logging
import os
from html import escape
from pathlib import Path

from ..atomic import write_text_atomic
from . import figures, compare_plots, flows, plots
from .data import Run, load_run, num
from .figures import remove_stale
from .html import (fmt_bytes, fmt_float, fmt_gbps, fmt_int, fmt_ratio, fmt_us, grid_table,
                   kv_table, link, page, plot_section, table)

log = logging.getLogger(__name__)

RESULT_FILES = ["spec.yaml", "summary.json", "flows.csv", "collectives.csv", "ports.csv",
                "hosts.csv"]


def _s(run: Run, key: str):
    return run.summary.get(key)


def payload_delivered(run: Run) -> float | None:
    """Application payload delivered: summary "payload_delivered_bytes", or for an older
    results directory the sum of flows.csv's delivered_bytes (the same payload count)."""
    if run.has("payload_delivered_bytes"):
        return run.summary["payload_delivered_bytes"]
    got = [num(f.get("delivered_bytes")) for f in run.flows]
    return sum(g for g in got if g is not None) if any(g is not None for g in got) else None


def headline_rows(run: Run) -> list[tuple[str, str, str]]:
    """(key, label, value) of the headline numbers, shared by both pages."""
    s = run.summary
    rows = [
        ("sim_time_ns", "simulated time", fmt_us(s.get("sim_time_ns"))),
        ("stopped", "stopped", str(s.get("stopped", "?"))),
        ("flows", "flows completed / total",
         f"{fmt_int(s.get('flows_completed'))} / {fmt_int(s.get('flows_total'))}"
         + (f" ({len(s['open_flows'])} open-ended, running until the stop time)"
            if s.get("open_flows") else "")),
        ("slowdown_p50", "FCT slowdown p50", fmt_float(s.get("slowdown_p50"))),
        ("slowdown_p95", "FCT slowdown p95", fmt_float(s.get("slowdown_p95"))),
        ("slowdown_p99", "FCT slowdown p99", fmt_float(s.get("slowdown_p99"))),
        ("fct_p50_ns", "FCT p50", fmt_us(s.get("fct_p50_ns"))),
        ("fct_p99_ns", "FCT p99", fmt_us(s.get("fct_p99_ns"))),
        ("payload_delivered_bytes", "bytes delivered (application payload)",
         fmt_bytes(payload_delivered(run))),
        ("wire_bytes", "wire bytes delivered / sent (headers, INT, control frames included)",
         f"{fmt_bytes(s.get('bytes_delivered'))} / {fmt_bytes(s.get('bytes_sent'))}"),
        ("drops", "packets dropped", fmt_int(s.get("drops"))),
        ("bytes_dropped", "bytes dropped", fmt_bytes(s.get("bytes_dropped"))),
        ("ecn_marks", "ECN marks", fmt_int(s.get("ecn_marks"))),
        ("cnps", "CNPs", fmt_int(s.get("cnps"))),
        ("pfc_pause_frames", "PFC pause frames", fmt_int(s.get("pfc_pause_frames"))),
        ("pfc_paused_ns_total", "PFC paused time (sum over ports)",
         fmt_us(s.get("pfc_paused_ns_total"))),
        ("uplink_load_max_over_mean", "spine uplink load max/mean",
         fmt_float(s.get("uplink_load_max_over_mean"))),
        ("nacks", "NACKs / timeouts",
         f"{fmt_int(s.get('nacks'))} / {fmt_int(s.get('timeouts'))}"),
        ("retransmitted_bytes", "bytes retransmitted", fmt_bytes(s.get("retransmitted_bytes"))),
    ]
    g = s.get("gse") or {}
    rows += [  # what GSE costs (a dash for the other schemes)
        ("gse.grant_latency", "GSE grant latency p50 / p99 (request to grant)",
         f"{fmt_us(g.get('grant_latency_p50_ns'))} / {fmt_us(g.get('grant_latency_p99_ns'))}"
         if g else fmt_us(None)),
        ("gse.reorder_max", "GSE reorder buffer, most held", fmt_bytes(g.get("reorder_max_bytes"))
         if g else fmt_bytes(None)),
        ("gse.reorder_delay", "GSE reorder delay p99 (packets delayed)",
         f"{fmt_us(g.get('reorder_delay_p99_ns'))} ({fmt_int(g.get('reorder_packets_delayed'))})"
         if g else fmt_us(None)),
        ("gse.overhead", "GSE request/grant bytes (share of data)",
         f"{fmt_bytes(g.get('control_bytes'))} ({fmt_float(100 * g['control_overhead'], 3)}%)"
         if g and g.get("control_overhead") is not None else fmt_bytes(None)),
    ]
    return rows


def emulation_rows(s: dict) -> list[tuple[str, str, str]]:
    """What the Mininet engine did differently from the spec, and what happened to it."""
    emu = s.get("emulation") or {}
    fid = emu.get("fidelity") or {}
    checks = fid.get("checks") or {}
    links, agents = checks.get("links") or {}, checks.get("agents") or {}
    rows = [("emu.fidelity", "fidelity", str(fid.get("verdict", "\u2014"))
             + (f" (busy links {links.get('busy_links')}, worst achieved / configured "
                f"{fmt_float(links.get('min_ratio'), 3)}; agents late "
                f"{fmt_float(100 * (agents.get('max_late_fraction') or 0), 1)} % of the run "
                f"at worst; lost inside Open vSwitch "
                f"{(checks.get('open_vswitch') or {}).get('lost_frames')})" if checks else "")),
            ("emu.link_delay", "link delay", str(emu.get("link_delay", "\u2014"))),
            ("emu.controller", "SDN controller", str(emu.get("controller", "\u2014")))]
    fell = (s.get("gse") or {}).get("fell_back_to_egress")
    if fell is not None:
        rows.append(("emu.gse_fallback", "GSE fallback to egress scheduling",
                     ", ".join(f"{h} at {fmt_us(t)}" for h, t in sorted(fell.items()))
                     or "none (GSOS answered all along)"))
    rows += [(f"emu.note{i}", "note", str(n)) for i, n in enumerate(emu.get("notes") or [])]
    return rows


def collective_rows(c: dict) -> list[tuple[str, str, str]]:
    p = f"coll.{c['name']}."
    return [(p + "completion", "completion", fmt_us(c.get("completion_ns"))),
            (p + "bound", "physical bound", fmt_us(c.get("bound_ns"))),
            (p + "over_bound", "completion / bound", fmt_ratio(c.get("completion_over_bound"))),
            (p + "algbw", "algorithm bandwidth", fmt_gbps(c.get("algbw_gbps"))),
            (p + "busbw", "bus bandwidth", fmt_gbps(c.get("busbw_gbps")))]


def _collectives_table(run: Run) -> str:
    colls = run.summary.get("collectives") or []
    if not colls:
        return "<p>No collectives in this workload.</p>"
    header = ["collective", "kind", "hosts", "bytes", "completion", "physical bound",
              "completion / bound", "algorithm bw", "bus bw"]
    rows = []
    for c in colls:
        rows.append("<tr>" + f'<td class="l">{escape(str(c["name"]))}</td>'
                    f'<td class="l">{escape(str(c.get("kind", "")))}</td>'
                    f"<td>{fmt_int(c.get('hosts'))}</td><td>{fmt_bytes(c.get('bytes'))}</td>"
                    + "".join(f'<td data-key="{escape(k)}">{escape(v)}</td>'
                              for k, _, v in collective_rows(c)) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _warnings(run: Run) -> str:
    """Warn when finite flows did not finish or the run stopped for another reason than
    completing its workload or reaching stop.time_us; open-ended flows (bytes: unlimited)
    running until stop.time_us are the experiment's design, not a problem."""
    s = run.summary
    msgs = []
    # finite flows (flows.csv bytes not empty) without an end; older results directories
    # counted the open-ended flows in summary "flows_unfinished" too
    unfinished = (sum(1 for f in run.flows if f.get("bytes") and not f.get("end_ns"))
                  if run.flows else int(s.get("flows_unfinished") or 0))
    stopped = s.get("stopped")
    if stopped not in (None, "completed", "stop.time_us") or (
            stopped == "stop.time_us" and unfinished):
        msgs.append(f"The run stopped before the workload finished ({stopped}).")
    if unfinished:
        msgs.append(f"{unfinished:,} flow(s) did not finish.")
    fid = (s.get("emulation") or {}).get("fidelity") or {}
    if fid.get("verdict") == "unfaithful":
        msgs.append("This emulation was NOT faithful: " + "; ".join(fid["reasons"])
                    + f".  Its results describe this machine's limits, not the fabric.  Fix: "
                    f"{fid['fix']}.")
    return "".join(f'<p class="warn">{escape(m)}</p>' for m in msgs)


def intro(run: Run) -> str:
    """The experiment's question (spec ``question``) and description, as HTML."""
    out = []
    question = run.spec_get("question")
    if question:
        out.append(f'<p class="question"><b>Question:</b> {escape(str(question))}</p>')
    desc = run.spec_get("description")
    if desc:
        out.append(f"<p>{escape(str(desc))}</p>")
    return "".join(out)


def faults_section(run: Run) -> str:
    """The run's faults (summary ``faults``), losses by cause, a PFC deadlock and the
    watchdog's firings, as HTML ("" for a run with none of them)."""
    sm = run.summary
    faults, deadlock, wd = sm.get("faults"), sm.get("deadlock"), sm.get("pfc_watchdog")
    if faults is None and not deadlock and not wd:
        return ""
    out = ["<h2>Faults</h2>"]
    if deadlock:
        out.append('<p class="warn">PFC deadlock: ' + escape(" \u2192 ".join(
            deadlock["links"])) + f" paused each other from {fmt_us(deadlock['paused_since_ns'])}"
            f"; found and stopped at {fmt_us(deadlock['t_ns'])} (ports "
            + escape(", ".join(deadlock["ports"])) + ").</p>")
    if faults:
        rows = []
        for f in faults:
            det = f.get("detected_ns")
            left = f.get("traffic_left_ns")
            rows.append([f"{f['kind']} {f.get('target') or ''}".strip(), fmt_us(f["at_ns"]),
                         fmt_us(det) if det is not None else "\u2014",
                         fmt_us(left) if left is not None else "\u2014",
                         fmt_int(f.get("lost_pkts")), fmt_bytes(f.get("lost_bytes"))])
        out.append(table(["fault", "at", "routed around at", "last frame onto it",
                          "frames lost on it", "bytes lost on it"], rows,
                         keys=[f"fault{f['index']}" for f in faults]))
    reasons = sm.get("drop_reasons") or {}
    if reasons:
        out.append("<p>Frames lost, by cause: " + escape(", ".join(
            f"{k.replace('_', ' ')} {v:,}" for k, v in reasons.items())) + ".</p>")
    if wd:
        out.append(f"<p>The PFC watchdog fired {len(wd):,} times and flushed "
                   f"{sum(w['dropped'] for w in wd):,} frames from paused queues.</p>")
    return "".join(out)


def make_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/plots/*.png`` and ``<run_dir>/report.html``; return the page's path."""
    run = load_run(run_dir)
    plots_dir = run.path / "plots"
    figures.FAULT_MARKS[:] = [(f["at_ns"] / 1000, f"{f['kind']} {f['target'] or ''}".strip())
                              for f in run.summary.get("faults") or []]
    try:
        results = [fn(run, plots_dir) for fn in plots.RUN_PLOTS]
    finally:
        figures.FAULT_MARKS.clear()
    remove_stale(plots_dir, results, plots.PLOT_FILES)
    rows = headline_rows(run)
    body = [_warnings(run), intro(run), flows.open_flows_table(run)]
    body += ['<h2>Summary</h2><div class="tables">',
             kv_table("run", [("scheme", "scheme", run.scheme),
                              ("topology", "topology", run.topology),
                              ("load_balancing", "load balancing",
                               str(_s(run, "load_balancing") or "?")),
                              ("seed", "seed", str(_s(run, "seed")))]
             + ([("dcqcn_variant", "DCQCN variant", str(_s(run, "dcqcn_variant")))]
                if _s(run, "dcqcn_variant") else [])
             + ([("ack_every_pkts", "ACK every", f"{_s(run, 'ack_every_pkts')} packets")]
                if _s(run, "ack_every_pkts") else []) + rows[:3]),
             kv_table("flows", rows[3:9]), kv_table("congestion", rows[9:])]
    if run.summary.get("emulation"):
        body.append(kv_table("emulation", emulation_rows(run.summary)))
    body += ["</div>", faults_section(run),
             "<h2>Collectives</h2>", _collectives_table(run),
             "<h2>Plots</h2>", plot_section(results),
             "<footer>Results: " + " \u00b7 ".join(link(f, f) for f in RESULT_FILES
                                                   if (run.path / f).is_file())
             + " \u00b7 timeseries/*.csv</footer>"]
    title = f"{run.name} \u2014 {run.scheme}"
    sub = (f"{run.topology}; engine {_s(run, 'engine') or '?'}; "
           f"simulated {fmt_us(run.sim_time_ns)} in {fmt_float(_s(run, 'wall_s'), 1)} s wall")
    emu = run.summary.get("emulation")
    if emu:
        sub += (f"; emulated at {fmt_float(emu.get('link_mbps'), 0)} Mb/s per host link "
                f"(time dilation {fmt_float(emu.get('time_dilation'), 0)}: times and rates "
                f"are scaled back to the fabric; {fmt_float(emu.get('emulated_time_s'), 2)} s "
                f"of real time)")
    out = write_text_atomic(run.path / "report.html", page(title, sub, "\n".join(body)))
    log.debug("wrote %s (%d plots, %d skipped)", out, sum(1 for r in results if r.file),
             sum(1 for r in results if not r.file))
    return out


def run_labels(runs: list[Run]) -> list[str]:
    """Column labels: the scheme, with the directory name added when schemes repeat."""
    schemes = [r.scheme for r in runs]
    return [r.scheme if schemes.count(r.scheme) == 1 else f"{r.scheme} ({r.path.name})"
            for r in runs]


def make_comparison(run_dirs: list, out_dir, title: str | None = None,
                    sections: list[str] | None = None) -> Path:
    """Write ``<out_dir>/index.html`` and ``<out_dir>/plots/*.png`` comparing the runs;
    ``sections`` (HTML) go first, e.g. the engines' agreement."""
    if not run_dirs:
        raise ValueError("make_comparison needs at least one run directory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in run_dirs]
    for r in runs:
        if not (r.path / "report.html").is_file():
            log.info("no report for %s yet; making it", r.path)
            make_report(r.path)
    labels = run_labels(runs)
    plots_dir = out / "plots"
    results = [fn(runs, labels, plots_dir) for fn in compare_plots.COMPARE_PLOTS]
    remove_stale(plots_dir, results, compare_plots.COMPARE_FILES)

    header = ["metric"] + [link(Path(os.path.relpath(r.path / "report.html", out)).as_posix(), lab)
                           for r, lab in zip(runs, labels)]
    per_run = [headline_rows(r) for r in runs]
    rows = [("topology", "topology", [r.topology for r in runs])]
    rows += [(k, lab, [pr[i][2] for pr in per_run]) for i, (k, lab, _) in enumerate(per_run[0])]
    names: list[str] = []
    for r in runs:
        names += [c["name"] for c in r.summary.get("collectives") or [] if c["name"] not in names]
    for n in names:
        cs = [next((c for c in r.summary.get("collectives") or [] if c["name"] == n), None)
              for r in runs]
        template = collective_rows(next(c for c in cs if c is not None))
        for j, (k, lab, _) in enumerate(template):
            rows.append((k, f"{n}: {lab}",
                         [collective_rows(c)[j][2] if c else "\u2014" for c in cs]))
    page_title = title or ("Comparison: " + " vs ".join(labels))
    specs = sorted({r.name for r in runs})
    topos = sorted({r.topology for r in runs})
    sub = (f"{len(runs)} runs of {', '.join(specs)}; topology "
           + (topos[0] if len(topos) == 1 else "differs between runs (see the table)"))
    variants = sorted({str(_s(r, "dcqcn_variant")) for r in runs if _s(r, "dcqcn_variant")})
    if variants:
        sub += (f"; DCQCN's rate increase: the {' and the '.join(variants)} variant "
                f"(dcqcn.variant; docs/dcqcn.md)")
    same = len({r.name for r in runs}) == 1  # one experiment: its question opens the page
    body = [intro(runs[0]) if same else "", flows.compare_open_flows(runs, labels)] + list(sections or []) + [
        "<h2>Headline numbers</h2>", grid_table(header, rows, cls="compare"),
        "<h2>Plots</h2>", plot_section(results)]
    page_path = write_text_atomic(out / "index.html", page(page_title, sub, "\n".join(body)))
    log.debug("wrote %s comparing %d runs", page_path, len(runs))
    return page_path
