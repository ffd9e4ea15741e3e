"""Run a spec on the Mininet engine and write the same results schema as the simulator.

One run: preflight -> lock -> controller (os-ken, loopback port of its own) -> Mininet
network (OVS switches, shaped links, eBPF port programs) -> host agents -> wait for the
workload (or the stop time, or the timeout) -> collect -> tear down exactly what was
created, on success, failure and Ctrl-C alike.

Faults (the spec's ``faults``): :mod:`fabriclab.emu.faults` applies them at their fabric
times from the waiting loop, and the controller reroutes (see there).

Time: the emulation runs ``tdf`` times slower than the fabric it stands for (every link at
rate / tdf).  The agents keep fabric time; the results are in fabric time (scaled back),
with the emulated (real) figures in ``summary.json["emulation"]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import workloads
from ..cc_algorithms.gse import GseParams
from ..cc_algorithms.hpcc import base_rtt_ns
from ..metrics.assemble import (Drops, HostRecord, PortRecord, Samples, assemble,
                                gse_summary)
from ..metrics.fidelity import judge as judge_fidelity
from ..metrics.flowseries import FlowSamples
from ..metrics.results import RunResult
from ..metrics.schema import HOST_COLUMNS
from ..metrics.summarize import FlowRecord, ideal_fct_ns
from ..progress import SimProgress
from ..schemes import get_scheme
from ..spec import Spec, ack_every_pkts, pfc_headroom_bytes, resolved_yaml
from ..topologies import Topology, from_spec
from ..wire import roce as P
from . import autorate, preflight
from .bpfport import PfcPort, PortProgram, compile_program
from .control import tell
from .faults import EmuFaults
from .pcap import SNAPLEN, restore_roce_payload
from .network import CLASS_CONTROL, CLASS_DATA, EmuFabric, gsp_intf_names, intf_name
from .state import EmuError, RunLock, RunState, kill_pid, remove_leftovers

log = logging.getLogger(__name__)

SPORT_BASE = 51000  # not 49152: tcpdump decodes that port as Broadcom LI
START_LEAD_S = 1.0  # agents get GO this far ahead of fabric time 0
CONTROLLER_WAIT_S = 60.0
NACK_GAP_REAL_NS = 5_000_000
# The PFC daemon reads every switch port this often (fabric time), but not more often than
# every PFC_POLL_MIN_REAL_NS of real time (its cost: one map lookup per port per poll).
PFC_POLL_NS = 250
PFC_POLL_MIN_REAL_NS = 2_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _any_path(topo: Topology, src: str, dst: str) -> list[tuple[int, int]]:
    """(rate, delay) per hop of one shortest path (all are alike in these fabrics)."""
    hops, node, port = [], src, 0
    while True:
        link = topo.nodes[node].ports[port]
        hops.append((link.rate_bps, link.delay_ns))
        node = topo.peer(node, port).node
        if node == dst:
            return hops
        port = topo.next_hops(node, dst)[0]


_RX_DROP = re.compile(r"port\s+(\S+): rx pkts=\d+, bytes=\d+, drop=(\d+)")


def rx_drops_by_port(dump_ports: str) -> dict[str, int]:
    """Per port (OpenFlow number as text, or ``LOCAL``), the frames Open vSwitch dropped on
    receive, from ``ovs-ofctl dump-ports``."""
    return {p: int(n) for p, n in _RX_DROP.findall(dump_ports)}


def rx_dropped(topo: Topology, by_switch: dict[str, dict[str, int]], dead: dict) -> int:
    """Frames dropped on receive by the switches' ports, leaving out the interfaces in
    ``dead`` (the dead links' own, keyed by interface name: their loss is the link's)."""
    total = 0
    for sw, ports in by_switch.items():
        for p, n in ports.items():
            if p.isdigit() and intf_name(topo, sw, int(p) - 1) in dead:
                continue
            total += n
    return total


class Emulation:
    def __init__(self, spec: Spec, workdir: Path, progress: bool | None, label: str):
        self.spec = spec
        self.scheme = get_scheme(spec.scheme)
        self.topo = from_spec(spec.topology)
        self.workload = workloads.build(spec, self.topo)
        self.tdf = spec.topology.host_link_gbps * 1e9 / (spec.emu.link_mbps * 1e6)
        self.workdir = workdir
        self.progress = progress
        self.label = label
        self.state = RunState(os.getpid(), time.time(), str(workdir))
        self.fabric: EmuFabric | None = None
        self.controller: subprocess.Popen | None = None
        self.pfcd: subprocess.Popen | None = None
        self.pfc_results: dict | None = None
        # GSE in the leaves: the GSP daemon (fabriclab.emu.gspd) and what it reported
        self.gse_leaf = spec.scheme == "gse" and spec.gse.placement == "leaf"
        self.gspd: subprocess.Popen | None = None
        self.gsp_results: dict | None = None
        self.samples_paused: list[list[int]] = []
        self.ing_macs: dict[str, tuple] = {}  # PFC: each switch's ingress ports' peer MACs
        self.agents: dict[str, subprocess.Popen] = {}
        self.iperf: list[tuple[str, subprocess.Popen, Path]] = []
        self.ports: list[tuple[tuple, PortProgram]] = []
        self.samples_t: list[int] = []
        self.samples_tx: list[list[int]] = []
        self.samples_q: list[list[int]] = []
        # per sample and port: what a link of the configured rate would have sent by then
        # (offered less the phantom queues), and what the interface really sent (sysfs)
        self.samples_phantom: list[list[int]] = []
        self.samples_wire: list[list[int]] = []
        self.t0: int | None = None
        self.preflight = None
        self.ovs_baseline: dict[str, tuple[int, int, int, dict[str, int]]] = {}
        # per switch, per port (OpenFlow number or LOCAL): dropped on receive since GO
        self.ovs_rx_dropped: dict[str, dict[str, int]] = {}
        self.rx_drops_go: dict[str, tuple[int, int, int]] = {}
        self.rx_drops: dict[str, tuple[int, int, int]] = {}
        self.captures: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.at_go: dict = {}
        self.at_stop: dict = {}
        self.controller_died_ns: int | None = None
        self.finished = False
        self.timed_out = False
        self.controller_log = workdir / "controller.log"
        self.faults = EmuFaults(self) if spec.faults else None
        self._check_dependencies()

    # -- set-up ------------------------------------------------------------------------
    def _check_dependencies(self) -> None:
        """Agents decide locally when a flow may start, so a flow may depend only on flows
        its own source host sends or receives (true of every built-in collective)."""
        by_id = {f.id: f for f in self.workload.flows}
        for f in self.workload.flows:
            for d in f.deps:
                if f.src not in (by_id[d].src, by_id[d].dst):
                    raise EmuError(f"flow {f.id} depends on flow {d}, which does not involve "
                                   f"its source host {f.src}; the Mininet engine cannot run it")

    def start_controller(self) -> None:
        port = _free_port()
        topo_file = self.workdir / "topology.json"
        topo_file.write_text(json.dumps(self.topo.to_dict()))
        self.ready_file = self.workdir / "controller.ready"
        cmd = [sys.executable, "-m", "fabriclab.controllers.run", "--topology", str(topo_file),
               "--port", str(port), "--ready-file", str(self.ready_file), "--log",
               str(self.controller_log)]
        env = dict(os.environ)
        self.gsos_stats = self.workdir / "gsos.json"
        if self.spec.scheme == "gse":
            env.update(FABRICLAB_GSE=self.spec.gse.scheduler,
                       FABRICLAB_EMU_SCALE=repr(1 / self.tdf),
                       FABRICLAB_GSE_MTU=str(self.spec.emu.mtu_bytes),
                       FABRICLAB_GSE_OVERCOMMIT=repr(self.spec.gse.grant_overcommit),
                       FABRICLAB_GSE_HEADER=str(P.DATA_OVERHEAD + P.GSE_TAG.size),
                       FABRICLAB_GSE_PLACEMENT=self.spec.gse.placement,
                       FABRICLAB_GSOS_STATS=str(self.gsos_stats))
        if self.faults is not None:
            env.update(self.faults.controller_env())
        # stdin: commands (controller_command), e.g. a degraded link for GSOS
        self.controller = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, env=env,
                                           stderr=open(self.workdir / "controller.stderr", "w"))
        self.state.add_process("controller", self.controller.pid, "fabriclab.controllers.run")
        self.controller_port = port
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.controller.poll() is not None:
                raise EmuError(f"the os-ken controller exited at start-up (status "
                               f"{self.controller.returncode}); see {self.controller_log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise EmuError(f"the os-ken controller did not listen on 127.0.0.1:{port} within 15 s; "
                       f"see {self.controller_log}")

    def controller_command(self, cmd: dict) -> None:
        """One command to the controller process (one JSON line on its stdin)."""
        if self.controller is None or self.controller.poll() is not None:
            return
        try:
            self.controller.stdin.write((json.dumps(cmd) + "\n").encode())
            self.controller.stdin.flush()
        except (BrokenPipeError, OSError):
            log.warning("the controller did not take command %s", cmd)

    def tell_agents_paths_down(self, paths: dict) -> None:
        """GSE: the container paths each agent's GSP must not spray over any more, as the
        controller computed them at a reroute (``{host: {dst index: [path, ...]}}``; the
        paths of a host not named are all usable again)."""
        for h, p in self.agents.items():
            if p.poll() is None and self.spec.scheme == "gse":
                tell(p, f"PATHS_DOWN {json.dumps(paths.get(h, {}))}")

    def wait_controller_ready(self) -> None:
        from ..wire.ready import read_ready_file as read_ready
        want = {self.topo.dpid(s) for s in self.topo.switches}
        deadline = time.monotonic() + CONTROLLER_WAIT_S
        while time.monotonic() < deadline:
            if want <= read_ready(self.ready_file):
                return
            if self.controller.poll() is not None:
                raise EmuError(f"the os-ken controller died while configuring the switches; "
                               f"see {self.controller_log}")
            time.sleep(0.1)
        missing = sorted(want - read_ready(self.ready_file))
        raise EmuError(f"the controller did not configure switches {missing} within "
                       f"{CONTROLLER_WAIT_S:.0f} s; see {self.controller_log}")

    def attach_port_programs(self) -> None:
        compile_program()
        ecn = self.spec.switch.ecn
        if self.fabric.pfc:
            self.ing_macs = {s: self._ingress_macs(s) for s in self.topo.switches}
        for s, i, dev, rate, fabric_rate in self.fabric.ports:
            kmin, kmax, pmax = ecn.thresholds(fabric_rate)
            pfc = PfcPort(CLASS_DATA, CLASS_CONTROL, _mac(dev), self.ing_macs[s]) \
                if self.fabric.pfc else None
            prog = PortProgram.attach(dev, rate, kmin, kmax, pmax, ecn_enabled=ecn.enabled,
                                      pfc=pfc)
            self.ports.append(((s, i, dev, rate, fabric_rate), prog))

    def _ingress_macs(self, s: str) -> tuple:
        """The source MAC of frames from each of switch ``s``'s ports: the host's, or the
        MAC of the neighbour switch's port (which writes it as the source; port.c)."""
        topo, macs = self.topo, []
        for i in range(len(topo.nodes[s].ports)):
            peer = topo.peer(s, i)
            if topo.nodes[peer.node].is_host:
                macs.append(bytes.fromhex(topo.host_mac(peer.node).replace(":", "")))
            else:
                macs.append(_mac(intf_name(topo, peer.node, peer.port)))
        return tuple(macs)

    def start_pfcd(self) -> None:
        """The PFC daemon (fabriclab.emu.pfcd), for every switch port of the fabric."""
        if not self.fabric.pfc:
            return
        spec, topo, pfc = self.spec, self.topo, self.spec.switch.pfc
        switches = []
        by_switch: dict[str, list] = {}
        for ((s, i, dev, rate, fabric_rate), prog) in self.ports:
            by_switch.setdefault(s, []).append({
                "index": i, "ifname": dev, "mac": _mac(dev).hex(), "prog_id": prog.prog_id,
                "rate_bps": rate, "fabric_rate_bps": fabric_rate,
                "delay_ns": topo.nodes[s].ports[i].delay_ns,
                "ing_macs": [m.hex() for m in self.ing_macs[s]]})
        for s in topo.switches:
            ports = sorted(by_switch[s], key=lambda d: d["index"])
            switches.append({
                "name": s, "ports": ports, "buffer_bytes": spec.switch.buffer_bytes,
                "limit_bytes": self.fabric.queue_limit(s),
                "headroom_bytes": [pfc_headroom_bytes(spec, link.rate_bps, link.delay_ns)
                                   for link in topo.nodes[s].ports]})
        links = [(f"{ln.a}:{ln.a_port}", f"{ln.b}:{ln.b_port}") for ln in topo.links
                 if not topo.nodes[ln.a].is_host and not topo.nodes[ln.b].is_host]
        plan = {"tdf": self.tdf, "data_priority": spec.nic.data_priority,
                "poll_ns": PFC_POLL_NS, "poll_min_real_ns": PFC_POLL_MIN_REAL_NS,
                "frame_cap": self.fabric.frame_cap, "reserve_bytes": pfc.reserve_bytes,
                "alpha": pfc.alpha, "resume_offset_bytes": pfc.resume_offset_bytes,
                "switches": switches, "switch_links": links,
                "tc_log": str(self.workdir / "pfcd-tc.log"),
                "out": str(self.workdir / "pfcd.json")}
        self.pfcd = self._start_daemon("pfcd", "the PFC daemon", plan)

    def stop_pfcd(self) -> None:
        if self.pfcd is not None:
            self.pfc_results = self._stop_daemon("pfcd", "the PFC daemon", self.pfcd)
            self.pfcd = None

    def _start_daemon(self, name: str, what: str, plan: dict) -> subprocess.Popen:
        """Start ``fabriclab.emu.<name>`` on ``plan`` (its results go to ``<name>.json``),
        recorded by PID, and wait for its READY."""
        plan_file = self.workdir / f"{name}-plan.json"
        plan_file.write_text(json.dumps(plan))
        err = open(self.workdir / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", f"fabriclab.emu.{name}", str(plan_file)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             text=True, bufsize=1)
        self.state.add_process(name, p.pid, f"fabriclab.emu.{name}")
        self.state.save()
        line = self._readline(p, time.monotonic() + 30)
        if line != "READY":
            if p.poll() is None:  # the caller never holds it: end it here, by PID
                kill_pid(p.pid, f"fabriclab.emu.{name}")
                p.wait(5)
            self.state.drop_process(name)
            raise EmuError(f"{what} did not start (said {line!r}): "
                           f"{self._file_tail(self.workdir / f'{name}.log')}")
        return p

    def _stop_daemon(self, name: str, what: str, p: subprocess.Popen) -> dict:
        """STOP a daemon started by :meth:`_start_daemon` (killed by PID if it does not
        stop); its results."""
        if p.poll() is None:
            tell(p, "STOP")
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop; killing it", what)
                kill_pid(p.pid, f"fabriclab.emu.{name}")
                p.wait(5)
        self.state.drop_process(name)
        out = self.workdir / f"{name}.json"
        if not out.is_file():
            raise EmuError(f"{what} wrote no results (status {p.returncode}): "
                           f"{self._file_tail(self.workdir / f'{name}.log')}")
        return json.loads(out.read_text())

    def start_gspd(self) -> None:
        """GSE in the leaves: the GSP daemon (fabriclab.emu.gspd), one for every leaf."""
        if not self.gse_leaf:
            return
        spec, topo = self.spec, self.topo
        pfc = spec.switch.pfc
        leaves = []
        for leaf in (s for s in topo.switches if topo.nodes[s].tier == 1):
            node = topo.nodes[leaf]
            ports = range(len(node.ports))
            host_ports = [p for p in ports if topo.nodes[topo.peer(leaf, p).node].is_host]
            others = [p for p in ports if p not in host_ports]
            hosts = [topo.peer(leaf, p).node for p in host_ports]
            rep = min(hosts, key=topo.hosts.index)  # the GSP id: routing.leaf_gsp_id
            n_paths = {j: 1 if topo.tor_of(h) == leaf else len(topo.container_paths(rep, h))
                       for j, h in enumerate(topo.hosts)}
            # the propagation delay from this leaf to each host (no netem: the GSP holds a
            # released frame for it; the sending agent held it for its own link's)
            first = topo.nodes[rep].ports[0].delay_ns
            delay = {j: (first if h == rep else sum(d for _, d in _any_path(topo, rep, h)) - first)
                     for j, h in enumerate(topo.hosts)} if not self.preflight.netem else {}
            own = gsp_intf_names(leaf)[1]
            leaves.append({
                "name": leaf, "gsp_id": topo.hosts.index(rep), "ifname": own,
                "mac": ":".join(f"{b:02x}" for b in _mac(own)), "ip": topo.nodes[rep].ip,
                "hosts": [{"host": h, "index": topo.hosts.index(h), "ip": topo.nodes[h].ip,
                           "port": p,
                           "ifname": intf_name(topo, leaf, p),
                           "mac": ":".join(f"{b:02x}" for b in _mac(intf_name(topo, leaf, p))),
                           "rate_bps": node.ports[p].rate_bps}
                          for h, p in zip(hosts, host_ports)],
                "n_paths": n_paths, "delay_ns": delay,
                # host ports first: the GSP's ingress accounting numbers them so
                "headroom_bytes": [pfc_headroom_bytes(spec, node.ports[p].rate_bps,
                                                      node.ports[p].delay_ns)
                                   for p in host_ports + others]})
        plan = {"tdf": self.tdf, "spec_path": str(self.workdir / "spec.yaml"),
                "mtu": spec.emu.mtu_bytes, "frame_overhead": P.DATA_OVERHEAD + P.GSE_TAG.size,
                "line_rate_bps": topo.host_rate_bps(topo.hosts[0]),
                "ip_of": {i: topo.nodes[h].ip for i, h in enumerate(topo.hosts)},
                "buffer_bytes": spec.switch.buffer_bytes,
                "pfc": {"buffer_bytes": spec.switch.buffer_bytes,
                        "reserve_bytes": pfc.reserve_bytes, "alpha": pfc.alpha,
                        "resume_offset_bytes": pfc.resume_offset_bytes} if pfc.enabled else None,
                "leaves": leaves, "out": str(self.workdir / "gspd.json")}
        self.gspd = self._start_daemon("gspd", "the GSP daemon", plan)

    def stop_gspd(self) -> None:
        if self.gspd is not None:
            self.gsp_results = self._stop_daemon("gspd", "the GSP daemon", self.gspd)
            self.gspd = None

    @staticmethod
    def _file_tail(p: Path, lines: int = 3) -> str:
        text = p.read_text(errors="replace").strip() if p.is_file() else ""
        return " | ".join(text.splitlines()[-lines:]) or "no output"

    def _plan(self, host: str) -> dict:
        topo, spec = self.topo, self.spec
        flows = [f for f in self.workload.flows if host in (f.src, f.dst)]
        # Every flow of this host is sampled; which ones the results show is chosen after the
        # run (fabriclab.metrics.flowseries), as in the simulator.
        track = [f.id for f in flows]
        int_bytes = P.INT_AREA_LEN if self.scheme.int_telemetry else 0
        return {
            "host": host, "ip": topo.nodes[host].ip, "tdf": self.tdf,
            "spec_path": str(self.workdir / "spec.yaml"),
            "congestion_control": self.scheme.congestion_control,
            "reliable": self.scheme.reliable,
            "send_cnp": self.scheme.congestion_control == "dcqcn",
            "line_rate_bps": topo.host_rate_bps(host),
            "base_rtt_ns": base_rtt_ns(spec, topo, int_bytes, emulated=True),
            "mtu": spec.emu.mtu_bytes,
            "ack_every": ack_every_pkts(spec, spec.emu.mtu_bytes),
            "cnp_interval_ns": round(spec.dcqcn.cnp_interval_us * 1000),
            "rto_ns": round(spec.nic.rto_us * 1000),
            # NACK a gap again only after a few real round trips of the emulated network.
            "nack_gap_ns": round(NACK_GAP_REAL_NS / self.tdf),
            "stop_ns": round(spec.stop.time_us * 1000) if spec.stop.time_us else None,
            "sample_interval_ns": max(1, round(spec.emu.sample_interval_ms * 1e6 / self.tdf)),
            "sport_base": SPORT_BASE,
            "track_flows": track,
            "flows": [{"id": f.id, "src": f.src, "dst": f.dst, "src_ip": topo.nodes[f.src].ip,
                       "dst_ip": topo.nodes[f.dst].ip, "size": f.size, "start_ns": f.start_ns,
                       "deps": list(f.deps) if f.src == host else [],
                       "dst_gsp": topo.hosts.index(f.dst)} for f in flows],
            "out": str(self.workdir / f"agent-{host}.json"),
            "int_telemetry": self.scheme.int_telemetry,
            "path_delay_ns": self._path_delays(host),
            # GSE in the leaves: data is held for the host's own link only; the leaf's GSP
            # holds it for the rest of its path after its VOQ (fabriclab.emu.gspd)
            "data_delay_ns": ({ip: topo.nodes[host].ports[0].delay_ns
                               for ip in self._path_delays(host)}
                              if self.gse_leaf else None),
            # GSE in the leaves: the agent is a plain RoCE NIC (no GSP, no GSE frames)
            "gse": self._gse_plan(host, flows) if spec.scheme == "gse" and not self.gse_leaf
            else None,
            # PFC from the leaf (the PFC daemon's, or the GSP daemon's when its VOQs fill):
            # the agent reads it on the host's interface (AF_PACKET)
            "pfc": self.fabric.pfc or (self.gse_leaf and spec.switch.pfc.enabled),
            "intf": intf_name(topo, host, 0),
        }

    def _path_delays(self, host: str) -> dict[str, int]:
        """Without netem the links cannot delay packets: the sending agent holds each frame
        for its path's propagation delay instead (by peer IP; see the agent)."""
        if self.preflight.netem:
            return {}
        topo = self.topo
        return {topo.nodes[h].ip: sum(d for _, d in _any_path(topo, h, host))
                for h in topo.hosts if h != host}

    def _gse_plan(self, host: str, flows) -> dict:
        """What the GSP in this host's agent needs: parameters, who is who, paths per
        destination (path k as ``Topology.container_paths`` numbers them: the controller's
        DSCP rules say the same)."""
        topo = self.topo
        n_paths = {}
        for f in flows:
            j = topo.hosts.index(f.dst)
            if f.src == host and j not in n_paths:
                n_paths[j] = len(topo.container_paths(host, f.dst))
        return {"gsp_id": topo.hosts.index(host),
                "ip_of": {i: topo.nodes[h].ip for i, h in enumerate(topo.hosts)},
                "n_paths": n_paths,
                "frame_overhead": P.DATA_OVERHEAD + P.GSE_TAG.size}

    def start_agents(self) -> None:
        hosts = sorted({h for f in self.workload.flows for h in (f.src, f.dst)},
                       key=self.topo.hosts.index)
        for h in hosts:
            plan_file = self.workdir / f"plan-{h}.json"
            plan_file.write_text(json.dumps(self._plan(h)))
            err = open(self.workdir / f"agent-{h}.log", "w")
            p = self.fabric.host(h).popen(
                [sys.executable, "-m", "fabriclab.emu.agent", str(plan_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
            self.agents[h] = p
            self.state.add_process(f"agent:{h}", p.pid, "fabriclab.emu.agent")
        deadline = time.monotonic() + 30
        for h, p in self.agents.items():
            line = self._readline(p, deadline)
            if line != "READY":
                raise EmuError(f"host agent on {h} did not start (said {line!r}): "
                               f"{self._log_tail(h)}")

    def _log_tail(self, h: str, lines: int = 3) -> str:
        """The end of an agent's log: the work directory is removed with the run."""
        p = self.workdir / f"agent-{h}.log"
        text = p.read_text(errors="replace").strip() if p.is_file() else ""
        return " | ".join(text.splitlines()[-lines:]) or "no output"

    @staticmethod
    def _readline(p: subprocess.Popen, deadline: float) -> str:
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(0.2):
                return p.stdout.readline().strip()
            if p.poll() is not None:
                return f"<exited {p.returncode}>"
        return "<timeout>"

    def start_tcp_servers(self) -> None:
        for i, t in enumerate(self.workload.tcp):
            out = self.workdir / f"iperf3-server-{i}.json"
            p = self.fabric.host(t.dst).popen(["iperf3", "-s", "-1", "-J", "-p", str(5201 + i),
                                               "--logfile", str(out)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.state.add_process(f"iperf3-server:{i}", p.pid, "iperf3")
            self.iperf.append((f"server:{i}", p, out))

    def start_captures(self) -> None:
        for h in self.spec.emu.pcap_hosts:
            path = self.workdir / f"capture-{h}.pcap"
            p = self.fabric.host(h).popen(
                # the first SNAPLEN bytes: every header (whole frames slowed the emulation
                # down); the zero payload is restored when the capture is saved
                ["tcpdump", "-i", intf_name(self.topo, h, 0), "-s", str(SNAPLEN), "-B",
                 "16384", "--immediate-mode", "-U", "-w", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.state.add_process(f"tcpdump:{h}", p.pid, "tcpdump")
            self.captures[h] = (p, path)
        if self.captures:
            time.sleep(0.5)  # tcpdump needs a moment before it captures

    def stop_captures(self) -> None:
        # tcpdump may lag behind the traffic; a signal makes it drop what it has not read
        # yet, so wait until the capture files stop growing.
        deadline = time.monotonic() + 10
        sizes = None
        while self.captures and time.monotonic() < deadline:
            now = [path.stat().st_size if path.exists() else 0
                   for _, path in self.captures.values()]
            if now == sizes:
                break
            sizes = now
            time.sleep(0.5)
        for h, (p, _) in self.captures.items():
            if p.poll() is None:
                kill_pid(p.pid, "tcpdump")
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.state.drop_process(f"tcpdump:{h}")

    # -- the run -----------------------------------------------------------------------
    def go(self) -> None:
        if self.faults is not None:
            self.faults.prepare()
        self.ovs_baseline = self.ovs_counts()
        self.rx_drops_go = self.host_rx_drops()
        self.at_go = self.snapshot()
        self.t0 = time.monotonic_ns() + int(START_LEAD_S * 1e9)
        for p in [d for d in (self.pfcd, self.gspd) if d is not None] + list(self.agents.values()):
            tell(p, f"GO {self.t0}")

    def fabric_now(self) -> int:
        return int((time.monotonic_ns() - self.t0) / self.tdf)

    def wait(self) -> None:
        spec = self.spec
        stop_ns = round(spec.stop.time_us * 1000) if spec.stop.time_us else None
        deadline = time.monotonic() + spec.emu.timeout_s + START_LEAD_S
        sel = selectors.DefaultSelector()
        for h, p in self.agents.items():
            sel.register(p.stdout, selectors.EVENT_READ, h)
        done: set[str] = set()
        tcp_todo = list(enumerate(self.workload.tcp))
        bar = SimProgress(self.label, stop_ns, enabled=self.progress, count="samples")
        interval = spec.emu.sample_interval_ms / 1000
        next_sample = time.monotonic()
        faults = self.faults
        try:
            while True:
                now_f = self.fabric_now()
                if faults is not None:
                    faults.apply_due(now_f)
                    faults.poll_controller()
                for i, t in list(tcp_todo):
                    if now_f >= t.start_ns:
                        tcp_todo.remove((i, t))
                        self._start_tcp_client(i, t)
                if time.monotonic() >= next_sample:
                    self._sample()
                    next_sample += interval
                    bar(max(0, now_f), len(self.samples_t),
                        (time.monotonic_ns() - self.t0) / 1e9 + START_LEAD_S)
                timeout = min(interval, next_sample - time.monotonic())
                if faults is not None and faults.next_ns() is not None:
                    timeout = min(timeout, (faults.next_ns() - self.fabric_now()) * self.tdf / 1e9)
                for key, _ in sel.select(max(0.0, timeout)):
                    line = key.fileobj.readline()
                    if not line:  # the agent exited before STOP: it failed
                        sel.unregister(key.fileobj)
                        h = key.data
                        status = self.agents[h].wait(timeout=5)
                        raise EmuError(f"host agent on {h} exited during the run (status "
                                       f"{status}): {self._log_tail(h)}")
                    if line.strip() == "DONE":
                        done.add(key.data)
                if self.controller_died_ns is None and self.controller.poll() is not None:
                    self.controller_died_ns = max(0, now_f)
                    log.warning("the os-ken controller exited during the run (status %s); "
                                "installed flows keep forwarding, GSPs fall back to egress "
                                "scheduling", self.controller.returncode)
                if stop_ns is not None and now_f >= stop_ns:
                    break
                if stop_ns is None and len(done) == len(self.agents) and not tcp_todo \
                        and self._tcp_finished():
                    self.finished = True
                    break
                if time.monotonic() > deadline:
                    self.timed_out = True
                    log.warning("emulation timed out after emu.timeout_s = %g s; results are "
                                "partial", spec.emu.timeout_s)
                    break
        finally:
            bar.close()
        self.at_stop = self.snapshot()
        self._sample()

    def _start_tcp_client(self, i: int, t) -> None:
        secs = max(1, round(t.duration_ns * self.tdf / 1e9))
        out = self.workdir / f"iperf3-client-{i}.json"
        dst_ip = self.topo.nodes[t.dst].ip
        p = self.fabric.host(t.src).popen(
            ["iperf3", "-c", dst_ip, "-p", str(5201 + i), "-t", str(secs), "-P", str(t.parallel),
             "-J", "--logfile", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.state.add_process(f"iperf3-client:{i}", p.pid, "iperf3")
        self.iperf.append((f"client:{i}", p, out))

    def _tcp_finished(self) -> bool:
        return all(p.poll() is not None for label, p, _ in self.iperf if label.startswith("client"))

    def _sample(self) -> None:
        if self.t0 is None:
            return
        t = self.fabric_now()
        reads, wire = [], []
        for (_, _, dev, _, _), prog in self.ports:  # each port's two counters read together
            reads.append(prog.read())
            wire.append(_wire_tx_bytes(dev))
        self.samples_t.append(t)
        self.samples_tx.append([r.tx_bytes for r in reads])
        self.samples_q.append([r.queue_bytes for r in reads])
        self.samples_phantom.append([r.tx_bytes - r.queue_bytes - r.ctrl_queue_bytes
                                     for r in reads])
        self.samples_wire.append(wire)
        if self.fabric.pfc:  # time each port's data class has been paused, fabric ns
            self.samples_paused.append([int(prog.paused_real_ns() / self.tdf)
                                        for _, prog in self.ports])

    def stop_agents(self) -> None:
        for p in self.agents.values():
            if p.poll() is None:
                tell(p, "STOP")
        deadline = time.monotonic() + 10
        for h, p in self.agents.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("agent on %s did not stop; killing it", h)
                kill_pid(p.pid, "fabriclab.emu.agent")
                p.wait(5)
            self.state.drop_process(f"agent:{h}")

    def stop_controller(self) -> None:
        if self.controller is not None and self.controller.poll() is None:
            kill_pid(self.controller.pid, "fabriclab.controllers.run")
            try:
                self.controller.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def teardown(self) -> None:
        """Remove exactly what this run created; every step runs even if one fails."""
        if self.faults is not None:
            self.faults.watch.stopping = True
        self.stop_captures()
        for label, p, _ in self.iperf:
            if p.poll() is None:
                kill_pid(p.pid, "iperf3")
            p.wait(5)
            self.state.drop_process(f"iperf3-{label}")
        for h, p in self.agents.items():
            if p.poll() is None:
                kill_pid(p.pid, "fabriclab.emu.agent")
            self.state.drop_process(f"agent:{h}")
        if self.pfcd is not None and self.pfcd.poll() is None:
            kill_pid(self.pfcd.pid, "fabriclab.emu.pfcd")
            self.pfcd.wait(5)
        self.state.drop_process("pfcd")
        if self.gspd is not None and self.gspd.poll() is None:
            kill_pid(self.gspd.pid, "fabriclab.emu.gspd")
            self.gspd.wait(5)
        self.state.drop_process("gspd")
        for _, prog in self.ports:
            prog.detach()
        if self.fabric is not None:
            self.fabric.stop()
        if self.controller is not None:
            if self.controller.poll() is None:
                kill_pid(self.controller.pid, "fabriclab.controllers.run")
            try:
                self.controller.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.state.drop_process("controller")
        RunState.remove()

    # -- results -----------------------------------------------------------------------
    def port_stats(self) -> dict[str, dict]:
        """Per switch port: bytes/packets sent and drops from the qdisc (tc -s -j)."""
        out = subprocess.run(["tc", "-s", "-j", "qdisc", "show"], capture_output=True,
                             text=True).stdout
        stats = {}
        for q in json.loads(out or "[]"):
            if q.get("kind") == "htb" and q.get("root"):
                stats.setdefault(q["dev"], {}).update(sent=q.get("bytes", 0),
                                                      pkts=q.get("packets", 0))
            # the FIFO under the link's class, or in PFC mode the control class's FIFO and
            # the data class's gate (a tbf, which counts its FIFO's drops and backlog)
            if q.get("kind") in ("bfifo", "netem", "tbf"):
                st = stats.setdefault(q["dev"], {})
                st["drops"] = st.get("drops", 0) + q.get("drops", 0)
                st["backlog"] = st.get("backlog", 0) + q.get("backlog", 0)
                # in PFC mode the data class is the tbf, the control class a bfifo
                kind = ("data" if q["kind"] == "tbf" else "control") if self.fabric.pfc \
                    else "any"
                st[f"drops_{kind}"] = st.get(f"drops_{kind}", 0) + q.get("drops", 0)
        return stats

    def ovs_counts(self) -> dict[str, tuple[int, int, int, dict[str, int]]]:
        """(packets received, transmitted, dropped by the table-miss entry, dropped on
        receive by port: :func:`rx_drops_by_port`) per switch, from
        Open vSwitch's own statistics.  Received - transmitted - table-miss over a run is
        what the switch lost inside the userspace datapath, where some losses have no
        counter of their own (e.g. a full packet-socket send buffer)."""
        out = {}
        for s in self.topo.switches:
            ports = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", f"flb{s}"],
                                   capture_output=True, text=True).stdout
            flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"flb{s}"],
                                   capture_output=True, text=True).stdout
            miss = sum(int(n) for n in re.findall(r"n_packets=(\d+),.*priority=0 ", flows))
            out[s] = (sum(int(n) for n in re.findall(r"rx pkts=(\d+)", ports)),
                      sum(int(n) for n in re.findall(r"tx pkts=(\d+)", ports)), miss,
                      rx_drops_by_port(ports))
        return out

    def ovs_losses(self, stats: dict) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(lost inside Open vSwitch, dropped for want of a route, qdisc drops) per switch
        since GO, once the queues have drained: lost = received - transmitted - table-miss
        - dropped by the ports' own qdiscs.  A packet caught between receive and send at
        either reading is +-1 noise, hence the floor at 0."""
        end = self.ovs_counts()
        qdrops = {}
        for (sw, _, dev, _, _), _ in self.ports:
            d0 = self.at_go["ports"].get(dev, {}).get("drops", 0)
            qdrops[sw] = qdrops.get(sw, 0) + stats.get(dev, {}).get("drops", 0) - d0
        lost, miss = {}, {}
        pfc_in: dict[str, int] = {}  # PFC frames: Open vSwitch's table-miss drops them too
        for name, c in ((self.pfc_results or {}).get("ports") or {}).items():
            sw = name.split(":")[0]
            pfc_in[sw] = pfc_in.get(sw, 0) + c["pfc_pause_rx"] + c["pfc_resume_rx"]
        self.ovs_rx_dropped = {
            s: {p: n - self.ovs_baseline[s][3].get(p, 0) for p, n in v[3].items()}
            for s, v in end.items()}
        for s, (rx, tx, m, _) in end.items():
            rx0, tx0, m0, _ = self.ovs_baseline[s]
            m -= pfc_in.get(s, 0)
            rx -= pfc_in.get(s, 0)
            miss[s] = max(0, m - m0)
            lost[s] = max(0, (rx - rx0) - (tx - tx0) - miss[s] - qdrops.get(s, 0))
        return lost, miss, qdrops

    def host_stats(self) -> dict[str, dict]:
        """Per host NIC: bytes/packets sent, drops and backlog of its qdisc."""
        res = {}
        for h in self.agents:
            txt = self.fabric.host(h).cmd(f"tc -s -j qdisc show dev {intf_name(self.topo, h, 0)}")
            st = {"sent": 0, "pkts": 0, "drops": 0, "backlog": 0}
            try:
                for q in json.loads(txt):
                    if q.get("kind") == "htb" and q.get("root"):
                        st.update(sent=q.get("bytes", 0), pkts=q.get("packets", 0))
                    if q.get("kind") in ("bfifo", "netem"):
                        st.update(drops=q.get("drops", 0), backlog=q.get("backlog", 0))
            except ValueError:
                pass
            res[h] = st
        return res

    def host_rx_drops(self) -> dict[str, tuple[int, int, int]]:
        """Per host: (UDP datagrams its sockets' full receive buffers dropped, frames its
        interface dropped on receive, UDP datagrams that found no socket: after its agent
        had stopped), from the host namespace's /proc/net/snmp and /proc/net/dev."""
        out = {}
        for h in self.agents:
            intf = intf_name(self.topo, h, 0)
            txt = self.fabric.host(h).cmd("cat /proc/net/snmp /proc/net/dev")
            rcvbuf = ifdrop = noport = 0
            udp = [line.split() for line in txt.splitlines() if line.startswith("Udp:")]
            if len(udp) >= 2 and "RcvbufErrors" in udp[0]:
                rcvbuf = int(udp[1][udp[0].index("RcvbufErrors")])
                noport = int(udp[1][udp[0].index("NoPorts")])
            for line in txt.splitlines():
                if line.strip().startswith(intf + ":"):
                    ifdrop = int(line.split(":", 1)[1].split()[3])  # receive drop
            out[h] = (rcvbuf, ifdrop, noport)
        return out

    def drain(self, timeout_s: float = 60.0) -> None:
        """Wait until every queue is empty, so that the counters read afterwards are final."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = sum(v.get("backlog", 0) for v in self.port_stats().values()) + \
                sum(v["backlog"] for v in self.host_stats().values())
            if left == 0:
                return
            time.sleep(0.1)
        log.warning("queues did not drain within %g s; counters may miss in-flight packets",
                    timeout_s)

    def snapshot(self) -> dict:
        return {"t": self.fabric_now() if self.t0 else 0, "ports": self.port_stats(),
                "hosts": self.host_stats()}


@contextlib.contextmanager
def session(spec: Spec, progress: bool | None = None, label: str | None = None):
    """The emulated fabric, up and configured (controller ready, ports shaped and
    instrumented), for the duration of the ``with`` block; everything it created is removed
    on the way out, whatever happens.  Yields the :class:`Emulation`."""
    spec, auto_note = autorate.resolve(spec, from_spec(spec.topology))
    pre = preflight.check(spec, need_iperf3=any(w.kind == "tcp_iperf3" for w in spec.workload),
                          need_tcpdump=bool(spec.emu.pcap_hosts))
    if auto_note:
        log.info("%s", auto_note)
        pre.notes.append(auto_note)
    workdir = Path(tempfile.mkdtemp(prefix="fabriclab-emu-"))
    # The agents' copy: the faults are the orchestrator's and the controller's business
    # (an agent hears of them through PATHS_DOWN only).
    (workdir / "spec.yaml").write_text(resolved_yaml(spec.model_copy(update={"faults": []})))
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # a kill (SIGTERM) cleans up like Ctrl-C does
        raise KeyboardInterrupt

    try:
        with RunLock():
            # Holding the lock, nothing else runs: any state file, bridge or interface of
            # ours is what a killed run (SIGKILL, power loss) left behind.
            removed = remove_leftovers(RunState.load())
            if removed:
                log.warning("removed what an earlier run left behind: %s", ", ".join(removed))
            emu = Emulation(spec, workdir, progress,
                            label or f"{spec.name} [{spec.scheme}, mininet]")
            emu.preflight = pre
            signal.signal(signal.SIGTERM, on_term)
            emu.state.save()
            try:
                emu.start_controller()
                emu.fabric = EmuFabric(emu.topo, spec, emu.controller_port, pre.datapath,
                                       emu.state, pre.ovs_sndbuf, netem=pre.netem)
                emu.fabric.start()
                emu.attach_port_programs()
                emu.start_pfcd()
                emu.start_gspd()
                emu.wait_controller_ready()
                yield emu
            finally:
                try:
                    emu.teardown()
                finally:
                    signal.signal(signal.SIGTERM, old_term)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def emulate(spec: Spec, progress: bool | None = None, label: str | None = None) -> RunResult:
    """Run ``spec`` on the Mininet engine; return results in the common schema."""
    t_start = time.perf_counter()
    with session(spec, progress, label) as emu:
        emu.start_agents()
        emu.start_tcp_servers()
        emu.start_captures()
        emu.go()
        emu.wait()
        emu.stop_agents()
        emu.drain()
        emu.stop_pfcd()
        emu.stop_gspd()
        emu.stop_captures()
        emu.stop_controller()  # its last GSOS stats and log lines belong in the results
        stats = emu.port_stats()
        host_drops = {h: v["drops"] - emu.at_go["hosts"].get(h, {}).get("drops", 0)
                      for h, v in emu.host_stats().items()}
        losses, no_route, qdrops = emu.ovs_losses(stats)
        end = emu.host_rx_drops()
        emu.rx_drops = {h: tuple(e - g for e, g in zip(v, emu.rx_drops_go.get(h, (0, 0, 0))))
                        for h, v in end.items()}
        final = [prog.read() for _, prog in emu.ports]
        fault_records, dead = None, {}
        if emu.faults is not None:
            emu.faults.poll_controller()
            # what Open vSwitch sent into dead ports is lost on the link, not inside it
            fault_records = emu.faults.finish(
                stats, {dev: c for ((_, _, dev, _, _), _), c in zip(emu.ports, final)},
                losses)
            dead = emu.faults.lost_by_dev
        # When a port's FIFO rejects a packet, Open vSwitch's send of a batch of packets to
        # that port stops there and the rest of the batch is freed uncounted: losses at a
        # switch whose ports overflowed are that, not an emulator fault.
        if any(losses.values()):
            log.info("frames lost inside Open vSwitch, per switch: %s", losses)
        burst = {s: n for s, n in losses.items() if qdrops.get(s)}
        losses = {s: n for s, n in losses.items() if not qdrops.get(s)}
        # Built inside the session: the agents' files live in its work directory.
        return build_result(emu, emu.preflight, stats, host_drops, losses, no_route, burst,
                            final, time.perf_counter() - t_start, fault_records, dead)


def _mac(dev: str) -> bytes:
    """The MAC address of a root-namespace interface."""
    return bytes.fromhex(Path(f"/sys/class/net/{dev}/address").read_text().strip()
                         .replace(":", ""))


def _interp(t_src, values, t_dst):
    if not t_src:
        return [0.0] * len(t_dst)
    return list(np.interp(t_dst, t_src, values))


def build_result(emu: Emulation, pre, stats, host_drops, losses, no_route, burst, final,
                 wall_s: float, fault_records=None, dead_link: dict | None = None
                 ) -> RunResult:
    spec, topo, wl = emu.spec, emu.topo, emu.workload
    agents = {}
    for h in emu.agents:
        p = emu.workdir / f"agent-{h}.json"
        if not p.is_file():
            raise EmuError(f"host agent on {h} wrote no results: {emu._log_tail(h)}")
        agents[h] = json.loads(p.read_text())
    mtu, hdr = spec.emu.mtu_bytes, P.DATA_OVERHEAD
    records = []
    for f in wl.flows:
        s = agents[f.src]["flows"][str(f.id)]
        r = agents[f.dst]["flows"][str(f.id)]
        hops = _any_path(topo, f.src, f.dst)
        ideal = ideal_fct_ns(f.size, hops, mtu, hdr) if f.size is not None else None
        records.append(FlowRecord(f.id, f.src, f.dst, f.size, s["started_ns"], r["end_ns"],
                                  ideal, f.group, r["delivered"]))
    # ports: switch ports from tc (what was sent, dropped), eBPF (marks, queue) and the PFC
    # daemon (pause frames, paused time)
    pfc_ports = (emu.pfc_results or {}).get("ports", {})
    gsp_ports = {k: v for lf in ((emu.gsp_results or {}).get("leaves") or {}).values()
                 for k, v in lf["ports"].items()}
    switch_ports = []
    for ((s, i, dev, rate, fabric_rate), _), c in zip(emu.ports, final):
        st = stats.get(dev, {})
        sent = st.get("sent", c.tx_bytes)
        d = st.get("drops", 0)
        dbytes = max(0, c.tx_bytes - sent - st.get("backlog", 0)) if d else 0
        dl_pkts, dl_bytes = (dead_link or {}).get(dev, (0, 0))
        if dl_pkts:  # the offered bytes above include what the port flushed when it died
            dbytes = max(0, dbytes - dl_bytes) if d else 0
        peer = topo.peer(s, i)
        pc = dict(pfc_ports.get(f"{s}:{i}", {}))
        for k, v in gsp_ports.get(f"{s}:{i}", {}).items():  # the GSP daemon's PFC (leaf)
            pc[k] = pc.get(k, 0) + v
        switch_ports.append(PortRecord(
            f"{s}:{i}", s, f"{peer.node}:{peer.port}", topo.port_role(s, i), fabric_rate / 1e9,
            sent, st.get("pkts", c.tx_pkts), d + dl_pkts, dbytes + dl_bytes, c.ce_marks,
            pfc_pause_tx=pc.get("pfc_pause_tx", 0), pfc_resume_tx=pc.get("pfc_resume_tx", 0),
            pfc_pause_rx=pc.get("pfc_pause_rx", 0), paused_ns=pc.get("paused_ns", 0),
            max_queue_bytes=c.max_queue_bytes, drops_dead_link=dl_pkts))
    ports = list(switch_ports)
    for h, a in agents.items():
        peer = topo.peer(h, 0)
        ac = a["counters"]
        ports.append(PortRecord(f"{h}:0", h, f"{peer.node}:{peer.port}", topo.port_role(h, 0),
                                topo.host_rate_bps(h) / 1e9, ac["tx_bytes"], ac["tx_pkts"],
                                host_drops.get(h, 0), pfc_pause_rx=ac.get("pfc_pause_rx", 0),
                                paused_ns=ac.get("paused_ns", 0)))
    # the agents count what hosts.csv shows, under the same names
    hosts = [HostRecord(h, **{k: a["counters"][k] for k in HOST_COLUMNS[1:]})
             for h, a in agents.items()]
    by_kind = _frames_by_kind(emu, agents, stats)
    by_kind["arrived_after_agents_stopped"] = sum(v[2] for v in emu.rx_drops.values())
    reasons = {"queue_full": sum(p.drops - p.drops_dead_link for p in switch_ports),
               "dead_link": sum(p.drops_dead_link for p in switch_ports),
               "queue_full_rest_of_batch": sum(burst.values()),
               "nic_queue": sum(host_drops.values()),
               "inside_open_vswitch": sum(losses.values()), "no_route": sum(no_route.values()),
               # what a dead link's own interfaces dropped on receive is that link's
               # loss, already counted under dead_link; the other ports' count here
               "open_vswitch_rx": rx_dropped(topo, emu.ovs_rx_dropped, dead_link or {}),
               "receive_buffer": sum(v[0] for v in emu.rx_drops.values()),
               # GSE in the leaves without PFC: the VOQs full (the leaf's buffer)
               "voq_full": sum(lf["counters"]["voq_drops"] for lf in
                               ((emu.gsp_results or {}).get("leaves") or {}).values()),
               "host_interface_rx": sum(v[1] for v in emu.rx_drops.values())}
    ovs_all_kinds = reasons["inside_open_vswitch"]
    if emu.finished and not dead_link:
        # A run that completed: every RoCE frame the agents sent either arrived or was lost
        # somewhere.  Losses Open vSwitch counted beyond the RoCE frames that went missing
        # were other frames (ARP, IPv6 neighbour discovery); RoCE frames missing beyond
        # every counter were lost where no counter sees (e.g. a full receive buffer).
        # frames still queued when the agents stopped arrive while the queues drain and
        # find no socket: delivered late, not lost
        missing = max(0, by_kind["data"]["not_received"] + by_kind["control"]["not_received"]
                      - by_kind["arrived_after_agents_stopped"])
        counted = sum(reasons.values())
        if counted > missing:
            reasons["inside_open_vswitch"] = max(0, ovs_all_kinds - (counted - missing))
        elif missing > counted:
            reasons["lost_unaccounted"] = missing - counted
    now = emu.samples_t[-1] if emu.samples_t else 0
    if emu.finished:
        stopped = "completed"
    elif emu.timed_out:
        stopped = "emu.timeout_s (workload unfinished)"
    else:
        stopped = "stop.time_us"
    emulation = {
        "link_mbps": spec.emu.link_mbps, "time_dilation": emu.tdf,
        "emulated_time_s": now * emu.tdf / 1e9, "datapath": pre.datapath,
        "mtu_bytes": mtu, "frame_overhead_bytes": hdr,
        "link_delay": ("netem on the links" if pre.netem else
                       "the path's, in the sending host's agent (no netem)"),
        "queue_limit_bytes": {s: emu.fabric.queue_limit(s) for s in topo.switches},
        "ovs_packet_socket_sndbuf": pre.ovs_sndbuf,
        "notes": pre.notes,
        "agent_max_lag_ns": max(a["counters"]["max_lag_ns"] for a in agents.values())
        if agents else 0,
        "agent_late_max_ns": max(a["counters"].get("late_max_ns", 0) for a in agents.values())
        / emu.tdf if agents else 0,
        "ce_marked_packets_received": sum(a["counters"]["ce_rx"] for a in agents.values()),
        # bytes offered to each switch port (counted by the eBPF program before the
        # qdisc): with ports.csv's tx_bytes (what the qdisc sent) it shows loaded links
        "port_offered_bytes": {f"{s}:{i}": c.tx_bytes
                               for ((s, i, *_), _), c in zip(emu.ports, final)},
        # what each link carried between fabric time 0 and the stop (from the qdiscs),
        # i.e. without the queues that drained afterwards
        "run_window_ns": emu.at_stop.get("t"),
        "port_sent_in_run_bytes": _sent_in_run(emu),
        "tcp": _tcp_summary(emu),
        "controller": ("running to the end" if emu.controller_died_ns is None else
                       f"exited at {emu.controller_died_ns} ns of fabric time; forwarding "
                       f"went on with the installed flows"),
    }
    emulation["frames_by_kind"] = by_kind
    emulation["open_vswitch_lost_all_kinds"] = ovs_all_kinds
    emulation["open_vswitch_rx_dropped"] = rx_dropped(topo, emu.ovs_rx_dropped, {})
    # what the emulator lost that no link or queue of the spec would have
    lost_ovs = reasons["inside_open_vswitch"] + reasons.get("lost_unaccounted", 0) + \
        reasons["receive_buffer"] + reasons["host_interface_rx"] + reasons["open_vswitch_rx"]
    qdrops: dict[str, int] = {}
    for p in switch_ports:
        qdrops[p.node] = qdrops.get(p.node, 0) + p.drops - p.drops_dead_link
    emulation["fidelity"] = _fidelity(emu, agents, lost_ovs, dead_link or {}, qdrops)
    if emu.faults is not None:
        emulation["faults"] = emu.faults.summary()
    if emu.gsp_results is not None:
        r = emu.gsp_results
        emulation["gsp_daemon"] = {
            "mechanism": "fabriclab.emu.gspd: the GSP of each leaf (fabriclab.nic.leaf) on a "
                         "port of its own in the leaf's bridge; plain RoCE agents "
                         "(docs/mininet.md, GSE in the leaves)",
            # its reaction time, fabric ns: its longest turn, its latest wake-up
            "max_lag_ns": r["max_lag_ns"], "late_max_ns": r["late_max_ns"],
            "scheduling": r.get("scheduling"),
            "leaves": {name: {**lf["counters"], "voq_max_bytes": lf["gse"]["voq_max_bytes"],
                              "max_ingress_bytes": lf["max_ingress_bytes"]}
                       for name, lf in r["leaves"].items()}}
    if emu.pfc_results is not None:
        r = emu.pfc_results
        emulation["pfc"] = {
            "mechanism": "fabriclab.emu.pfcd: ingress accounting from the port programs' "
                         "counters, real 802.1Qbb frames, a tbf gate on each port's data "
                         "class (docs/mininet.md, PFC)",
            "poll_ns": r["poll_ns"], "gate_ns": r["gate_ns"],
            "max_ingress_bytes": {k: v["max_ingress_bytes"] for k, v in r["ports"].items()
                                  if v["max_ingress_bytes"]},
            "events": len(r["events"])}
    elif emu.spec.switch.pfc.enabled:
        emulation["pfc"] = {"mechanism": "off: netem on the links (its delay line would sit "
                                         "behind the data class's gate)"}
    files: dict[str, str | bytes] = {"controller.log": emu.controller_log.read_text()
                                     if emu.controller_log.is_file() else ""}
    for h, (_, path) in emu.captures.items():
        if path.is_file():
            files[f"pcap/{h}.pcap"] = restore_roce_payload(path.read_bytes())
    result = assemble(
        spec, topo, "mininet",
        load_balancing="ecmp (Open vSwitch SELECT groups, per-flow hash)", stopped=stopped,
        sim_time_ns=now, workload_done_ns=max((r.end_ns for r in records
                                               if r.end_ns is not None), default=None),
        run={"wall_s": round(wall_s, 3)}, collectives=wl.collectives, flows=records,
        ports=ports, hosts=hosts, samples=_samples(emu, agents),
        flow_samples=_flow_samples(emu, agents, records),
        # After STOP nothing is queued (checked: the qdiscs' backlog is in port_stats): what
        # was sent and neither delivered nor dropped is loss that no counter caught.
        drops=Drops(sum(reasons.values()), sum(p.drop_bytes for p in ports), reasons),
        mtu=mtu, header=hdr, frame_bytes=mtu + hdr, extra={"emulation": emulation},
        gse=_gse_summary(emu, agents, sum(r.delivered for r in records))
        if spec.scheme == "gse" else None,
        faults=fault_records, files=files)
    for c in result.summary["collectives"]:
        c["completion_emulated_s"] = (c["completion_ns"] * emu.tdf / 1e9
                                      if c["completion_ns"] is not None else None)
    return result


def _gse_summary(emu: Emulation, agents: dict, data_bytes: int) -> dict:
    """GSE's costs, from the agents' GSPs, with what only the emulation has: containers the
    reorder buffers gave up on, GSPs that fell back to egress scheduling, and GSOS's own
    count of what it did."""
    g = [a["gse"] for a in agents.values() if a.get("gse")]
    if emu.gsp_results is not None:  # GSE in the leaves: the GSP daemon's GSPs
        g = [lf["gse"] for lf in emu.gsp_results["leaves"].values()]
    gsos = json.loads(emu.gsos_stats.read_text()) if emu.gsos_stats.is_file() else None
    return gse_summary(GseParams.from_spec(emu.spec.gse), g, data_bytes) | {
        "reorder_containers_given_up": sum(a["reorder_skipped"] for a in g),
        "fell_back_to_egress": {h: a["gse"]["fell_back_at"] for h, a in agents.items()
                                if a.get("gse") and a["gse"]["fell_back_at"] is not None},
        "gsos": gsos,
    }


def _frames_by_kind(emu: Emulation, agents: dict, stats: dict) -> dict:
    """Frames the agents sent and received by kind (RoCE data; RoCE control: ACK, NACK,
    CNP; GSE control: REQUEST, GRANT, whose GSOS side the agents do not see), and what the
    switch ports' queues dropped of each since GO (in PFC mode data and control have their
    own queues; otherwise one FIFO drops either: ``queue_drops_any``).  Frames in flight
    when the agents stopped count as not received: exact for a run that completed its
    workload, an over-count for one stopped by stop.time_us."""
    out = {}
    for kind in ("data", "control", "gse"):
        sent = sum(a["counters"].get(f"sent_{kind}_pkts", 0) for a in agents.values())
        rx = sum(a["counters"].get(f"rx_{kind}_pkts", 0) for a in agents.values())
        out[kind] = {"sent": sent, "received": rx, "not_received": max(0, sent - rx)}
    go = emu.at_go.get("ports", {}) if emu.at_go else {}
    for kind in ("data", "control", "any"):
        n = sum(st.get(f"drops_{kind}", 0) - go.get(dev, {}).get(f"drops_{kind}", 0)
                for dev, st in stats.items())
        if kind == "any":
            out["queue_drops_any"] = n
        else:
            out[kind]["dropped_by_queues"] = n
    out["gse"]["note"] = "REQUESTs to GSOS and its GRANTs count as sent or received only"
    return out


def _fidelity(emu: Emulation, agents: dict, lost_inside_ovs: int, dead: dict,
              qdrops: dict[str, int]) -> dict:
    """The run's fidelity verdict (fabriclab.metrics.fidelity).  Links: over the sampling
    intervals in which a port's phantom queue (a link of exactly the configured rate, kept
    by its eBPF program) was busy at both ends and PFC did not pause it, the bytes the
    interface really sent
    against the bytes the phantom link sent.  Agents: their late wake-ups.  Open vSwitch:
    what it lost."""
    go, stop = emu.at_go, emu.at_stop
    window = (stop.get("t") or 0) - (go.get("t") or 0) if go and stop else None
    t, ph, wire, q = emu.samples_t, emu.samples_phantom, emu.samples_wire, emu.samples_q
    # PFC: an interval in which the port was paused is left out (the phantom link stops at
    # the pause word, the real one when tc has closed the gate: they differ by the gate's
    # latency, which the PFC daemon reports as gate_ns)
    paused = emu.samples_paused if len(emu.samples_paused) == len(t) else None
    ports = []
    end = (stop or {}).get("ports", {})
    start = (go or {}).get("ports", {})
    for k, ((s, i, dev, _, fabric_rate), _) in enumerate(emu.ports):
        if dev in dead:
            continue  # a link that died: what it could carry is not the configured rate
        if end.get(dev, {}).get("drops", 0) > start.get(dev, {}).get("drops", 0):
            # a FIFO that overflowed: the phantom queue counts what it dropped, and drains
            # it while the real link has nothing left to send
            continue
        busy_ns = expected = sent = 0
        for j in range(1, len(t)):
            if paused is not None and paused[j][k] != paused[j - 1][k]:
                continue
            cap = fabric_rate * (t[j] - t[j - 1]) / 8e9  # what the link carries meanwhile
            # busy throughout: the backlog at the start alone outlasts the interval (a
            # queue that empties and refills within it says nothing about the rate, and
            # the interface counts whole frames when they leave)
            if q[j - 1][k] >= cap and wire[j][k] >= 0 and wire[j - 1][k] >= 0:
                busy_ns += t[j] - t[j - 1]
                # the data and control classes' phantom queues each drain at the link's
                # rate; together they cannot send more than the link
                expected += min(ph[j][k] - ph[j - 1][k], cap)
                sent += wire[j][k] - wire[j - 1][k]
        ports.append({"port": f"{s}:{i}", "rate_gbps": fabric_rate / 1e9, "busy_ns": busy_ns,
                      "expected_bytes": expected, "sent_bytes": sent})
    late = {h: a["counters"].get("late_ns", 0) / emu.tdf for h, a in agents.items()}
    capped = {}
    if emu.fabric.pfc:  # FIFOs smaller than the buffer PFC admits against, that overflowed
        sw = emu.spec.switch
        for s in emu.topo.switches:
            limit = emu.fabric.queue_limit(s)
            if limit < (sw.queue_limit_bytes or sw.buffer_bytes):
                capped[s] = (qdrops.get(s, 0), limit)
    return judge_fidelity(window_ns=window, time_dilation=emu.tdf,
                          link_mbps=emu.spec.emu.link_mbps, ports=ports, agents_late_ns=late,
                          lost_inside_ovs=lost_inside_ovs, capped_fifo_drops=capped)


def _wire_tx_bytes(dev: str) -> int:
    """Bytes the interface has sent (-1: it is gone)."""
    try:
        with open(f"/sys/class/net/{dev}/statistics/tx_bytes", "rb") as fh:
            return int(fh.read())
    except OSError:
        return -1


def _sent_in_run(emu: Emulation) -> dict[str, int]:
    out = {}
    go, stop = emu.at_go, emu.at_stop
    if not go or not stop:
        return out
    for (s, i, dev, _, _), _ in emu.ports:
        out[f"{s}:{i}"] = stop["ports"].get(dev, {}).get("sent", 0) - \
            go["ports"].get(dev, {}).get("sent", 0)
    for h in stop["hosts"]:
        out[f"{h}:0"] = stop["hosts"][h]["sent"] - go["hosts"].get(h, {}).get("sent", 0)
    return out


def _tcp_summary(emu: Emulation) -> list[dict]:
    out = []
    for label, _, path in emu.iperf:
        if not label.startswith("client") or not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            bps = doc["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError):
            out.append({"stream": label, "error": "no iperf3 result"})
            continue
        out.append({"stream": label, "emulated_mbps": bps / 1e6,
                    "fabric_gbps": bps * emu.tdf / 1e9})
    return out


def _step(t_src, values, t_dst) -> list:
    """The last value sampled at or before each time in ``t_dst``: a rate holds until the
    algorithm changes it, so it is not interpolated.  Before the first sample, the first:
    an agent samples at its first turn after the common start, which on a loaded machine
    can come after the orchestrator's first sample of a flow that had already started at
    its initial rate."""
    if not t_src:
        return [0.0] * len(t_dst)
    idx = np.searchsorted(np.asarray(t_src), np.asarray(t_dst), side="right") - 1
    v = np.asarray(values, dtype=float)
    return list(v[np.clip(idx, 0, len(v) - 1)])


def _flow_samples(emu: Emulation, agents: dict, records: list[FlowRecord]) -> FlowSamples:
    """The agents' per-flow series (rate at the sender, delivery at the receiver) on the
    orchestrator's sample times, for the flows active at each."""
    t = emu.samples_t
    out = FlowSamples()
    cols = []
    for r in records:
        if r.started_ns is None:
            continue
        src, dst = agents[r.src]["series"], agents[r.dst]["series"]
        key = str(r.id)
        rate = _step(src["t"], src["flow_rate"].get(key, [0] * len(src["t"])), t)
        rx = _interp(dst["t"], dst["flow_rx"].get(key, [0] * len(dst["t"])), t)
        cols.append((r, rate, rx))
    for k, tk in enumerate(t):
        # the agents report rate 0 once every byte of the flow is acknowledged
        live = [(r.id, rate[k] or math.nan, round(rx[k])) for r, rate, rx in cols
                if r.started_ns <= tk and (r.end_ns is None or tk < r.end_ns)]
        out.add(tk, [x[0] for x in live], [x[1] for x in live], [x[2] for x in live])
    return out


def _samples(emu: Emulation, agents: dict) -> Samples:
    """The orchestrator's samples of the switch ports, and the agents' goodput interpolated
    onto their times."""
    t = emu.samples_t
    names = [f"{s}:{i}" for (s, i, *_), _ in emu.ports]
    hosts = list(agents)
    good = [_interp(agents[h]["series"]["t"], agents[h]["series"]["goodput"], t) for h in hosts]
    paused = emu.samples_paused if len(emu.samples_paused) == len(t) else \
        [[0] * len(names) for _ in t]
    return Samples(t, names, [fr for (*_, fr), _ in emu.ports], emu.samples_tx, paused,
                   names, emu.samples_q, hosts, [[g[k] for g in good] for k in range(len(t))])
