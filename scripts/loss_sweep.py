"""Sweep experiments/loss.yaml over loss rates, for every scheme and loss-recovery mode, and
plot the all-reduce's bus bandwidth as a fraction of the host line rate against loss.

    .venv/bin/python scripts/loss_sweep.py [--reduced] [--out results/loss-sweep]

Writes <out>/loss_sweep.csv and <out>/loss_sweep.png (docs/faults.md shows the result).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fabriclab  # noqa: E402

RATES = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
SCHEMES = ["ecmp_dcqcn", "hpcc", "gse"]
MODES = ["go_back_n", "selective_repeat"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="experiments/loss.yaml")
    ap.add_argument("--reduced", action="store_true")
    ap.add_argument("--out", default="results/loss-sweep")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated")
    ap.add_argument("--from-csv", nargs="+", metavar="CSV",
                    help="plot these earlier loss_sweep.csv files (merged) instead of running")
    ap.add_argument("--max-time-us", type=float, default=200_000.0,
                    help="give up on a run after this much simulated time")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    schemes = a.schemes.split(",")
    if a.from_csv:
        for path in a.from_csv:
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    r["loss_rate"] = float(r["loss_rate"])
                    r["busbw_over_line"] = float(r["busbw_over_line"]) if r["busbw_over_line"] else None
                    rows = [x for x in rows if (x["scheme"], x["recovery"], x["loss_rate"])
                            != (r["scheme"], r["recovery"], r["loss_rate"])] + [r]
        schemes = [sc for sc in SCHEMES if any(r["scheme"] == sc for r in rows)]
    for scheme in schemes if not a.from_csv else ():
        for mode in MODES:
            for rate in RATES:
                r = fabriclab.run(a.spec, scheme=scheme, reduced=a.reduced,
                                  set=[f"loss.rate={rate}", f"nic.loss_recovery={mode}",
                                       f"stop.max_time_us={a.max_time_us}"])
                s = r.summary
                c = s["collectives"][0] if s["collectives"] else {}
                line = r.spec.topology.host_link_gbps
                busbw = c.get("busbw_gbps") if s["stopped"] == "completed" else None
                rows.append({"scheme": scheme, "recovery": mode, "loss_rate": rate,
                             "busbw_gbps": busbw,
                             "busbw_over_line": busbw / line if busbw else None,
                             "completion_over_bound": c.get("completion_over_bound"),
                             "random_losses": s["drop_reasons"].get("random_loss", 0),
                             "retransmitted_bytes": s["retransmitted_bytes"],
                             "timeouts": s["timeouts"], "stopped": s["stopped"]})
                print(f"{scheme:11s} {mode:16s} loss {rate:g}: busbw/line "
                      f"{rows[-1]['busbw_over_line'] or 0:.3f}  ({s['stopped']})", flush=True)
    tmp = out / f".loss_sweep.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "loss_sweep.csv")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    xs = [max(r, 1e-6) for r in RATES]
    for i, scheme in enumerate(schemes):
        for mode, ls in zip(MODES, ("-", "--")):
            by_rate = {x["loss_rate"]: x["busbw_over_line"] for x in rows
                       if x["scheme"] == scheme and x["recovery"] == mode}
            ys = [by_rate.get(r) for r in RATES]
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], ls, marker="o",
                    color=f"C{i}", label=f"{scheme}, {mode.replace('_', '-')}")
    ax.scatter([1e-4, 1e-3], [0.9, 0.7], marker="*", s=120, color="k", zorder=5,
               label="CAICT (citing Microsoft): compute left")
    ax.set_xscale("log")
    ax.set_xticks(xs, ["0"] + [f"{r:g}" for r in RATES[1:]])
    ax.set_xlabel("loss probability per frame and link")
    ax.set_ylabel("bus bandwidth / line rate")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Ring all-reduce under random loss")
    tmp = out / f".loss_sweep.png.tmp-{os.getpid()}"
    fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    os.replace(tmp, out / "loss_sweep.png")
    print(f"wrote {out / 'loss_sweep.csv'} and {out / 'loss_sweep.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
