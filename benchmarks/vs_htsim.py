#!/usr/bin/env python3
"""fabriclab against UEC htsim on a fat-tree permutation: wall time, peak memory and tail FCT
of both tools from one invocation, and their ratios (issue 13, part 1).

The case is htsim's "Large permutation with multipath" (its ``validate.txt``): a k=16
fat-tree (1,024 hosts, 100G, 1 us per hop, 4 KB packets), every host sending 2 MB to one
other, ``htsim_uec -tm perm_1024n_1024c_0u_2000000b.cm -end 2000 -paths 128``.  fabriclab
runs the very same pairs (read from the connection matrix) on ``fat_tree`` k=16 with the
permutation spec's settings, as a separate process per scheme (``fabriclab run
--no-report``), so that its peak RSS is that run's alone.  For another k the permutation is
fabriclab's own (``experiments/permutation.yaml``, seed 1), written as a connection matrix
for htsim.

Build htsim (never committed here; the README says the same)::

    git clone https://github.com/ultraethernet/uet-htsim /tmp/uet-htsim
    cmake -S /tmp/uet-htsim/htsim/sim -B /tmp/uet-htsim/build -DCMAKE_BUILD_TYPE=Release
    make -C /tmp/uet-htsim/build -j2 htsim_uec
    .venv/bin/python benchmarks/vs_htsim.py --htsim /tmp/uet-htsim/build/datacenter/htsim_uec

Without ``--htsim`` only fabriclab's side is measured.  Wall time is the whole process
(start-up, topology, run, results), peak memory its maximum resident set (``wait4``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PERM_SPEC = ROOT / "experiments" / "permutation.yaml"
HTSIM_CM = "connection_matrices/perm_1024n_1024c_0u_2000000b.cm"
FLOW_BYTES = 2_000_000


def run_measured(cmd: list[str], cwd=None, stdout=None) -> tuple[int, float, float]:
    """Run ``cmd``; (exit status, wall seconds, peak RSS in MB) of that process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=stdout or subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"vs_htsim: {' '.join(cmd[:3])} ... failed ({p.returncode}):\n{err[-2000:]}")
    return p.returncode, wall, usage.ru_maxrss / 1024


def read_cm(path: Path) -> list[tuple[int, int]]:
    """(source, destination) host numbers of an htsim connection matrix."""
    pairs = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(\d+)->(\d+)\s", line)
        if m:
            pairs.append((int(m.group(1)), int(m.group(2))))
    if not pairs:
        sys.exit(f"vs_htsim: no connection in {path}")
    return pairs


def find_cm(binary: Path, given: Path | None) -> Path | None:
    """htsim's connection matrix: ``given``, or beside the binary (an in-tree build), or in
    the source tree of a cmake build directory (``<src>/datacenter/``, next to ``build/``)."""
    if given is not None:
        if not given.is_file():
            sys.exit(f"vs_htsim: --cm {given}: no such file")
        return given
    here = binary.resolve().parent
    up = here.parent.parent
    for base in (here, up / "datacenter", up / "htsim" / "sim" / "datacenter"):
        if (base / HTSIM_CM).is_file():
            return base / HTSIM_CM
    return None


def write_cm(pairs: list[tuple[int, int]], hosts: int, path: Path) -> None:
    lines = [f"Nodes {hosts}", f"Connections {len(pairs)}"]
    lines += [f"{s}->{d} id {i + 1} start 0 size {FLOW_BYTES}" for i, (s, d) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")


def fabriclab_pairs(k: int) -> list[tuple[int, int]]:
    """fabriclab's own permutation on a k-ary fat-tree (the permutation spec, seed 1)."""
    sys.path.insert(0, str(ROOT))
    from fabriclab import load
    from fabriclab.topologies import from_spec
    from fabriclab.workloads import build
    spec = load(PERM_SPEC, set=[f"topology={{kind: fat_tree, k: {k}}}"])
    flows = build(spec, from_spec(spec.topology)).flows
    return [(int(f.src[1:]), int(f.dst[1:])) for f in flows]


def fabriclab_spec(k: int, pairs: list[tuple[int, int]], path: Path) -> None:
    data = yaml.safe_load(PERM_SPEC.read_text())
    data.pop("reduced", None)
    data["topology"] = {"kind": "fat_tree", "k": k}
    data["workload"] = [{"name": "permutation", "kind": "flows",
                         "flows": [{"src": f"h{s}", "dst": f"h{d}", "bytes": FLOW_BYTES}
                                   for s, d in pairs]}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_fabriclab(spec: Path, scheme: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "fabriclab.cli", "-q", "run", str(spec), "--scheme", scheme,
           "--no-report", "--out", str(out), "--force"]
    _, wall, rss = run_measured(cmd, cwd=ROOT)
    with open(out / "flows.csv") as f:
        rows = list(csv.DictReader(f))
    fct = [int(r["fct_ns"]) for r in rows if r["fct_ns"]]
    ideal = max(int(r["ideal_fct_ns"]) for r in rows)
    s = json.loads((out / "summary.json").read_text())
    return {"tool": "fabriclab", "scheme": scheme, "wall_s": wall, "rss_mb": rss,
            "flows_done": len(fct), "flows": len(rows), "tail_us": max(fct) / 1000,
            "ideal_us": ideal / 1000, "events": s.get("events"),
            "packet_hops": s.get("packet_hops")}


def run_htsim(binary: Path, cm: Path, paths: int, end_us: int) -> dict:
    with tempfile.TemporaryFile() as out:
        _, wall, rss = run_measured([str(binary), "-tm", str(cm), "-end", str(end_us),
                                     "-paths", str(paths)], cwd=binary.resolve().parent,
                                    stdout=out)
        out.seek(0)
        text = out.read().decode(errors="replace")
    fct = [float(m.group(1)) for m in re.finditer(r"finished at ([0-9.]+)", text)]
    if not fct:
        sys.exit("vs_htsim: htsim reported no finished flow")
    return {"tool": "htsim_uec", "scheme": f"uec, {paths} paths", "wall_s": wall,
            "rss_mb": rss, "flows_done": len(fct), "tail_us": max(fct)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--htsim", type=Path, help="the htsim_uec binary (built from "
                    "ultraethernet/uet-htsim; see above)")
    ap.add_argument("--k", type=int, default=16, help="fat-tree arity (default 16: 1,024 hosts)")
    ap.add_argument("--schemes", default="gse,ecmp_dcqcn,hpcc",
                    help="fabriclab schemes, comma-separated (default: %(default)s)")
    ap.add_argument("--paths", type=int, default=128, help="htsim's -paths (default 128)")
    ap.add_argument("--end-us", type=int, default=2000, help="htsim's -end (default 2000)")
    ap.add_argument("--cm", type=Path, help="htsim's perm_1024n_1024c_0u_2000000b.cm (default: "
                    "connection_matrices/ beside the binary, or in its source tree's datacenter/)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    a = ap.parse_args(argv)
    if a.k < 2 or a.k % 2:
        ap.error("--k must be even and at least 2")
    if a.htsim is not None and not (a.htsim.is_file() and os.access(a.htsim, os.X_OK)):
        ap.error(f"--htsim {a.htsim}: not an executable file; build it as the docstring says")
    hosts = a.k ** 3 // 4
    with tempfile.TemporaryDirectory(prefix="vs_htsim-") as tmp:
        tmp = Path(tmp)
        cm = find_cm(a.htsim, a.cm) if a.htsim and a.k == 16 else None
        if cm is not None:
            pairs = read_cm(cm)
        else:
            if a.htsim and a.k == 16:
                print(f"vs_htsim: htsim's {HTSIM_CM} not found (give --cm): both tools run "
                      f"fabriclab's own permutation", file=sys.stderr)
            pairs = fabriclab_pairs(a.k)
            cm = tmp / "perm.cm"
            write_cm(pairs, hosts, cm)
        spec = tmp / "perm.yaml"
        fabriclab_spec(a.k, pairs, spec)
        rows = []
        if a.htsim:
            print(f"htsim_uec: {len(pairs)} flows ...", file=sys.stderr, flush=True)
            rows.append(run_htsim(a.htsim, cm, a.paths, a.end_us))
        for scheme in a.schemes.split(","):
            print(f"fabriclab {scheme}: {len(pairs)} flows ...", file=sys.stderr, flush=True)
            rows.append(run_fabriclab(spec, scheme.strip(), tmp / f"out-{scheme}"))
    ideal = next(r["ideal_us"] for r in rows if "ideal_us" in r)
    ref = rows[0] if a.htsim else None
    for r in rows:
        r["tail_over_ideal"] = r["tail_us"] / ideal
        if ref is not None and r is not ref:
            r["wall_ratio"] = r["wall_s"] / ref["wall_s"]
            r["rss_ratio"] = r["rss_mb"] / ref["rss_mb"]
    if a.json:
        print(json.dumps({"k": a.k, "hosts": hosts, "flows": len(pairs),
                          "ideal_us": ideal, "runs": rows}, indent=1))
        return 0
    print(f"k={a.k} fat-tree, {hosts} hosts, {len(pairs)} x 2 MB permutation; single-flow "
          f"ideal {ideal:.1f} us")
    print(f"{'tool':<10} {'scheme':<15} {'wall s':>8} {'peak MB':>8} {'tail us':>9} "
          f"{'tail/ideal':>10} {'flows':>10} {'wall x':>7} {'mem x':>6}")
    for r in rows:
        ratios = (f"{r['wall_ratio']:>7.2f} {r['rss_ratio']:>6.2f}" if "wall_ratio" in r
                  else f"{'':>7} {'':>6}")
        print(f"{r['tool']:<10} {r['scheme']:<15} {r['wall_s']:>8.1f} {r['rss_mb']:>8.0f} "
              f"{r['tail_us']:>9.1f} {r['tail_over_ideal']:>10.3f} "
              f"{r['flows_done']:>5}/{len(pairs):<4} {ratios}")
    if ref is not None:
        g = next((r for r in rows if r["scheme"] == "gse"), None)
        if g is not None:
            print(f"gse against htsim: wall {g['wall_ratio']:.2f} x (target <= 2), memory "
                  f"{g['rss_ratio']:.2f} x (target <= 1), tail {g['tail_over_ideal']:.3f} x "
                  f"ideal (target <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
