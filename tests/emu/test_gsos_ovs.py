"""GSE in the controller against real Open vSwitch bridges (userspace datapath): the
container path flows, REQUESTs punted to GSOS and GRANTs packet-out, in central and egress
mode.

Bridges are named ``flbgc*`` (central) and ``flbge*`` (egress) and are the only OVS objects
these tests create; they and the controller process are removed in finalizers, by name and
by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ovs_harness import EXIT_TIMEOUT_S, Controller, add_bridge, del_bridges, dump_flows, \
    free_port, need_ovs, sh, tx_packets

from fabriclab.units import BIT_NS, wire_bytes
from fabriclab.controllers.gsos import udp_frame
from fabriclab.wire import roce as packets
from fabriclab.topologies import Topology, leaf_spine

BRIDGE_PREFIX = "flbg"
SCALE = 1e-4  # 100 Gb/s in the topology -> 10 Mb/s emulated: a 64 KiB grant takes ~55 ms
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class GseController(Controller):
    """The controller process with GSE set in its environment."""

    def __init__(self, tmp: Path, topo: Topology, mode: str):
        self.stats_file = tmp / "gsos.json"
        super().__init__(tmp, topo, env={"FABRICLAB_GSE": mode,
                                         "FABRICLAB_EMU_SCALE": str(SCALE),
                                         "FABRICLAB_GSOS_STATS": str(self.stats_file)},
                         drop_env=("FABRICLAB_GSE_MTU", "FABRICLAB_GSE_HEADER"))


class Rig:
    def __init__(self, mode: str, topo: Topology, ctl: Controller):
        self.mode, self.topo, self.ctl = mode, topo, ctl

    def bridge(self, switch: str) -> str:
        return f"{BRIDGE_PREFIX}{self.mode[0]}{switch.replace('_', '')}"

    def iface(self, switch: str, ofport: int) -> str:
        return f"{self.bridge(switch)}p{ofport}"


@pytest.fixture(scope="module", params=["central", "egress"])
def rig(request, tmp_path_factory):
    """Controller (FABRICLAB_GSE=<mode>) + one OVS bridge per switch of a 2x2x2
    leaf-spine."""
    need_ovs()
    mode = request.param
    topo = leaf_spine(2, 2, 2, 100_000_000_000, 100_000_000_000, 1000)
    ctl = GseController(tmp_path_factory.mktemp(f"gsos-{mode}"), topo, mode)
    rig = Rig(mode, topo, ctl)
    created: list[str] = []
    try:
        ctl.wait_listening()
        for s in topo.switches:
            add_bridge(rig.bridge(s), topo.dpid(s), len(topo.nodes[s].ports), ctl.port,
                        created)
        ctl.wait_ready({topo.dpid(s) for s in topo.switches})
        for s in topo.switches:  # tap devices behind internal ports must be up to pass frames
            for p in range(1, len(topo.nodes[s].ports) + 1):
                sh("ip", "link", "set", rig.iface(s, p), "up")
        yield rig
    finally:
        ctl.stop()
        del_bridges(created)


def _send(iface: str, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for f in frames:
            s.send(f)


def _tx_delta(bridge: str, ports, send, want: int, timeout: float = 5) -> dict[int, int]:
    """Send, then wait until ``want`` packets more left by ``ports`` (or the timeout)."""
    before = tx_packets(bridge)
    send()
    deadline = time.monotonic() + timeout
    while True:
        after = tx_packets(bridge)
        delta = {p: after[p] - before.get(p, 0) for p in ports}
        if sum(delta.values()) >= want or time.monotonic() > deadline:
            time.sleep(0.2)  # anything beyond ``want`` would show up now
            after = tx_packets(bridge)
            return {p: after[p] - before.get(p, 0) for p in ports}
        time.sleep(0.05)


def _data_frame(topo: Topology, src: str, dst: str, dscp: int, sport: int) -> bytes:
    return udp_frame(topo.host_mac(src), topo.host_mac(dst), topo.nodes[src].ip,
                     topo.nodes[dst].ip, sport, 4791, b"container", dscp=dscp)


def _request_frame(topo: Topology, src: str, dst_mac: str, dst_ip: str, dst_port: int,
                   sizes: list[int]) -> bytes:
    return udp_frame(topo.host_mac(src), dst_mac, topo.nodes[src].ip, dst_ip, 40000,
                     packets.GSE_PORT, packets.gse_request(int(src[1:]), dst_port, sizes))


def _recv_grants(sock: socket.socket, n: int, timeout: float) -> list[tuple[float, bytes]]:
    """Up to ``n`` frames from GSOS arriving on ``sock`` within ``timeout``: (time, frame)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            frame, addr = sock.recvfrom(65535)
        except TimeoutError:
            break
        if addr[2] == PACKET_OUTGOING or len(frame) < 42:
            continue
        if frame[6:12] == bytes.fromhex(packets.GSOS_MAC.replace(":", "")):
            out.append((time.monotonic(), frame))
    return out


def _csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.root
def test_gse_flows_installed(rig):
    topo, mode = rig.topo, rig.mode
    for s in topo.switches:
        flows = dump_flows(rig.bridge(s))
        gse = [f for f in flows if re.search(r"priority=(200|300|400)\b", f)]
        if topo.nodes[s].kind != "leaf":
            assert gse == [], (s, gse)
            continue
        # Container paths: DSCP k+1 (OVS shows the TOS byte, DSCP << 2) -> uplink k.
        paths = {int(t): int(p) for t, p in
                 (re.search(r"priority=200,ip,nw_tos=(\d+) actions=output:(\d+)$", f).groups()
                  for f in flows if "priority=200" in f)}
        assert paths == {4: 3, 8: 4}, flows
        local = [f for f in flows if "priority=300" in f]
        assert len(local) == 2 and all(re.search(r"priority=300,ip,nw_dst=\S+ actions=output:"
                                                 r"[12]$", f) for f in local), flows
        punt = [f[f.index("priority="):] for f in flows if "priority=400" in f]
        if mode == "central":  # REQUESTs from either host port, whole, to GSOS
            assert sorted(punt) == [
                f"priority=400,udp,in_port={p},tp_dst=4792 actions=CONTROLLER:65535"
                for p in (1, 2)], punt
        else:
            assert punt == [], punt
            assert not any("CONTROLLER" in f or "controller" in f for f in flows), flows
        # 2 remote routes at 100, 2 local at 300, 2 paths, punts, table-miss
        assert len(flows) == 2 + 2 + 2 + len(punt) + 1, flows
    summaries = [json.loads(line) for line in rig.ctl.ready_file.read_text().splitlines()]
    leaf = next(r for r in summaries if r["switch"] == "l0")
    assert (leaf["gse"], leaf["path_rules"], leaf["local_routes"]) == (mode, 2, 2)
    assert leaf["punt_ports"] == (2 if mode == "central" else 0)


@pytest.mark.root
def test_dscp_picks_the_uplink(rig):
    """Containers to a remote host leave l0 by uplink DSCP-1 (port 3 = spine 0, port 4 =
    spine 1), all of them whatever their UDP ports; to a local host, by its host port."""
    topo = rig.topo
    bridge = rig.bridge("l0")
    n = 16
    for dscp, port in ((1, 3), (2, 4)):
        frames = [_data_frame(topo, "h0", "h3", dscp, 10000 + i) for i in range(n)]
        got = _tx_delta(bridge, (2, 3, 4), lambda f=frames: _send(rig.iface("l0", 1), f), n)
        assert got == {2: 0, 3: 0, 4: 0, port: n}, (dscp, got)
    frames = [_data_frame(topo, "h0", "h1", 2, 10000 + i) for i in range(n)]
    got = _tx_delta(bridge, (2, 3, 4), lambda: _send(rig.iface("l0", 1), frames), n)
    assert got == {2: n, 3: 0, 4: 0}, got
    # DSCP 0: ordinary ECMP over both uplinks
    frames = [_data_frame(topo, "h0", "h3", 0, 10000 + i) for i in range(64)]
    got = _tx_delta(bridge, (3, 4), lambda: _send(rig.iface("l0", 1), frames), 64)
    assert sum(got.values()) == 64 and all(v > 0 for v in got.values()), got


@pytest.mark.root
def test_request_gets_grants(rig):
    """Central: a REQUEST from h0 for two grants towards h3 comes back as a receipt (an
    empty GRANT) and two GRANT frames on h0's port, spaced at h3's emulated port rate, on path 0 then path 1 (path 0's
    transit links are reserved by the first grant).  Egress: the REQUEST is plain IPv4 to
    h3, routed up to a spine, and nothing comes back."""
    topo = rig.topo
    iface = rig.iface("l0", 1)
    sizes = [65536, 65536]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as rx:
        rx.bind((iface, 0))
        if rig.mode == "central":
            frame = _request_frame(topo, "h0", packets.GSOS_MAC, packets.GSOS_IP, 3, sizes)
            t0 = time.monotonic()
            _send(iface, [frame])
            grants = _recv_grants(rx, 3, 5)
            assert len(grants) == 3, rig.ctl.diagnostics()
        else:
            frame = _request_frame(topo, "h0", topo.host_mac("h3"), topo.nodes["h3"].ip, 3,
                                   sizes)
            got = _tx_delta(rig.bridge("l0"), (2, 3, 4),
                            lambda: _send(iface, [frame]), 1)
            assert got[2] == 0 and got[3] + got[4] == 1, got
            assert _recv_grants(rx, 1, 0.5) == []
            return
    seen = []
    for _, g in grants:
        assert g[:6] == bytes.fromhex(topo.host_mac("h0").replace(":", ""))
        assert struct.unpack_from("!H", g, 12)[0] == 0x0800
        ip = g[14:34]
        assert _csum(ip) == 0xFFFF and ip[1] == 0 and ip[8] == 64
        assert socket.inet_ntoa(ip[12:16]) == packets.GSOS_IP
        assert socket.inet_ntoa(ip[16:20]) == topo.nodes["h0"].ip
        assert struct.unpack_from("!HH", g, 34) == (packets.GSE_PORT, packets.GSE_PORT)
        length = struct.unpack_from("!H", g, 38)[0]
        seen.append(packets.parse_gse_control(g[42:34 + length]))
    # first the receipt (an empty GRANT, at once), then the two grants
    # (the second is "idle": no other request for h3 was waiting then)
    assert seen == [("grant", 0, 3, 0, None, False), ("grant", 0, 3, 65536, 0, False),
                    ("grant", 0, 3, 65536, 1, True)], seen
    grants = grants[1:]
    # The second grant waits for the first one's bytes to cross h3's port at its emulated
    # rate: it cannot arrive before the REQUEST was sent + that time.  (The gap between the
    # two arrivals is no measure: the first one's delivery latency varies.)
    spacing = wire_bytes(65536, 1000, 58) * BIT_NS / (100e9 * SCALE) / 1e9  # ~55 ms
    assert grants[0][0] - t0 < 2
    assert spacing - 0.001 <= grants[1][0] - t0 < spacing + 2, (grants[1][0] - t0, spacing)

    # The stats file is rewritten every second.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            stats = json.loads(rig.ctl.stats_file.read_text())
            if stats["grants"] == 2:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)
    assert (stats["requests"], stats["grants"], stats["granted_bytes"]) == (2, 2, 131072)


@pytest.mark.root
def test_trace_request(rig):
    """ofproto/trace of a REQUEST from a host port: to the controller in central mode; in
    egress mode routed like any IPv4 to its destination."""
    topo = rig.topo
    tr = sh("ovs-appctl", "ofproto/trace", rig.bridge("l0"),
             f"in_port=1,udp,nw_src={topo.nodes['h0'].ip},nw_dst={topo.nodes['h3'].ip},"
             "udp_src=40000,udp_dst=4792")
    if rig.mode == "central":
        assert re.search(r"controller|CONTROLLER", tr), tr
    else:
        assert "controller" not in tr.lower() and "group:1" in tr, tr
    # a REQUEST arriving from an uplink is not punted (it is not from a host)
    tr = sh("ovs-appctl", "ofproto/trace", rig.bridge("l0"),
             f"in_port=3,udp,nw_src={topo.nodes['h3'].ip},nw_dst={topo.nodes['h0'].ip},"
             "udp_src=40000,udp_dst=4792")
    assert "controller" not in tr.lower() and re.search(r"output:1\b", tr), tr


@pytest.mark.root
def test_sigterm_writes_final_stats(rig):
    ctl = rig.ctl
    assert ctl.proc.poll() is None, ctl.diagnostics()
    ctl.proc.send_signal(signal.SIGTERM)
    assert ctl.proc.wait(EXIT_TIMEOUT_S) == 0, ctl.diagnostics()
    log = ctl.log.read_text()
    if rig.mode == "central":
        stats = json.loads(ctl.stats_file.read_text())
        assert (stats["requests"], stats["grants"], stats["granted_bytes"]) == (2, 2, 131072)
        assert stats["pending"] == 0 and stats["ignored"] == 0
        assert "GSOS final stats" in log and "path flows" in log
    else:
        assert not ctl.stats_file.exists()  # no GSOS in egress mode
        assert "GSOS" not in log
    # fail-secure: the punt / path flows stay without the controller
    time.sleep(1)
    assert any("priority=200" in f for f in dump_flows(rig.bridge("l0")))


@pytest.mark.parametrize("env", [{"FABRICLAB_GSE": "centrall"},
                                 {"FABRICLAB_GSE": "central", "FABRICLAB_EMU_SCALE": "0"}])
def test_bad_gse_setting_fails(tmp_path, env):
    """No switch needed: a bad GSE setting is exit 2 before os-ken starts."""
    topo_file = tmp_path / "t.json"
    topo_file.write_text(json.dumps(leaf_spine(1, 1, 1, 1, 1, 1).to_dict()))
    r = subprocess.run(
        [sys.executable, "-m", "fabriclab.controllers.run", "--topology", str(topo_file),
         "--port", str(free_port()), "--ready-file", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert r.returncode == 2 and "bad GSE setting" in r.stderr, r.stderr
