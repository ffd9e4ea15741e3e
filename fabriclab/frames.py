"""Results tables as pandas DataFrames, with fixed column types.

Every DataFrame the API returns is parsed from the very CSV text the CLI writes, with the
types below (``pandas.read_csv(..., dtype=dtypes(name, columns), keep_default_na=False,
na_values=[""])``), so the API and the files cannot drift.  An empty CSV cell means "did
not happen" (a flow that did not finish has no ``end_ns``): integer columns that can be
empty are pandas' nullable ``Int64`` and hold ``<NA>`` there; text is ``string``.
"""

from __future__ import annotations

import csv
import io

from typing import TYPE_CHECKING

from .metrics import schema

if TYPE_CHECKING:
    import pandas as pd

STR, INT, NINT, FLOAT = "string", "int64", "Int64", "float64"

# Keyed by the schema's column names (fabriclab/metrics/schema.py).
TABLE_DTYPES: dict[str, dict[str, str]] = {
    "flows.csv": {"flow_id": INT, "src": STR, "dst": STR, "bytes": NINT, "start_ns": NINT,
                  "end_ns": NINT, "fct_ns": NINT, "ideal_fct_ns": NINT, "slowdown": FLOAT,
                  "group": STR, "delivered_bytes": INT},
    "collectives.csv": {"name": STR, "kind": STR, "hosts": INT, "bytes": INT,
                        "start_ns": NINT, "end_ns": NINT, "algbw_gbps": FLOAT,
                        "busbw_gbps": FLOAT},
    "ports.csv": {"port": STR, "node": STR, "peer": STR, "role": STR, "rate_gbps": FLOAT,
                  "tx_bytes": INT, "tx_pkts": INT, "drops": INT, "drop_bytes": INT,
                  "ecn_marks": INT, "pfc_pause_tx": INT, "pfc_resume_tx": INT,
                  "pfc_pause_rx": INT, "paused_ns": INT, "max_queue_bytes": INT,
                  "drops_dead_link": INT, "drops_random": INT, "drops_watchdog": INT,
                  "drops_no_path": INT},
    "hosts.csv": {"host": STR, "tx_bytes": INT, "rx_bytes": INT, "goodput_bytes": INT,
                  "cnps_sent": INT, "cnps_rx": INT, "nacks_sent": INT, "timeouts": INT,
                  "retx_bytes": INT},
}
TABLES = {"flows": "flows.csv", "collectives": "collectives.csv", "ports": "ports.csv",
          "hosts": "hosts.csv"}
SCHEMA_COLUMNS = {"flows.csv": schema.FLOW_COLUMNS, "collectives.csv": schema.COLLECTIVE_COLUMNS,
                  "ports.csv": schema.PORT_COLUMNS, "hosts.csv": schema.HOST_COLUMNS}
# timeseries/*.csv: time_ns first, then one float column per port / host / flow / group.
SERIES_TIME = "time_ns"
READ_OPTIONS = {"keep_default_na": False, "na_values": [""]}
# Floats written in full read back equal: pandas 3 parses them exactly by default, pandas 2
# only when asked (an option pandas 3 deprecates).
def _exact_floats(pd) -> dict:
    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _pandas():
    """pandas, imported on first use: a simulation that only writes its results never
    needs it (importing it costs 35 MB, a quarter of a 1,024-host run's peak)."""
    import pandas
    return pandas

# The comparison / sweep table: one row per run (summary.csv in its directory).
SUMMARY_KEYS = {  # summary.json key -> type
    "sim_time_ns": NINT, "flows_total": NINT, "flows_completed": NINT,
    "flows_unfinished": NINT, "drops": NINT, "pfc_pause_frames": NINT, "ecn_marks": NINT,
    "cnps": NINT, "payload_delivered_bytes": NINT, "bytes_delivered": NINT,
    "fct_p50_ns": FLOAT, "fct_p99_ns": FLOAT, "slowdown_p50": FLOAT, "slowdown_p95": FLOAT,
    "slowdown_p99": FLOAT, "uplink_load_max_over_mean": FLOAT}
COLLECTIVE_KEYS = {"completion_ns": NINT, "bound_ns": NINT, "completion_over_bound": FLOAT,
                   "busbw_gbps": FLOAT}


def dtypes(name: str, columns: list[str]) -> dict[str, str]:
    """Column types of results file ``name`` (``flows.csv``, ``timeseries/x.csv``, ...)."""
    if name.startswith("timeseries/"):
        return {c: INT if c == SERIES_TIME else FLOAT for c in columns}
    known = TABLE_DTYPES[name]
    missing = [c for c in columns if c not in known]
    if missing:
        raise KeyError(f"{name}: no declared type for column(s) {', '.join(missing)} "
                       f"(add them to fabriclab.frames.TABLE_DTYPES)")
    return {c: known[c] for c in columns}


def header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)), [])


def frame(name: str, text: str) -> pd.DataFrame:
    """Results file ``name`` (its CSV ``text``) as a DataFrame with the declared types."""
    return _pandas().read_csv(io.StringIO(text), dtype=dtypes(name, header(text)), **READ_OPTIONS)


# --------------------------------------------------------------------------- run tables
def _collective_columns(summaries: list[dict]) -> list[tuple[str, str, str]]:
    """(collective name, summary key, column) for every collective of any run, in order."""
    names: list[str] = []
    for s in summaries:
        names += [c["name"] for c in s.get("collectives") or [] if c["name"] not in names]
    return [(n, k, f"{n}.{k}") for n in names for k in COLLECTIVE_KEYS]


def _open_flow_columns(summaries: list[dict]) -> list[tuple[int, str, str]]:
    """(flow id, phase label, column) for every open-ended flow's phases, in order."""
    out: list[tuple[int, str, str]] = []
    for s in summaries:
        for f in s.get("open_flows") or []:
            for ph in f.get("phases") or []:
                col = f"f{f['flow_id']}.{ph['label']}.goodput_gbps"
                if all(c != col for _, _, c in out):
                    out.append((f["flow_id"], ph["label"], col))
    return out


def summary_table_text(names: list[str], summaries: list[dict],
                       first: dict[str, list] | None = None) -> str:
    """summary.csv of a comparison or sweep: one row per run (``names``: the run
    subdirectories) with scheme, engine, the ``first`` columns (a sweep's parameter), the
    headline numbers, each collective's completion / bound / bus bandwidth and each open-ended
    flow's goodput per phase.  Floats are written in full (repr), so they read back equal
    to summary.json's."""
    colls, opens = _collective_columns(summaries), _open_flow_columns(summaries)
    first = first or {}
    cols = ["run", "scheme", "engine", *first, *SUMMARY_KEYS, *(c for _, _, c in colls),
            *(c for _, _, c in opens)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i, (name, s) in enumerate(zip(names, summaries)):
        by_name = {c["name"]: c for c in s.get("collectives") or []}
        phases = {(f["flow_id"], ph["label"]): ph.get("goodput_gbps")
                  for f in s.get("open_flows") or [] for ph in f.get("phases") or []}
        row = [name, s.get("scheme"), s.get("engine"), *(v[i] for v in first.values()),
               *(s.get(k) for k in SUMMARY_KEYS),
               *((by_name.get(n) or {}).get(k) for n, k, _ in colls),
               *(phases.get((fid, label)) for fid, label, _ in opens)]
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()


def value_dtype(values: list) -> str:
    """The column type of a sweep parameter's values."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return NINT
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FLOAT
    return STR


def summary_frame(text: str, first: dict[str, str] | None = None) -> pd.DataFrame:
    """Parse :func:`summary_table_text` (``first``: extra leading columns and their types)."""
    types = {"run": STR, "scheme": STR, "engine": STR, **(first or {}), **SUMMARY_KEYS}
    for c in header(text):
        if c not in types:
            types[c] = COLLECTIVE_KEYS.get(c.rsplit(".", 1)[-1], FLOAT)
    pd = _pandas()
    return pd.read_csv(io.StringIO(text), dtype=types, **_exact_floats(pd), **READ_OPTIONS)
