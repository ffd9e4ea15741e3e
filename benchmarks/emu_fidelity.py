#!/usr/bin/env python3
"""How large a fabric this machine emulates faithfully in Mininet (run as root).

For growing fabrics at one emulated rate (leaf-spines ``LxSxH``, k-ary fat-trees ``ftK``),
every host sends to a host under another leaf at line rate (scheme ``udp``: no congestion
control, so every sender tries to fill its link; ``--scheme gse`` asks the same of GSE, whose
containers the DSCP pins through every tier) for a fixed fabric time: the heaviest load a
fabric can carry.  Each run
judges its own fidelity as every emulated run does (``fabriclab.metrics.fidelity``): every
busy switch port against what a link of its configured rate would have sent, the host
agents' late wake-ups, frames lost inside Open vSwitch.  The largest faithful fabric is
printed last; ``fabriclab.emu.autorate`` (``emu.link_mbps: auto``) is calibrated from it.

    .venv/bin/python benchmarks/emu_fidelity.py                       # default ladder
    .venv/bin/python benchmarks/emu_fidelity.py --rate-mbps 50 --sizes 2x2x2,4x2x4
    .venv/bin/python benchmarks/emu_fidelity.py --sizes ft4,ft6 --scheme gse   # fat-trees
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fabriclab import spec as S
from fabriclab.emu.runner import emulate

DEFAULT_SIZES = "2x2x2,2x2x4,4x2x4,4x4x4,8x4x4,8x8x8"


def topology(size: str) -> dict:
    """``LxSxH`` (leaves x spines x hosts per leaf) or ``ftK`` (a k-ary fat-tree)."""
    size = size.strip().lower()
    if size.startswith("ft"):
        return {"kind": "fat_tree", "k": int(size[2:])}
    leaves, spines, hpl = (int(x) for x in size.split("x"))
    return {"kind": "leaf_spine", "leaves": leaves, "spines": spines, "hosts_per_leaf": hpl}


def run_one(size, rate_mbps, duration_us, seed, scheme="udp"):
    topo = topology(size)
    spec = S.validate({
        "name": f"fidelity-{size}", "engine": "mininet", "scheme": scheme,
        "seed": seed, "topology": topo,
        "switch": {"pfc": {"enabled": False}, "ports": max(64, topo.get("k", 0))},
        "workload": [{"kind": "permutation", "bytes": "unlimited"}],
        "stop": {"time_us": duration_us},
        "emu": {"link_mbps": rate_mbps, "timeout_s": 600},
    }, "fidelity spec")
    res = emulate(spec, progress=False)
    s = res.summary
    emu = s["emulation"]
    # the run's own verdict (fabriclab.metrics.fidelity): busy links against their
    # configured rate, the agents' late wake-ups, frames lost inside Open vSwitch
    f = emu["fidelity"]
    links, agents = f["checks"]["links"], f["checks"]["agents"]
    return {
        "fabric": size, "hosts": s["topology"]["hosts"], "scheme": scheme,
        "link_mbps": emu["link_mbps"],
        "busy_links": links["busy_links"], "min_ratio": links["min_ratio"],
        "worst_link": links["worst_link"],
        "agents_late_max": agents["max_late_fraction"],
        "lost_inside_ovs": f["checks"]["open_vswitch"]["lost_frames"],
        "agent_late_max_us_real": emu["agent_late_max_ns"] * emu["time_dilation"] / 1000,
        "faithful": f["verdict"] == "faithful", "reasons": f["reasons"],
        "wall_s": s["wall_s"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate-mbps", default="10",
                   help="emulated host link rate, or 'auto' (fabriclab.emu.autorate)")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="comma-separated leaves x spines x hosts-per-leaf, or ftK for a k-ary "
                        "fat-tree, smallest first")
    p.add_argument("--scheme", default="udp", help="udp (default: the heaviest load) or gse")
    p.add_argument("--duration-us", type=float, default=400.0,
                   help="fabric time of each run (real time = this x time dilation)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep-going", action="store_true",
                   help="run every size even after one is not faithful")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows, largest = [], None
    for size in a.sizes.split(","):
        rate = a.rate_mbps if a.rate_mbps == "auto" else float(a.rate_mbps)
        r = run_one(size, rate, a.duration_us, a.seed, a.scheme)
        rows.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['fabric']:8s} {r['scheme']} hosts {r['hosts']:3d} at {r['link_mbps']:g} Mb/s  busy "
                  f"links {r['busy_links']:3d}  achieved/configured min "
                  f"{r['min_ratio'] if r['min_ratio'] is not None else float('nan'):.3f} "
                  f"(worst {r['worst_link']})  agents late {100 * r['agents_late_max']:.1f} % "
                  f"of the run (worst wake-up {r['agent_late_max_us_real']:,.0f} us real)  "
                  f"lost in OVS {r['lost_inside_ovs']}  wall {r['wall_s']:.1f} s  "
                  f"{'faithful' if r['faithful'] else 'NOT faithful'}", flush=True)
        if r["faithful"]:
            largest = r
        elif not a.keep_going:
            break
    if largest:
        print(f"largest faithful fabric at {a.rate_mbps} Mb/s per host link: "
              f"{largest['fabric']} ({largest['hosts']} hosts)")
    else:
        print(f"no fabric was emulated faithfully at {a.rate_mbps} Mb/s per host link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
