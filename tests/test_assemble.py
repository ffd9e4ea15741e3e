"""The shared results layer: records in schema order, port roles, the time-series tables,
HPCC's base RTT per engine."""

from dataclasses import fields

from fabriclab import spec as S
from fabriclab.cc_algorithms.hpcc import base_rtt_ns
from fabriclab.metrics import assemble as A
from fabriclab.metrics import schema
from fabriclab.topologies import from_spec, leaf_spine
from fabriclab.wire import roce as P


def test_records_follow_the_schema():
    assert [f.name for f in fields(A.PortRecord)] == schema.PORT_COLUMNS
    assert [f.name for f in fields(A.HostRecord)] == schema.HOST_COLUMNS
    r = A.PortRecord("s0:1", "s0", "h1:0", "host", 100.0, 10, 1, drops=2)
    assert r.row() == ["s0:1", "s0", "h1:0", "host", 100.0, 10, 1, 2] + [0] * 11
    assert not hasattr(r, "__dict__")  # slots


def test_port_roles():
    t = leaf_spine(2, 2, 2, 100_000_000_000, 100_000_000_000, 1000)
    leaf, spine = t.tor_of("h0"), next(s for s in t.switches if t.nodes[s].tier == 2)
    assert t.port_role("h0", 0) == "nic"
    roles = [t.port_role(leaf, i) for i in range(len(t.nodes[leaf].ports))]
    assert roles == ["host", "host", "up", "up"]  # downward-facing ports first
    assert {t.port_role(spine, i) for i in range(len(t.nodes[spine].ports))} == {"down"}


def test_timeseries_tables():
    s = A.Samples(times=[0, 1000, 1000, 3000], ports=["a", "b"], port_rates_bps=[8e9, 4e9],
                tx_bytes=[[0, 0], [1000, 0], [1000, 0], [1000, 500]],
                paused_ns=[[0, 0], [500, 0], [500, 0], [500, 0]], queue_ports=["a"],
                queue_bytes=[[0], [7], [7], [0]], hosts=["h0"],
                goodput_bytes=[[0], [100], [100], [350]])
    t = A.timeseries_tables(s)
    assert t["timeseries/link_util.csv"] == (["time_ns", "a", "b"], [
        [1000, 1.0, 0.0], [1000, 0.0, 0.0], [3000, 0.0, 0.5]])
    assert t["timeseries/queue_bytes.csv"][1] == [[0, 0], [1000, 7], [1000, 7], [3000, 0]]
    assert list(t["timeseries/pfc_paused_frac.csv"][1])[0] == [1000, 0.5, 0.0]
    assert len(t["timeseries/link_util.csv"][1]) == 3  # rows made as they are read
    assert t["timeseries/host_goodput_gbps.csv"] == (["time_ns", "h0"], [
        [1000, 0.8], [1000, 0.0], [3000, 1.0]])


def test_base_rtt_per_engine():
    sp = S.load("experiments/incast.yaml", ["scheme=hpcc"], reduced=True)
    topo = from_spec(sp.topology)
    i = 8
    sw = sp.switch
    assert base_rtt_ns(sp, topo, i) == topo.base_rtt_ns(sw.mtu_bytes + sw.header_bytes + i,
                                                        sw.header_bytes + i)
    ack = P.L2_L4_BYTES + P.BTH_LEN + P.AETH_LEN + P.ICRC_LEN
    assert base_rtt_ns(sp, topo, i, emulated=True) == topo.base_rtt_ns(
        sp.emu.mtu_bytes + P.DATA_OVERHEAD + i, ack + i)
    fixed = S.load("experiments/incast.yaml", ["scheme=hpcc", "hpcc.base_rtt_ns=9000"],
                   reduced=True)
    assert base_rtt_ns(fixed, topo, i) == base_rtt_ns(fixed, topo, i, emulated=True) == 9000
