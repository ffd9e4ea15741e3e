"""The controller process against real Open vSwitch bridges (userspace datapath).

Bridges are named ``flbc*`` and are the only OVS objects these tests create; they and the
controller process are removed in finalizers, by name and by PID.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from ovs_harness import EXIT_TIMEOUT_S, Controller, add_bridge, del_bridges, dump_flows, \
    listening, need_ovs, sh, tx_packets

from fabriclab.controllers import switch_tables
from fabriclab.wire.ready import read_ready_file
from fabriclab.topologies import Topology, leaf_spine

BRIDGE_PREFIX = "flbc"
UNKNOWN_DPID = 0x63


def _bridge_name(switch: str) -> str:
    return BRIDGE_PREFIX + switch.replace("_", "")


@pytest.fixture(scope="module")
def fabric(tmp_path_factory):
    """Controller + one OVS bridge per switch of a 2x2x2 leaf-spine, plus one bridge whose
    dpid the topology does not know."""
    need_ovs()
    topo = leaf_spine(2, 2, 2, 100_000_000_000, 100_000_000_000, 1000)
    ctl = Controller(tmp_path_factory.mktemp("controller"), topo)
    created: list[str] = []
    try:
        ctl.wait_listening()
        for s in topo.switches:
            add_bridge(_bridge_name(s), topo.dpid(s), len(topo.nodes[s].ports), ctl.port,
                        created)
        add_bridge(BRIDGE_PREFIX + "x", UNKNOWN_DPID, 1, ctl.port, created)
        ctl.wait_ready({topo.dpid(s) for s in topo.switches})
        yield topo, ctl
    finally:
        ctl.stop()
        del_bridges(created)


def _groups(bridge: str) -> dict[int, list[str]]:
    out = {}
    for line in sh("ovs-ofctl", "-O", "OpenFlow13", "dump-groups", bridge).splitlines():
        m = re.search(r"group_id=(\d+),type=(\w+),(.*)", line)
        if m:
            assert m.group(2) == "select", line
            out[int(m.group(1))] = [b.rstrip(",") for b in m.group(3).split("bucket=")[1:]]
    return out


@pytest.mark.root
def test_ports_match_model(fabric):
    topo, _ = fabric
    for s in topo.switches:
        for p in range(len(topo.nodes[s].ports)):
            iface = f"{_bridge_name(s)}p{Topology.ofport(p)}"
            assert sh("ovs-vsctl", "get", "interface", iface, "ofport").strip() == str(
                Topology.ofport(p))


@pytest.mark.root
def test_tables_installed(fabric):
    topo, ctl = fabric
    tables = switch_tables(topo)
    for s in topo.switches:
        bridge = _bridge_name(s)
        groups = _groups(bridge)
        flows = dump_flows(bridge)
        if topo.nodes[s].kind == "leaf":
            assert len(groups) == 1, groups
            (buckets,) = groups.values()
            # One bucket per spine; OVS prints a weight only when it is not 1.
            assert sorted(buckets) == ["actions=output:3", "actions=output:4"], buckets
        else:
            assert groups == {}
        for h in topo.hosts:
            ip = topo.nodes[h].ip
            route = tables[topo.dpid(s)].route_to(ip)
            want = (f"group:{route.group_id}" if route.group_id is not None
                    else f"output:{route.output_port}")
            hits = [f for f in flows if re.search(rf"priority=100,ip,nw_dst={re.escape(ip)} ", f)]
            assert len(hits) == 1 and hits[0].endswith(f"actions={want}"), (s, h, flows)
        miss = [f for f in flows if "priority=0 " in f]
        assert len(miss) == 1 and miss[0].endswith("actions=drop"), flows
        assert len(flows) == len(topo.hosts) + 1, flows
    log = ctl.log.read_text()
    assert f"unknown dpid {UNKNOWN_DPID:016x}" in log
    assert UNKNOWN_DPID not in read_ready_file(ctl.ready_file)
    assert dump_flows(BRIDGE_PREFIX + "x") == []  # nothing installed on a stranger


@pytest.mark.root
def test_trace_uses_the_tables(fabric):
    """ofproto/trace: IPv4 to a remote host goes to the SELECT group, ARP is dropped."""
    topo, _ = fabric
    bridge = _bridge_name("l0")
    tr = sh("ovs-appctl", "ofproto/trace", bridge,
             f"in_port=1,tcp,nw_src={topo.nodes['h0'].ip},nw_dst={topo.nodes['h3'].ip},"
             "tp_src=1234,tp_dst=80")
    # With selection_method=hash the bucket is chosen while translating, so the trace shows
    # the group and the uplink it picked.
    assert "group:1" in tr and re.search(r"output:[34]\b", tr), tr
    tr = sh("ovs-appctl", "ofproto/trace", bridge, "in_port=1,arp")
    assert "Datapath actions: drop" in tr, tr


def _frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, proto: int,
           sport: int) -> bytes:
    """An Ethernet/IPv4 frame carrying a TCP SYN (proto 6) or a UDP datagram (17) to port 9;
    L4 checksums are left 0, which the switch does not check."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, 9, 0, 0, 5 << 4, 0x02, 65535, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, 9, 8 + 9, 0) + b"fabriclab"
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    csum = sum(struct.unpack("!10H", hdr))
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
    hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + hdr + l4


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


@pytest.mark.root
def test_groups_hash_the_five_tuple(fabric):
    """Negotiated OpenFlow 1.5: the SELECT groups carry OVS's selection method 'hash' over
    the IPv4 5-tuple (the default hash would ignore UDP ports)."""
    out = sh("ovs-ofctl", "-O", "OpenFlow15", "dump-groups", _bridge_name("l0"))
    assert "selection_method=hash" in out, out
    assert "udp_src" in out and "ip_src" in out, out


@pytest.mark.root
@pytest.mark.parametrize("proto", [6, 17], ids=["tcp", "udp"])
def test_packets_spread_over_both_spines(fabric, proto):
    """Real frames into l0's host port: every one leaves by an uplink, and 64 flows between
    one host pair (one source port each) use both spines -- for UDP too, which is what
    RoCE's per-queue-pair source port needs."""
    topo, _ = fabric
    bridge = _bridge_name("l0")
    for p in (1, 3, 4):  # the tap devices behind internal ports must be up to pass frames
        sh("ip", "link", "set", f"{bridge}p{p}", "up")
    before = tx_packets(bridge)
    n = 64
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((f"{bridge}p1", 0))
        for sport in range(10000, 10000 + n):
            s.send(_frame(topo.host_mac("h0"), topo.host_mac("h3"), topo.nodes["h0"].ip,
                          topo.nodes["h3"].ip, proto, sport))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = tx_packets(bridge)
        sent = {p: after[p] - before.get(p, 0) for p in (3, 4)}
        if sum(sent.values()) >= n:
            break
        time.sleep(0.1)
    assert sum(sent.values()) == n, (sent, before, after)
    assert all(v > 0 for v in sent.values()), sent  # all on one: probability 2**-63


@pytest.mark.root
def test_sigterm_exits_zero_and_flows_stay(fabric):
    """Also checks, while it still runs, that the controller listens on 127.0.0.1 only."""
    topo, ctl = fabric
    if ctl.proc.poll() is not None:
        pytest.fail(f"controller already exited:\n{ctl.diagnostics()}")
    assert listening(ctl.proc.pid) == [("tcp", "127.0.0.1", ctl.port)]
    before = {s: dump_flows(_bridge_name(s)) for s in topo.switches}
    t0 = time.monotonic()
    ctl.proc.send_signal(signal.SIGTERM)
    assert ctl.proc.wait(EXIT_TIMEOUT_S) == 0, ctl.diagnostics()
    assert time.monotonic() - t0 < EXIT_TIMEOUT_S
    assert "stopping on SIGTERM" in ctl.log.read_text()
    time.sleep(1)  # let the switches notice the lost connection

    def strip(flows):  # counters move on their own (collected lazily): compare entries only
        return [re.sub(r"(duration|n_packets|n_bytes)=[^,]*, ", "", f) for f in flows]

    for s in topo.switches:
        assert strip(dump_flows(_bridge_name(s))) == strip(before[s]), s
    assert len(_groups(_bridge_name("l0"))) == 1


def test_sigint_exits_zero(tmp_path):
    """No switch needed: the process alone stops cleanly on ^C."""
    ctl = Controller(tmp_path, leaf_spine(2, 2, 2, 1, 1, 1))
    try:
        ctl.wait_listening()
        ctl.proc.send_signal(signal.SIGINT)
        assert ctl.proc.wait(EXIT_TIMEOUT_S) == 0, ctl.diagnostics()
        assert "stopping on SIGINT" in ctl.log.read_text()
    finally:
        ctl.stop()


def test_port_in_use_fails(tmp_path):
    """A taken port is an error (exit 1), not a controller silently listening nowhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        topo_file = tmp_path / "t.json"
        topo_file.write_text(json.dumps(leaf_spine(1, 1, 1, 1, 1, 1).to_dict()))
        r = subprocess.run(
            [sys.executable, "-m", "fabriclab.controllers.run", "--topology", str(topo_file),
             "--port", str(port), "--ready-file", str(tmp_path / "r"), "--log",
             str(tmp_path / "log")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr, (tmp_path / "log").read_text())
    assert "OpenFlow server stopped" in (tmp_path / "log").read_text()


def test_bad_topology_fails(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "fabriclab.controllers.run", "--topology",
         str(tmp_path / "missing.json"), "--port", "6653", "--ready-file",
         str(tmp_path / "r")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot use topology" in r.stderr, r.stderr
