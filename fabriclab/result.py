"""Results in Python: :class:`Result` (one run), :class:`Comparison` and :class:`Sweep`
(several runs and one table of them), each readable from memory or from a results
directory, and writable as the same files the CLI writes.

Tables are parsed from the CSV text the CLI writes (:mod:`fabriclab.frames`), so a
DataFrame from a run in memory equals the one read back from its directory.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

from typing import TYPE_CHECKING

import yaml

from . import frames, outdir
from . import spec as S
from .metrics.results import RunResult, summary_text, write_files

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_OUTPUTS = {"plots", "report.html", outdir.MANIFEST, outdir.STAGING_MARK}


class _Frames(Mapping):
    """name -> DataFrame, each parsed on first use (``link_util`` for
    ``timeseries/link_util.csv``)."""

    def __init__(self, names: list[str], read):
        self._names = {Path(n).stem: n for n in sorted(names)}
        self._read = read
        self._cache: dict[str, pd.DataFrame] = {}

    def __getitem__(self, key: str) -> pd.DataFrame:
        if key not in self._cache:
            name = self._names[key]
            self._cache[key] = frames.frame(name, self._read(name))
        return self._cache[key]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<timeseries: {', '.join(self._names)}>"


class _Table:
    """A results CSV as a DataFrame attribute of a :class:`Result`, parsed on first use."""

    def __init__(self, name: str):
        self.name = name

    def __set_name__(self, owner, attr: str) -> None:
        self.attr = attr

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        df = obj.__dict__[self.attr] = obj.table(self.name)
        return df


class Result:
    """One run: ``summary`` (dict, as summary.json), ``flows``, ``ports``, ``hosts``,
    ``collectives`` (DataFrames), ``timeseries`` (name -> DataFrame, ``time_ns`` first),
    ``spec`` (the resolved spec), ``path`` (its directory; None until saved)."""

    def __init__(self, read, series: list[str], path: Path | None = None,
                 run: RunResult | None = None):
        self._read = read
        self._series = series
        self._run = run
        self.path = Path(path) if path is not None else None

    @classmethod
    def from_run(cls, run: RunResult) -> Result:
        """A result held in memory (what an engine returned)."""
        def read(name: str) -> str:
            if name == "summary.json":
                return summary_text(run.summary)
            if name == "spec.yaml":
                return run.spec_yaml
            return run.csv_text(name)
        return cls(read, [n for n in run.tables if n.startswith("timeseries/")], run=run)

    @classmethod
    def load(cls, path) -> Result | Comparison | Sweep:
        """The results in directory ``path``: a run gives a :class:`Result`, a comparison a
        :class:`Comparison`, a sweep a :class:`Sweep`."""
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such results directory")
        found = outdir.inspect(d)
        if found.kind == "compare":
            return Comparison.load(d)
        if found.kind == "sweep":
            return Sweep.load(d)
        if not (d / "summary.json").is_file():
            below = outdir.results_below(d)
            hint = f"; it holds {outdir.named(below)}" if below else ""
            raise ValueError(f"{d} is not a fabriclab results directory{hint}")
        series = sorted(f"timeseries/{p.name}" for p in (d / "timeseries").glob("*.csv"))
        return cls(lambda name: (d / name).read_text(), series, d)

    # ----------------------------------------------------------------- contents
    @cached_property
    def summary(self) -> dict:
        return json.loads(self._read("summary.json"))

    @cached_property
    def spec_yaml(self) -> str:
        return self._read("spec.yaml")

    @cached_property
    def spec(self) -> S.Spec:
        return S.load_data(yaml.safe_load(self.spec_yaml), source=f"{self.path or 'result'} "
                                                                   f"spec.yaml")

    def table(self, name: str) -> pd.DataFrame:
        """A results CSV (``flows.csv``, ``timeseries/queue_bytes.csv``) as a DataFrame."""
        return frames.frame(name, self._read(name))

    flows = _Table("flows.csv")
    collectives = _Table("collectives.csv")
    ports = _Table("ports.csv")
    hosts = _Table("hosts.csv")

    @cached_property
    def timeseries(self) -> Mapping[str, pd.DataFrame]:
        return _Frames(self._series, self._read)

    def __repr__(self) -> str:
        s = self.summary
        return (f"<Result {s.get('name')} {s.get('scheme')} ({s.get('engine')}): "
                f"{s.get('flows_completed')}/{s.get('flows_total')} flows"
                f"{'' if self.path is None else f', in {self.path}'}>")

    # ----------------------------------------------------------------- writing
    def save(self, path, force: bool = False, report: bool = True) -> Path:
        """Write this result to directory ``path`` as ``fabriclab run`` does (results, and
        with ``report`` plots and report.html).  An earlier fabriclab result there is
        replaced only with ``force``; a directory holding anything else is refused
        (:class:`fabriclab.outdir.OutDirError`)."""
        path = Path(path)
        outdir.check_target(path, force)
        with outdir.staged(path) as tmp:
            self.write_into(tmp, report)
        self.path = path
        return path

    def write_into(self, d: Path, report: bool) -> Path:
        """Write into ``d``, a directory fabriclab just made (a staging directory or a run
        subdirectory of one), with its manifest."""
        d.mkdir(parents=True, exist_ok=True)
        if self._run is not None:
            write_files(self._run, d)
        else:
            shutil.copytree(self.path, d, dirs_exist_ok=True,
                            ignore=lambda src, names: [n for n in names if Path(src) == self.path
                                                       and n in REPORT_OUTPUTS])
        if report:
            from .report import make_report
            make_report(d)
        outdir.write_manifest(d, "run")
        return d


class _Runs:
    """Several runs written side by side (subdirectories ``names``) and one table of them."""

    kind = ""

    def __init__(self, names: list[str], runs: list[Result], path: Path | None = None,
                 meta: dict | None = None):
        self.names = list(names)
        self.runs = list(runs)
        self.path = Path(path) if path is not None else None
        self.meta = dict(meta or {})
        self.meta["runs"] = self.names

    def __getitem__(self, key) -> Result:
        return self.runs[key if isinstance(key, int) else self.names.index(key)]

    def __iter__(self):
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __repr__(self) -> str:
        where = "" if self.path is None else f", in {self.path}"
        return f"<{type(self).__name__} of {len(self.runs)} runs: {', '.join(self.names)}{where}>"

    def _first(self) -> dict[str, list]:
        return {}

    def summary_text(self) -> str:
        if self.path is not None and (self.path / "summary.csv").is_file():
            return (self.path / "summary.csv").read_text()
        return frames.summary_table_text(self.names, [r.summary for r in self.runs],
                                         self._first())

    @cached_property
    def summary(self) -> pd.DataFrame:
        """One row per run: run, scheme, engine, (a sweep's parameter), the headline numbers,
        each collective's completion, bound, completion / bound and bus bandwidth, each
        open-ended flow's goodput per phase (summary.csv in the directory)."""
        return frames.summary_frame(self.summary_text(),
                                    {k: frames.value_dtype(v) for k, v in self._first().items()})

    @classmethod
    def load(cls, path):
        d = Path(path)
        found = outdir.inspect(d)
        if found.kind != cls.kind:
            raise ValueError(f"{d} is not a fabriclab {outdir.KIND_NAMES[cls.kind]} "
                             f"(it is {found.kind or 'not a fabriclab result'})")
        meta = {k: v for k, v in found.manifest.items()
                if k not in ("files", "kind", "fabriclab_version")}
        if found.legacy:
            meta.update(_legacy_meta(found))
        return cls(found.runs, [Result.load(d / n) for n in found.runs], d, meta)

    def save(self, path, force: bool = False, report: bool = True) -> Path:
        """Write every run and the page, as the CLI does; see :meth:`Result.save`."""
        path = Path(path)
        outdir.check_target(path, force)
        with outdir.staged(path) as tmp:
            for name, r in zip(self.names, self.runs):
                r.write_into(tmp / name, report)
            self.finish(tmp, report)
        self.path = path
        return path

    def finish(self, d: Path, report: bool) -> None:
        """Write the table, the page (with ``report``) and the manifest into ``d``, whose run
        subdirectories are written."""
        (d / "summary.csv").write_text(frames.summary_table_text(
            self.names, [r.summary for r in self.runs], self._first()))
        self.make_page(d, report)
        outdir.write_manifest(d, self.kind, **self.meta)

    def make_page(self, d: Path, report: bool = True) -> Path | None:
        raise NotImplementedError


class Comparison(_Runs):
    """Several schemes (and engines) on one spec: ``runs`` (Results), ``names`` (their
    subdirectories), ``summary`` (DataFrame, one row per run), ``agreement`` (engines)."""

    kind = "compare"

    @property
    def agreement(self) -> dict | None:
        """``compare(..., engines=["sim", "mininet"])``: agreement.json, once written."""
        p = self.path / "agreement.json" if self.path is not None else None
        return json.loads(p.read_text()) if p is not None and p.is_file() else None

    def make_page(self, d: Path, report: bool = True) -> Path | None:
        from .report import make_comparison
        paths = [d / n for n in self.names]
        sections = []
        engines = self.meta.get("engines") or []
        if len(engines) > 1:
            from .atomic import write_json_atomic
            from .report.agreement import agreement_section, load_agreement
            keys = [tuple(k) for k in self.meta["keys"]]
            a = load_agreement(dict(zip(keys, paths)), self.meta["line_gbps"])
            write_json_atomic(d / "agreement.json", {
                "rows": [dict(zip(("metric", "scheme", "sim", "mininet", "agree"), r))
                         for r in a["rows"]], **{k: v for k, v in a.items() if k != "rows"}},
                indent=1)
            sections.append(agreement_section(a))
        if not report:
            return None
        return make_comparison(paths, d, title=self.meta.get("title"), sections=sections or None)


class Sweep(_Runs):
    """One spec for several values of one field: ``param``, ``values``, ``runs``, and
    ``summary`` (DataFrame, one row per value, the value in column ``param``)."""

    kind = "sweep"

    @property
    def param(self) -> str:
        return self.meta["param"]

    @property
    def values(self) -> list:
        return list(self.meta["values"])

    def _first(self) -> dict[str, list]:
        return {self.param: self.values}

    def make_page(self, d: Path, report: bool = True) -> Path | None:
        if not report:
            return None
        from .report import make_sweep_page
        return make_sweep_page(self.param, self.values, [d / n for n in self.names], d)


def _legacy_meta(found: outdir.Found) -> dict:
    """What a comparison or sweep from before manifests implies: a sweep's parameter (its
    page's title) and values (each run's spec)."""
    if found.kind != "sweep":
        return {}
    html = (found.path / "index.html").read_text(errors="replace")
    m = re.search(r"<title>Sweep of (.*?)</title>", html)
    param = m.group(1) if m else "value"
    values = []
    for n in found.runs:
        node = yaml.safe_load((found.path / n / "spec.yaml").read_text())
        for part in param.split("."):
            node = node[int(part)] if isinstance(node, list) else (node or {}).get(part)
        values.append(node)
    return {"param": param, "values": values}
