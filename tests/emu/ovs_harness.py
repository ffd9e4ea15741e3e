"""The controller process and Open vSwitch bridges (userspace datapath) for the tests that
drive the os-ken controller without Mininet (test_controller.py, test_gsos_ovs.py).

Each test module names its bridges with a prefix of its own and removes them, and the
controller process, in finalizers: by name and by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabriclab.wire.ready import read_ready_file
from fabriclab.topologies import Topology

READY_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 5


def need_ovs() -> None:
    """Skip without root (a developer's machine); as root (CI) a missing or stopped Open
    vSwitch is a failure, not a skip: scripts/setup.sh installs and starts it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (Open vSwitch)")
    if shutil.which("ovs-vsctl") is None or shutil.which("ovs-ofctl") is None:
        pytest.fail("Open vSwitch tools not installed; run scripts/setup.sh")
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("Open vSwitch is not running (ovs-vsctl show failed: "
                    f"{r.stderr.strip()}); run scripts/setup.sh, which starts it")


def sh(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(cmd)} failed: {r.stderr}"
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP / bound UDP socket of ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if inode not in inodes or (proto.startswith("tcp") and state != "0A"):
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host byte order.
            words = b"".join(struct.pack("=I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
            addr = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)
            out.append((proto, addr, int(port_hex, 16)))
    return out


class Controller:
    """The controller process, started by module name the way the orchestrator does;
    ``env`` adds to (and ``drop_env`` removes from) the environment it inherits."""

    def __init__(self, tmp: Path, topo: Topology, env: dict[str, str] | None = None,
                 drop_env: tuple[str, ...] = ()):
        self.dir = tmp
        self.topo_file = tmp / "topology.json"
        self.topo_file.write_text(json.dumps(topo.to_dict()))
        self.ready_file = tmp / "ready.jsonl"
        self.log = tmp / "controller.log"
        self.port = free_port()
        self.out = open(tmp / "controller.out", "w")
        full_env = {k: v for k, v in os.environ.items() if k not in drop_env}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fabriclab.controllers.run", "--topology",
             str(self.topo_file), "--port", str(self.port), "--ready-file",
             str(self.ready_file), "--log", str(self.log)],
            stdout=self.out, stderr=subprocess.STDOUT, env=full_env)

    def wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"controller exited early:\n{self.diagnostics()}"
            if any(p == self.port for proto, _, p in listening(self.proc.pid)
                   if proto.startswith("tcp")):
                return
            time.sleep(0.1)
        pytest.fail(f"controller not listening on {self.port}:\n{self.diagnostics()}")

    def wait_ready(self, dpids: set[int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if read_ready_file(self.ready_file) >= dpids:
                return
            assert self.proc.poll() is None, f"controller exited:\n{self.diagnostics()}"
            time.sleep(0.1)
        pytest.fail(f"switches not ready after {READY_TIMEOUT_S}s: have "
                    f"{sorted(read_ready_file(self.ready_file))}, want {sorted(dpids)}\n"
                    f"{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = []
        for f in (self.log, self.dir / "controller.out"):
            if f.exists():
                parts.append(f"--- {f.name}\n{f.read_text()[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def add_bridge(name: str, dpid: int, nports: int, port: int, created: list[str]) -> None:
    """A netdev bridge with ``nports`` internal ports (ofport 1..n), fail-mode secure,
    managed by the controller on ``port``."""
    created.append(name)  # before creating: a half-made bridge must still be removed
    cmd = ["ovs-vsctl", "--timeout=20", "--if-exists", "del-br", name,
           "--", "add-br", name,
           "--", "set", "bridge", name, "datapath_type=netdev",
           f"other-config:datapath-id={dpid:016x}", "protocols=OpenFlow13,OpenFlow15",
           "fail-mode=secure"]
    for p in range(1, nports + 1):
        iface = f"{name}p{p}"
        cmd += ["--", "add-port", name, iface, "--", "set", "interface", iface,
                "type=internal", f"ofport_request={p}"]
    cmd += ["--", "set-controller", name, f"tcp:127.0.0.1:{port}"]
    sh(*cmd)


def del_bridges(created: list[str]) -> None:
    for b in created:
        subprocess.run(["ovs-vsctl", "--timeout=20", "--if-exists", "del-br", b],
                       capture_output=True)


def dump_flows(bridge: str) -> list[str]:
    return [line.strip() for line in
            sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge).splitlines()
            if "priority=" in line]


def tx_packets(bridge: str) -> dict[int, int]:
    out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge)
    return {int(p): int(n) for p, n in
            re.findall(r"port\s+(\d+):.*?tx pkts=(\d+)", out, flags=re.S)}
