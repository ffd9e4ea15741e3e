#!/usr/bin/env python3
"""How large a fabric this machine emulates faithfully in Mininet (run as root).

For growing leaf-spine fabrics at one emulated rate, every host sends to a host under
another leaf at line rate (scheme ``udp``: no congestion control, so every sender tries to
fill its link) for a fixed fabric time.  For every *loaded* link -- each host's NIC link,
and each switch port offered at least its configured rate -- it reports achieved ÷
configured rate, plus what was lost inside Open vSwitch and how far the host agents fell
behind their schedule.  A fabric is faithful when every loaded link reaches >= 95 % of its
configured rate and nothing is lost inside the emulator; the largest faithful fabric is
printed last.

    .venv/bin/python benchmarks/emu_fidelity.py                       # default ladder
    .venv/bin/python benchmarks/emu_fidelity.py --rate-mbps 50 --sizes 2x2x2,4x2x4
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys

from fabriclab import spec as S
from fabriclab.emu.runner import emulate

DEFAULT_SIZES = "2x2x2,2x2x4,4x2x4,4x4x4,8x4x4,8x8x8"
FAITHFUL = 0.95


def run_one(leaves, spines, hpl, rate_mbps, duration_us, seed):
    spec = S.validate({
        "name": f"fidelity-{leaves}x{spines}x{hpl}", "engine": "mininet", "scheme": "udp",
        "seed": seed,
        "topology": {"kind": "leaf_spine", "leaves": leaves, "spines": spines,
                     "hosts_per_leaf": hpl},
        "switch": {"pfc": {"enabled": False}},
        "workload": [{"kind": "permutation", "bytes": "unlimited"}],
        "stop": {"time_us": duration_us},
        "emu": {"link_mbps": rate_mbps, "timeout_s": 600},
    }, "fidelity spec")
    res = emulate(spec, progress=False)
    s = res.summary
    emu = s["emulation"]
    window_ns = emu["run_window_ns"]  # fabric time 0 .. stop
    sent = emu["port_sent_in_run_bytes"]
    offered = emu["port_offered_bytes"]
    cols, rows = res.tables["ports.csv"]
    ratios = []
    for p in (dict(zip(cols, r)) for r in rows):
        capacity = p["rate_gbps"] * window_ns / 8  # bytes the link can carry in the window
        # Loaded: every NIC (all hosts send at line rate), and switch ports offered at
        # least their capacity (counted before the qdisc by the eBPF program).
        if p["role"] == "nic" or offered.get(p["port"], 0) >= 0.98 * capacity:
            ratios.append((p["port"], sent[p["port"]] / capacity))
    return {
        "fabric": f"{leaves}x{spines}x{hpl}", "hosts": leaves * hpl,
        "loaded_links": len(ratios),
        "min_ratio": min(r for _, r in ratios), "median_ratio": statistics.median(
            r for _, r in ratios),
        "worst_link": min(ratios, key=lambda x: x[1])[0],
        "lost_inside_ovs": s.get("drop_reasons", {}).get("inside_open_vswitch", 0),
        "agent_max_lag_us_real": emu["agent_max_lag_ns"] * emu["time_dilation"] / 1000,
        "wall_s": s["wall_s"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate-mbps", type=float, default=10.0, help="emulated host link rate")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="comma-separated leaves x spines x hosts-per-leaf, smallest first")
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
        leaves, spines, hpl = (int(x) for x in size.lower().split("x"))
        r = run_one(leaves, spines, hpl, a.rate_mbps, a.duration_us, a.seed)
        r["faithful"] = r["min_ratio"] >= FAITHFUL and r["lost_inside_ovs"] == 0
        rows.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['fabric']:8s} hosts {r['hosts']:3d}  loaded links {r['loaded_links']:3d}  "
                  f"achieved/configured min {r['min_ratio']:.3f} median {r['median_ratio']:.3f} "
                  f"(worst {r['worst_link']})  lost in OVS {r['lost_inside_ovs']}  agent lag "
                  f"{r['agent_max_lag_us_real']:,.0f} us  wall {r['wall_s']:.1f} s  "
                  f"{'faithful' if r['faithful'] else 'NOT faithful'}", flush=True)
        if r["faithful"]:
            largest = r
        elif not a.keep_going:
            break
    if largest:
        print(f"largest faithful fabric at {a.rate_mbps:g} Mb/s per host link: "
              f"{largest['fabric']} ({largest['hosts']} hosts)")
    else:
        print(f"no fabric was emulated faithfully at {a.rate_mbps:g} Mb/s per host link")
    return 0


if __name__ == "__main__":
    sys.exit(main())
