"""The simulator's compiled core: the same Python modules, compiled with Cython.

The simulator's hot modules (:data:`MODULES`: the event loop, ports and switches, the
host adapter, the NIC's transport, and GSE's GSP, GSOS and their queues, which the
emulator's agents and controller run too) are plain Python.  Beside each ``.py`` is an *augmenting* ``.pxd`` file that
declares, for Cython, the types of their classes' fields and of a few hot methods' locals
(https://cython.readthedocs.io/en/latest/src/tutorial/pure.html#augmenting-pxd).  Cython
compiles the very same ``.py`` source with those declarations into extension modules, whose
objects are C structs: the per-packet, per-hop attribute reads and writes that dominate a
run become C field accesses.  Nothing else changes, so a run gives byte-identical results
either way (``tests/test_native.py`` checks it for every scheme).

``fabriclab build-core`` (run by ``scripts/setup.sh``) compiles them in place.
:func:`install` (called by ``import fabriclab``) makes Python import the compiled modules
only when all of them were built from the current sources: the build records one digest of
every module's ``.py`` and ``.pxd`` (compiled modules read each other's C layout, so a
stale one could not be mixed with a fresh one).  After an edit, until the next build, every
module runs as Python, with one warning.  ``FABRICLAB_PURE_PYTHON=1`` forces Python.

:func:`status` says which ran; the run's ``summary.json`` records it (``sim_core``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PKG = Path(__file__).resolve().parent
#: compiled in this order; a module's .pxd may cimport only from earlier ones
MODULES = ("fabriclab.sim.core", "fabriclab.sim.fabric", "fabriclab.sim.host",
           "fabriclab.nic.transport", "fabriclab.cc_algorithms.gse",
           "fabriclab.cc_algorithms.gsos", "fabriclab.nic.gsp")
MANIFEST = PKG / "native.json"
ENV_PURE = "FABRICLAB_PURE_PYTHON"
#: Cython's directives: annotations are documentation here, never C types; indexing stays
#: checked, so that an index out of range raises as in Python instead of reading memory
DIRECTIVES = {"language_level": 3, "annotation_typing": False}
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

_state: dict = {}


class NativeError(RuntimeError):
    """The compiled core cannot be built (the message names the problem and the fix)."""


def _paths(module: str) -> tuple[Path, Path, Path]:
    """(.py, .pxd, compiled extension) of ``module``."""
    base = PKG.joinpath(*module.split(".")[1:])
    return base.with_suffix(".py"), base.with_suffix(".pxd"), base.parent / (base.name + EXT_SUFFIX)


def digest() -> str:
    """One digest of every compiled module's sources, the directives and the interpreter."""
    h = hashlib.sha256(json.dumps([DIRECTIVES, sys.implementation.cache_tag]).encode())
    for m in MODULES:
        for p in _paths(m)[:2]:
            h.update(m.encode())
            h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def _decide() -> dict:
    """Whether the compiled modules are used, and why (computed once per process)."""
    if _state:
        return _state
    if os.environ.get(ENV_PURE, "") not in ("", "0"):
        _state.update(compiled=False, reason=f"{ENV_PURE} is set")
        return _state
    built = _built_digest()
    if built is None:
        _state.update(compiled=False, reason="not built (fabriclab build-core)")
        return _state
    if built != digest():
        _state.update(compiled=False, reason="built from older sources; rebuild with "
                      "`fabriclab build-core` (or bash scripts/setup.sh)")
        log.warning("the compiled simulator core is out of date, so the simulator runs as "
                    "pure Python (same results, slower); rebuild it with "
                    "`fabriclab build-core` or `bash scripts/setup.sh`")
        return _state
    _state.update(compiled=True, reason="built from the current sources")
    return _state


def status() -> str:
    """``"compiled"`` or ``"python"``: how the simulator's core runs in this process."""
    return "compiled" if _decide()["compiled"] else "python"


def reason() -> str:
    return _decide()["reason"]


class _Finder:
    """Imports each of :data:`MODULES` from its compiled extension or from its source,
    as :func:`_decide` says, never a mix."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in MODULES:
            return None
        py, _, so = _paths(name)
        if _decide()["compiled"]:
            loader = importlib.machinery.ExtensionFileLoader(name, str(so))
            return importlib.util.spec_from_file_location(name, so, loader=loader)
        loader = importlib.machinery.SourceFileLoader(name, str(py))
        return importlib.util.spec_from_file_location(name, py, loader=loader)

    @staticmethod
    def invalidate_caches():
        pass


def install() -> None:
    if not any(f is _Finder for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder)


def build(force: bool = False, quiet: bool = False) -> bool:
    """Compile :data:`MODULES` in place (skipped when current); True if anything was built.

    Each extension is built in a scratch directory and then renamed over the old one, so a
    process that has the old one loaded keeps running it."""
    import shutil
    import tempfile
    want = digest()
    if not force and _built_digest() == want:
        return False
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution
        from setuptools.command.build_ext import build_ext
    except ImportError as e:
        raise NativeError(f"cannot compile the simulator core ({e}); install "
                         f"Cython and setuptools (`bash scripts/setup.sh` does), or run as "
                         f"pure Python") from e
    with tempfile.TemporaryDirectory(prefix="fabriclab-native-") as tmp:
        tmp = Path(tmp)
        # the sources are copied, so that Cython's C files and the objects stay out of the tree
        src = tmp / "src"
        for m in MODULES:
            for p in _paths(m)[:2]:
                dst = src / p.relative_to(PKG.parent)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dst)
        for d in {(src / Path(*m.split(".")[:-1])) for m in MODULES}:
            while d != src:  # packages, so that the .pxd files' relative cimports resolve
                (d / "__init__.py").touch()
                (d / "__init__.pxd").touch()
                d = d.parent
        if quiet:
            logging.getLogger("distutils").setLevel(logging.WARNING)
            try:
                from distutils import log as dlog  # setuptools' copy
                dlog.set_threshold(dlog.WARN)
            except ImportError:
                pass
        cwd = os.getcwd()
        os.chdir(src)
        try:
            exts = cythonize([str(Path(*m.split("."))) + ".py" for m in MODULES],
                             compiler_directives=DIRECTIVES, quiet=quiet, nthreads=0)
            dist = Distribution({"ext_modules": exts})
            cmd = build_ext(dist)
            cmd.build_lib, cmd.build_temp = str(tmp / "lib"), str(tmp / "obj")
            cmd.parallel = os.cpu_count() or 1
            cmd.ensure_finalized()
            cmd.run()
        except Exception as e:  # noqa: BLE001 - Cython's and the compiler's errors vary
            raise NativeError(f"compiling the simulator core failed: {e}\n"
                             f"It needs a C compiler and Python's headers (apt-get install "
                             f"gcc python3-dev); the simulator still runs as pure Python") from e
        finally:
            os.chdir(cwd)
        for m in MODULES:
            built = tmp / "lib" / Path(*m.split(".")[:-1]) / (m.rsplit(".", 1)[1] + EXT_SUFFIX)
            target = _paths(m)[2]
            staged = target.with_name(f".{target.name}.partial-{os.getpid()}")
            shutil.copy2(built, staged)
            os.replace(staged, target)
    staged = MANIFEST.with_name(f".{MANIFEST.name}.partial-{os.getpid()}")
    staged.write_text(json.dumps({"digest": want, "modules": list(MODULES)}, indent=1) + "\n")
    os.replace(staged, MANIFEST)
    _state.clear()
    return True


def _built_digest() -> str | None:
    """The digest the last build recorded, None if there is no complete build."""
    try:
        built = json.loads(MANIFEST.read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None
    return built if all(_paths(m)[2].exists() for m in MODULES) else None
