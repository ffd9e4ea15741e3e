"""The Mininet engine end to end: reachability, per-flow ECMP on UDP, DCQCN on an incast,
the results schema, clean-up after success, Ctrl-C and crashes.

These need root (CI runs as root, so they run there); they are skipped only for a
developer running the suite as an ordinary user.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fabriclab import spec as S
from fabriclab.emu import preflight
from fabriclab.emu.network import intf_name
from fabriclab.emu.state import RUN_DIR, EmuError, our_bridges, our_interfaces
from fabriclab.metrics.results import write_atomic
from fabriclab.metrics.schema import validate_results

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

TOPO = {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2}


def _spec(**kw):
    d = {"name": "emutest", "engine": "mininet", "topology": TOPO, **kw}
    return S.validate(d, "test spec")


def test_every_host_reaches_every_other():
    """2 leaves x 2 spines x 2 hosts: the controller's L3 tables connect every pair."""
    from fabriclab.emu.runner import session
    spec = _spec(workload=[{"kind": "flows", "flows": [{"src": "h0", "dst": "h1",
                                                         "bytes": 1000}]}])
    with session(spec, progress=False) as emu:
        hosts = emu.topo.hosts
        failed = []
        for a in hosts:
            for b in hosts:
                if a != b:
                    out = emu.fabric.host(a).cmd(f"ping -c1 -W2 {emu.topo.nodes[b].ip}")
                    if " 0% packet loss" not in out:
                        failed.append((a, b))
        assert failed == []
        # What reached each host came through its veth's NAPI ring (one ring, in order),
        # not the per-CPU backlogs where frames of a flow can overtake each other.
        napi = {}
        for h in hosts:
            dev = intf_name(emu.topo, h, 0)
            stats = emu.fabric.host(h).cmd(f"ethtool -S {dev}")
            napi[h] = int(re.search(r"rx_queue_0_xdp_packets: (\d+)", stats).group(1))
        assert min(napi.values()) >= len(hosts) - 1, napi


def _run(spec, tmp_path):
    from fabriclab.emu.runner import emulate
    res = emulate(spec, progress=False)
    out = write_atomic(res, tmp_path / "run")
    return res.summary, out


def test_ecmp_spreads_udp_flows_over_both_spines(tmp_path):
    """Per-flow ECMP: 8 concurrent RoCE (UDP) flows between one pair of hosts under
    different leaves differ only in UDP source port, and both spines carry them."""
    flows = [{"src": "h0", "dst": "h2", "bytes": 100_000} for _ in range(8)]
    summary, out = _run(_spec(workload=[{"kind": "flows", "flows": flows}]), tmp_path)
    assert summary["flows_completed"] == 8
    ports = {r["port"]: r for r in _csv(out / "ports.csv")}
    up = [int(ports[p]["tx_bytes"]) for p in ("l0:2", "l0:3")]
    assert min(up) > 0.1 * sum(up), up


def _csv(path):
    import csv
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def incast(tmp_path_factory):
    """3 -> 1 incast of 1 MB each under DCQCN, large buffers (8 MB per switch port)."""
    from fabriclab.emu.runner import emulate
    spec = _spec(workload=[{"kind": "incast", "receiver": "h0", "senders": ["h1", "h2", "h3"],
                            "bytes": 1_000_000}], emu={"pcap_hosts": ["h0"]})
    res = emulate(spec, progress=False)
    out = write_atomic(res, tmp_path_factory.mktemp("incast") / "run")
    return res.summary, out


def test_incast_marks_cnps_and_rate_cuts(incast):
    """The bottleneck port marks CE, the receiver answers with CNPs, and every sender's
    DCQCN rate falls below line rate."""
    summary, out = incast
    ports = {r["port"]: r for r in _csv(out / "ports.csv")}
    assert int(ports["l0:0"]["ecn_marks"]) > 0  # l0's port to h0
    assert summary["ecn_marks"] == summary["emulation"]["ce_marked_packets_received"]
    hosts = {r["host"]: r for r in _csv(out / "hosts.csv")}
    assert int(hosts["h0"]["cnps_sent"]) > 0
    assert all(int(hosts[h]["cnps_rx"]) > 0 for h in ("h1", "h2", "h3"))
    # The flows that matter (most cut, slowest, median) are tracked, each was cut, and the
    # summary's lowest rate is the series' own.
    rates = _csv(out / "timeseries/flow_rate_gbps.csv")
    tracked = summary["tracked_flows"]
    assert any("most cut in" in r for t in tracked for r in t["reasons"])
    for t in tracked:
        col = f"f{t['flow_id']}"
        active = [float(r[col]) for r in rates if float(r[col]) > 0]
        assert active and min(active) < 0.9 * 100, col
        assert t["min_rate_gbps"] == pytest.approx(min(active), rel=1e-5)


def test_incast_fills_the_bottleneck_and_loses_nothing(incast):
    """Goodput at the bottleneck within 10% of its shaped rate; with large buffers every
    byte sent is received (nothing dropped anywhere, nothing retransmitted)."""
    summary, out = incast
    c = summary["collectives"][0]
    ports = {r["port"]: r for r in _csv(out / "ports.csv")}
    wire = int(ports["l0:0"]["tx_bytes"])
    util = wire * 8 / (c["completion_ns"] * 100)  # fabric time, 100 Gb/s
    assert util >= 0.9, util
    assert c["completion_over_bound"] <= 1.11
    assert summary["drops"] == 0
    assert summary["bytes_sent"] == summary["bytes_delivered"]
    assert all(int(f["delivered_bytes"]) == 1_000_000 for f in _csv(out / "flows.csv"))
    assert summary["retransmitted_bytes"] == 0


def test_mininet_results_match_the_schema(incast):
    summary, out = incast
    assert validate_results(out) == []
    assert summary["engine"] == "mininet"
    emu = summary["emulation"]
    default = S.Emu()
    assert emu["link_mbps"] == default.link_mbps
    assert emu["time_dilation"] == 100e9 / (default.link_mbps * 1e6)
    assert emu["emulated_time_s"] == pytest.approx(summary["sim_time_ns"] * emu["time_dilation"]
                                                   / 1e9)
    assert (out / "controller.log").read_text().count("ready") >= 4


def _cli(args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "fabriclab.cli", "-q", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_mid_run_cleans_up(tmp_path):
    """SIGINT while agents are running: exit 130, no results, nothing left behind."""
    doc = {"name": "ctrlc", "engine": "mininet", "topology": TOPO,
           "workload": [{"kind": "incast", "receiver": "h0", "senders": 3,
                         "bytes": 20_000_000}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    p = _cli(["run", "s.yaml", "--out", "out"], tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = RUN_DIR / "state.json"
        if st.exists() and any(k.startswith("agent:") for k in
                               json.loads(st.read_text() or "{}").get("processes", {})):
            break
        time.sleep(0.2)
    else:
        p.kill()
        pytest.fail("the run never started its agents")
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "out").exists()


def test_clean_removes_only_fabriclab_leftovers(tmp_path):
    """`fabriclab clean` removes a crashed run's bridge and interfaces (prefix flb<kind><n>),
    and leaves other bridges and interfaces alone."""
    made = []
    try:
        for br in ("flbl9", "flbkeep"):
            subprocess.run(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br,
                            "datapath_type=netdev"], check=True, capture_output=True)
            made.append(("br", br))
        for a, b in (("flbs9-eth1", "flbh9-eth0"), ("flbkeep0", "flbkeep1")):
            subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                           check=True)
            made.append(("if", a))
        r = subprocess.run([sys.executable, "-m", "fabriclab.cli", "clean"],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "bridge flbl9" in r.stderr and "flbh9-eth0" in r.stderr
        brs = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                             text=True).stdout.split()
        assert "flbl9" not in brs and "flbkeep" in brs
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "flbs9-eth1" not in links and "flbh9-eth0" not in links
        assert "flbkeep0" in links
    finally:
        for kind, name in made:
            if kind == "br":
                subprocess.run(["ovs-vsctl", "--if-exists", "del-br", name], capture_output=True)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_next_run_removes_what_a_killed_run_left(tmp_path, caplog):
    """A run killed with SIGKILL leaves its state file and veths behind; the next run, once
    it holds the lock, removes them (by name and recorded PID) and then runs normally."""
    from fabriclab.emu.runner import session
    from fabriclab.emu.state import RunState
    subprocess.run(["ip", "link", "add", "flbl0-eth3", "type", "veth", "peer", "name",
                    "flbs0-eth1"], check=True)
    sleeper = subprocess.Popen(["sleep", "300"])  # not what the state file expects there
    try:
        RunState(owner_pid=999_999, started=0.0, workdir="/nonexistent",
                 processes={"shell:h0": {"pid": sleeper.pid, "expect": "mininet:flbh0"}},
                 interfaces=["flbl0-eth3", "flbs0-eth1"]).save()
        spec = _spec(workload=[{"kind": "flows", "flows": [{"src": "h0", "dst": "h2",
                                                             "bytes": 1000}]}])
        with caplog.at_level("WARNING"), session(spec, progress=False) as emu:
            out = emu.fabric.host("h0").cmd(f"ping -c1 -W2 {emu.topo.nodes['h2'].ip}")
        assert " 0% packet loss" in out
        assert "interface flbl0-eth3" in caplog.text
        assert "Mininet's stop left" not in caplog.text  # its own teardown was complete
        assert sleeper.poll() is None  # a PID reused by another program is never killed
    finally:
        sleeper.kill()
        sleeper.wait()


def test_preflight_names_the_problem_and_the_fix(monkeypatch):
    """Each missing piece gives one EmuError that says what and how to fix it."""
    spec = _spec(workload=[{"kind": "flows", "flows": [{"src": "h0", "dst": "h1",
                                                         "bytes": 1000}]}])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EmuError, match="needs root.*--engine sim"):
        preflight.check(spec, need_iperf3=False)
    monkeypatch.undo()
    real = preflight._ok

    def ovs_down(cmd, timeout=10):
        if cmd[:1] == ["ovs-vsctl"]:
            return subprocess.CompletedProcess(cmd, 1, "", "database connection failed")
        return real(cmd, timeout)

    monkeypatch.setattr(preflight, "_ok", ovs_down)
    with pytest.raises(EmuError, match="Open vSwitch is not running.*ovs-ctl start"):
        preflight.check(spec, need_iperf3=False)
    monkeypatch.undo()
    import shutil
    which = shutil.which
    monkeypatch.setattr(preflight.shutil, "which",
                        lambda t: None if t in ("iperf3", "clang") else which(t))
    with pytest.raises(EmuError, match="iperf3 is missing.*apt-get install iperf3"):
        preflight.check(spec, need_iperf3=True)
    with pytest.raises(EmuError, match="clang is missing.*libbpf-dev"):
        preflight.check(spec, need_iperf3=False)


def test_cli_environment_error_exit_status(tmp_path):
    """A machine without clang (here: a PATH that has every other tool): exit 3, one line
    naming what is missing and how to install it, nothing written."""
    import shutil
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ovs-vsctl", "ovs-ofctl", "tc", "ip", "ethtool", "ss", "iperf3", "tcpdump"):
        path = shutil.which(tool)
        if path:
            (bindir / tool).symlink_to(path)
    doc = {"engine": "mininet", "topology": TOPO,
           "workload": [{"kind": "flows", "flows": [{"src": "h0", "dst": "h1", "bytes": 1}]}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    for cmd in (["run", "s.yaml"],
                # a comparison on both engines: refused before the simulations run too
                ["compare", "s.yaml", "--engines", "sim,mininet", "--schemes", "ecmp_dcqcn,hpcc"]):
        p = _cli(cmd, tmp_path, env={**os.environ, "PATH": str(bindir)})
        _, err = p.communicate(timeout=60)
        assert p.returncode == 3, err
        assert "clang is missing" in err and "apt-get install clang" in err
        assert err.count("\n") == 1, err
        assert not (tmp_path / "results").exists()
        assert our_bridges() == [] and our_interfaces() == []


def test_tcp_cross_traffic_with_iperf3(tmp_path):
    """iperf3 TCP between two hosts under different leaves reaches most of the shaped rate
    and never more (reported in emulated and fabric units)."""
    summary, out = _run(_spec(workload=[{"kind": "tcp_iperf3", "src": "h1", "dst": "h3",
                                         "duration_us": 300}]), tmp_path)
    tcp = summary["emulation"]["tcp"]
    rate, tdf = summary["emulation"]["link_mbps"], summary["emulation"]["time_dilation"]
    assert len(tcp) == 1 and "emulated_mbps" in tcp[0], tcp
    assert 0.5 * rate < tcp[0]["emulated_mbps"] <= rate * 1.02
    assert tcp[0]["fabric_gbps"] == pytest.approx(tcp[0]["emulated_mbps"] * tdf / 1000)


def test_capture_holds_every_frame_with_its_marks_and_cnps(incast):
    """Lab 1's capture at h0: every data frame is in it, the CE-marked ones are exactly the
    marks the ports counted, and the CNPs (BTH opcode 0x81) are the ones h0 sent."""
    from scapy.all import IP, rdpcap
    from scapy.contrib.roce import BTH
    summary, out = incast
    pkts = [p for p in rdpcap(str(out / "pcap" / "h0.pcap")) if p.haslayer(BTH)]
    data = [p for p in pkts if p[BTH].opcode == 0x04]
    assert len(data) == 3 * 1000  # 1 MB of 1000-byte payloads from each sender
    assert sum(1 for p in data if p[IP].tos & 3 == 3) == summary["ecn_marks"]
    assert all(p[IP].tos & 3 in (2, 3) for p in data)  # ECT(0) or CE
    cnps = [p for p in pkts if p[BTH].opcode == 0x81]
    assert len(cnps) == summary["cnps"] and all(p[BTH].becn == 1 for p in cnps)


def test_wireshark_reads_every_frame_of_the_capture(incast):
    """tshark dissects the capture's RoCE frames whole: no '[Malformed Packet]' mark (the
    display filter _ws.malformed misses the RoCE dissector's own), every data frame an RC
    Send Only.  (With frames cut at 160 bytes every data frame was marked malformed.)"""
    import subprocess
    _, out = incast
    r = subprocess.run(["tshark", "-r", str(out / "pcap" / "h0.pcap")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum("Malformed" in line for line in lines) == 0, [
        line for line in lines if "Malformed" in line][:5]
    assert sum("RC Send Only" in line for line in lines) == 3 * 1000


def test_ring_allreduce_agrees_with_the_simulator(tmp_path):
    """Ring all-reduce (dependencies handled by each host's agent) completes on real packets,
    and its bus bandwidth is within 10% of the simulator's on the same spec (same packet
    sizes; the link delays are the agents' on this kernel, netem's elsewhere)."""
    from fabriclab.sim.runner import simulate
    wl = [{"kind": "ring_allreduce", "bytes": 400_000}]
    emu_summary, _ = _run(_spec(workload=wl), tmp_path)
    sim = simulate(S.validate({"topology": TOPO, "workload": wl,
                               "switch": {"mtu_bytes": 1000, "header_bytes": 58}}),
                   progress=False).summary
    e, s = emu_summary["collectives"][0], sim["collectives"][0]
    assert emu_summary["flows_completed"] == emu_summary["flows_total"] == 4 * 2 * 3
    assert e["busbw_gbps"] == pytest.approx(s["busbw_gbps"], rel=0.10)
    assert e["busbw_gbps"] <= 100
