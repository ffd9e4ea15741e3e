"""Checks before an emulation touches the machine: each failure is one EmuError naming the
missing piece and the fix.  What degrades instead of failing (no netem: no link delay) is
returned as a note and written into the results."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .state import EmuError

log = logging.getLogger(__name__)

SETUP = "scripts/setup.sh installs and starts everything the Mininet engine needs"
OVS_START = "/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-monitor"


@dataclass
class Preflight:
    datapath: str  # "kernel" or "netdev"
    netem: bool
    ovs_sndbuf: int  # bytes of skb memory all switch queues together may hold
    notes: list[str] = field(default_factory=list)


def _ok(cmd: list[str], timeout: float = 10) -> subprocess.CompletedProcess | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r


def check(spec, need_iperf3: bool, need_tcpdump: bool = False) -> Preflight:
    if os.geteuid() != 0:
        raise EmuError("the Mininet engine needs root (network namespaces, Open vSwitch, tc); "
                       "run it as root, or use --engine sim")
    try:
        import mininet.net  # noqa: F401  (Debian's python3 module, seen by the venv)
    except ImportError:
        raise EmuError("Mininet's Python module is missing: apt-get install mininet, and run "
                       "fabriclab from the virtual environment made with --system-site-packages "
                       f"({SETUP})") from None
    for tool, pkg in (("ovs-vsctl", "openvswitch-switch"), ("tc", "iproute2"),
                      ("ethtool", "ethtool")):
        if shutil.which(tool) is None:
            raise EmuError(f"{tool} is missing: apt-get install {pkg} ({SETUP})")
    r = _ok(["ovs-vsctl", "--timeout=5", "show"])
    if r is None or r.returncode != 0:
        raise EmuError(f"Open vSwitch is not running (ovs-vsctl show failed): start it with "
                       f"{OVS_START} ({SETUP})")
    if need_iperf3 and shutil.which("iperf3") is None:
        raise EmuError(f"iperf3 is missing (the spec has tcp_iperf3 traffic): apt-get install "
                       f"iperf3 ({SETUP})")
    if need_tcpdump and shutil.which("tcpdump") is None:
        raise EmuError(f"tcpdump is missing (the spec captures emu.pcap_hosts): apt-get install "
                       f"tcpdump ({SETUP})")
    if shutil.which("clang") is None:
        raise EmuError("clang is missing (it compiles the eBPF switch-port program): "
                       f"apt-get install clang llvm libbpf-dev ({SETUP})")
    ovs_sndbuf = _check_ovs_send_buffer()
    if spec.scheme == "gse" and spec.gse.placement == "leaf":
        _check_receive_buffer()
    want = spec.emu.datapath
    kernel_ovs = Path("/sys/module/openvswitch").exists()
    if want == "kernel" and not kernel_ovs:
        raise EmuError("emu.datapath = kernel but this kernel has no openvswitch module; set "
                       "emu.datapath to auto or netdev (Open vSwitch's userspace datapath)")
    datapath = "kernel" if (want == "kernel" or (want == "auto" and kernel_ovs)) else "netdev"
    netem = _probe_kernel()
    notes = []
    if datapath == "netdev":
        notes.append("Open vSwitch userspace (netdev) datapath: this kernel has no "
                     "openvswitch module")
    if not netem:
        notes.append("no netem qdisc in this kernel: each path's propagation delay "
                     "(the spec's link_delay_ns per hop) is applied in the sending host's "
                     "agent instead of on the links")
    notes.append("PFC (switch.pfc.enabled) runs in fabriclab.emu.pfcd: ingress accounting "
                 "from eBPF counters, real 802.1Qbb frames, a gate on each port's data "
                 "class; ECN marking is an eBPF phantom queue on every switch egress port")
    return Preflight(datapath, netem, ovs_sndbuf, notes)


#: Open vSwitch's userspace datapath sends all switch ports' packets through one AF_PACKET
#: socket; queued packets count against its send buffer, and what does not fit is dropped
#: without any counter.  Below this, emulated switch queues would be silently truncated.
MIN_OVS_SNDBUF = 32 << 20


def ovs_packet_socket_sndbuf() -> int | None:
    """The send buffer (bytes) of ovs-vswitchd's packet socket, None if it has none yet."""
    r = _ok(["ss", "-0", "-m", "-p"])
    if r is None:
        return None
    for line in r.stdout.splitlines():
        if "ovs-vswitchd" in line and "tb" in line:
            for part in line.replace(",", " ").replace("(", " ").split():
                if part.startswith("tb") and part[2:].isdigit():
                    return int(part[2:])
    return None


def _check_ovs_send_buffer() -> int:
    """The send buffer Open vSwitch's packet socket has (or will get); EmuError if small."""
    tb = ovs_packet_socket_sndbuf()
    fix = ("sysctl -w net.core.wmem_default=67108864, then restart Open vSwitch: "
           "/usr/share/openvswitch/scripts/ovs-ctl restart --system-id=random --no-monitor "
           f"({SETUP})")
    if tb is not None and tb < MIN_OVS_SNDBUF:
        raise EmuError(f"Open vSwitch's packet socket has a {tb}-byte send buffer: emulated "
                       f"switch queues beyond it would be dropped silently; {fix}")
    if tb is None:
        tb = int(Path("/proc/sys/net/core/wmem_default").read_text())
        if tb < MIN_OVS_SNDBUF:
            raise EmuError(f"net.core.wmem_default = {tb} would give Open vSwitch's packet "
                           f"socket a send buffer too small for emulated switch queues "
                           f"(silent drops); {fix}")
    return tb


#: GSE in the leaves: Open vSwitch reads each port, the GSP port too, through an AF_PACKET
#: socket made with the default receive buffer (net.core.rmem_default, 208 KB on Debian);
#: the GSP daemon hands the bridge what a grant releases at once (containers of several
#: destinations: hundreds of frames), and what does not fit is dropped without a counter.
MIN_RCVBUF = 4 << 20


def _check_receive_buffer() -> None:
    rb = int(Path("/proc/sys/net/core/rmem_default").read_text())
    if rb < MIN_RCVBUF:
        raise EmuError(f"net.core.rmem_default = {rb}: Open vSwitch would read the GSP "
                       f"daemon's ports (gse.placement leaf) through a receive buffer too "
                       f"small for a container's burst (silent drops); sysctl -w "
                       f"net.core.rmem_default=8388608 ({SETUP})")


def _probe_kernel() -> bool:
    """Probe namespaces, veth, HTB and clsact on a throw-away veth pair; returns whether
    netem exists.  Raises EmuError naming a missing feature."""
    a, b = "flbpre0", "flbpre1"
    subprocess.run(["ip", "link", "del", a], capture_output=True)
    r = _ok(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    if r is None or r.returncode != 0:
        raise EmuError(f"cannot create veth interfaces ({(r.stderr if r else '').strip()}): the "
                       "kernel needs CONFIG_VETH")
    try:
        for what, cmd in (
                ("HTB (CONFIG_NET_SCH_HTB)", ["tc", "qdisc", "add", "dev", a, "root", "handle",
                                              "1:", "htb", "default", "1"]),
                ("clsact (CONFIG_NET_SCH_INGRESS)", ["tc", "qdisc", "add", "dev", a, "clsact"]),
                ("bfifo", ["tc", "qdisc", "add", "dev", b, "root", "bfifo", "limit", "10000"])):
            r = _ok(cmd)
            if r is None or r.returncode != 0:
                raise EmuError(f"the kernel lacks the {what} qdisc that the Mininet engine "
                               f"needs ({(r.stderr if r else '').strip()})")
        r = _ok(["tc", "qdisc", "replace", "dev", b, "root", "netem", "delay", "1ms"])
        netem = r is not None and r.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
    r = _ok(["ip", "netns", "add", "flbpre"])
    if r is None or r.returncode != 0:
        raise EmuError("cannot create network namespaces (ip netns add failed): the kernel "
                       "needs CONFIG_NET_NS")
    subprocess.run(["ip", "netns", "del", "flbpre"], capture_output=True)
    return netem
