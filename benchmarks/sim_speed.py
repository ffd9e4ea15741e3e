#!/usr/bin/env python3
"""Simulator speed against ns-3 on the same scenario: packet-hops per wall-clock second.

The scenario is ns-3's leaf-spine UDP benchmark (``ns3_leafspine.py`` here; its docstring
is the model): every link 100 Gb/s with 1 us delay, 1000 B payload + 30 B headers, one
DropTail FIFO of 100 packets per egress port, per-packet random ECMP, UDP at line rate from
t = 0, the same seeded permutation (``make_flows``).  fabriclab runs it as scheme ``udp``
with ``switch.load_balancing: packet_spray``, PFC and ECN off.

For each configuration it prints fabriclab's wall time of the event loop alone (as ns-3's
``wall_run_s`` covers ``Simulator.Run()`` alone), packet-hops, hops/s, events, the peak
resident memory of the run's process, and, when ns-3 (PyPI ``ns3==3.44.post0``) can be
imported by ``--ns3-python`` (default: this interpreter, then ~/.venv-ns3), ns-3's figures
measured in the same invocation and the speed ratio.  Each run is a fresh process.

    .venv/bin/python benchmarks/sim_speed.py                 # default matrix
    .venv/bin/python benchmarks/sim_speed.py --leaves 8 --spines 8 --hosts-per-leaf 8 --sim-ms 2

``--baseline REV`` compares this tree with an earlier commit instead, in one invocation:
the ns-3 scenario (4x4x4 permutation) and the demo's DCQCN and GSE runs
(``experiments/allreduce_incast.yaml``), each run ``--reps`` times on both trees in fresh
processes, interleaved (baseline, this tree, baseline, ...) so that a machine's slow spell
hits both.  It prints both trees' median packet-hops per second of the event loop and the
ratio, and checks that both simulated the same thing (same packet-hops and events):

    .venv/bin/python benchmarks/sim_speed.py --baseline HEAD~1 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ns3_leafspine import HEADER_BYTES, PAYLOAD_BYTES, make_flows  # noqa: E402

MATRIX = [(4, 4, 4, "permutation", 1.0), (4, 4, 4, "incast", 1.0), (8, 8, 8, "permutation", 1.0)]
QUEUE_PKTS = 100


def fabriclab_spec(L, S, H, pattern, sim_ms, seed):
    flows = [{"src": f"h{s}", "dst": f"h{d}", "bytes": "unlimited"}
             for s, d in make_flows(pattern, L, H, seed)]
    return {
        "name": f"ns3-{L}x{S}x{H}-{pattern}", "scheme": "udp", "seed": seed,
        "topology": {"kind": "leaf_spine", "leaves": L, "spines": S, "hosts_per_leaf": H,
                     "host_link_gbps": 100, "fabric_link_gbps": 100, "link_delay_ns": 1000},
        "switch": {"load_balancing": "packet_spray", "mtu_bytes": PAYLOAD_BYTES,
                   "header_bytes": HEADER_BYTES,
                   "queue_limit_bytes": QUEUE_PKTS * (PAYLOAD_BYTES + HEADER_BYTES),
                   "pfc": {"enabled": False}, "ecn": {"enabled": False}},
        "workload": [{"kind": "flows", "flows": flows}],
        "stop": {"time_us": sim_ms * 1000},
    }


def run_fabriclab(L, S, H, pattern, sim_ms, seed) -> dict:
    """One configuration in this process (called in a fresh child by main)."""
    from fabriclab import spec as fspec
    from fabriclab.sim.network import Network
    t0 = time.perf_counter()
    net = Network(fspec.validate(fabriclab_spec(L, S, H, pattern, sim_ms, seed)))
    t1 = time.perf_counter()
    net.run()
    t2 = time.perf_counter()
    ports = list(net.ports.values())
    hops = sum(p.tx_pkts for p in ports)
    hosts = list(net.hosts.values())
    return {
        "engine": "fabriclab", "wall_run_s": t2 - t1, "wall_setup_s": t1 - t0,
        "events": net.loop.events, "packet_hops": hops,
        "packet_hops_per_wall_s": hops / (t2 - t1),
        "pkts_tx_hosts": sum(h.port.tx_pkts for h in hosts),
        "pkts_rx": sum(getattr(h, "rx_goodput", None) or h.nic.goodput_bytes
                       for h in hosts) // PAYLOAD_BYTES,
        "drops": net.drops,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--leaves",
           str(args[0]), "--spines", str(args[1]), "--hosts-per-leaf", str(args[2]),
           "--pattern", args[3], "--sim-ms", str(args[4]), "--seed", str(args[5])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def find_ns3_python(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable,
                                              os.path.expanduser("~/.venv-ns3/bin/python")]
    for py in candidates:
        if py and Path(py).exists():
            r = subprocess.run([py, "-c", "import importlib.util,sys;"
                                "sys.exit(importlib.util.find_spec('ns') is None)"],
                               capture_output=True)
            if r.returncode == 0:
                return py
    return None


def run_ns3(py, L, S, H, pattern, sim_ms, seed) -> dict:
    cmd = [py, str(HERE / "ns3_leafspine.py"), "--leaves", str(L), "--spines", str(S),
           "--hosts-per-leaf", str(H), "--pattern", pattern, "--sim-ms", str(sim_ms),
           "--seed", str(seed), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r.pop("flow_list", None)
    return r


#: what --baseline runs: (label, spec file, overrides); the spec files are this tree's
BASELINE_RUNS = [("demo ecmp_dcqcn", "experiments/allreduce_incast.yaml", ["scheme=ecmp_dcqcn"]),
                 ("demo gse", "experiments/allreduce_incast.yaml", ["scheme=gse"])]
_ONE_RUN = """
import json, sys
from fabriclab import spec
from fabriclab.sim.runner import simulate
s = simulate(spec.load(sys.argv[1], sys.argv[2:]), progress=False).summary
print(json.dumps({k: s[k] for k in ("wall_run_s", "packet_hops", "events")}))
"""


def _tree_run(tree: Path, label: str, conf) -> dict:
    """One run on ``tree`` in a fresh process: a (label, spec, overrides) demo run, or the
    ns-3 scenario's configuration tuple."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if isinstance(conf, tuple) and len(conf) == 6:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--leaves",
               str(conf[0]), "--spines", str(conf[1]), "--hosts-per-leaf", str(conf[2]),
               "--pattern", conf[3], "--sim-ms", str(conf[4]), "--seed", str(conf[5])]
    else:
        spec_file, sets = conf
        cmd = [sys.executable, "-c", _ONE_RUN, str(HERE.parent / spec_file), *sets]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if r.returncode != 0:
        raise SystemExit(f"{label} failed on {tree}:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    hops, wall = out["packet_hops"], out["wall_run_s"]
    return {"wall_run_s": wall, "packet_hops": hops, "events": out["events"],
            "hops_per_s": hops / wall}


def baseline(rev: str, reps: int, seed: int) -> int:
    """This tree against commit ``rev``: median hops/s of each run, and the ratio."""
    import statistics
    import tempfile
    repo = HERE.parent
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        print(f"--baseline {rev}: not a commit of this repository ({sha.stderr.strip()})",
              file=sys.stderr)
        return 2
    runs = [("ns-3 scenario 4x4x4 permutation udp", (4, 4, 4, "permutation", 1.0, seed))]
    runs += [(label, (f, sets)) for label, f, sets in BASELINE_RUNS]
    with tempfile.TemporaryDirectory(prefix="fabriclab-baseline-") as tmp:
        base = Path(tmp)
        archive = subprocess.run(["git", "archive", sha.stdout.strip()], cwd=repo,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        print(f"baseline {rev} ({sha.stdout.strip()[:10]}) against this tree ({repo}), "
              f"{reps} interleaved runs each, median of the event loop's packet-hops/s")
        print(f"{'run':38s} {'baseline h/s':>13s} {'this h/s':>11s} {'ratio':>6s}  same work")
        worst = None
        for label, conf in runs:
            got = {"base": [], "this": []}
            for _ in range(reps):
                got["base"].append(_tree_run(base, label, conf))
                got["this"].append(_tree_run(repo, label, conf))
            med = {k: statistics.median(r["hops_per_s"] for r in v) for k, v in got.items()}
            same = all((r["packet_hops"], r["events"]) == (got["base"][0]["packet_hops"],
                                                           got["base"][0]["events"])
                       for r in got["base"] + got["this"])
            ratio = med["this"] / med["base"]
            worst = ratio if worst is None else min(worst, ratio)
            print(f"{label:38s} {med['base']:13,.0f} {med['this']:11,.0f} {ratio:6.3f}  "
                  f"{'yes' if same else 'NO (hops/events differ)'}", flush=True)
        print(f"lowest ratio (this / baseline): {worst:.3f}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--leaves", type=int)
    p.add_argument("--spines", type=int)
    p.add_argument("--hosts-per-leaf", type=int)
    p.add_argument("--pattern", choices=("permutation", "incast"), default="permutation")
    p.add_argument("--sim-ms", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=1, help="repetitions (the median is reported)")
    p.add_argument("--ns3-python", help="a Python that can import ns-3 (ns3==3.44.post0)")
    p.add_argument("--no-ns3", action="store_true", help="do not run ns-3")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")
    p.add_argument("--baseline", metavar="REV",
                   help="compare this tree's speed with commit REV (see above)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.baseline:
        return baseline(a.baseline, max(1, a.reps), a.seed)
    if a.child:
        print(json.dumps(run_fabriclab(a.leaves, a.spines, a.hosts_per_leaf, a.pattern,
                                       a.sim_ms, a.seed)))
        return 0
    if a.leaves:
        matrix = [(a.leaves, a.spines or a.leaves, a.hosts_per_leaf or a.leaves, a.pattern,
                   a.sim_ms)]
    else:
        matrix = MATRIX
    ns3 = None if a.no_ns3 else find_ns3_python(a.ns3_python)
    if ns3 is None and not a.no_ns3:
        print("ns-3 not found: no ratio is measured.  To measure it: python3 -m venv "
              "~/.venv-ns3 && ~/.venv-ns3/bin/pip install ns3==3.44.post0", file=sys.stderr)
    rows = []
    for L, S, H, pattern, ms in matrix:
        conf = (L, S, H, pattern, ms, a.seed)
        fl = sorted((child(conf) for _ in range(a.reps)), key=lambda r: r["wall_run_s"])
        f = fl[len(fl) // 2]
        row = {"fabric": f"{L}x{S}x{H}", "pattern": pattern, "sim_ms": ms, "fabriclab": f}
        if ns3:
            nl = sorted((run_ns3(ns3, *conf) for _ in range(a.reps)),
                        key=lambda r: r["wall_run_s"])
            n = nl[len(nl) // 2]
            row["ns3"] = n
            row["speed_ratio"] = f["packet_hops_per_wall_s"] / n["packet_hops_per_wall_s"]
        rows.append(row)
        if a.json:
            print(json.dumps(row))
    if not a.json:
        print(f"{'fabric':8s} {'pattern':12s} {'ms':>4s} {'wall s':>7s} {'hops':>10s} "
              f"{'hops/s':>9s} {'events':>10s} {'peak MB':>8s} {'drops':>6s}"
              + (f" {'ns-3 wall':>9s} {'ns-3 hops':>10s} {'ns-3 h/s':>9s} {'ratio':>6s}"
                 if ns3 else ""))
        for r in rows:
            f = r["fabriclab"]
            line = (f"{r['fabric']:8s} {r['pattern']:12s} {r['sim_ms']:4g} {f['wall_run_s']:7.2f} "
                    f"{f['packet_hops']:10,d} {f['packet_hops_per_wall_s']:9,.0f} "
                    f"{f['events']:10,d} {f['peak_rss_mb']:8.0f} {f['drops']:6d}")
            if "ns3" in r:
                n = r["ns3"]
                line += (f" {n['wall_run_s']:9.2f} {n['packet_hops']:10,d} "
                         f"{n['packet_hops_per_wall_s']:9,.0f} {r['speed_ratio']:6.2f}")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
