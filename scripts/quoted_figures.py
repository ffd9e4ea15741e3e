#!/usr/bin/env python3
"""Keep the result figures quoted in the texts true to the code.

Every measured number quoted in README.md, docs/, labs/ (with the teacher notes in
labs/teacher/) and experiments/ carries a marker right after it (and its unit), invisible
where the text is rendered:

    Markdown       the incast ends at 7.16×<!--fig:c.dcqcn.incast.xbound--> its bound
    YAML comment   # incast 7.16x [fig:c.dcqcn.incast.xbound]

``docs/figures.yaml`` says how each figure is made: the run (spec, ``--reduced``, ``--set``
overrides, engine), the scheme, where the value is in the results, its format and, for the
emulator, a tolerance.  This script runs every run the texts need once (simulations in
parallel processes, emulations one at a time and only where the machine can emulate), then:

    --check    lists every quoted figure that differs from the current code (file:line,
               quoted, current); exit status 1 if any does.  An emulation whose figures
               fall outside their tolerance runs once more, and both values are printed
    --update   rewrites the differing numbers in place; running it twice changes nothing
               (an emulator figure is rewritten only when it falls outside its tolerance)
    --lint     checks markers against the registry without running anything
    --list     prints each figure with the command that reproduces it

Exit status 2: the texts and the registry disagree (unknown id, unused entry, a marker
outside a YAML comment, a value the results do not have).

    .venv/bin/python scripts/quoted_figures.py --check
    .venv/bin/python scripts/quoted_figures.py --update --engine sim
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "docs" / "figures.yaml"
TEXTS = ["README.md", "docs/*.md", "labs/*.md", "labs/*.yaml", "labs/teacher/*.md",
         "experiments/*.md", "experiments/*.yaml"]

log = logging.getLogger("quoted_figures")

#: The last number before a marker, then its unit (no digits), then the marker.
MARKER = re.compile(
    r"(?<![\w.,])(?P<num>\d[\d,]*(?:\.\d+)?)(?P<unit>[^\d\n<>\[\]|]{0,24}?)[ \t]?"
    r"(?:<!--fig:(?P<md>[\w.\-]+)-->|\[fig:(?P<yml>[\w.\-]+)\])")
ANY_MARKER = re.compile(r"<!--fig:[^>]*-->|\[fig:[^\]]*\]")
ID_FIELDS = ("name", "label", "port", "host", "group", "flow_id")
TABLES = {"flows": "flows.csv", "ports": "ports.csv", "hosts": "hosts.csv"}
REDUCE = ("min", "max", "same")
RUN_KEYS = {"spec", "reduced", "set", "engine", "align", "note"}
FIGURE_KEYS = {"run", "scheme", "value", "format", "scale", "round", "agg", "reduce", "tol",
               "tol_abs", "tol_factor", "note"}


class RegistryError(Exception):
    """The texts and docs/figures.yaml do not fit together."""


@dataclass(frozen=True)
class Quote:
    path: str
    line: int
    start: int  # offsets of the number in the file's text
    end: int
    number: str
    fig: str


# ---------------------------------------------------------------- texts and markers

def text_files(root: Path) -> list[Path]:
    out = []
    for pattern in TEXTS:
        out += sorted(root.glob(pattern))
    return out


def quotes_in(text: str, rel: str) -> tuple[list[Quote], list[str]]:
    """The marked numbers in one text (``rel``: its path from the repository root), and the
    problems with its markers."""
    quotes, problems, ends = [], [], set()
    for m in MARKER.finditer(text):
        ends.add(m.end())
        line = text.count("\n", 0, m.start()) + 1
        fig = m.group("md") or m.group("yml")
        line_start = text.rfind("\n", 0, m.start()) + 1
        if rel.endswith(".yaml") and "#" not in text[line_start:m.start()]:
            problems.append(f"{rel}:{line}: marker {fig} outside a YAML comment (the "
                            "description is shown on report pages): move the number into a "
                            "comment")
        elif rel.endswith(".md") and m.group("yml"):
            problems.append(f"{rel}:{line}: [fig:{fig}] in Markdown: write <!--fig:{fig}-->")
        else:
            quotes.append(Quote(rel, line, m.start("num"), m.end("num"), m.group("num"), fig))
    for m in ANY_MARKER.finditer(text):
        if m.end() not in ends:
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{rel}:{line}: marker {m.group()} has no number right before it")
    return quotes, problems


def find_quotes(root: Path) -> tuple[list[Quote], list[str]]:
    """Every marked number in the texts, and the problems found on the way."""
    quotes, problems = [], []
    for path in text_files(root):
        q, p = quotes_in(path.read_text(), str(path.relative_to(root)))
        quotes += q
        problems += p
    return quotes, problems


# ---------------------------------------------------------------- the registry

def load_registry(path: Path = REGISTRY) -> tuple[dict, dict]:
    doc = yaml.safe_load(path.read_text()) or {}
    runs, figures = doc.get("runs") or {}, doc.get("figures") or {}
    problems = []
    for rid, r in runs.items():
        if not isinstance(r, dict) or "spec" not in r:
            problems.append(f"run {rid}: needs at least 'spec'")
            continue
        problems += [f"run {rid}: unknown key {k!r} (allowed: {', '.join(sorted(RUN_KEYS))})"
                     for k in r if k not in RUN_KEYS]
        if not (ROOT / r["spec"]).is_file():
            problems.append(f"run {rid}: no spec file {r['spec']}")
        if r.get("engine", "sim") not in ("sim", "mininet"):
            problems.append(f"run {rid}: engine must be sim or mininet")
    for fid, f in figures.items():
        if not isinstance(f, dict):
            problems.append(f"figure {fid}: expected a mapping")
            continue
        problems += [f"figure {fid}: unknown key {k!r} (allowed: "
                     f"{', '.join(sorted(FIGURE_KEYS))})" for k in f if k not in FIGURE_KEYS]
        for key in ("run", "scheme", "value", "format"):
            if key not in f:
                problems.append(f"figure {fid}: missing {key!r}")
        for rid in _as_list(f.get("run")):
            if rid not in runs:
                problems.append(f"figure {fid}: unknown run {rid!r}")
        if len(_as_list(f.get("run"))) > 1 and f.get("reduce") not in REDUCE:
            problems.append(f"figure {fid}: several runs need 'reduce:' {' or '.join(REDUCE)} "
                            "(same: every run must give the same value)")
    if problems:
        raise RegistryError("\n".join(problems))
    return runs, figures


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, list) else [x]


def job_key(run: dict, scheme: str) -> tuple:
    return (run["spec"], bool(run.get("reduced")), tuple(run.get("set") or ()),
            run.get("engine", "sim"), bool(run.get("align")), scheme)


def command(run: dict, scheme: str) -> str:
    """The fabriclab command that makes this run (for --list and for messages)."""
    parts = ["fabriclab run", run["spec"]] + (["--reduced"] if run.get("reduced") else [])
    parts += [f"--set '{s}'" for s in run.get("set") or ()] + [f"--scheme {scheme}"]
    if run.get("engine", "sim") != "sim":
        parts.append(f"--engine {run['engine']}")
    if run.get("align"):
        parts.append("(aligned to the emulation, as compare --engines sim,mininet runs it)")
    return " ".join(parts)


# ---------------------------------------------------------------- values from a result

def _peak_queue_bytes(summary: dict, tables: dict):
    """Largest queue any switch port held (as the engines' agreement table counts it)."""
    return max((r["max_queue_bytes"] or 0 for r in tables["ports"] if r["role"] != "nic"),
               default=0)


def _tail_over_ideal(summary: dict, tables: dict):
    """The slowest flow's FCT over the single-flow ideal of the longest path (htsim's
    "tail FCT / ideal" of a permutation: issue 13)."""
    done = [r for r in tables["flows"] if r["fct_ns"] is not None]
    return max(r["fct_ns"] for r in done) / max(r["ideal_fct_ns"] for r in done)


DERIVED = {"peak_queue_bytes": _peak_queue_bytes, "tail_over_ideal": _tail_over_ideal}


def _segments(path: str) -> list[tuple[str, list[str]]]:
    out = []
    for part in re.findall(r"[^.\[\]]+(?:\[[^\]]*\])*|(?:\[[^\]]*\])+", path):
        name = part.split("[", 1)[0]
        out.append((name, re.findall(r"\[([^\]]*)\]", part)))
    return out


def _select(node, sel: str, where: str):
    if isinstance(node, dict):
        if sel in node:
            return node[sel]
        raise KeyError(f"{where} has no key {sel!r} (keys: {', '.join(map(str, node))})")
    if isinstance(node, list):
        for field in ID_FIELDS:
            for item in node:
                if isinstance(item, dict) and str(item.get(field)) == sel:
                    return item
        if sel.lstrip("-").isdigit() and -len(node) <= int(sel) < len(node):
            return node[int(sel)]
        raise KeyError(f"{where} has no element {sel!r}")
    raise KeyError(f"{where} is not a list or mapping")


def resolve(path: str, summary: dict, tables: dict):
    """The value at ``path``: dotted keys into summary.json, ``[x]`` picks the list element
    whose name/label/port/host/group/flow_id is x (or index x); ``flows``, ``ports`` and
    ``hosts`` are the CSV tables as lists of rows; DERIVED names are computed."""
    segs = _segments(path)
    name, sels = segs[0]
    if name in DERIVED:
        node = DERIVED[name](summary, tables)
    elif name in TABLES:
        node = tables[name]
    elif name in summary:
        node = summary[name]
    else:
        raise KeyError(f"summary.json has no {name!r}")
    where = name
    for sel in sels:
        node = _select(node, sel, where)
        where += f"[{sel}]"
    for name, sels in segs[1:]:
        node = _select(node, name, where)
        where += f".{name}"
        for sel in sels:
            node = _select(node, sel, where)
            where += f"[{sel}]"
    return node


def figure_value(fig: dict, summary: dict, tables: dict):
    v = resolve(fig["value"], summary, tables)
    agg = fig.get("agg")
    if agg:
        items = list(v.values()) if isinstance(v, dict) else list(v)
        v = {"min": min, "max": max, "sum": sum, "len": len}[agg](items)
    if v is None:
        raise ValueError(f"{fig['value']} is null in this run")
    return v


def _tables(result) -> dict:
    out = {}
    for key, name in TABLES.items():
        cols, rows = result.tables[name]
        out[key] = [dict(zip(cols, r)) for r in rows]
    return out


def run_job(job: tuple) -> dict:
    """Run one (run, scheme) and return {figure id: value or an 'error: ...' string}."""
    key, figs = job
    spec_path, reduced, sets, engine, align, scheme = key
    from fabriclab.spec import load
    overrides = list(sets) + [f"scheme={scheme}", f"engine={engine}"]
    spec = load(ROOT / spec_path, overrides, reduced=reduced)
    if align:
        from fabriclab.metrics.agreement import align_sim_to_emulation
        spec = load(ROOT / spec_path, overrides + align_sim_to_emulation(spec), reduced=reduced)
    t0 = time.perf_counter()
    if engine == "mininet":
        from fabriclab.emu.runner import emulate
        result = emulate(spec, progress=False)
    else:
        from fabriclab.sim.runner import simulate
        result = simulate(spec, progress=False)
    tables = _tables(result)
    out = {"_wall_s": time.perf_counter() - t0}
    for fid, fig in figs:
        try:
            out[fid] = figure_value(fig, result.summary, tables)
        except (KeyError, ValueError, TypeError) as e:
            out[fid] = f"error: {e}"
    return out


def _sim_worker(job):
    logging.basicConfig(level=logging.WARNING)
    try:
        return run_job(job)
    except Exception as e:  # reported per figure, the other runs go on
        return {fid: f"error: the run failed: {type(e).__name__}: {e}" for fid, _ in job[1]}


# ---------------------------------------------------------------- formatting and comparing

def render(fig: dict, value) -> str:
    v = value * fig.get("scale", 1)
    if "round" in fig:
        v = round(v, fig["round"])
    spec = str(fig["format"])
    if spec.endswith("d"):
        v = int(round(v))
    return format(v, spec)


def within(fig: dict, quoted: str, current) -> bool:
    """Exact (as formatted) unless the figure has a tolerance (emulator figures)."""
    if render(fig, current) == quoted:
        return True
    q = float(quoted.replace(",", ""))
    c = current * fig.get("scale", 1)
    ok = []
    if "tol" in fig:
        ok.append(abs(c - q) <= fig["tol"] * abs(q))
    if "tol_abs" in fig:
        ok.append(abs(c - q) <= fig["tol_abs"])
    if "tol_factor" in fig:
        lo, hi = sorted((max(abs(c), 1e-12), max(abs(q), 1e-12)))
        ok.append(hi / lo <= fig["tol_factor"])
    return any(ok)


def rewrite(text: str, changes: list[tuple[int, int, str]]) -> str:
    """Replace [start, end) spans of ``text`` (non-overlapping) with new strings."""
    for start, end, new in sorted(changes, reverse=True):
        text = text[:start] + new + text[end:]
    return text


# ---------------------------------------------------------------- main

def can_emulate(specs) -> str | None:
    """None if this machine can run the emulations, else why not."""
    if os.geteuid() != 0:
        return "not root"
    try:
        from fabriclab.emu import preflight
        preflight.check(specs[0], need_iperf3=False,
                        need_tcpdump=any(sp.emu.pcap_hosts for sp in specs))
    except Exception as e:  # EmuError, or the emulator's modules missing
        return str(e).splitlines()[0]
    return None


def compute(jobs: dict, n_jobs: int) -> tuple[dict, str | None]:
    """Run the jobs; return {figure id@run id: value or 'error: ...'} and, when the emulator
    figures could not run, why."""
    values: dict = {}
    sims = [(k, figs) for k, figs in jobs.items() if k[3] == "sim"]
    emus = [(k, figs) for k, figs in jobs.items() if k[3] == "mininet"]

    def done(job, res):
        wall = res.pop("_wall_s", None)
        if wall is not None:
            log.info("  %5.1f s  %s", wall, command({"spec": job[0][0], "reduced": job[0][1],
                                                      "set": job[0][2], "engine": job[0][3],
                                                      "align": job[0][4]}, job[0][5]))
        values.update(res)

    t0 = time.perf_counter()
    if sims:
        log.info("running %d simulation(s), %d in parallel", len(sims), n_jobs)
        if n_jobs > 1 and len(sims) > 1:
            with ProcessPoolExecutor(max_workers=n_jobs) as ex:
                for job, res in zip(sims, ex.map(_sim_worker, sims)):
                    done(job, res)
        else:
            for job in sims:
                done(job, _sim_worker(job))
        log.info("simulations: %.0f s", time.perf_counter() - t0)
    skipped = None
    if emus:
        from fabriclab.spec import load
        skipped = can_emulate([load(ROOT / k[0], list(k[2]) + [f"scheme={k[5]}",
                                                                "engine=mininet"],
                                    reduced=k[1]) for k, _ in emus])
        if skipped is None:
            t1 = time.perf_counter()
            log.info("running %d emulation(s), one at a time", len(emus))
            for job in emus:
                try:
                    done(job, run_job(job))
                except Exception as e:  # reported per figure, the other runs go on
                    values.update({fid: f"error: the emulation failed: {e}" for fid, _ in job[1]})
            log.info("emulations: %.0f s", time.perf_counter() - t1)
    return values, skipped


def current_values(figures: dict, chosen: list[str], raw: dict):
    """Each chosen figure's value from the runs: ({id: value}, errors, ids not run)."""
    current, errors, not_run = {}, [], []
    for fid in chosen:
        fig = figures[fid]
        vals = [raw.get(f"{fid}@{rid}") for rid in _as_list(fig["run"])]
        bad = [v for v in vals if isinstance(v, str)]
        if bad:
            errors.append(f"{fid}: {bad[0][len('error: '):]}")
        elif any(v is None for v in vals):
            not_run.append(fid)
        elif fig.get("reduce") == "same" and len({render(fig, v) for v in vals}) > 1:
            errors.append(f"{fid}: reduce: same, but the runs {', '.join(_as_list(fig['run']))} "
                          f"give {', '.join(render(fig, v) for v in vals)}")
        else:
            current[fid] = (min if fig.get("reduce") == "min" else max)(vals)
    return current, errors, not_run


def stale_quotes(quotes: list[Quote], figures: dict, current: dict):
    """The quotes that differ from the current values: messages, and (start, end, new text)
    for :func:`rewrite`."""
    stale, changes = [], []
    for q in quotes:
        if q.fig not in current:
            continue
        new = render(figures[q.fig], current[q.fig])
        if within(figures[q.fig], q.number, current[q.fig]):
            log.debug("%s:%d: %s: quoted %s, the code gives %s (ok)", q.path, q.line, q.fig,
                      q.number, new)
        else:
            stale.append(f"{q.path}:{q.line}: {q.fig}: quoted {q.number}, the code gives {new}")
            changes.append((q.start, q.end, new))
    return stale, changes


def second_runs(quotes: list[Quote], figures: dict, runs: dict, jobs: dict, raw: dict,
                current: dict) -> dict:
    """--check: the emulations whose figures fall outside their tolerance run once more.
    Open vSwitch and 16 agents on two shared cores stall now and then (a stall bunches
    frames into every queue: a peak of 44 KB against the quoted 9 in one check on
    2026-12-02); a figure holds if either run is within its tolerance, and both values
    are printed.  Two runs out of tolerance are reported with both values."""
    def emulated(fid):
        return any(runs[r].get("engine") == "mininet" for r in _as_list(figures[fid]["run"]))
    off = sorted({q.fig for q in quotes if q.fig in current and emulated(q.fig)
                  and not within(figures[q.fig], q.number, current[q.fig])})
    if not off:
        return current
    again = {k: figs for k, figs in jobs.items() if k[3] == "mininet"
             and any(f.split("@")[0] in off for f, _ in figs)}
    log.info("%d emulator figure(s) out of tolerance (%s): their %d emulation(s) once more",
             len(off), ", ".join(off), len(again))
    raw2, _ = compute(again, 1)
    second, _, _ = current_values(figures, off, {**raw, **raw2})
    current = dict(current)
    for fid in off:
        first = render(figures[fid], current[fid])
        if fid not in second:
            log.info("%s: the first run gave %s; the second failed", fid, first)
            continue
        ok = all(within(figures[fid], q.number, second[fid]) for q in quotes if q.fig == fid)
        log.info("%s: the first run gave %s, the second %s: %s", fid, first,
                 render(figures[fid], second[fid]), "within" if ok else "outside as well")
        if ok:
            current[fid] = second[fid]
    return current


def consistency_problems(quotes: list[Quote], figures: dict) -> list[str]:
    quoted = {q.fig for q in quotes}
    return ([f"{q.path}:{q.line}: {q.fig} is not in docs/figures.yaml" for q in quotes
             if q.fig not in figures]
            + [f"docs/figures.yaml: {fid} is quoted nowhere: remove it" for fid in figures
               if fid not in quoted])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report quoted figures that differ")
    mode.add_argument("--update", action="store_true", help="rewrite them in place")
    mode.add_argument("--lint", action="store_true", help="check markers only, run nothing")
    mode.add_argument("--list", action="store_true", help="each figure and its command")
    p.add_argument("--engine", choices=("sim", "mininet", "all"), default="all",
                   help="which figures (default all; emulator figures only where the machine "
                        "can emulate)")
    p.add_argument("--only", metavar="GLOB", help="only figure ids matching GLOB")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="simulations in parallel (default: the number of cores)")
    p.add_argument("--require-emulation", action="store_true",
                   help="fail instead of skipping emulator figures the machine cannot run")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also list the figures that match, with their current values")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stdout)
    t0 = time.perf_counter()
    try:
        runs, figures = load_registry()
    except (RegistryError, yaml.YAMLError) as e:
        log.error("docs/figures.yaml: %s", e)
        return 2
    quotes, problems = find_quotes(ROOT)
    problems += consistency_problems(quotes, figures)
    if problems:
        for line in problems:
            log.error("%s", line)
        return 2
    if args.lint:
        log.info("%d quoted figures, %d registry entries: consistent", len(quotes), len(figures))
        return 0
    if args.list:
        for fid, fig in figures.items():
            where = ", ".join(f"{q.path}:{q.line}" for q in quotes if q.fig == fid)
            log.info("%s  (%s)\n    %s\n    -> %s", fid, where,
                     "\n    ".join(command(runs[r], fig["scheme"]) for r in _as_list(fig["run"])),
                     fig["value"])
        return 0

    def wanted(fid):
        engines = {runs[r].get("engine", "sim") for r in _as_list(figures[fid]["run"])}
        return (args.engine == "all" or args.engine in engines) and \
            (not args.only or fnmatch.fnmatch(fid, args.only))

    chosen = sorted({q.fig for q in quotes if wanted(q.fig)})
    jobs: dict = {}
    for fid in chosen:
        for rid in _as_list(figures[fid]["run"]):
            jobs.setdefault(job_key(runs[rid], figures[fid]["scheme"]), []).append(
                (f"{fid}@{rid}", figures[fid]))
    raw, skipped = compute(jobs, max(1, args.jobs))
    current, errors, not_run = current_values(figures, chosen, raw)
    if args.check and skipped is None:
        current = second_runs(quotes, figures, runs, jobs, raw, current)
    if not_run:
        (log.error if args.require_emulation else log.warning)(
            "%d emulator figure(s) not checked: this machine cannot emulate (%s)",
            len(not_run), skipped)
    for line in errors:
        log.error("%s", line)
    # The texts again, one at a time: someone may have edited them while the runs went on.
    stale, n_checked = [], 0
    for path in text_files(ROOT):
        text = path.read_text()
        quotes, _ = quotes_in(text, str(path.relative_to(ROOT)))
        n_checked += sum(1 for q in quotes if q.fig in current)
        lines, changes = stale_quotes(quotes, figures, current)
        stale += lines
        if args.update and changes:
            from fabriclab.atomic import write_text_atomic
            write_text_atomic(path, rewrite(text, changes))
    for line in stale:
        log.info("%s", line)
    log.info("%d quoted figure(s) checked (%d ids, %d runs) in %.0f s: %d %s",
             n_checked, len(current), len(jobs),
             time.perf_counter() - t0, len(stale), "rewritten" if args.update else "differ")
    if errors or (not_run and args.require_emulation):
        return 2
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
