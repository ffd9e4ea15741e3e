"""The figures that answer an experiment's question, checked on the matplotlib objects the
report draws (captured as they are saved) and on the pages, for small real runs: the named
bottleneck port, the PFC timeline and its cascade, slowdown per size and per group with n
and thin bins, the open-ended flows' table, and an older results directory still rendering.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fabriclab import spec as S
from fabriclab.metrics.results import write_atomic
from fabriclab.report import (bottleneck, compare_plots, flows, make_comparison, make_report,
                              pfc, plots, slowdown)
from fabriclab.report.data import load_run
from fabriclab.sim.runner import simulate

from test_report import check_plots_consistent, parse

EXP = Path(__file__).resolve().parents[1] / "experiments"
MODULES = [bottleneck, compare_plots, flows, pfc, plots]


def _run(base: Path, name: str, spec: S.Spec) -> Path:
    d = write_atomic(simulate(spec, progress=False), base / name)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fig")
    incast = EXP / "incast.yaml"
    return {
        # a 300 kB switch buffer makes the reduced incast pause; the default one does not
        "pfc": _run(base, "pfc", S.load(incast, ["switch.buffer_bytes=300000"], reduced=True)),
        "quiet": _run(base, "quiet", S.load(incast, [], reduced=True)),
        "gse": _run(base, "gse", S.load(incast, ["scheme=gse"], reduced=True)),
        "off": _run(base, "off", S.load(incast, ["switch.buffer_bytes=300000",
                                                 "switch.pfc.enabled=false"], reduced=True)),
        "victim": _run(base, "victim", S.load(EXP / "victim_flow.yaml", [], reduced=True)),
        # three incasts ("burst#0..2", one group) and a ring all-reduce of 112 flows
        "groups": _run(base, "groups", S.validate({
            "scheme": "ecmp_dcqcn", "topology": {"leaves": 2, "spines": 2, "hosts_per_leaf": 4},
            "workload": [{"name": "burst", "kind": "incast", "receiver": "h0", "senders": 5,
                          "bytes": 100_000, "repeat": 3, "interval_us": 40},
                         {"name": "ring", "kind": "ring_allreduce", "bytes": 800_000}]})),
    }


@pytest.fixture
def figures(monkeypatch) -> dict:
    """Every figure the report saves, by file name (the last one saved under that name)."""
    seen: dict = {}
    for mod in MODULES:
        real = mod.save

        def capture(fig, plots_dir, name, _real=real):
            seen[name] = fig
            return _real(fig, plots_dir, name)
        monkeypatch.setattr(mod, "save", capture)
    return seen


def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def _ports(d: Path) -> dict[str, dict]:
    with open(d / "ports.csv", newline="") as fh:
        return {r["port"]: r for r in csv.DictReader(fh)}


def _series(d: Path, name: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    with open(d / "timeseries" / f"{name}.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    data = np.array([[float(c or "nan") for c in r] for r in rows[1:]])
    return data[:, 0], rows[0][1:], data[:, 1:]


def test_bottleneck_is_the_incast_receivers_port(runs, figures, tmp_path):
    """The report names as bottleneck the leaf port whose peer is the incast's receiver, and
    draws that port's queue samples over time and as a CDF; the comparison's queue CDF is
    each run's own bottleneck port, named in the legend."""
    d = runs["pfc"]
    receiver = S.load(EXP / "incast.yaml", reduced=True).workload[0].receiver
    rx_port = [p for p, r in _ports(d).items() if r["peer"].split(":")[0] == receiver]
    assert len(rx_port) == 1
    bp = _summary(d)["bottleneck_port"]
    assert bp["port"] == rx_port[0] and bp["peer"] == receiver
    make_report(d)
    fig = figures["queues.png"]
    assert rx_port[0] in fig._suptitle.get_text() and receiver in fig._suptitle.get_text()
    _, names, q = _series(d, "queue_bytes")
    line = fig.axes[0].lines[0]
    assert line.get_label().startswith(f"{rx_port[0]} ") and "bottleneck" in line.get_label()
    drawn = np.asarray(line.get_ydata()) * 1000
    assert np.allclose(drawn, np.nan_to_num(q[:len(drawn), names.index(rx_port[0])]))
    # the CDF ends at the largest sample and reaches 1
    cdf = fig.axes[1].lines[0]
    assert cdf.get_ydata()[-1] == pytest.approx(1.0)
    assert cdf.get_xdata()[-1] * 1000 == pytest.approx(np.nanmax(q[:, names.index(rx_port[0])]))
    assert rx_port[0] in (d / "report.html").read_text(encoding="utf-8")

    make_comparison([runs["pfc"], runs["gse"]], tmp_path / "cmp")
    legend = [t.get_text() for t in figures["queue_cdf.png"].axes[0].get_legend().get_texts()]
    for lab, r in zip(legend, (runs["pfc"], runs["gse"])):
        assert _summary(r)["bottleneck_port"]["port"] in lab


def test_pfc_timeline_drawn_when_pfc_fires(runs, figures):
    """With a small buffer the incast pauses ports: the timeline has one row per paused port,
    labelled with the peer that sent the PAUSE (ports.csv), in order of first pause, and the
    table lists the same ports in the same order."""
    d = runs["pfc"]
    assert _summary(d)["pfc_pause_frames"] > 0
    make_report(d)
    ax = figures["pfc.png"].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ports = _ports(d)
    paused = {p for p, r in ports.items() if float(r["paused_ns"] or 0) > 0}
    shown = [re.match(r"(\S+) \(paused by (\S+)\)", lab).groups() for lab in labels]
    assert {p for p, _ in shown} == paused
    assert all(ports[p]["peer"] == by for p, by in shown)
    t, names, frac = _series(d, "pfc_paused_frac")
    first = [t[np.argmax(frac[:, names.index(p)] > 0)] for p, _ in shown]
    assert first == sorted(first)
    table = parse(d / "report.html").cells
    rows = [k[0][4:] for k in table if k[0].startswith("pfc.")]
    assert rows == [p for p, _ in shown]
    assert (d / "plots" / "pfc.svg").is_file()


@pytest.mark.parametrize("name, why", [
    ("quiet", "PFC is enabled but never triggered"),
    ("gse", "PFC is enabled but never triggered"),
    ("off", "PFC is disabled in this spec")])
def test_pfc_timeline_replaced_by_a_sentence(runs, name, why):
    """Without pauses there is no timeline, and the sentence says whether PFC was off."""
    d = runs[name]
    assert _summary(d)["pfc_paused_ns_total"] == 0
    make_report(d)
    assert not (d / "plots" / "pfc.png").exists() and not (d / "plots" / "pfc.svg").exists()
    assert why in (d / "report.html").read_text(encoding="utf-8")


def test_pfc_cascade_of_the_victim_flow(runs):
    """In the victim-flow experiment the burst's receiver leaf pauses the spine, the spine
    then pauses the sender leaf's uplink, and that pause reaches the victim's NIC: the
    cascade names each step, in time order."""
    d = runs["victim"]
    steps = {p.port: p for p in pfc.cascade(load_run(d))}
    spine_down, uplink = steps["s0:1"], steps["l0:8"]
    assert spine_down.by == "l1:8" and uplink.by == "s0:0"
    assert uplink.first_ns >= spine_down.first_ns
    assert uplink.propagated_via == "s0:1"
    assert steps["h1:0"].propagated_via == "l0:8"
    assert steps["h1:0"].propagated_ns >= uplink.first_ns
    make_report(d)
    row = _row((d / "report.html").read_text(encoding="utf-8"), "pfc.l0:8")
    assert row[1:3] == ["l0:8", "s0:0"] and "s0:1 was paused" in row[3]


def _bar_values(ax) -> list[tuple[float, str]]:
    return [(b.get_height(), b.get_hatch() or "") for b in ax.patches if b.get_height() > 0]


def test_slowdown_per_size_and_group_with_n_and_thin_bins(runs, figures, tmp_path):
    """The run's slowdown figure has a panel per flow size and per workload group (three
    repeated incasts count as one group); each tick says n, which matches flows.csv; a
    percentile is hatched exactly when fewer than one flow of its bin lies above it."""
    d = runs["groups"]
    make_report(d)
    with open(d / "flows.csv", newline="") as fh:
        done = [r for r in csv.DictReader(fh) if r["slowdown"]]
    n_by_group = {}
    for r in done:
        g = r["group"].split("#")[0]
        n_by_group[g] = n_by_group.get(g, 0) + 1
    assert n_by_group["burst"] == 15 and n_by_group["ring"] >= 100
    size_ax, group_ax = figures["slowdown.png"].axes[:2]
    ticks = [t.get_text() for t in group_ax.get_xticklabels()]
    assert ticks == [f"{g}\nn={n:,}" for g, n in n_by_group.items()]
    assert sum(int(t.get_text().split("n=")[1].replace(",", ""))
               for t in size_ax.get_xticklabels()) == len(done)
    # bars are drawn series by series (p50, p95, p99), one bar per group in each
    bars = _bar_values(group_ax)
    groups = list(n_by_group)
    for k, q in enumerate(slowdown.QUANTILES):
        for j, g in enumerate(groups):
            hatched = bars[k * len(groups) + j][1] != ""
            assert hatched == (n_by_group[g] * (100 - q) < 100), (q, g)
    legend = [t.get_text() for t in group_ax.get_legend().get_texts()]
    assert any(lab.startswith("thin") for lab in legend)

    make_comparison([runs["groups"], runs["pfc"]], tmp_path / "cmp")
    ax = figures["slowdown_group.png"].axes[0]
    counts = sorted(int(a.get_text().replace(",", "")) for a in ax.texts)
    assert counts == sorted(list(n_by_group.values()) + [6])


def _row(html: str, key: str) -> list[str]:
    """The cell texts of the table row with data-key ``key``."""
    m = re.search(rf'<tr data-key="{re.escape(key)}">(.*?)</tr>', html)
    assert m, key
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(1))]


def test_open_ended_flows_table_and_no_stop_banner(runs, tmp_path):
    """The victim-flow report lists each open-ended flow's goodput per phase as in the
    summary and does not warn that the run stopped early; a finite flow cut short by
    stop.time_us still does."""
    d = runs["victim"]
    s = _summary(d)
    assert s["stopped"] == "stop.time_us" and s["open_flows"]
    make_report(d)
    text = (d / "report.html").read_text(encoding="utf-8")
    assert "stopped before the workload finished" not in text and "did not finish" not in text
    for f in s["open_flows"]:
        for ph in f["phases"]:
            row = _row(text, f"open.f{f['flow_id']}.{ph['label']}")
            assert float(row[3].split()[0]) == pytest.approx(ph["goodput_gbps"], abs=0.051)
    page = make_comparison([d], tmp_path / "cmp")
    cells = parse(page).cells
    victim = next(f for f in s["open_flows"] if f["group"] == "victim")
    for ph in victim["phases"]:
        shown = cells[(f"open.f{victim['flow_id']}.{ph['label']}", None)]
        assert float(shown.split()[0]) == pytest.approx(ph["goodput_gbps"], abs=0.051)

    cut = write_atomic(simulate(S.load(EXP / "incast.yaml", ["stop.time_us=20"], reduced=True),
                                progress=False), tmp_path / "cut")
    assert _summary(cut)["stopped"] == "stop.time_us"
    make_report(cut)
    assert "stopped before the workload finished" in (cut / "report.html").read_text(
        encoding="utf-8")


NEW_KEYS = ["payload_delivered_bytes", "bottleneck_port", "contended_port", "open_flows",
            "tracked_flows", "sender_rate"]


def test_results_without_the_new_data_still_render(runs, tmp_path):
    """A results directory written before the new summary keys and timeseries existed
    renders: the new figures are replaced by sentences saying what is missing, every PNG
    has its SVG, and bytes delivered falls back to flows.csv's payload."""
    src = runs["pfc"]
    d = tmp_path / "old"
    d.mkdir()
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_file() and rel.parts[0] not in ("plots",) and f.name not in (
                "report.html", "contended_goodput_gbps.csv"):
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(f.read_bytes())
    s = _summary(d)
    payload = s["payload_delivered_bytes"]
    (d / "summary.json").write_text(json.dumps({k: v for k, v in s.items()
                                                if k not in NEW_KEYS}))
    page = make_report(d)
    made = check_plots_consistent(page)
    assert "contended.png" not in made
    assert {"queues.png", "pfc.png", "slowdown.png", "flow_rate.png"} <= set(made)
    text = page.read_text(encoding="utf-8")
    assert text.count("older fabriclab") >= 2
    shown = parse(page).cells[("payload_delivered_bytes", None)]
    assert float(shown.split()[0]) * 1e6 == pytest.approx(payload, rel=0.01)
    cmp = make_comparison([d, runs["pfc"]], tmp_path / "cmp")
    check_plots_consistent(cmp)
    assert "older fabriclab" in cmp.read_text(encoding="utf-8")


def test_comparison_opens_with_the_question(runs, tmp_path):
    """The comparison page starts with the experiment's question (spec ``question``), then its
    description, before any section; a spec without a question gets no question line."""
    question = S.load(EXP / "victim_flow.yaml").question
    assert question
    text = make_comparison([runs["victim"]], tmp_path / "cmp").read_text(encoding="utf-8")
    body = text[text.index("<body>"):]
    q, desc, first_h2 = (body.index(question.strip()[:40]), body.index("PFC pause propagation"),
                         body.index("<h2>"))
    assert q < desc < first_h2
    groups = make_comparison([runs["groups"]], tmp_path / "cmp2").read_text(encoding="utf-8")
    assert "Question:" not in groups
