"""The Python API gives what the CLI writes: its DataFrames equal the CLI's CSVs read with
pandas for the same seed, its summaries equal summary.json, compare and sweep write the same
files and numbers, and the example script's table matches the files it wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import fabriclab
from fabriclab import frames, outdir
from fabriclab.metrics import schema
from fabriclab.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"wall_s", "wall_run_s", "packet_hops_per_s"}  # wall-clock fields
TABLES = {"flows": "flows.csv", "collectives": "collectives.csv", "ports": "ports.csv",
          "hosts": "hosts.csv"}


def _cli(args, cwd):
    r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "-q", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def _read_csv(path: Path) -> pd.DataFrame:
    """The CLI's file read with pandas alone, typed as the API declares."""
    cols = list(pd.read_csv(path, nrows=0).columns)
    name = path.name if path.parent.name != "timeseries" else f"timeseries/{path.name}"
    return pd.read_csv(path, dtype=frames.dtypes(name, cols), keep_default_na=False,
                       na_values=[""])


def _strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


@pytest.mark.parametrize("experiment", ["incast", "victim_flow"])
def test_dataframes_equal_the_cli_files(experiment, tmp_path):
    """A reduced run in memory through the API and the CLI's files for the same spec and
    seed: every table and time series equal (values and types), summaries equal but for
    wall-clock fields; Result.load of the CLI's directory gives the same frames again."""
    spec = ROOT / "experiments" / f"{experiment}.yaml"
    _cli(["run", str(spec), "--reduced", "--no-report", "--out", "cli"], tmp_path)
    d = tmp_path / "cli"
    api = fabriclab.run(spec, reduced=True)
    loaded = fabriclab.Result.load(d)
    assert api.path is None and loaded.path == d
    for attr, name in TABLES.items():
        on_disk = _read_csv(d / name)
        assert_frame_equal(getattr(api, attr), on_disk, check_exact=True)
        assert_frame_equal(getattr(loaded, attr), on_disk, check_exact=True)
    assert sorted(api.timeseries) == sorted(p.stem for p in (d / "timeseries").glob("*.csv"))
    for name, df in api.timeseries.items():
        assert df.columns[0] == "time_ns" and df["time_ns"].dtype == "int64"
        on_disk = _read_csv(d / "timeseries" / f"{name}.csv")
        assert_frame_equal(df, on_disk, check_exact=True)
        assert_frame_equal(loaded.timeseries[name], on_disk, check_exact=True)
    cli_summary = json.loads((d / "summary.json").read_text())
    assert _strip(api.summary) == _strip(cli_summary) == _strip(loaded.summary)
    assert api.spec == loaded.spec == fabriclab.load(spec, reduced=True)
    # The frames agree with the summary they came with.
    assert len(api.flows) == api.summary["flows_total"]
    assert api.flows["end_ns"].notna().sum() == api.summary["flows_completed"]
    assert api.ports["drops"].sum() == api.summary["drops"]


def test_open_ended_flows_have_missing_integers():
    """An open-ended flow has no size, end or FCT: those cells are <NA> in nullable integer
    columns, not floats or zeros."""
    r = fabriclab.run(ROOT / "experiments/victim_flow.yaml", reduced=True)
    f = r.flows
    assert f["bytes"].dtype == "Int64" and f["end_ns"].dtype == "Int64"
    victim = f[f["group"] == "victim"].iloc[0]
    assert victim["bytes"] is pd.NA and victim["end_ns"] is pd.NA
    assert victim["delivered_bytes"] > 0
    burst = f[f["group"] == "burst"]
    assert (burst["fct_ns"] == burst["end_ns"] - burst["start_ns"]).all()


def test_every_schema_column_has_a_declared_type():
    """Each results table's columns (schema.py) have a type in frames.TABLE_DTYPES, so a
    column added to the schema cannot reach the API untyped."""
    for name, cols in frames.SCHEMA_COLUMNS.items():
        assert list(frames.dtypes(name, cols)) == cols
    assert set(frames.SCHEMA_COLUMNS) == set(schema.FILES) - {"spec.yaml", "summary.json"}


def test_load_accepts_mapping_and_strings():
    """`set` as a mapping or as KEY=VALUE strings gives the same spec; a bad value is blamed
    on that override."""
    path = ROOT / "experiments/incast.yaml"
    a = fabriclab.load(path, set={"topology.spines": 1, "workload.0.senders": 3}, reduced=True)
    b = fabriclab.load(path, set=["topology.spines=1", "workload.0.senders=3"], reduced=True)
    assert a == b and a.topology.spines == 1 and a.workload[0].senders == 3
    assert fabriclab.load(path, engine="sim", scheme="hpcc").scheme == "hpcc"
    with pytest.raises(SpecError) as e:
        fabriclab.load(path, set={"topology.spines": 0}, reduced=True)
    assert str(e.value).startswith("error in --set topology.spines=0: topology.spines = 0")


def test_save_load_and_replace(tmp_path):
    """Result.save writes what Result.load reads back; saving over it needs force, and a
    foreign file in it is refused even then."""
    r = fabriclab.run(ROOT / "experiments/incast.yaml", reduced=True, scheme="udp")
    out = tmp_path / "r"
    assert r.save(out, report=False) == out and r.path == out
    back = fabriclab.Result.load(out)
    assert_frame_equal(back.flows, r.flows)
    assert back.summary == r.summary
    with pytest.raises(outdir.OutDirError, match="--force"):
        r.save(out)
    r.save(out, force=True, report=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(outdir.OutDirError, match="notes.txt"):
        r.save(out, force=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_compare_mirrors_the_cli(tmp_path):
    """fabriclab.compare writes the files `fabriclab compare` writes, with the same table;
    its summary has one row per run with each run's summary.json numbers, and the same
    comparison in memory gives the same table."""
    spec = ROOT / "experiments/incast.yaml"
    args = ["compare", str(spec), "--reduced", "--schemes", "ecmp_dcqcn,udp", "--jobs", "1",
            "--no-report"]
    _cli([*args, "--out", "cli"], tmp_path)
    c = fabriclab.compare(spec, ["ecmp_dcqcn", "udp"], out=tmp_path / "api", jobs=1,
                          report=False, reduced=True)
    files = {p.relative_to(tmp_path / "cli").as_posix() for p in (tmp_path / "cli").rglob("*")}
    assert files == {p.relative_to(c.path).as_posix() for p in c.path.rglob("*")}
    assert (tmp_path / "cli/summary.csv").read_text() == (c.path / "summary.csv").read_text()
    t = c.summary
    assert list(t["run"]) == c.names == ["ecmp_dcqcn", "udp"]
    for (_, row), name in zip(t.iterrows(), c.names):
        s = json.loads((c.path / name / "summary.json").read_text())
        inc = s["collectives"][0]
        assert row["scheme"] == s["scheme"] and row["pfc_pause_frames"] == s["pfc_pause_frames"]
        assert row[f"{inc['name']}.completion_over_bound"] == inc["completion_over_bound"]
        assert row[f"{inc['name']}.busbw_gbps"] == inc["busbw_gbps"]
        assert row["slowdown_p99"] == s["slowdown_p99"]
    mem = fabriclab.compare(spec, ["ecmp_dcqcn", "udp"], jobs=1, reduced=True)
    assert mem.path is None
    assert_frame_equal(mem.summary, t)
    assert_frame_equal(fabriclab.Result.load(c.path).summary, t)


def test_sweep_table_follows_the_parameter(tmp_path):
    """A sweep of the switch buffer: one row per value with the value in its column; a
    smaller shared buffer makes the incast pause more (PFC fires at a fraction of the free
    buffer), and the table's numbers are the runs' own."""
    s = fabriclab.sweep(ROOT / "experiments/incast.yaml", "switch.buffer_bytes",
                        [2_000_000, 32_000_000], jobs=1, reduced=True)
    t = s.summary
    assert list(t["switch.buffer_bytes"]) == [2_000_000, 32_000_000]
    assert t["switch.buffer_bytes"].dtype == "Int64"
    assert list(t["pfc_pause_frames"]) == [r.summary["pfc_pause_frames"] for r in s.runs]
    assert t["pfc_pause_frames"][0] > t["pfc_pause_frames"][1]
    assert [r.spec.switch.buffer_bytes for r in s.runs] == [2_000_000, 32_000_000]


def test_example_script(tmp_path):
    """examples/incast_compare.py runs into a directory: its printed table's numbers equal
    the summary.json files it wrote, and its figure is a PNG."""
    r = subprocess.run([sys.executable, str(ROOT / "examples/incast_compare.py"),
                        str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stdout.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header[:2] == ["run", "scheme"] and len(rows) >= 2
    for row in rows:
        s = json.loads((tmp_path / "results" / row[0] / "summary.json").read_text())
        inc = s["collectives"][0]
        want = {"scheme": s["scheme"], "bound_x": f"{inc['completion_over_bound']:.3f}",
                "busbw_gbps": f"{inc['busbw_gbps']:.1f}",
                "slowdown_p99": f"{s['slowdown_p99']:.2f}",
                "pfc_pauses": str(s["pfc_pause_frames"])}
        got = dict(zip(header[1:], row[1:]))
        assert got == want, (got, want)
    png = tmp_path / "incast_goodput.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"wrote .*incast_goodput.png", r.stderr)
