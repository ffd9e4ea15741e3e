"""GSE on a three-tier Mininet fat-tree (issue 14, part 1): the DSCP pins a container's whole
path (edge uplink, aggregation uplink, and with them the core and the way down), GSOS in the
controller reserves every transit link of it, and the GSP in the host agent sprays over all
(k/2)^2 = 4 core paths of a 4-ary fat-tree.  These need root (CI runs as root)."""

import csv
import os

import pytest

from fabriclab import spec as S
from fabriclab.controllers.routing import transit_paths
from fabriclab.topologies import from_spec
from fabriclab.wire import roce as P
from pcap_frames import udp_payloads

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

SIZE = 2_000_000


@pytest.fixture(scope="module")
def one_flow(tmp_path_factory):
    """One 2 MB flow between pods, h0 (pod 0) -> h15 (pod 3), captured at h15."""
    from fabriclab.emu.runner import emulate
    from fabriclab.metrics.results import write_atomic
    spec = S.validate({"name": "gse-fat-tree", "engine": "mininet",
                       "topology": {"kind": "fat_tree", "k": 4}, "scheme": "gse",
                       "workload": [{"kind": "flows", "flows": [
                           {"src": "h0", "dst": "h15", "bytes": SIZE}]}],
                       "emu": {"pcap_hosts": ["h15"]}}, "test")
    res = emulate(spec, progress=False)
    return spec, res.summary, write_atomic(res, tmp_path_factory.mktemp("ft") / "run")


def test_containers_use_every_core_path_evenly_and_arrive_once_in_order(one_flow):
    """Issue 14's test: the containers use all four core paths within +-30 % of an even
    share, no container's packets take two paths, and every byte arrives once, in order (no
    NACK, no retransmission, no reorder give-up)."""
    spec, summary, out = one_flow
    assert summary["flows_completed"] == 1 and summary["drops"] == 0
    flow, = list(csv.DictReader(open(out / "flows.csv", newline="")))
    assert int(flow["delivered_bytes"]) == SIZE
    assert summary["nacks"] == 0 and summary["retransmitted_bytes"] == 0
    assert summary["timeouts"] == 0 and summary["gse"]["reorder_containers_given_up"] == 0

    data = [(tos, buf) for _, tos, dport, buf in udp_payloads(out / "pcap" / "h15.pcap")
            if dport == P.ROCE_PORT and P.decode(buf)[0] == "data"]
    psns = [P.decode(buf)[2] for _, buf in data]
    assert sorted(psns) == list(range(SIZE // spec.emu.mtu_bytes))  # each packet once
    paths: dict[int, set] = {}
    for tos, buf in data:
        _, _, seq, _, _, path = P.parse_gse_tag(buf)
        assert tos >> 2 == path + 1  # the DSCP the switches route on is the tag's path
        paths.setdefault(seq, set()).add(path)
    assert all(len(p) == 1 for p in paths.values())  # a container keeps to one path
    used = [sum(1 for p in paths.values() if k in p) for k in range(4)]
    even = len(paths) / 4
    assert all(0.7 * even <= u <= 1.3 * even for u in used), used


def test_each_dscp_takes_the_core_its_path_names(one_flow):
    """The switches follow the DSCP through all three tiers: the bytes each core sends down
    to pod 3 are the bytes of the containers whose path crosses that core (edge and
    aggregation uplink both pinned), not what ECMP would hash."""
    spec, summary, out = one_flow
    topo = from_spec(spec.topology)
    by_path: dict[int, int] = {}  # data bytes captured at h15, by container path
    for wire, tos, dport, buf in udp_payloads(out / "pcap" / "h15.pcap"):
        if dport == P.ROCE_PORT and P.decode(buf)[0] == "data":
            by_path[(tos >> 2) - 1] = by_path.get((tos >> 2) - 1, 0) + wire
    core_of = {k: links[2] for k, links in enumerate(transit_paths(topo, "h0", "h15"))}
    assert sorted(by_path) == sorted(core_of) == [0, 1, 2, 3]
    assert len({p.node for p in core_of.values()}) == 4  # each path its own core
    ports = {r["port"]: int(r["tx_bytes"]) for r in csv.DictReader(
        open(out / "ports.csv", newline=""))}
    sent = {k: ports[f"{p.node}:{p.port}"] for k, p in core_of.items()}
    total_sent, total_seen = sum(sent.values()), sum(by_path.values())
    for k in core_of:  # each core's share of the data is its path's share
        assert abs(sent[k] / total_sent - by_path[k] / total_seen) <= 0.01, (sent, by_path)
    named = {f"{p.node}:{p.port}" for p in core_of.values()}
    other = {n: b for n, b in ports.items() if n.startswith("c") and n not in named
             and b > 10_000}
    assert other == {}  # no data went down through any other core port
