"""The reduced incast under every scheme its spec compares: a table and a figure.

    .venv/bin/python examples/incast_compare.py OUT_DIR

Runs `experiments/incast.yaml --reduced` (six senders into one host of an 8-host
leaf-spine) under each scheme of its `compare` list, writes the results into
OUT_DIR/results/ (as `fabriclab compare --out OUT_DIR/results --force --no-report` would),
prints one line per scheme, and draws the receiver's goodput over time into
OUT_DIR/incast_goodput.png.  CI runs it (tests/test_api.py).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import fabriclab

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "incast.yaml"
log = logging.getLogger("incast_compare")


def main(out: Path) -> None:
    cmp = fabriclab.compare(SPEC, reduced=True, out=out / "results", force=True, report=False)

    # One row per run; columns are named after summary.json (collectives as "<name>.<key>").
    name = cmp.runs[0].summary["collectives"][0]["name"]
    table = cmp.summary[["run", "scheme", f"{name}.completion_over_bound",
                         f"{name}.busbw_gbps", "slowdown_p99", "pfc_pause_frames"]]
    table.columns = ["run", "scheme", "bound_x", "busbw_gbps", "slowdown_p99", "pfc_pauses"]
    print(table.to_string(index=False, formatters={
        "bound_x": "{:.3f}".format, "busbw_gbps": "{:.1f}".format,
        "slowdown_p99": "{:.2f}".format}))

    # The receiver's goodput over time, one line per scheme.
    fig = Figure(figsize=(7, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for run in cmp.runs:
        receiver = run.flows["dst"].mode()[0]
        ts = run.timeseries["host_goodput_gbps"]
        ax.plot(ts["time_ns"] / 1000, ts[receiver], label=run.summary["scheme"])
    ax.set_xlabel("time (us)")
    ax.set_ylabel(f"goodput into {receiver} (Gb/s)")
    ax.legend(frameon=False)
    fig.savefig(out / "incast_goodput.png", dpi=150, bbox_inches="tight")
    log.info("wrote %s", out / "incast_goodput.png")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    main(target)
