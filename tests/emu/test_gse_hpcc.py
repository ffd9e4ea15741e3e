"""GSE and HPCC on real packets (issue 5): GSOS in the os-ken controller, the GSP in the host
agents (requests, grants, container spraying, reordering), INT stamped by the eBPF switch
ports, and what happens when the controller dies mid-run.

2 leaves x 2 spines x 2 hosts (h0, h1 under l0; h2, h3 under l1), 100G links emulated at
10 Mb/s.  These need root (CI runs as root, so they run there).
"""

import csv
import os

import pytest

from fabriclab.cc_algorithms.gse import GseParams

from fabriclab import spec as S
from fabriclab.wire import roce as P
from pcap_frames import udp_payloads

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

TOPO = {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2}
INCAST = {"name": "incast", "kind": "incast", "receiver": "h0", "senders": ["h1", "h2", "h3"],
          "bytes": 1_000_000}


def _emulate(tmp, **kw):
    from fabriclab.emu.runner import emulate
    from fabriclab.metrics.results import write_atomic
    spec = S.validate({"name": "issue5", "engine": "mininet", "topology": TOPO, **kw}, "test")
    res = emulate(spec, progress=False)
    return res.summary, write_atomic(res, tmp / "run")


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _ports(out):
    return {r["port"]: r for r in _csv(out / "ports.csv")}


# -- GSE ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gse_incast(tmp_path_factory):
    """3 -> 1 incast of 1 MB each under GSE (central GSOS), captured at h0."""
    return _emulate(tmp_path_factory.mktemp("gse"), scheme="gse", workload=[INCAST],
                    emu={"pcap_hosts": ["h0"]})


@pytest.fixture(scope="module")
def dcqcn_incast(tmp_path_factory):
    """The same incast under ECMP + DCQCN: what GSE is compared with."""
    return _emulate(tmp_path_factory.mktemp("dcqcn"), scheme="ecmp_dcqcn", workload=[INCAST])


def test_gse_incast_is_lossless_fair_and_near_the_bound(gse_incast, dcqcn_incast):
    """GSE incast 3 -> 1: no drop, h0's port queue stays under one container (grants are paced
    at its rate) and far below DCQCN's, the three senders share h0's port evenly (equal
    messages finish together), and the incast completes within 10 % of the bound."""
    summary, out = gse_incast
    assert summary["flows_completed"] == 3 and summary["drops"] == 0
    g = summary["gse"]
    container = GseParams.defaults().container_bytes
    # one request and one grant per container: nothing resent (a NACK or a timeout would
    # ask again for what it resends)
    assert g["grants"] == g["requests"] == 3 * -(-1_000_000 // container), \
        {k: summary[k] for k in ("nacks", "timeouts", "retransmitted_bytes")}
    assert g["fell_back_to_egress"] == {}  # GSOS answered all along
    q_gse = int(_ports(out)["l0:0"]["max_queue_bytes"])  # l0's port to h0
    q_dcqcn = int(_ports(dcqcn_incast[1])["l0:0"]["max_queue_bytes"])
    assert q_gse <= 1.1 * container, q_gse  # its payload and the frames' headers
    assert q_gse < q_dcqcn / 4, (q_gse, q_dcqcn)
    fct = [int(r["fct_ns"]) for r in _csv(out / "flows.csv")]
    assert min(fct) >= 0.9 * max(fct), fct
    # delivered bytes per sender half-way through: Jain's fairness index
    rx = _csv(out / "timeseries/flow_goodput_gbps.csv")
    mid = [r for r in rx if 0 < int(r["time_ns"]) <= max(fct) // 2]
    got = [sum(float(r[f"f{i}"]) for r in mid) for i in range(3)]
    assert sum(got) ** 2 / (3 * sum(x * x for x in got)) >= 0.95, got
    c = summary["collectives"][0]
    assert c["completion_over_bound"] <= 1.10, c


def test_gse_capture_shows_requests_grants_and_container_tags(gse_incast):
    """h0's capture (lab 2): every data frame carries a container tag (BTH byte 8 bit 1) of
    one of the three senders, and the tags of each sender's containers are complete and
    unique.  Requests to GSOS never reach h0 (the leaves punt them)."""
    summary, out = gse_incast
    frames = udp_payloads(out / "pcap" / "h0.pcap")
    data = [(tos, buf) for _, tos, dport, buf in frames
            if dport == P.ROCE_PORT and P.decode(buf)[0] == "data"]
    assert len(data) == 3000
    assert all(P.has_gse_tag(buf) for _, buf in data)
    seen: dict[int, set] = {}
    for _, buf in data:
        src, dst, seq, index, last, path = P.parse_gse_tag(buf)
        assert dst == 0
        key = (seq, index)
        assert key not in seen.setdefault(src, set()), (src, key)
        seen[src].add(key)
    assert sorted(seen) == [1, 2, 3]
    assert all(len(s) == 1000 for s in seen.values())
    assert not [f for f in frames if f[2] == P.GSE_PORT]


def test_containers_of_one_flow_use_both_spines_and_arrive_once_in_order(tmp_path):
    """One 2 MB flow h0 -> h3 under GSE: its containers alternate between the two spines
    (DSCP 1 and 2), each spine carries a good part of it, and h3's transport gets every
    byte once and in order: no NACK, no retransmission, no give-up of the reorder buffer."""
    size = 2_000_000
    summary, out = _emulate(tmp_path, scheme="gse", emu={"pcap_hosts": ["h3"]},
                            workload=[{"kind": "flows",
                                       "flows": [{"src": "h0", "dst": "h3", "bytes": size}]}])
    assert summary["flows_completed"] == 1
    assert int(_csv(out / "flows.csv")[0]["delivered_bytes"]) == size
    assert summary["nacks"] == 0 and summary["retransmitted_bytes"] == 0
    assert summary["timeouts"] == 0
    assert summary["gse"]["reorder_containers_given_up"] == 0
    ports = _ports(out)
    down = [int(ports[p]["tx_bytes"]) for p in ("s0:1", "s1:1")]  # each spine's port to l1
    assert min(down) > 0.3 * sum(down), down
    data = [(tos, buf) for _, tos, dport, buf in udp_payloads(out / "pcap" / "h3.pcap")
            if dport == P.ROCE_PORT and P.decode(buf)[0] == "data"]
    assert len(data) == size // 1000
    paths = {}
    for tos, buf in data:
        _, _, seq, _, _, path = P.parse_gse_tag(buf)
        assert tos >> 2 == path + 1  # the DSCP the leaf routes on is the tag's path
        paths.setdefault(seq, set()).add(path)
    assert all(len(p) == 1 for p in paths.values())  # a container keeps to one path
    used = [sum(1 for p in paths.values() if k in p) for k in (0, 1)]
    assert min(used) >= len(paths) // 3, used


def test_controller_killed_mid_run(tmp_path):
    """Kill the controller (SIGKILL) 80 us into the GSE incast: the installed flows keep
    forwarding, every sender still waiting for GSOS falls back to egress scheduling within
    a few gse.fallback_us, the incast completes without a drop, and the results say what
    happened.  (Nothing is left behind: the autouse fixture checks.)"""
    kill_ns = 80_000
    summary, out = _emulate(tmp_path, scheme="gse", workload=[INCAST],
                            emu={"kill_controller_at_us": kill_ns / 1000, "timeout_s": 120})
    assert summary["stopped"] == "completed" and summary["flows_completed"] == 3
    assert summary["drops"] == 0
    emu = summary["emulation"]
    assert emu["controller"].startswith("exited at ")
    died = int(emu["controller"].split()[2])
    assert kill_ns <= died < kill_ns + 20_000
    fell = summary["gse"]["fell_back_to_egress"]
    assert sorted(fell) == ["h1", "h2", "h3"], fell
    fallback = 100_000  # gse.fallback_us: silence, probe, silence
    assert all(died < t <= died + 3 * fallback for t in fell.values()), fell
    from fabriclab.report import make_report
    assert "exited at" in make_report(out).read_text()


# -- HPCC -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hpcc_incast(tmp_path_factory):
    """2 -> 1 incast across the spines (h2, h3 -> h0: three switch hops) under HPCC."""
    return _emulate(tmp_path_factory.mktemp("hpcc"), scheme="hpcc",
                    workload=[{"name": "incast", "kind": "incast", "receiver": "h0",
                               "senders": ["h2", "h3"], "bytes": 1_000_000}],
                    emu={"pcap_hosts": ["h0"]})


def test_int_records_are_plausible_at_every_hop(hpcc_incast):
    """Every data frame reaching h0 carries 3 INT records (l1 up, spine down, l0 down) with
    the emulated rate and time stamps in path order.  At h0's port every frame is in the
    capture, so its tx-byte counter moves by exactly the frames' lengths, and the queue it
    reports follows the phantom queue's law: grows by the bytes that came in, drains at most
    at the port rate."""
    summary, out = hpcc_incast
    tdf = summary["emulation"]["time_dilation"]
    rate_kbps = round(100e9 / tdf / 1000)
    data = [(wl, buf) for wl, _, dport, buf in udp_payloads(out / "pcap" / "h0.pcap")
            if dport == P.ROCE_PORT and P.decode(buf)[0] == "data"]
    assert len(data) == 2000
    last_hop = []
    for wl, buf in data:
        assert P.has_int(buf)
        recs = P.parse_int(buf)
        assert len(recs) == 3
        assert all(r[3] == rate_kbps for r in recs)
        assert recs[0][0] <= recs[1][0] <= recs[2][0]
        last_hop.append((recs[2], wl))
    last_hop.sort(key=lambda x: x[0][0])
    bps = rate_kbps * 1000 / 8 / 1e9  # bytes per ns
    grew = 0
    for ((t1, tx1, q1, _), len1), ((t2, tx2, q2, _), len2) in zip(last_hop, last_hop[1:]):
        dtx = (tx2 - tx1) % (1 << 32)
        assert dtx == len2, (dtx, len2)  # nothing but these frames passed the port
        assert q2 <= q1 + len1  # no arrival in between: the queue cannot have grown
        assert q2 >= q1 + len1 - (t2 - t1) * bps - 2  # drained at most at the port rate
        grew += q2 > 0
    assert grew > len(last_hop) // 4  # the incast does queue at h0's port
    assert max(r[2] for r, _ in last_hop) < int(_ports(out)["l0:0"]["max_queue_bytes"]) + 1


def test_hpcc_senders_windows_respond_to_int(hpcc_incast):
    """Both senders start at line rate (a window of one BDP, 200 Gb/s offered to a 100G
    port).  The INT they get back (a queue at h0's port, a link at full rate) makes HPCC cut
    each window by more than a fifth, and together the two windows come down to about the
    port's rate (HPCC aims at eta = 95 %; without a reaction they would stay at 200 Gb/s),
    and the incast still finishes without a drop.  How the port is shared between the two
    is not asserted: HPCC converges to fairness only by its additive increase, slowly."""
    summary, out = hpcc_incast
    assert summary["flows_completed"] == 2 and summary["drops"] == 0
    rates = _csv(out / "timeseries/flow_rate_gbps.csv")
    run = [(int(r["time_ns"]), float(r["f0"]), float(r["f1"])) for r in rates
           if int(r["time_ns"]) >= 0]
    assert run[0][1] == pytest.approx(100, rel=0.01) and run[0][2] == pytest.approx(100, rel=0.01)
    both = [(t, a, b) for t, a, b in run if a > 0 and b > 0]
    for k, f in ((1, "f0"), (2, "f1")):
        assert min(x[k] for x in both) < 80, (f, min(x[k] for x in both))
    end = both[-1][0]
    later = [a + b for t, a, b in both if t >= end / 3]
    assert sum(later) / len(later) < 125, later  # measured 90.9-91.9 Gb/s (simulator: 90.0)
