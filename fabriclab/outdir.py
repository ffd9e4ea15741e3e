"""Output directories: never destroy what fabriclab did not make.

Every directory fabriclab writes (a run, a comparison, a sweep) carries a hidden manifest,
``.fabriclab.json``::

    {"fabriclab_version": "0.1.0", "kind": "run" | "compare" | "sweep",
     "files": ["flows.csv", "plots/fct.png", ...],   # every file fabriclab wrote there
     "runs": ["ecmp_dcqcn", "hpcc"],                 # compare, sweep: run subdirectories
     "param": "gse.container_bytes", "values": [...] # sweep
     ...}

A directory is a fabriclab result when it has a manifest, or when it looks like one written
before manifests existed (a run: ``summary.json`` and a ``spec.yaml`` with ``generated_by``,
holding only names fabriclab writes; a comparison or sweep: ``index.html``, ``plots/`` and
such runs).  Anything else in it is *foreign*, and a directory holding something foreign is
never written into, replaced or removed.

A result is written into a hidden sibling, ``.NAME.partial-PID`` (marked as fabriclab's by a
``.fabriclab-staging`` file), then swapped in: the earlier result (only with ``force``) is
removed after the new one is in place.  A killed run leaves only the hidden directory; the
next run into the same place removes such leftovers of dead processes, and nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

log = logging.getLogger(__name__)

MANIFEST = ".fabriclab.json"
STAGING_MARK = ".fabriclab-staging"
KINDS = ("run", "compare", "sweep")
KIND_NAMES = {"run": "run", "compare": "comparison", "sweep": "sweep"}
# Directories fabriclab makes inside a result, and what a result from before manifests held.
OWN_DIRS = {"plots", "timeseries", "pcap"}
LEGACY_RUN = {"spec.yaml", "summary.json", "flows.csv", "collectives.csv", "ports.csv",
              "hosts.csv", "report.html", "controller.log"}
LEGACY_PAGE = {"index.html", "agreement.json", "summary.csv"}
LEGACY_SUFFIXES = {"timeseries": (".csv",), "plots": (".png", ".svg", ".pdf"),
                   "pcap": (".pcap",)}
_TMP = re.compile(r"^\..+\.tmp-\d+$")  # an atomic write's temporary file (fabriclab.atomic)
SHOWN = 4  # foreign entries named in a message


class OutDirError(ValueError):
    """An output directory fabriclab must not write into (the message names the fix)."""


@dataclass
class Found:
    """What a directory holds: a fabriclab result of ``kind`` (None: not a result), its run
    subdirectories in order, its manifest, and the entries fabriclab did not write."""

    path: Path
    kind: str | None
    runs: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)
    legacy: bool = False

    @property
    def what(self) -> str:
        return f"an earlier fabriclab {KIND_NAMES.get(self.kind, 'result')}"


def read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((Path(d) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("kind") in KINDS else None


def _own_name(name: str) -> bool:
    return name in (MANIFEST, STAGING_MARK) or bool(_TMP.match(name))


def _entries(d: Path, prefix: str = ""):
    """(relative path, is a real directory) of everything below ``d``, depth first."""
    for e in sorted(os.scandir(d), key=lambda e: e.name):
        rel = prefix + e.name
        real_dir = e.is_dir(follow_symlinks=False)
        yield rel, real_dir
        if real_dir:
            yield from _entries(Path(e.path), rel + "/")


def _files(d: Path, skip: set[str] = frozenset()) -> set[str]:
    """The files below ``d`` (relative paths) outside the top-level directories ``skip``."""
    return {rel for rel, is_dir in _entries(d) if not is_dir
            and rel.split("/", 1)[0] not in skip and not _own_name(rel.rsplit("/", 1)[-1])}


def _foreign(d: Path, ok_file, ok_dir, runs: list[str] = ()) -> list[str]:
    """Entries below ``d`` that fabriclab did not write: files failing ``ok_file`` and
    directories failing ``ok_dir`` (relative paths; a directory is named once, with a /).
    The run subdirectories ``runs`` are judged by their own manifests."""
    out: list[str] = []

    def walk(p, prefix: str) -> None:
        for e in sorted(os.scandir(p), key=lambda e: e.name):
            rel = prefix + e.name
            if e.is_symlink():  # fabriclab writes no links
                out.append(rel)
            elif not prefix and e.name in runs and e.is_dir():
                out.extend(f"{rel}/{x}" for x in inspect(Path(e.path)).foreign)
            elif e.is_dir():
                if ok_dir(rel):
                    walk(e.path, rel + "/")
                else:
                    out.append(rel + "/")
            elif not (ok_file(rel) or _own_name(e.name)):
                out.append(rel)

    walk(d, "")
    return out


def _recorded_foreign(d: Path, recorded: set[str], runs: list[str]) -> list[str]:
    parents = {"/".join(f.split("/")[:i]) for f in recorded for i in range(1, f.count("/") + 1)}
    return _foreign(d, lambda rel: rel in recorded,
                    lambda rel: rel in parents or rel in OWN_DIRS, runs)


def _legacy_foreign(d: Path, names: set[str], runs: list[str]) -> list[str]:
    """A result from before manifests: only the names fabriclab writes."""
    def ok_file(rel: str) -> bool:
        top, _, rest = rel.partition("/")
        return rel in names if not rest else "/" not in rest and rest.endswith(
            LEGACY_SUFFIXES.get(top, ()))
    return _foreign(d, ok_file, lambda rel: rel in LEGACY_SUFFIXES, runs)


def _legacy_run(d: Path) -> bool:
    try:
        spec = (d / "spec.yaml").read_text()
    except OSError:
        return False
    return (d / "summary.json").is_file() and re.search(r"^generated_by:", spec, re.M) is not None


def inspect(d: str | Path) -> Found:
    """What directory ``d`` holds (see :class:`Found`)."""
    d = Path(d)
    m = read_manifest(d)
    if m is not None:
        runs = [r for r in m.get("runs") or [] if isinstance(r, str)]
        return Found(d, m["kind"], runs, m, _recorded_foreign(d, set(m.get("files") or []),
                                                               runs))
    if _legacy_run(d):
        return Found(d, "run", foreign=_legacy_foreign(d, LEGACY_RUN, []), legacy=True)
    index = d / "index.html"
    subdirs = [e.name for e in sorted(os.scandir(d), key=lambda e: e.name)
               if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
               and e.name not in LEGACY_SUFFIXES]
    # Only one level down: a comparison's runs are its direct subdirectories.
    runs = [s for s in subdirs if (read_manifest(d / s) or {}).get("kind") == "run"
            or _legacy_run(d / s)]
    if index.is_file() and runs:
        html = index.read_text(errors="replace")
        # The page links the runs in their order; a sweep page's title says so.
        runs.sort(key=lambda r: (html.find(f'"{r}/'), r))
        kind = "sweep" if "<title>Sweep of " in html else "compare"
        return Found(d, kind, runs, foreign=_legacy_foreign(d, LEGACY_PAGE, runs), legacy=True)
    return Found(d, None, foreign=sorted(e.name + ("/" if e.is_dir() else "")
                                         for e in os.scandir(d)))


def results_below(d: str | Path) -> list[str]:
    """Names of the subdirectories of ``d`` that are fabriclab results."""
    d = Path(d)
    return [e.name for e in sorted(os.scandir(d), key=lambda e: e.name)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            and inspect(d / e.name).kind is not None]


def named(entries: list[str]) -> str:
    shown = ", ".join(entries[:SHOWN])
    return shown + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


# --------------------------------------------------------------------------- checks
def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _unwritable(p: Path) -> str | None:
    """Why fabriclab cannot create entries in directory ``p`` (None: it can)."""
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError as e:
        return os.strerror(e.errno)
    if not os.access(p, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def check_target(out: str | Path, force: bool = False) -> Found | None:
    """Refuse an output directory before anything runs (raise :class:`OutDirError`).

    Refused: the current directory or one of its ancestors, a mount point, a symbolic link,
    an existing non-directory, a place fabriclab cannot write in, a directory holding
    anything fabriclab did not write, and an earlier fabriclab result unless ``force``.
    Returns what ``out`` holds (None when it does not exist yet).
    """
    out = Path(out)
    fix = "choose a new or empty directory with --out"
    where = os.path.abspath(out)
    cwd = os.getcwd()
    if any(cwd == w or cwd.startswith(w.rstrip(os.sep) + os.sep)
           for w in (where, os.path.realpath(out))):
        raise OutDirError(f"--out {out}: results cannot go into the current directory or one "
                          f"of its parents (they would replace it); {fix}")
    if out.is_symlink():
        raise OutDirError(f"--out {out} is a symbolic link; give the directory itself, or {fix}")
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out} exists and is not a directory; {fix}")
    if out.is_dir() and os.path.ismount(out):
        raise OutDirError(f"--out {out} is a mount point, which cannot be replaced; "
                          f"{fix} (e.g. below it)")
    anchor = _nearest_existing(Path(where).parent)
    why = _unwritable(anchor) if anchor.is_dir() else f"{anchor} is not a directory"
    if why:
        raise OutDirError(f"--out {out}: cannot write in {anchor} ({why}); choose a writable "
                          f"location with --out")
    if not out.is_dir() or not any(os.scandir(out)):
        return None
    found = inspect(out)
    if found.kind is None:
        raise OutDirError(f"--out {out} holds files fabriclab did not write "
                          f"({named(found.foreign)}); {fix}")
    if found.foreign:
        raise OutDirError(f"--out {out} is {found.what} but holds files fabriclab did not "
                          f"write ({named(found.foreign)}), which replacing it would delete; "
                          f"move them out, or {fix}")
    if not force:
        raise OutDirError(f"--out {out} holds {found.what}; replace it with --force "
                          f"(force=True in Python), or {fix}")
    return found


def check_result(d: str | Path) -> Found:
    """A directory ``fabriclab report`` may rewrite: a fabriclab result, nothing foreign in
    it, writable.  Raise :class:`OutDirError` otherwise."""
    d = Path(d)
    if not d.is_dir():
        raise OutDirError(f"{d}: no such directory; give a results directory, e.g. "
                          f"results/<name>-<scheme>")
    found = inspect(d)
    if found.kind is None:
        below = results_below(d)
        if below:
            raise OutDirError(f"{d} is not a fabriclab result but holds {len(below)}: "
                              f"{named(below)}; give one of them, e.g. "
                              f"fabriclab report {d / below[0]}")
        raise OutDirError(f"{d} is not a fabriclab result (no {MANIFEST}, no summary.json "
                          f"with a generated spec.yaml); give a results directory")
    if found.foreign:
        raise OutDirError(f"{d} is a fabriclab {KIND_NAMES[found.kind]} but holds files "
                          f"fabriclab did not write ({named(found.foreign)}); the report "
                          f"writes into it, so move them out first")
    why = _unwritable(d)
    if why:
        raise OutDirError(f"{d}: cannot write the report in it ({why})")
    return found


# --------------------------------------------------------------------------- manifests
def write_manifest(d: str | Path, kind: str, **meta) -> Path:
    """Record every file now in ``d`` (outside its ``runs``) as written by fabriclab."""
    d = Path(d)
    runs = list(meta.get("runs") or [])
    doc = {"fabriclab_version": __version__, "kind": kind, **meta,
           "files": sorted(_files(d, set(runs)))}
    from .atomic import write_json_atomic
    return write_json_atomic(d / MANIFEST, doc, indent=1)


def refresh_manifest(d: str | Path, added: set[str] = frozenset()) -> Path:
    """Keep ``d``'s manifest true after fabriclab wrote more into it: add ``added`` (files
    fabriclab itself just wrote), drop recorded files that are gone.  A result from before
    manifests gets one (every file in it passed :func:`check_result`)."""
    d = Path(d)
    m = read_manifest(d)
    if m is None:
        found = inspect(d)
        meta = {"runs": found.runs} if found.runs else {}
        return write_manifest(d, found.kind or "run", **meta)
    now = _files(d, set(m.get("runs") or []))
    m["files"] = sorted((set(m.get("files") or []) | set(added)) & now)
    from .atomic import write_json_atomic
    return write_json_atomic(d / MANIFEST, m, indent=1)


@contextmanager
def recording(d: str | Path):
    """Files that appear in ``d`` inside this block (fabriclab's report writing into a
    result) are added to its manifest; files it removed are dropped."""
    d = Path(d)
    skip = set((read_manifest(d) or {}).get("runs") or [])
    before = _files(d, skip)
    yield d
    refresh_manifest(d, _files(d, skip) - before)


# --------------------------------------------------------------------------- staging
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Remove hidden staging directories of ``out`` left by fabriclab processes that died."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.partial-(?:old-)?(\d+)$")
    if not out.parent.is_dir():
        return
    for e in os.scandir(out.parent):
        m = pattern.match(e.name)
        if not m or not e.is_dir(follow_symlinks=False):
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        mark = Path(e.path) / STAGING_MARK
        try:
            ours = json.loads(mark.read_text()).get("pid") == pid
        except (OSError, ValueError, AttributeError):
            ours = False
        if ours:
            log.info("removing %s, left by a fabriclab run that was killed", e.path)
            shutil.rmtree(e.path, ignore_errors=True)


_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                        ctypes.c_char_p, ctypes.c_uint]
        fn = _libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _mark(d: Path) -> None:
    (d / STAGING_MARK).write_text(json.dumps({"pid": os.getpid(), "fabriclab": __version__})
                                  + "\n")


@contextmanager
def staged(out: str | Path):
    """Yield a hidden sibling directory to write a whole result into; on success swap it in
    for ``out`` (an earlier result there is removed once the new one is in place), on an
    error or interrupt remove it.  Checking ``out`` is the caller's (:func:`check_target`).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # ours: this process's own earlier attempt
    try:
        tmp.mkdir()
        _mark(tmp)
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        found = inspect(out) if any(os.scandir(out)) else None
        if found is not None and (found.kind is None or found.foreign):
            # Something foreign appeared while the run was going: keep both, say where.
            (tmp / STAGING_MARK).unlink(missing_ok=True)
            keep = out.parent / f"{out.name}.new-{os.getpid()}"
            os.rename(tmp, keep)
            raise OutDirError(f"{out} gained files fabriclab did not write "
                              f"({named(found.foreign)}) while it ran; it was left as it is "
                              f"and the new results are in {keep}")
        if _exchange(tmp, out):  # tmp now holds the earlier result
            _mark(tmp)
            (out / STAGING_MARK).unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = out.parent / f".{out.name}.partial-old-{os.getpid()}"
        os.rename(out, old)
        _mark(old)
        os.rename(tmp, out)
        (out / STAGING_MARK).unlink(missing_ok=True)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, out)
    (out / STAGING_MARK).unlink(missing_ok=True)
