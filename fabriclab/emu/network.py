"""The topology model as a Mininet network: hosts, Open vSwitch switches, shaped links.

Naming (see also ``fabriclab/topologies/model.py``): model node ``x`` is Mininet node
``flb<x>`` (``h3`` -> ``flbh3``, ``l0`` -> ``flbl0``); an interface is ``<node>-eth<port>``
with the OpenFlow port number on switches (model port + 1) and ``eth0`` on hosts.  Switch
``i`` has datapath id ``i + 1``, speaks OpenFlow 1.3 and 1.5 (1.5 only so that the
controller can choose the SELECT groups' hash fields; see controllers/ecmp_app.py), and is
fail-mode secure (it keeps forwarding with the installed flows if the controller goes away).

Every link direction is shaped at egress by HTB at the emulated rate, with a drop-tail
``bfifo`` under it whose limit is the switch's queue limit (switch ports) or a large NIC
queue (host ports); the eBPF port program (``bpfport``) sits on ``clsact`` egress of every
switch port.  Checksum offload is off on host interfaces (TCP over the userspace datapath
needs it).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from ..topologies import Topology
from ..wire.roce import DATA_OVERHEAD, GSE_TAG, INT_AREA_LEN
from .state import PREFIX, EmuError, RunState, remove_links_and_bridges

log = logging.getLogger(__name__)

NIC_QUEUE_BYTES = 4_000_000
#: kernel memory per byte of a queued frame (skb truesize / length): 2.17 measured for
#: 1058-byte frames; small control frames cost more, hence the margin
SKB_OVERHEAD = 2.5
IFNAMSIZ = 15


def mn_name(node: str) -> str:
    return f"{PREFIX}{node}"


def intf_name(topo: Topology, node: str, port: int) -> str:
    n = 0 if topo.nodes[node].is_host else Topology.ofport(port)
    return f"{mn_name(node)}-eth{n}"


def gsp_intf_names(leaf: str) -> tuple[str, str]:
    """The GSP port of a leaf (``gse.placement: leaf``): the veth end in the leaf's bridge,
    and the end the GSP daemon (:mod:`fabriclab.emu.gspd`) reads and writes."""
    return f"{mn_name(leaf)}-gsp", f"{mn_name(leaf)}-gspd"


def htb_burst(rate_bps: int) -> int:
    """HTB's burst for a class of ``rate_bps``: 1 ms of traffic, at least two frames."""
    return max(3000, rate_bps // 8 // 1000)


def htb_commands(dev: str, rate_bps: int, limit_bytes: int, delay_us: float = 0.0,
                 frame_bytes: int = 1058) -> list[str]:
    """tc commands (for ``tc -batch``) shaping ``dev`` at ``rate_bps`` over a drop-tail FIFO
    of ``limit_bytes``, or, given a delay, over netem (whose limit counts packets)."""
    burst = htb_burst(rate_bps)
    if delay_us > 0:
        leaf = (f"netem delay {delay_us:.0f}us limit {max(1, limit_bytes // frame_bytes)}")
    else:
        leaf = f"bfifo limit {limit_bytes}"
    return [f"qdisc replace dev {dev} root handle 1: htb default 1",
            f"class add dev {dev} parent 1: classid 1:1 htb rate {rate_bps}bit ceil {rate_bps}bit "
            f"burst {burst} cburst {burst} quantum 1514",
            f"qdisc add dev {dev} parent 1:1 handle 10: {leaf}"]


# PFC mode (switch.pfc.enabled): each switch port has three HTB classes under the link's.
CLASS_CONTROL = 0x10010  # 1:10, ACK/NACK/CNP and GSE's control: served first, never paused
CLASS_DATA = 0x10020     # 1:20, RoCE data: the lossless class PFC pauses (its tbf gate)
CLASS_KICK = 0x10030     # 1:30, drops whatever it gets: pfcd's wake-up call (see pfcd)
#: the smallest guaranteed rate of a class: both classes borrow everything else from the
#: link's class, the control class first (HTB lends to lower prio numbers first), so a
#: degraded link (the link's class changed) limits both
CLASS_MIN_BPS = 8000


def gate_command(dev: str, rate_bps: int, limit_bytes: int, frame_bytes: int,
                 paused: bool) -> str:
    """The ``tc`` command (for ``tc -batch``) that closes or opens the data class's gate.

    The gate is a tbf under the data class: open, it runs at ten times the link rate and
    never holds anything back; closed, at 8 bit/s with a bucket of one frame, so it sends
    nothing more (tbf refills its bucket when changed: at most one frame passes after the
    pause, as a port finishes the frame it has begun)."""
    if paused:
        rate, burst = 8, frame_bytes
    else:
        rate, burst = 10 * rate_bps, max(65536, frame_bytes)
    return (f"qdisc change dev {dev} parent 1:20 handle 20: tbf rate {rate}bit "
            f"burst {burst} limit {limit_bytes}")


def htb_pfc_commands(dev: str, rate_bps: int, limit_bytes: int,
                     frame_bytes: int) -> list[str]:
    """tc commands shaping a switch port for PFC: the link's class at ``rate_bps``, under it
    a control class (priority 0, a FIFO of ``limit_bytes``), the data class (priority 1, the
    tbf gate over a FIFO of ``limit_bytes``) and the kick class (a FIFO of 0 packets).  The
    port program puts each IPv4 frame in its class (skb->priority); what it does not
    classify goes to the control class."""
    burst = htb_burst(rate_bps)
    cls = f"burst {burst} cburst {burst} quantum 1514"
    # the two classes borrow from the link's class with a bucket of one frame: after a
    # pause the data class does not send a burst of saved-up tokens at once (which would
    # refill the next switch's ingress and pause it again at once)
    child = f"burst {frame_bytes} cburst {frame_bytes} quantum 1514"
    m = CLASS_MIN_BPS
    return [f"qdisc replace dev {dev} root handle 1: htb default 10",
            f"class add dev {dev} parent 1: classid 1:1 htb rate {rate_bps}bit "
            f"ceil {rate_bps}bit {cls}",
            f"class add dev {dev} parent 1:1 classid 1:10 htb rate {m}bit ceil {rate_bps}bit "
            f"{child} prio 0",
            f"class add dev {dev} parent 1:1 classid 1:20 htb rate {m}bit ceil {rate_bps}bit "
            f"{child} prio 1",
            f"class add dev {dev} parent 1:1 classid 1:30 htb rate {m}bit ceil {m}bit "
            f"{cls} prio 7",
            f"qdisc add dev {dev} parent 1:10 handle 10: bfifo limit {limit_bytes}",
            "qdisc add dev " + gate_command(dev, rate_bps, limit_bytes, frame_bytes, False)
            .split("qdisc change dev ", 1)[1],
            f"qdisc add dev {dev} parent 1:30 handle 30: pfifo limit 0"]


def _set_rps(dev: str, mask: int) -> None:
    """Steer what ``dev`` receives to the CPUs of ``mask`` (receive packet steering)."""
    path = Path(f"/sys/class/net/{dev}/queues/rx-0/rps_cpus")
    try:
        path.write_text(f"{mask:x}")
    except OSError as e:  # a kernel without RPS: frames may be reordered, rarely
        log.warning("cannot steer %s's receive to one CPU (%s): frames may overtake "
                    "each other under load", dev, e)


class EmuFabric:
    """Builds, configures and tears down the Mininet network for one run."""

    def __init__(self, topo: Topology, spec, controller_port: int, datapath: str,
                 state: RunState, ovs_sndbuf: int, netem: bool = False):
        self.topo = topo
        self.spec = spec
        self.port = controller_port
        self.datapath = datapath
        self.state = state
        self.ovs_sndbuf = ovs_sndbuf
        self.netem = netem  # emulate link delay (dilated like everything else) with netem
        self.scale = spec.emu.link_mbps * 1e6 / (spec.topology.host_link_gbps * 1e9)
        # PFC on real packets (fabriclab.emu.pfcd); not with netem, whose delay line would
        # sit in the data class behind the gate
        self.pfc = spec.switch.pfc.enabled and not netem
        #: the largest frame a port may have to pass (the closed gate's bucket: tbf drops a
        #: frame larger than its bucket): a full data frame with HPCC's INT area and GSE's
        #: container tag, plus slack
        self.frame_cap = spec.emu.mtu_bytes + DATA_OVERHEAD + INT_AREA_LEN + GSE_TAG.size + 64
        self.net = None
        self.ports = []  # (switch, port, ifname, emulated rate, fabric rate)
        for name, node in topo.nodes.items():
            for i in range(len(node.ports)):
                if len(intf_name(topo, name, i)) > IFNAMSIZ:
                    raise EmuError(f"interface name {intf_name(topo, name, i)!r} exceeds Linux's "
                                   f"{IFNAMSIZ} characters: this fabric is too large to emulate")

    def emulated_rate(self, rate_bps: int) -> int:
        return max(1000, round(rate_bps * self.scale))

    def emulated_delay_us(self, delay_ns: int) -> float:
        """Real-time delay of a link of fabric delay ``delay_ns`` (0 without netem)."""
        return delay_ns / self.scale / 1000 if self.netem else 0.0

    def queue_limit(self, switch: str) -> int:
        """The drop-tail limit of each egress port of ``switch``.

        Open vSwitch has no shared buffer, so the switch's buffer is split over its ports
        (or ``switch.queue_limit_bytes`` is used); with PFC, which keeps the switch's total
        within its buffer by pausing, each port may take the whole buffer.  And every frame queued at any port of
        the fabric is charged to Open vSwitch's one packet socket, about SKB_OVERHEAD times
        its length; what does not fit is dropped without a counter.  So the limits are
        capped for the whole fabric's queues to fit: a full port then drops in its own
        FIFO, where the drop is counted."""
        sw = self.spec.switch
        if self.pfc:
            # PFC admits by ingress port against the whole shared buffer (the PFC daemon):
            # any one port may hold up to all of it, as in the simulator
            want = sw.queue_limit_bytes or sw.buffer_bytes
        else:
            want = sw.queue_limit_bytes or sw.buffer_bytes // len(self.topo.nodes[switch].ports)
        n_ports = sum(len(self.topo.nodes[s].ports) for s in self.topo.switches)
        return min(want, int(self.ovs_sndbuf / SKB_OVERHEAD / n_ports))

    def start(self) -> None:
        from mininet.link import Link
        from mininet.net import Mininet
        from mininet.node import OVSSwitch, RemoteController
        topo = self.topo
        net = Mininet(controller=None, switch=OVSSwitch, link=Link, build=False,
                      autoSetMacs=False, autoStaticArp=False, waitConnected=False,
                      ipBase="10.0.0.0/8", cleanup=False)
        self.net = net
        # Record what exists as soon as it exists: a crash in between leaves nothing untracked.
        self.state.bridges = [mn_name(s) for s in topo.switches]
        self.state.interfaces = [intf_name(topo, s, i) for s in topo.switches
                                 for i in range(len(topo.nodes[s].ports))]
        for h in topo.hosts:  # Mininet starts a shell per node when it is added
            node = net.addHost(mn_name(h), ip=f"{topo.nodes[h].ip}/8", mac=topo.host_mac(h))
            self.state.add_process(f"shell:{h}", node.pid, f"mininet:{node.name}")
        dp = "user" if self.datapath == "netdev" else "kernel"
        for s in topo.switches:
            node = net.addSwitch(mn_name(s), dpid=f"{topo.dpid(s):016x}", datapath=dp,
                                 protocols="OpenFlow13,OpenFlow15", failMode="secure")
            self.state.add_process(f"shell:{s}", node.pid, f"mininet:{node.name}")
        for link in topo.links:
            pa = 0 if topo.nodes[link.a].is_host else Topology.ofport(link.a_port)
            pb = 0 if topo.nodes[link.b].is_host else Topology.ofport(link.b_port)
            net.addLink(mn_name(link.a), mn_name(link.b), port1=pa, port2=pb)
        # A Mininet node with a shell of its own, which Mininet's stop() never ends for a
        # RemoteController (its stop() does nothing): stop() below terminates it by PID.
        ctl = net.addController("flbctl", controller=RemoteController, ip="127.0.0.1",
                                port=self.port)
        self.state.add_process("shell:controller-node", ctl.pid, f"mininet:{ctl.name}")
        net.build()
        net.start()
        self._configure()
        if self.gse_leaf:
            self._add_gsp_ports()

    @property
    def gse_leaf(self) -> bool:
        return self.spec.scheme == "gse" and self.spec.gse.placement == "leaf"

    def _add_gsp_ports(self) -> None:
        """GSE in the leaves: one more port per leaf, the GSP port, a veth whose other end
        the GSP daemon holds (OpenFlow port = the leaf's last model port + 2, i.e. one after
        its last; fabriclab.controllers.routing.gsp_ofport).  Not shaped: it is the leaf's
        inside, not a link."""
        topo = self.topo
        for leaf in (s for s in topo.switches if topo.nodes[s].tier == 1):
            br, (ovs_end, own_end) = mn_name(leaf), gsp_intf_names(leaf)
            self.state.interfaces += [ovs_end, own_end]
            self.state.save()
            ofport = len(topo.nodes[leaf].ports) + 1
            for cmd in (["ip", "link", "add", ovs_end, "type", "veth", "peer", "name", own_end],
                        ["ip", "link", "set", ovs_end, "up"], ["ip", "link", "set", own_end, "up"],
                        ["ethtool", "-K", own_end, "tx", "off"],
                        ["ovs-vsctl", "--timeout=10", "add-port", br, ovs_end, "--", "set",
                         "Interface", ovs_end, f"ofport_request={ofport}"]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise EmuError(f"adding the GSP port of leaf {leaf} failed ({' '.join(cmd)}): "
                                   f"{(r.stderr or r.stdout).strip()[:300]}")
            for k, dev in enumerate((ovs_end, own_end)):
                Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")
                _set_rps(dev, 1 << (k % (os.cpu_count() or 1)))

    def _configure(self) -> None:
        topo, net = self.topo, self.net
        root_cmds = []
        for s in topo.switches:
            limit = self.queue_limit(s)
            for i, link in enumerate(topo.nodes[s].ports):
                dev = intf_name(topo, s, i)
                rate = self.emulated_rate(link.rate_bps)
                if self.pfc:
                    root_cmds += htb_pfc_commands(dev, rate, limit, self.frame_cap)
                else:
                    root_cmds += htb_commands(dev, rate, limit,
                                              self.emulated_delay_us(link.delay_ns),
                                              self.spec.emu.mtu_bytes + DATA_OVERHEAD)
                self.ports.append((s, i, dev, rate, link.rate_bps))
        ncpu = os.cpu_count() or 1
        for k, (_, _, dev, _, _) in enumerate(self.ports):
            # The root namespace would send IPv6 neighbour discovery out of the switch-side
            # interfaces, into the fabric, where nothing routes it.
            Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")
            # A veth hands what it receives to the backlog of the CPU that sent it; when
            # the sender's qdisc runs on one CPU and then the other and a CPU's softirq is
            # late, frames of one flow overtake each other (seen in CI: two frames of each
            # of two flows, 4 frame times late, 172 NACKs with nothing lost).  Steering
            # each interface to one CPU (RPS) keeps its frames in order.
            _set_rps(dev, 1 << (k % ncpu))
        # Frames into a host: the host's end takes them through its NAPI ring (gro on,
        # below), in order, but only if the sending end offers no TSO (veth's rule for
        # "eligible for GRO"); with TSO on, they went through the per-CPU backlogs and
        # could overtake each other (seen in CI: one go-back-N per GSE sender).
        for s, i, dev, _, _ in self.ports:
            if topo.nodes[topo.peer(s, i).node].is_host:
                r = subprocess.run(["ethtool", "-K", dev, "tx", "off"], capture_output=True,
                                   text=True)
                if r.returncode != 0:
                    raise EmuError(f"turning off transmit offloads on {dev} failed: "
                                   f"{(r.stderr or r.stdout).strip()[:300]}")
        r = subprocess.run(["tc", "-force", "-batch", "-"], input="\n".join(root_cmds) + "\n",
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise EmuError(f"shaping switch ports with tc failed: {r.stderr.strip()[:500]}")
        arp = {h: (topo.nodes[h].ip, topo.host_mac(h)) for h in topo.hosts}
        for h in topo.hosts:
            node = net.get(mn_name(h))
            dev = intf_name(topo, h, 0)
            link = topo.nodes[h].ports[0]
            tc = "\n".join(htb_commands(dev, self.emulated_rate(link.rate_bps), NIC_QUEUE_BYTES,
                                         self.emulated_delay_us(link.delay_ns),
                                         self.spec.emu.mtu_bytes + DATA_OVERHEAD))
            neigh = "\n".join(f"neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
                              for other, (ip, mac) in arp.items() if other != h)
            # No IPv6: its neighbour discovery would only add frames the fabric drops.
            out = node.cmd(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                "net.ipv6.conf.default.disable_ipv6=1; "
                # gro on: the veth takes what it receives through one NAPI ring, in order
                # (the host's end lives in its namespace, where RPS's sysfs is not reachable)
                f"ethtool -K {dev} tx off rx off gro on >/dev/null 2>&1; "
                f"printf '%s\\n' '{tc}' | tc -force -batch - && "
                f"printf '%s\\n' '{neigh}' | ip -batch - && echo FLB_OK")
            if "FLB_OK" not in out:
                raise EmuError(f"configuring host {h} failed: {out.strip()[:500]}")

    def host(self, h: str):
        return self.net.get(mn_name(h))

    def stop(self) -> None:
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as e:  # noqa: BLE001  (teardown must go on; leftovers are reported)
                log.warning("Mininet stop failed: %s", e)
            for c in self.net.controllers:
                c.terminate()
            self.net = None
        # the GSP ports are this class's own, not Mininet's (deleting one end of a veth
        # deletes the other)
        for dev in self.state.interfaces:
            if dev.endswith("-gsp"):
                subprocess.run(["ip", "link", "del", dev], capture_output=True)
        # Mininet deletes each link from its node's shell and says nothing when that fails
        # (seen once in CI: the leaf-spine veths outlived the run); make sure here.
        left = remove_links_and_bridges()
        if left:
            log.warning("Mininet's stop left %s; removed", ", ".join(left))
        for label in [k for k in self.state.processes if k.startswith("shell:")]:
            self.state.processes.pop(label)
        self.state.bridges = []
        self.state.interfaces = []
        self.state.save()
