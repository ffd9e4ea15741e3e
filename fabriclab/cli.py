"""The ``fabriclab`` command line.

    fabriclab run SPEC [--set KEY=VALUE ...] [--reduced] [--out DIR]
    fabriclab compare SPEC [--schemes a,b,...] [--set ...] [--reduced] [--out DIR] [--jobs N]
    fabriclab sweep SPEC --param KEY=V1,V2,... [--scheme S] [--set ...] [--reduced] [--out DIR]
    fabriclab report DIR
    fabriclab validate SPEC [--set ...]
    fabriclab schemes
    fabriclab clean

Exit status: 0 on success, 2 for a bad spec or command line (nothing is written), 3 when
the machine cannot run the Mininet engine (not root, Open vSwitch not running, a missing
tool or kernel feature: the message names the fix), 1 when a run fails otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import __version__
from .emu.state import EmuError
from .schemes import SCHEMES
from .spec import SpecError, load, slug

log = logging.getLogger("fabriclab")


def _engines():
    from .spec import ENGINES
    return ENGINES


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML), e.g. experiments/incast.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set topology.leaves=8 (repeatable)")
    p.add_argument("--reduced", action="store_true",
                   help="apply the spec's `reduced` overrides (the small version CI runs)")
    p.add_argument("--engine", choices=_engines(), default=None,
                   help="engine (default: the spec's `engine`, normally sim)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fabriclab", description=(
        "Network fabric testbed for AI training clusters: ECMP+PFC+DCQCN and other schemes "
        "on a packet-level simulator."))
    ap.add_argument("--version", action="version", version=f"fabriclab {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one spec, write results, plots and report.html")
    _spec_args(p)
    p.add_argument("--out", help="results directory (default results/<name>-<scheme>)")
    p.add_argument("--scheme", help="run this scheme instead of the spec's `scheme`")
    p.add_argument("--no-report", action="store_true", help="skip plots and report.html")
    p.add_argument("--pcap", action="append", default=[], metavar="HOST",
                   help="Mininet engine: capture HOST's traffic into pcap/HOST.pcap "
                        "(repeatable; same as emu.pcap_hosts)")

    p = sub.add_parser("compare", help="run several schemes on one spec; one side-by-side page")
    _spec_args(p)
    p.add_argument("--schemes", help="comma-separated schemes (default: the spec's `compare` "
                                     "list, else every scheme)")
    p.add_argument("--out", help="output directory (default results/<name>-compare)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs in parallel (default: one per CPU, at most one per scheme)")
    p.add_argument("--engines", help="comma-separated engines, e.g. sim,mininet: every scheme "
                                     "on each, with an agreement table (mininet needs root)")

    p = sub.add_parser("sweep", help="run one spec for several values of one field; one "
                                     "page plotting the results against it")
    _spec_args(p)
    p.add_argument("--param", required=True, metavar="KEY=V1,V2,...",
                   help="the field and its values, e.g. gse.container_bytes=16384,65536")
    p.add_argument("--scheme", help="run this scheme instead of the spec's `scheme`")
    p.add_argument("--out", help="output directory (default results/<name>-sweep-<key>)")
    p.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: CPUs)")

    p = sub.add_parser("report", help="(re)make plots and report.html for a results directory")
    p.add_argument("dir", help="a run directory, or a compare directory")

    p = sub.add_parser("validate", help="check a spec and print it fully resolved")
    _spec_args(p)

    sub.add_parser("schemes", help="list the schemes")
    sub.add_parser("clean", help="remove what a crashed Mininet run left behind (only "
                                 "fabriclab's own bridges, interfaces and processes)")
    return ap


def _load(args, scheme: str | None = None):
    overrides = list(args.overrides)
    if scheme:
        overrides.append(f"scheme={scheme}")
    if getattr(args, "engine", None):
        overrides.append(f"engine={args.engine}")
    return load(args.spec, overrides, reduced=args.reduced)


def _run_one(spec, out_dir: Path, progress: bool | None, report: bool) -> Path:
    from .metrics.results import write_atomic
    if spec.engine == "mininet":
        from .emu.runner import emulate
        result = emulate(spec, progress=progress)
    else:
        from .sim.runner import simulate
        result = simulate(spec, progress=progress)
    path = write_atomic(result, out_dir)
    if report:
        from .report import make_report
        make_report(path)
    return path


def _headline(path: Path) -> str:
    import json
    s = json.loads((path / "summary.json").read_text())
    what = "emulated" if s.get("engine") == "mininet" else "simulated"
    parts = [f"{s['scheme']} ({s.get('engine', 'sim')}): {what} {s['sim_time_ns'] / 1000:,.1f} us "
             f"in {s['wall_s']:.1f} s",
             f"flows {s['flows_completed']}/{s['flows_total']}", f"drops {s['drops']}",
             f"PFC pauses {s['pfc_pause_frames']}"]
    for c in s["collectives"]:
        if c["completion_ns"] is not None:
            parts.append(f"{c['name']} {c['completion_ns'] / 1000:,.1f} us "
                         f"({c['completion_over_bound']:.2f}x bound)")
    if s.get("slowdown_p99") is not None:
        parts.append(f"slowdown p50/p99 {s['slowdown_p50']:.2f}/{s['slowdown_p99']:.2f}")
    return ", ".join(parts)


def cmd_run(args) -> int:
    if args.pcap:
        args.overrides.append(f"emu.pcap_hosts=[{', '.join(args.pcap)}]")
    spec = _load(args, args.scheme)
    tag = f"{spec.name}-{spec.scheme}" + ("-mininet" if spec.engine == "mininet" else "")
    out = Path(args.out or Path("results") / slug(tag))
    path = _run_one(spec, out, None if not args.quiet else False, not args.no_report)
    log.info("%s", _headline(path))
    log.info("results in %s%s", path, "" if args.no_report else f" (open {path}/report.html)")
    return 0


def _compare_worker(job):
    spec, out, report = job
    logging.basicConfig(level=logging.WARNING)
    return _run_one(spec, out, False, report)


def cmd_compare(args) -> int:
    base = _load(args)
    if args.schemes:
        schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    else:
        schemes = list(base.compare) or list(SCHEMES)
    bad = [s for s in schemes if s not in SCHEMES]
    if bad:
        raise SpecError([f"--schemes: unknown scheme(s) {', '.join(bad)}; allowed: "
                         f"{', '.join(SCHEMES)}"], "command line")
    if args.engines:
        return _compare_engines(args, base, schemes)
    specs = [_load(args, s) for s in schemes]  # validate every variant before running any
    out = Path(args.out or Path("results") / slug(f"{base.name}-compare"))
    paths = _run_all(args, [(sp, out / sp.scheme, True) for sp in specs])
    from .report import make_comparison
    page = make_comparison(paths, out, title=f"{base.name}: {', '.join(schemes)}")
    log.info("comparison page: %s", page)
    return 0


def _run_all(args, work, headlines: bool = True) -> list[Path]:
    """Run (spec, out, report) jobs: simulations in parallel, emulations one at a time."""
    paths: dict[int, Path] = {}
    sims = [(i, w) for i, w in enumerate(work) if w[0].engine == "sim"]
    emus = [(i, w) for i, w in enumerate(work) if w[0].engine != "sim"]
    if emus:  # a machine that cannot emulate is refused before any run is written
        from .emu import preflight
        specs = [sp for _, (sp, _, _) in emus]
        preflight.check(specs[0], need_iperf3=any(w.kind == "tcp_iperf3"
                                                  for sp in specs for w in sp.workload),
                        need_tcpdump=any(sp.emu.pcap_hosts for sp in specs))
    jobs = args.jobs or min(len(sims), os.cpu_count() or 1)
    log.info("running %d simulation(s) (%d in parallel) and %d emulation(s)", len(sims),
             max(1, jobs), len(emus))
    if jobs > 1 and len(sims) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            for (i, _), p in zip(sims, ex.map(_compare_worker, [w for _, w in sims])):
                paths[i] = p
    else:
        for i, (sp, o, r) in sims:
            paths[i] = _run_one(sp, o, None if not args.quiet else False, r)
    for i, (sp, o, r) in emus:
        paths[i] = _run_one(sp, o, None if not args.quiet else False, r)
    out = [paths[i] for i in range(len(work))]
    for p in out if headlines else ():
        log.info("  %s", _headline(p))
    return out


def _compare_engines(args, base, schemes) -> int:
    """Every scheme on every engine, the simulator aligned to what the emulation
    represents (its packet sizes and frame overheads), and an agreement table."""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in _engines()]
    if bad:
        raise SpecError([f"--engines: unknown engine(s) {', '.join(bad)}; allowed: "
                         f"{', '.join(_engines())}"], "command line")
    from .metrics.agreement import align_sim_to_emulation
    work, keys = [], []
    for eng in engines:  # validate every variant before running any
        for scheme in schemes:
            args.engine = eng
            sp = _load(args, scheme)
            if eng == "sim" and "mininet" in engines:
                extra = align_sim_to_emulation(sp)
                saved = list(args.overrides)
                args.overrides = saved + extra
                sp = _load(args, scheme)
                args.overrides = saved
            work.append((sp, None, True))
            keys.append((scheme, eng))
    out = Path(args.out or Path("results") / slug(f"{base.name}-engines"))
    work = [(sp, out / f"{k[0]}-{k[1]}", r) for (sp, _, r), k in zip(work, keys)]
    paths = _run_all(args, work)
    from .report import make_comparison
    section = None
    if len(engines) > 1:
        from .atomic import write_json_atomic
        from .report.agreement import agreement_section, load_agreement
        a = load_agreement(dict(zip(keys, paths)), base.topology.host_link_gbps)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "agreement.json", {
            "rows": [dict(zip(("metric", "scheme", "sim", "mininet", "agree"), r))
                     for r in a["rows"]], **{k: v for k, v in a.items() if k != "rows"}},
            indent=1)
        section = agreement_section(a)
        bad = [f"{s}: {k}" for k, s, _, _, ok in a["rows"] if ok is False]
        log.info("engines %s%s; ranking %s", "agree" if a["all_agree"] else "DISAGREE",
                 f" on {', '.join(bad)}" if bad else "",
                 "the same" if a["same_ranking"] else "DIFFERENT")
    page = make_comparison(paths, out, title=f"{base.name}: {', '.join(schemes)} on "
                                             f"{', '.join(engines)}",
                           sections=[section] if section else None)
    log.info("comparison page: %s", page)
    return 0


def cmd_sweep(args) -> int:
    import yaml
    if "=" not in args.param:
        raise SpecError([f"--param {args.param!r}: expected KEY=V1,V2,..."], "command line")
    key, raw = args.param.split("=", 1)
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not values:
        raise SpecError([f"--param {args.param!r}: no values"], "command line")
    base_overrides = list(args.overrides)
    specs = []
    for v in values:  # validate every point before running any
        args.overrides = base_overrides + [f"{key}={v}"]
        specs.append(_load(args, args.scheme))
    base = specs[0]
    out = Path(args.out or Path("results") / slug(f"{base.name}-{base.scheme}-sweep-{key}"))
    work = [(sp, out / slug(f"{key}={v}"), True) for sp, v in zip(specs, values)]
    log.info("sweeping %s over %s on %s", key, values, args.spec)
    paths = _run_all(args, work, headlines=False)
    for v, p in zip(values, paths):
        log.info("  %s=%s: %s", key, v, _headline(p))
    from .report import make_sweep_page
    log.info("sweep page: %s", make_sweep_page(key, values, paths, out))
    return 0


def cmd_report(args) -> int:
    from .report import make_comparison, make_report
    d = Path(args.dir)
    if (d / "summary.json").is_file():
        log.info("report: %s", make_report(d))
        return 0
    runs = sorted(p.parent for p in d.glob("*/summary.json"))
    if not runs:
        raise SpecError([f"{d} holds no results (no summary.json in it or its subdirectories)"],
                        "command line")
    for r in runs:
        make_report(r)
    log.info("comparison page: %s", make_comparison(runs, d))
    return 0


def cmd_validate(args) -> int:
    from .spec import resolved_yaml
    spec = _load(args)
    sys.stdout.write(resolved_yaml(spec))
    return 0


def cmd_clean(args) -> int:
    from .emu.state import clean
    if os.geteuid() != 0:
        raise EmuError("fabriclab clean needs root (it removes OVS bridges and interfaces)")
    removed = clean()
    for line in removed:
        log.info("removed %s", line)
    if not removed:
        log.info("nothing to clean: no fabriclab bridges, interfaces or processes are left")
    return 0


def cmd_schemes(args) -> int:
    for s in SCHEMES.values():
        sys.stdout.write(f"{s.name:12s} {s.description}\n")
    return 0


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s" if args.verbose else "%(message)s",
                        stream=sys.stderr)
    try:
        return {"run": cmd_run, "compare": cmd_compare, "sweep": cmd_sweep, "report": cmd_report,
                "validate": cmd_validate, "schemes": cmd_schemes,
                "clean": cmd_clean}[args.cmd](args)
    except SpecError as e:
        sys.stderr.write(f"fabriclab: {e}\n")
        return 2
    except EmuError as e:
        sys.stderr.write(f"fabriclab: {e}\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("fabriclab: interrupted; no results were written for the run in "
                         "progress\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
