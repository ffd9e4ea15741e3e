"""The Python API: load a spec, run it, compare schemes, sweep a parameter.

    import fabriclab
    spec = fabriclab.load("experiments/incast.yaml", reduced=True, set={"topology.spines": 4})
    r = fabriclab.run(spec)                    # in memory: r.path is None
    r.flows.groupby("group")["slowdown"].describe()
    r.save("results/incast")                   # the files `fabriclab run` writes
    c = fabriclab.compare("experiments/incast.yaml", reduced=True, out="results/incast-cmp")
    c.summary                                  # one row per scheme (a DataFrame)

The CLI (``fabriclab.cli``) is a thin layer over these functions: they write the same files
and give the same numbers.  Bad input raises :class:`fabriclab.spec.SpecError` (a spec,
a ``set``) or :class:`fabriclab.outdir.OutDirError` (an output directory), before anything
runs.  See docs/api.md.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Union

from tqdm import tqdm

from . import outdir
from . import spec as S
from .result import Comparison, Result, Sweep
from .schemes import SCHEMES

log = logging.getLogger(__name__)

SpecLike = Union[S.Spec, str, os.PathLike]
Sets = Union[Mapping[str, Any], Iterable[str], str, None]

__all__ = ["load", "run", "compare", "sweep", "remake", "Result", "Comparison", "Sweep"]


def _overrides(set: Sets, engine: str | None = None, scheme: str | None = None,
               extra: Iterable = ()) -> list[S.Override]:
    if set is None:
        items = []
    elif isinstance(set, Mapping):
        items = [S.override(k, v) for k, v in set.items()]
    elif isinstance(set, str):
        items = [S.parse_override(set)]
    else:
        items = [S.parse_override(o) if isinstance(o, str) else o for o in set]
    items += [S.parse_override(o) if isinstance(o, str) else o for o in extra]
    if scheme:
        items.append(S.Override("scheme", scheme, f"--scheme {scheme}"))
    if engine:
        items.append(S.Override("engine", engine, f"--engine {engine}"))
    return items


def load(path, set: Sets = None, reduced: bool = False, engine: str | None = None,
         scheme: str | None = None) -> S.Spec:
    """The validated spec in YAML file ``path``.

    ``set``: overrides, a mapping ``{"topology.leaves": 2}`` or ``"key=value"`` strings as
    on the command line (``--set``); ``reduced``: apply the spec's ``reduced`` block first;
    ``engine``, ``scheme``: run on this engine / scheme instead of the spec's.
    """
    return S.load(path, _overrides(set, engine, scheme), reduced)


def _resolve(spec_or_path: SpecLike, set: Sets = None, reduced: bool = False,
             engine: str | None = None, scheme: str | None = None,
             extra: Iterable = ()) -> S.Spec:
    overrides = _overrides(set, engine, scheme, extra)
    if isinstance(spec_or_path, S.Spec):
        if not overrides and not reduced:
            return spec_or_path
        return S.load_data(spec_or_path.model_dump(mode="json"), overrides, reduced,
                           f"spec {spec_or_path.name!r}")
    return S.load(spec_or_path, overrides, reduced)


# --------------------------------------------------------------------------- running
def _engine_run(spec: S.Spec, progress: bool | None):
    if spec.engine == "mininet":
        from .emu.runner import emulate
        return emulate(spec, progress=progress)
    from .sim.runner import simulate
    return simulate(spec, progress=progress)


def _execute(job):
    """Run one spec; write it into ``run_dir`` (returned) or return the engine's result."""
    spec, run_dir, report, progress, in_pool = job
    if in_pool:
        logging.basicConfig(level=logging.WARNING)
    result = _engine_run(spec, progress)
    if run_dir is None:
        return result
    Result.from_run(result).write_into(Path(run_dir), report)
    return run_dir


def _preflight(specs: list[S.Spec]) -> None:
    """A machine that cannot emulate is refused before any run (emu.EmuError)."""
    emus = [sp for sp in specs if sp.engine != "sim"]
    if emus:
        from .emu import preflight
        preflight.check(emus[0], need_iperf3=any(w.kind == "tcp_iperf3"
                                                 for sp in emus for w in sp.workload),
                        need_tcpdump=any(sp.emu.pcap_hosts for sp in emus))


def _execute_all(specs: list[S.Spec], dirs: list, report: bool, jobs: int | None,
                 progress: bool | None, cluster: str | None = None) -> list:
    """Simulations in parallel (``jobs`` processes, default one per CPU, or as tasks on the
    Dask cluster at ``cluster``: :mod:`fabriclab.cluster`), emulations one at a time here;
    returns what :func:`_execute` returned, in order.  One progress bar spans them all."""
    out: dict[int, Any] = {}
    sims = [i for i, sp in enumerate(specs) if sp.engine == "sim"]
    emus = [i for i, sp in enumerate(specs) if sp.engine != "sim"]
    jobs = jobs or min(len(sims), os.cpu_count() or 1)
    if not cluster:
        log.info("running %d simulation(s) (%d in parallel) and %d emulation(s)", len(sims),
                 max(1, jobs), len(emus))
    bar = tqdm(total=len(specs), desc="runs", unit="run", file=sys.stderr, leave=False,
               disable=(None if progress is None else not progress) if len(specs) > 1
               else True)

    def done(i: int, r) -> None:
        out[i] = r
        bar.update(1)

    try:
        if cluster and sims:
            from .cluster import run_all

            def on_result(k: int, result) -> None:  # written here, as a local run writes
                i = sims[k]
                if dirs[i] is None:
                    done(i, result)
                else:
                    Result.from_run(result).write_into(Path(dirs[i]), report)
                    done(i, dirs[i])
            run_all(cluster, [specs[i] for i in sims], on_result)
        elif jobs > 1 and len(sims) > 1:
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                futs = {ex.submit(_execute, (specs[i], dirs[i], report, False, True)): i
                        for i in sims}
                for f in as_completed(futs):
                    done(futs[f], f.result())
        else:
            for i in sims:
                done(i, _execute((specs[i], dirs[i], report, progress, False)))
        for i in emus:
            done(i, _execute((specs[i], dirs[i], report, progress, False)))
    finally:
        bar.close()
    return [out[i] for i in range(len(specs))]


def run(spec_or_path: SpecLike, engine: str | None = None, out=None, force: bool = False,
        report: bool = True, progress: bool | None = False, *, set: Sets = None,
        reduced: bool = False, scheme: str | None = None) -> Result:
    """Run one spec (a :class:`~fabriclab.spec.Spec` or a YAML path) and return its
    :class:`Result`.

    With ``out``, the results are also written there, as ``fabriclab run --out`` writes
    them (with plots and report.html if ``report``); an earlier fabriclab result there is
    replaced only with ``force``, and a directory holding anything else is refused, before
    the run starts.  ``progress``: show the progress display (None: on a terminal).
    """
    spec = _resolve(spec_or_path, set, reduced, engine, scheme)
    if out is not None:
        outdir.check_target(out, force)
    result = Result.from_run(_engine_run(spec, progress))
    if out is not None:
        result.save(out, force=force, report=report)
    return result


def _group(cls, names: list[str], specs: list[S.Spec], meta: dict, out, force: bool,
           jobs: int | None, report: bool, progress: bool | None, cluster: str | None = None):
    if len(set(names)) != len(names):
        raise S.SpecError([f"two runs would share a directory name ({', '.join(names)})"],
                          "command line")
    if out is not None:
        outdir.check_target(out, force)
    _preflight(specs)
    if out is None:
        runs = [Result.from_run(r) for r in _execute_all(specs, [None] * len(specs), report,
                                                          jobs, progress, cluster)]
        return cls(names, runs, None, meta)
    with outdir.staged(out) as tmp:
        paths = _execute_all(specs, [tmp / n for n in names], report, jobs, progress,
                             cluster)
        cls(names, [Result.load(p) for p in paths], tmp, meta).finish(tmp, report)
    return cls.load(out)


def _check_names(kind: str, given: list[str], allowed) -> None:
    bad = [x for x in given if x not in allowed]
    if bad:
        raise S.SpecError([f"--{kind}: unknown {kind[:-1]}(s) {', '.join(bad)}; allowed: "
                           f"{', '.join(allowed)}"], "command line")


def compare(spec_or_path: SpecLike, schemes: Iterable[str] | None = None,
            engines: Iterable[str] | None = None, out=None, force: bool = False,
            jobs: int | None = None, report: bool = True, progress: bool | None = False, *,
            set: Sets = None, reduced: bool = False, engine: str | None = None,
            cluster: str | None = None) -> Comparison:
    """Run several schemes on one spec; return a :class:`Comparison`.

    ``schemes``: default the spec's ``compare`` list, else every scheme.  ``engines``
    (e.g. ``["sim", "mininet"]``): every scheme on each engine, runs named
    ``<scheme>-<engine>``, the simulator aligned to what the emulation represents, and an
    agreement table; ``engine``: without ``engines``, run every scheme on this engine.
    With ``out``, everything is written there as ``fabriclab compare`` writes it (one
    subdirectory per run, index.html, summary.csv); see :func:`run`.
    ``jobs``: simulations in parallel (default one per CPU); ``cluster``: the address of a
    Dask scheduler (``tcp://host:port``) to run the simulations on instead
    (:mod:`fabriclab.cluster`; results identical to a local run).
    """
    base = _resolve(spec_or_path, set, reduced, None if engines else engine)
    schemes = list(schemes or base.compare or SCHEMES)
    _check_names("schemes", schemes, SCHEMES)
    names, specs, keys = [], [], []
    if engines is None:
        title = f"{base.name}: {', '.join(schemes)}"
        for s in schemes:
            names.append(s)
            specs.append(_resolve(spec_or_path, set, reduced, engine, s))
    else:
        engines = list(engines)
        _check_names("engines", engines, S.ENGINES)
        title = f"{base.name}: {', '.join(schemes)} on {', '.join(engines)}"
        from .metrics.agreement import align_sim_to_emulation
        for eng in engines:
            for s in schemes:
                sp = _resolve(spec_or_path, set, reduced, eng, s)
                if eng == "sim" and "mininet" in engines:
                    sp = _resolve(spec_or_path, set, reduced, eng, s,
                                  extra=align_sim_to_emulation(sp))
                names.append(f"{s}-{eng}")
                specs.append(sp)
                keys.append([s, eng])
    meta = {"title": title, "schemes": schemes, "engines": engines, "keys": keys,
            "line_gbps": base.topology.host_link_gbps}
    return _group(Comparison, names, specs, meta, out, force, jobs, report, progress, cluster)


def sweep(spec_or_path: SpecLike, param: str, values: Iterable, scheme: str | None = None,
          out=None, force: bool = False, jobs: int | None = None, report: bool = True,
          progress: bool | None = False, *, set: Sets = None, reduced: bool = False,
          engine: str | None = None, cluster: str | None = None) -> Sweep:
    """Run one spec for each of ``values`` of the field ``param`` (a dotted key such as
    ``gse.container_bytes``); return a :class:`Sweep`.  With ``out``, written as
    ``fabriclab sweep`` writes it (one subdirectory ``<param>-<value>`` per value).
    ``cluster``: run the simulations on the Dask cluster at that address (see
    :func:`compare`)."""
    values = list(values)
    if not values:
        raise S.SpecError([f"--param {param}: no values"], "command line")
    specs = [_resolve(spec_or_path, set, reduced, engine, scheme,
                      extra=[S.override(param, v, "--param")]) for v in values]
    names = [S.slug(f"{param}={v}") for v in values]
    meta = {"param": param, "values": values}
    return _group(Sweep, names, specs, meta, out, force, jobs, report, progress, cluster)


def remake(path) -> Path:
    """(Re)make the plots and page of a results directory; return the page's path.

    A run gets its report.html; a comparison its runs' reports and index.html, from the
    recorded runs; a sweep its page from the recorded parameter and values.  A directory
    that is not a fabriclab result, or holds files fabriclab did not write, is refused.
    """
    d = Path(path)
    found = outdir.check_result(d)
    from .report import make_report
    if found.kind == "run":
        with outdir.recording(d):
            return make_report(d)
    group = Result.load(d)
    for name in group.names:
        with outdir.recording(d / name):
            make_report(d / name)
    with outdir.recording(d):
        page = group.make_page(d)
    if found.legacy:  # written before manifests: give it one, with what its page implies
        outdir.write_manifest(d, group.kind, **group.meta)
    return page
