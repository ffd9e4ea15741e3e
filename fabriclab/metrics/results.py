"""An engine-neutral run result and its atomic writer."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__


@dataclass
class RunResult:
    spec_yaml: str
    summary: dict
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)  # logs, captures, ...

    def csv_text(self, name: str) -> str:
        buf = io.StringIO()
        self.write_csv(name, buf)
        return buf.getvalue()

    def write_csv(self, name: str, f) -> None:
        """Table ``name`` as CSV into the text file ``f``, a row at a time."""
        cols, rows = self.tables[name]
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else _fmt(v) for v in r])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip()
        if out.returncode != 0 or not rev:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    return {"fabriclab_version": __version__, "git_revision": git_revision()}


def summary_text(summary: dict) -> str:
    """summary.json as written (the API parses this same text)."""
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"


def write_files(result: RunResult, d: str | Path) -> Path:
    """Write every file of ``result`` into the existing directory ``d``."""
    d = Path(d)
    (d / "timeseries").mkdir(exist_ok=True)
    (d / "spec.yaml").write_text(result.spec_yaml)
    for name in result.tables:
        with open(d / name, "w") as f:
            result.write_csv(name, f)
    for name, content in result.files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content)
    (d / "summary.json").write_text(summary_text(result.summary))
    return d


def write_atomic(result: RunResult, out_dir: str | Path) -> Path:
    """Write every file into a hidden sibling directory, then swap it into place.

    A killed run leaves only ``.<name>.partial-<pid>`` (never a directory that looks whole);
    an existing ``out_dir`` is replaced only once the new one is complete.  Whether
    ``out_dir`` may be replaced is the caller's to check (``fabriclab.outdir``).
    """
    from ..outdir import staged, write_manifest
    out = Path(out_dir)
    with staged(out) as tmp:
        write_files(result, tmp)
        write_manifest(tmp, "run")
    return out
