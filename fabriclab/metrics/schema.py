"""The results schema both engines write, and a validator for a results directory.

``results/<run>/``::

    spec.yaml          the fully resolved spec, plus fabriclab version and git revision
    summary.json       headline numbers (SUMMARY_KEYS at least) and each collective
    flows.csv          one row per flow (FLOW_COLUMNS)
    collectives.csv    one row per collective (COLLECTIVE_COLUMNS)
    ports.csv          counters per port, i.e. per link direction (PORT_COLUMNS)
    hosts.csv          counters per host (HOST_COLUMNS)
    timeseries/*.csv   first column time_ns, one column per port / host / flow:
                       link_util.csv (0..1), queue_bytes.csv, pfc_paused_frac.csv (0..1),
                       host_goodput_gbps.csv, flow_rate_gbps.csv, flow_goodput_gbps.csv
                       (the tracked flows: summary "tracked_flows"),
                       contended_goodput_gbps.csv (goodput per flow group into the host of
                       summary "contended_port")

Times are integer nanoseconds; an empty CSV cell means "did not happen" (e.g. end_ns of
a flow that did not finish).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

FLOW_COLUMNS = ["flow_id", "src", "dst", "bytes", "start_ns", "end_ns", "fct_ns",
                "ideal_fct_ns", "slowdown", "group", "delivered_bytes"]
COLLECTIVE_COLUMNS = ["name", "kind", "hosts", "bytes", "start_ns", "end_ns", "algbw_gbps",
                      "busbw_gbps"]
PORT_COLUMNS = ["port", "node", "peer", "role", "rate_gbps", "tx_bytes", "tx_pkts", "drops",
                "drop_bytes", "ecn_marks", "pfc_pause_tx", "pfc_resume_tx", "pfc_pause_rx",
                "paused_ns", "max_queue_bytes", "drops_dead_link", "drops_random",
                "drops_watchdog", "drops_no_path"]
HOST_COLUMNS = ["host", "tx_bytes", "rx_bytes", "goodput_bytes", "cnps_sent", "cnps_rx",
                "nacks_sent", "timeouts", "retx_bytes"]
SUMMARY_KEYS = ["scheme", "engine", "seed", "sim_time_ns", "wall_s", "drops",
                "pfc_pause_frames", "ecn_marks", "slowdown_p50", "slowdown_p95",
                "slowdown_p99", "collectives", "flows_total", "flows_completed", "cnps",
                "bytes_sent", "bytes_delivered", "bytes_dropped", "bytes_in_flight",
                "payload_delivered_bytes", "bottleneck_port", "contended_port", "open_flows",
                "tracked_flows", "sender_rate"]
TIMESERIES = ["link_util", "queue_bytes", "pfc_paused_frac", "host_goodput_gbps",
              "flow_rate_gbps", "flow_goodput_gbps", "contended_goodput_gbps"]
FILES = ["spec.yaml", "summary.json", "flows.csv", "collectives.csv", "ports.csv", "hosts.csv"]


def validate_results(path: str | Path) -> list[str]:
    """Problems with a results directory (empty list: it matches the schema)."""
    d = Path(path)
    problems = []
    for f in FILES:
        if not (d / f).is_file():
            problems.append(f"missing {f}")
    if problems:
        return problems
    summary = json.loads((d / "summary.json").read_text())
    for k in SUMMARY_KEYS:
        if k not in summary:
            problems.append(f"summary.json lacks {k!r}")
    for name, cols in (("flows.csv", FLOW_COLUMNS), ("collectives.csv", COLLECTIVE_COLUMNS),
                       ("ports.csv", PORT_COLUMNS), ("hosts.csv", HOST_COLUMNS)):
        with open(d / name, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != cols:
            problems.append(f"{name}: columns {header} != {cols}")
    for ts in TIMESERIES:
        p = d / "timeseries" / f"{ts}.csv"
        if not p.is_file():
            problems.append(f"missing timeseries/{ts}.csv")
            continue
        with open(p, newline="") as fh:
            header = next(csv.reader(fh), None)
        if not header or header[0] != "time_ns":
            problems.append(f"timeseries/{ts}.csv: first column must be time_ns")
    return problems
