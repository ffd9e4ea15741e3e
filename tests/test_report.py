"""The report module on small real runs: plots and HTML agree with each other and with
summary.json, empty data is skipped with a note, the comparison page has a column per run."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from fabriclab import spec as S
from fabriclab.metrics.results import write_atomic
from fabriclab.report import make_comparison, make_report
from fabriclab.sim.runner import simulate

SMALL = {"leaves": 2, "spines": 2, "hosts_per_leaf": 4}
COLLECTIVES = [{"kind": "incast", "receiver": "h0", "senders": 6, "bytes": 500_000},
               {"kind": "ring_allreduce", "bytes": 2_000_000, "start_us": 500}]
SPECS = {
    # A 4 MB buffer makes the incast trigger PFC pauses.
    "dcqcn": {"scheme": "ecmp_dcqcn", "topology": SMALL, "switch": {"buffer_bytes": 4_000_000},
              "workload": COLLECTIVES},
    "udp": {"scheme": "udp", "topology": SMALL, "switch": {"buffer_bytes": 4_000_000},
            "workload": COLLECTIVES},
    # No PFC and a small buffer: drops, no pauses, no flow completes (udp does not retransmit).
    "lossy": {"scheme": "udp", "topology": SMALL,
              "switch": {"buffer_bytes": 1_000_000, "pfc": {"enabled": False}},
              "stop": {"max_time_us": 3000},
              "workload": [{"kind": "incast", "receiver": "h0", "senders": 6, "bytes": 500_000}]},
    # One host pair under one leaf: no spine uplinks, no pauses.
    "pair": {"scheme": "ecmp_dcqcn", "topology": {"leaves": 1, "spines": 1, "hosts_per_leaf": 2},
             "workload": [{"kind": "flows", "flows": [{"src": "h0", "dst": "h1",
                                                       "bytes": 100_000}]}]},
    # 64 hosts, a name that needs escaping.
    "big": {"name": 'a<b>&c "q"', "scheme": "udp",
            "topology": {"leaves": 8, "spines": 4, "hosts_per_leaf": 8},
            "workload": [{"kind": "background", "cdf": "websearch", "load": 0.3,
                          "duration_us": 150},
                         {"kind": "incast", "receiver": "h0", "senders": 16, "bytes": 100_000}]},
}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name, raw in SPECS.items():
        out[name] = write_atomic(simulate(S.validate(raw), progress=False), base / name)
        make_report(out[name])
    return out


class _Page(HTMLParser):
    """Collects img/a targets, data-key cells (by column), and the first table's header."""

    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.cells: dict[tuple[str, str | None], str] = {}
        self.header: list[str] = []
        self.row_cells: dict[str, int] = {}
        self._key = None
        self._cell = None
        self._in_thead = False
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.srcs.append(a["src"])
        elif tag == "a":
            self.hrefs.append(a["href"])
        elif tag == "thead":
            self._in_thead = not self.header
        elif tag == "tr" and "data-key" in a:
            self._key = a["data-key"]
            self.row_cells[self._key] = 0
        elif tag == "td":
            key = a.get("data-key") or self._key
            if key is not None:
                self._cell = (key, a.get("data-col"))
                self._buf = []
                if "data-col" in a:
                    self.row_cells[self._key] += 1
        elif tag == "th" and self._in_thead:
            self._buf = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells[self._cell] = "".join(self._buf).strip()
            self._cell = None
        elif tag == "th" and self._in_thead:
            self.header.append("".join(self._buf).strip())
        elif tag == "thead":
            self._in_thead = False
        elif tag == "tr":
            self._key = None

    def handle_data(self, data):
        self._buf.append(data)


def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def number(text: str) -> float:
    return float(text.split()[0].replace(",", "").rstrip("\u00d7"))


def check_plots_consistent(page: Path) -> list[str]:
    """Every referenced PNG exists and is a valid image; every PNG on disk is referenced and
    has a vector twin (an SVG document) that the page links to."""
    p = parse(page)
    plots = page.parent / "plots"
    on_disk = sorted(f.name for f in plots.glob("*.png")) if plots.is_dir() else []
    referenced = sorted(Path(s).name for s in p.srcs)
    assert all(s.startswith("plots/") for s in p.srcs), p.srcs
    assert referenced == on_disk
    svgs = sorted(f.name for f in plots.glob("*.svg")) if plots.is_dir() else []
    assert svgs == sorted(Path(n).with_suffix(".svg").name for n in on_disk)
    assert sorted(Path(h).name for h in p.hrefs if h.endswith(".svg")) == svgs
    for name in svgs:
        assert ET.parse(plots / name).getroot().tag.endswith("svg"), name
    for name in on_disk:
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        with Image.open(plots / name) as im:
            im.verify()
        with Image.open(plots / name) as im:
            assert im.width >= 400 and im.height >= 250, (name, im.size)
    # self-contained: no external assets or scripts, every link resolves locally
    assert "script" not in p.tags and "link" not in p.tags
    for ref in p.srcs + p.hrefs:
        assert "://" not in ref and not ref.startswith("/"), ref
        assert (page.parent / ref).is_file(), ref
    assert not [f for f in os.listdir(page.parent) if ".tmp-" in f]
    return on_disk


@pytest.mark.parametrize("name", list(SPECS))
def test_report_plots_match_html(runs, name):
    page = runs[name] / "report.html"
    assert page.is_file()
    made = check_plots_consistent(page)
    assert "goodput.png" in made and "queues.png" in made
    text = page.read_text(encoding="utf-8")
    assert 'href="spec.yaml"' in text
    rate = json.loads((runs[name] / "summary.json").read_text())["sender_rate"]
    # a scheme without a sending rate of its own (udp) says why instead of plotting one
    assert ("flow_rate.png" in made) == (rate["meaning"] is not None)
    if rate["meaning"] is None:
        assert "No sending-rate plot" in text and rate["note"].split(":")[0] in text


@pytest.mark.parametrize("name", ["dcqcn", "lossy", "big"])
def test_summary_numbers_match_summary_json(runs, name):
    s = json.loads((runs[name] / "summary.json").read_text())
    cells = parse(runs[name] / "report.html").cells
    assert int(number(cells["drops", None])) == s["drops"]
    assert int(number(cells["ecn_marks", None])) == s["ecn_marks"]
    assert int(number(cells["pfc_pause_frames", None])) == s["pfc_pause_frames"]
    if s["slowdown_p99"] is not None:
        assert number(cells["slowdown_p99", None]) == pytest.approx(s["slowdown_p99"], abs=0.006)
    for c in s["collectives"]:
        shown = cells[f"coll.{c['name']}.completion", None]
        if c["completion_ns"] is None:
            assert shown == "\u2014"
            continue
        assert shown.endswith("\u00b5s")
        assert number(shown) == pytest.approx(c["completion_ns"] / 1000, abs=0.051)
        assert number(cells[f"coll.{c['name']}.bound", None]) == pytest.approx(
            c["bound_ns"] / 1000, abs=0.051)
        assert number(cells[f"coll.{c['name']}.busbw", None]) == pytest.approx(
            c["busbw_gbps"], abs=0.051)


def test_the_runs_cover_the_cases(runs):
    s = {n: json.loads((d / "summary.json").read_text()) for n, d in runs.items()}
    assert s["dcqcn"]["pfc_pause_frames"] > 0 and s["dcqcn"]["collectives"]
    assert s["lossy"]["drops"] > 0 and s["lossy"]["pfc_paused_ns_total"] == 0
    assert s["lossy"]["flows_completed"] == 0
    assert s["big"]["topology"]["hosts"] == 64


def test_pfc_pauses_plotted_only_when_there_are_some(runs):
    """The PFC timeline is drawn for the run that paused; the others get a sentence saying
    whether PFC was disabled or enabled and never triggered."""
    assert (runs["dcqcn"] / "plots" / "pfc.png").is_file()
    for name in ("lossy", "pair"):
        assert not (runs[name] / "plots" / "pfc.png").exists()
        assert not (runs[name] / "plots" / "pfc.svg").exists()
    assert "PFC is disabled" in (runs["lossy"] / "report.html").read_text(encoding="utf-8")
    pair = (runs["pair"] / "report.html").read_text(encoding="utf-8")
    assert "No PFC pauses: PFC is enabled but never triggered" in pair


def test_empty_data_is_skipped_with_a_note(runs):
    pair = (runs["pair"] / "report.html").read_text(encoding="utf-8")
    assert not (runs["pair"] / "plots" / "uplinks.png").exists()
    assert "No traffic crossed the spine" in pair
    assert (runs["pair"] / "plots" / "slowdown.png").is_file()
    lossy = (runs["lossy"] / "report.html").read_text(encoding="utf-8")
    assert not (runs["lossy"] / "plots" / "slowdown.png").exists()
    assert "No flow completed" in lossy
    assert "did not finish" in lossy


def test_many_hosts_are_capped_and_names_escaped(runs):
    text = (runs["big"] / "report.html").read_text(encoding="utf-8")
    assert "top 8 of" in text and "receiving hosts by bytes" in text
    assert "a&lt;b&gt;&amp;c &quot;q&quot;" in text
    assert "a<b>" not in text


def test_remade_report_drops_stale_plots(runs, tmp_path):
    """A plot skipped on a remade report loses both its PNG and its SVG from before."""
    d = runs["lossy"]
    (d / "plots" / "pfc.png").write_bytes((d / "plots" / "goodput.png").read_bytes())
    (d / "plots" / "pfc.svg").write_bytes((d / "plots" / "goodput.svg").read_bytes())
    assert make_report(d) == d / "report.html"
    assert not (d / "plots" / "pfc.png").exists()
    assert not (d / "plots" / "pfc.svg").exists()
    check_plots_consistent(d / "report.html")


def test_comparison_has_one_column_per_run(runs, tmp_path):
    names = ["dcqcn", "udp", "lossy"]
    out = tmp_path / "cmp"
    page = make_comparison([runs[n] for n in names], out, title="incast <3 schemes>")
    assert page == out / "index.html"
    made = check_plots_consistent(page)
    assert {"collectives.png", "slowdown.png", "slowdown_group.png", "queue_cdf.png",
            "contended.png", "pfc.png", "uplink_balance.png", "counters.png"} <= set(made)
    p = parse(page)
    assert p.header == ["metric", "ecmp_dcqcn", "udp (udp)", "udp (lossy)"]
    assert set(p.row_cells.values()) == {len(names)}
    reports = [Path(os.path.normpath(out / h)) for h in p.hrefs if h.endswith("report.html")]
    assert reports == [runs[n] / "report.html" for n in names]
    for i, n in enumerate(names):
        s = json.loads((runs[n] / "summary.json").read_text())
        assert int(number(p.cells["drops", str(i)])) == s["drops"]
        assert int(number(p.cells["cnps", str(i)])) == s["cnps"]
        inc = s["collectives"][0]
        shown = p.cells[f"coll.{inc['name']}.completion", str(i)]
        if inc["completion_ns"] is None:
            assert shown == "\u2014"
        else:
            assert number(shown) == pytest.approx(inc["completion_ns"] / 1000, abs=0.051)
    assert "incast &lt;3 schemes&gt;" in page.read_text(encoding="utf-8")


def test_comparison_without_pauses_or_collectives_says_so(runs, tmp_path):
    page = make_comparison([runs["pair"], runs["lossy"]], tmp_path / "cmp2")
    made = check_plots_consistent(page)
    text = page.read_text(encoding="utf-8")
    assert "pfc.png" not in made and "No PFC pauses in any run" in text
    assert "counters.png" in made


def test_dcqcn_variant_is_in_the_summary_and_on_the_comparison_page(tmp_path):
    """docs/dcqcn.md: every run and comparison page says which DCQCN increase ran."""
    from fabriclab import api
    spec = api.load("experiments/incast.yaml", ["dcqcn.variant=mlx"], True, "sim", None)
    c = api.compare(spec, ["ecmp_dcqcn", "hpcc"], out=tmp_path / "cmp", report=True,
                    progress=False)
    by = {r.summary["scheme"]: r.summary for r in c.runs}
    assert by["ecmp_dcqcn"]["dcqcn_variant"] == "mlx" and "dcqcn_variant" not in by["hpcc"]
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "the mlx variant" in page
