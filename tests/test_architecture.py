"""Imports flow one way (STYLE.md): algorithms, topologies, the wire format and the NIC
know no engine; the engines (the simulator; the emulator and its controller) never import
each other; results are built without importing an engine."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fabriclab"

ENGINES = ("sim", "emu", "controllers")
FORBIDDEN = {
    "cc_algorithms": ENGINES + ("nic",),
    "topologies": ENGINES + ("nic",),
    # the one wire format and the one NIC: both engines import them, they import no engine
    "wire": ENGINES + ("nic", "metrics", "report"),
    "nic": ENGINES + ("metrics", "report"),
    "sim": ("emu", "controllers"),
    "emu": ("sim", "controllers"),  # the controller is a process of its own, not a library
    "controllers": ("sim", "emu"),
    # results are assembled, plotted and written the same way for both engines
    "metrics": ENGINES,
    "report": ENGINES,
}
# Single modules of the shared layer (the API, which drives the engines, is not one of them).
FORBIDDEN_MODULES = {
    "spec.py": ("sim", "emu", "controllers", "metrics", "report"),
    "outdir.py": ("sim", "emu", "controllers"),
    "frames.py": ("sim", "emu", "controllers"),
    "units.py": ("sim", "emu", "controllers", "nic", "wire", "cc_algorithms"),
    "result.py": ("sim", "emu", "controllers"),
    # the one fault and rerouting model both engines follow
    "faults.py": ("sim", "emu", "controllers", "metrics", "report"),
    # PFC ingress accounting, which the emulator's PFC daemon runs
    "pfc.py": ("sim", "emu", "controllers", "metrics", "report"),
    # the compiled core's loader: it names the modules it compiles, it imports none of them
    # (``import fabriclab`` loads it, and so would load the engines)
    "native.py": ("sim", "emu", "controllers", "nic", "cc_algorithms", "wire", "topologies",
                  "metrics", "report"),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: resolve against the package path
                base = path.relative_to(PKG).parts[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                yield ".".join(("fabriclab",) + tuple(base) + ((mod,) if mod else ()))
            else:
                yield mod
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


# Known upward imports; this set may only shrink (it is empty).
KNOWN: set[str] = set()


def test_import_direction():
    bad = []
    rules = [((PKG / pkg).rglob("*.py"), banned) for pkg, banned in FORBIDDEN.items()]
    rules += [([PKG / mod], banned) for mod, banned in FORBIDDEN_MODULES.items()]
    for files, banned in rules:
        for f in files:
            for mod in _imports(f):
                for b in banned:
                    if mod == f"fabriclab.{b}" or mod.startswith(f"fabriclab.{b}."):
                        bad.append(f"{f.relative_to(PKG)} imports {mod}")
    assert set(bad) <= KNOWN, sorted(set(bad) - KNOWN)


def test_checker_sees_relative_imports():
    """The check above would catch a relative import of the simulator."""
    f = PKG / "sim" / "runner.py"
    assert any(m.startswith("fabriclab.sim") for m in _imports(f))
    assert "fabriclab.metrics" in set(_imports(f)) or any(
        m.startswith("fabriclab.metrics") for m in _imports(f))
