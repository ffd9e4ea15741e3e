"""The ``fabriclab`` command line: parsing, messages and exit codes over :mod:`fabriclab.api`.

    fabriclab run SPEC [--set KEY=VALUE ...] [--reduced] [--engine E] [--out DIR] [--force]
    fabriclab compare SPEC [--schemes a,b,...] [--engines sim,mininet] [--out DIR] [--jobs N]
                      [--cluster tcp://HOST:PORT]
    fabriclab sweep SPEC --param KEY=V1,V2,... [--scheme S] [--out DIR] [--force]
                    [--cluster tcp://HOST:PORT]
    fabriclab report DIR
    fabriclab validate SPEC [--set ...]
    fabriclab schemes
    fabriclab clean

Exit status: 0 on success, 2 for a bad spec, command line or output directory (nothing is
written, nothing is run), 3 when the machine cannot run the Mininet engine (not root, Open
vSwitch not running, a missing tool or kernel feature: the message names the fix; or a
Dask cluster that cannot be reached), 1 when a run fails otherwise, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .metrics import fidelity
from .cluster import ClusterError
from .emu.state import EmuError
from .outdir import OutDirError
from .native import NativeError
from .schemes import SCHEMES
from .spec import ENGINES, SpecError, slug

log = logging.getLogger("fabriclab")

ENGINES_HELP = """\
engines:
  sim       the packet-level discrete-event simulator (the default): no root, deterministic
            for a seed, any scale
  mininet   real packets in a Mininet emulation (Open vSwitch, an os-ken controller, eBPF
            switch ports, one RoCE NIC agent per host), slowed down; needs root (see
            `--engine mininet` and docs/mininet.md)
Both run the same congestion-control code and write the same results.
"""

SET_HELP = ("override a spec field, e.g. --set topology.leaves=8, --set workload.0.bytes=2000000, "
            "--set topology.kind=fat_tree --set topology.k=4 (the old kind's fields are "
            "dropped), --set 'topology={kind: fat_tree, k: 4}' (repeatable)")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML), e.g. experiments/incast.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=SET_HELP)
    p.add_argument("--reduced", action="store_true",
                   help="apply the spec's `reduced` overrides (the small version CI runs)")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="sim (packet-level simulator) or mininet (real packets, as root); "
                        "default: the spec's `engine`, normally sim")


def _out_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", help=f"output directory (default {default}); it must be new, "
                                 f"empty, or an earlier fabriclab result (with --force)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier fabriclab result in --out (never anything else)")
    p.add_argument("--no-report", action="store_true", help="skip plots and pages")


def _parser(sub, name: str, help: str):
    return sub.add_parser(name, help=help, description=help, epilog=ENGINES_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fabriclab", epilog=ENGINES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Network fabric testbed for AI training clusters: ECMP+PFC+DCQCN, HPCC,\n"
                    "GSE and plain UDP on leaf-spine and fat-tree fabrics, run on a packet-level\n"
                    "simulator or on real packets in Mininet.")
    ap.add_argument("--version", action="version", version=f"fabriclab {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = _parser(sub, "run", "run one spec, write results, plots and report.html")
    _spec_args(p)
    _out_args(p, "results/<name>-<scheme>")
    p.add_argument("--scheme", help="run this scheme instead of the spec's `scheme`")
    p.add_argument("--pcap", action="append", default=[], metavar="HOST",
                   help="Mininet engine: capture HOST's traffic into pcap/HOST.pcap "
                        "(repeatable; same as emu.pcap_hosts)")

    p = _parser(sub, "compare", "run several schemes on one spec; one side-by-side page")
    _spec_args(p)
    p.add_argument("--schemes", help="comma-separated schemes (default: the spec's `compare` "
                                     "list, else every scheme)")
    _out_args(p, "results/<name>-compare")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs in parallel (default: one per CPU, at most one per scheme)")
    p.add_argument("--engines", help="comma-separated engines, e.g. sim,mininet: every scheme "
                                     "on each, with an agreement table (mininet needs root)")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the simulations as tasks on the Dask scheduler at ADDRESS "
                        "(tcp://host:port); results identical to a local run")

    p = _parser(sub, "sweep", "run one spec for several values of one field; one page "
                              "plotting the results against it")
    _spec_args(p)
    p.add_argument("--param", required=True, metavar="KEY=V1,V2,...",
                   help="the field and its values, e.g. gse.container_bytes=16384,65536")
    p.add_argument("--scheme", help="run this scheme instead of the spec's `scheme`")
    _out_args(p, "results/<name>-<scheme>-sweep-<key>")
    p.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: CPUs)")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the simulations as tasks on the Dask scheduler at ADDRESS "
                        "(tcp://host:port); results identical to a local run")

    p = _parser(sub, "report", "(re)make plots and pages of a results directory")
    p.add_argument("dir", help="a run, compare or sweep directory written by fabriclab")

    p = _parser(sub, "validate", "check a spec and print it fully resolved")
    _spec_args(p)

    sub.add_parser("schemes", help="list the schemes")
    p = sub.add_parser("build-core", help="compile the simulator's hot modules with Cython "
                       "(same results, faster; scripts/setup.sh does it)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    sub.add_parser("clean", help="remove what a crashed Mininet run left behind (only "
                                 "fabriclab's own bridges, interfaces and processes)")
    return ap


def _progress(args) -> bool | None:
    return False if args.quiet else None


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _gbps(v) -> str:
    return "\u2014" if v is None else f"{v:.1f}"


def open_flow_lines(s: dict) -> list[str]:
    """Each open-ended flow's goodput per phase, e.g. "victim f1 h1->h16: 49.6 Gb/s before
    burst, 18.7 during burst, 47.0 after burst"."""
    out = []
    for f in s.get("open_flows") or []:
        phases = f.get("phases") or []
        said = [f"{_gbps(p.get('goodput_gbps'))}{' Gb/s' if i == 0 else ''} {p.get('label')}"
                for i, p in enumerate(phases)]
        who = " ".join(x for x in (f.get("group"), f"f{f.get('flow_id')}",
                                   f"{f.get('src')}->{f.get('dst')}") if x)
        out.append(f"{who}: {', '.join(said) or 'no goodput measured'}")
    return out


def _flows_done(s: dict) -> str:
    """'flows 7/9', or 'flows 7/7 (+2 open-ended)' when some run until the stop time."""
    n_open = len(s.get("open_flows") or [])
    return (f"flows {s['flows_completed']}/{s['flows_total'] - n_open}"
            + (f" (+{n_open} open-ended)" if n_open else ""))


def headline(s: dict) -> str:
    """The one line a run reports: what ran, flows, drops, PFC, each collective against its
    bound, the slowdown tail and each open-ended flow's goodput per phase."""
    what = "emulated" if s.get("engine") == "mininet" else "simulated"
    parts = [f"{s['scheme']} ({s.get('engine', 'sim')}): {what} {s['sim_time_ns'] / 1000:,.1f} us "
             f"in {s['wall_s']:.1f} s",
             _flows_done(s), f"drops {s['drops']}",
             f"PFC pauses {s['pfc_pause_frames']}"]
    for c in s["collectives"]:
        if c["completion_ns"] is not None:
            parts.append(f"{c['name']} {c['completion_ns'] / 1000:,.1f} us "
                         f"({c['completion_over_bound']:.2f}x bound)")
    if s.get("slowdown_p99") is not None:
        parts.append(f"slowdown p50/p99 {s['slowdown_p50']:.2f}/{s['slowdown_p99']:.2f}")
    fid = fidelity.line(s)
    return ", ".join(parts + open_flow_lines(s) + ([fid] if fid else []))


def warn_if_unfaithful(s: dict) -> None:
    """An emulated run that judged itself unfaithful: say so, and what to change."""
    f = (s.get("emulation") or {}).get("fidelity") or {}
    if f.get("verdict") == "unfaithful":
        log.warning("warning: the emulation of %s [%s] was NOT faithful (%s); its results "
                    "describe this machine's limits, not the fabric.  Fix: %s", s.get("name"),
                    s.get("scheme"), "; ".join(f["reasons"]), f["fix"])


def cmd_run(args) -> int:
    from . import api
    sets = list(args.overrides)
    if args.pcap:
        sets.append(f"emu.pcap_hosts=[{', '.join(args.pcap)}]")
    spec = api.load(args.spec, sets, args.reduced, args.engine, args.scheme)
    tag = f"{spec.name}-{spec.scheme}" + ("-mininet" if spec.engine == "mininet" else "")
    out = Path(args.out or Path("results") / slug(tag))
    r = api.run(spec, out=out, force=args.force, report=not args.no_report,
                progress=_progress(args))
    log.info("%s", headline(r.summary))
    warn_if_unfaithful(r.summary)
    log.info("results in %s%s", out, "" if args.no_report else f" (open {out}/report.html)")
    return 0


def cmd_compare(args) -> int:
    from . import api
    base = api.load(args.spec, args.overrides, args.reduced, args.engine)
    engines = _csv(args.engines) if args.engines else None
    default = f"{base.name}-engines" if engines else f"{base.name}-compare"
    out = Path(args.out or Path("results") / slug(default))
    c = api.compare(args.spec, _csv(args.schemes) if args.schemes else None, engines, out=out,
                    force=args.force, jobs=args.jobs, report=not args.no_report,
                    cluster=args.cluster,
                    progress=_progress(args),
                    set=args.overrides, reduced=args.reduced, engine=args.engine)
    for r in c.runs:
        log.info("  %s", headline(r.summary))
        warn_if_unfaithful(r.summary)
    a = c.agreement
    if a is not None:
        bad = [f"{r['scheme']}: {r['metric']}" for r in a["rows"] if r["agree"] is False]
        log.info("engines %s%s; ranking %s%s", "agree" if a["all_agree"] else "DISAGREE",
                 f" on {', '.join(bad)}" if bad else "",
                 "the same" if a["same_ranking"] else "DIFFERENT",
                 f"; not judged: the emulation of {', '.join(a['unfaithful'])} was NOT "
                 f"faithful" if a.get("unfaithful") else "")
    log.info("comparison page: %s", out / "index.html" if not args.no_report else
             f"none (--no-report); the table is {out / 'summary.csv'}")
    return 0


def _sweep_values(param: str) -> tuple[str, list]:
    import yaml
    if "=" not in param:
        raise SpecError([f"--param {param!r}: expected KEY=V1,V2,..."], "command line")
    key, raw = param.split("=", 1)
    values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
    if not values:
        raise SpecError([f"--param {param!r}: no values"], "command line")
    return key.strip(), values


def cmd_sweep(args) -> int:
    from . import api
    key, values = _sweep_values(args.param)
    base = api.load(args.spec, args.overrides, args.reduced, args.engine, args.scheme)
    out = Path(args.out or Path("results") / slug(f"{base.name}-{base.scheme}-sweep-{key}"))
    log.info("sweeping %s over %s on %s", key, values, args.spec)
    s = api.sweep(args.spec, key, values, args.scheme, out=out, force=args.force,
                  jobs=args.jobs, report=not args.no_report, progress=_progress(args),
                  cluster=args.cluster,
                  set=args.overrides,
                  reduced=args.reduced, engine=args.engine)
    for v, r in zip(values, s.runs):
        log.info("  %s=%s: %s", key, v, headline(r.summary))
        warn_if_unfaithful(r.summary)
    log.info("sweep page: %s", out / "index.html" if not args.no_report else
             f"none (--no-report); the table is {out / 'summary.csv'}")
    return 0


def cmd_report(args) -> int:
    from . import api
    log.info("report: %s", api.remake(args.dir))
    return 0


def cmd_validate(args) -> int:
    from . import api
    from .spec import resolved_yaml
    sys.stdout.write(resolved_yaml(api.load(args.spec, args.overrides, args.reduced,
                                            args.engine)))
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


def cmd_build_core(args) -> int:
    from . import native
    built = native.build(force=args.force, quiet=args.quiet)
    log.info("compiled simulator core: %s; the simulator runs %s (%s)",
             "built" if built else "up to date", native.status(), native.reason())
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
                "validate": cmd_validate, "schemes": cmd_schemes, "build-core": cmd_build_core,
                "clean": cmd_clean}[args.cmd](args)
    except (SpecError, OutDirError) as e:
        sys.stderr.write(f"fabriclab: {e}\n")
        return 2
    except (EmuError, ClusterError, NativeError) as e:
        sys.stderr.write(f"fabriclab: {e}\n")
        return 3
    except KeyboardInterrupt:
        sys.stderr.write("fabriclab: interrupted; no results were written for the run in "
                         "progress\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
