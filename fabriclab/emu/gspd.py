"""The GSP daemon: GSE's GSP in the leaves (``gse.placement: leaf``) on real packets.

Run by the orchestrator in the root namespace as ``python -m fabriclab.emu.gspd PLAN.json``;
one process serves every leaf.  The hosts run plain RoCE agents (no GSE code); each leaf's
GSP is a :class:`fabriclab.nic.leaf.LeafGsp`, the same object the simulator's leaves drive.
This module gives it a clock and sockets:

* **Where it sits.**  Each leaf's Open vSwitch bridge has one more port, the GSP port (a
  veth whose other end this daemon reads and writes with an ``AF_PACKET`` socket).  The
  controller's GSP flows (:mod:`fabriclab.controllers.routing`, ``GSP_PRIORITY``) send it
  the RoCE data its hosts send (ECT(0): their ACKs, NACKs and CNPs are not ECN-capable and
  keep to the ordinary routes) and the containers coming down to its hosts (DSCP 1..n).
* **Up.**  A host's data frame waits in the VOQ of its destination port until GSOS's credit
  lets it go; it then leaves as part of a container: the DSCP carries the container's path
  (path + 1, which the leaves' path flows follow) and the GSE tag goes after the BTH
  (:func:`fabriclab.wire.ipv4.insert_tag`).  REQUESTs go to GSOS as the agents' do (UDP
  4792 from the GSP port, punted to the controller); GSOS's receipts and GRANTs come back
  out of the GSP port, and are held for the control network's round trip
  (``2 x gse.control_latency_us``) before they count, as in the agents.
* **Down.**  A container frame goes through the reorder buffer of its (source GSP,
  destination port); what that releases goes back into the bridge without its tag, with
  DSCP 0 (its ECN bits kept), and the bridge's route delivers it to the host.
* **PFC.**  The VOQs are in the leaf's buffer: each host port's bytes in them are its
  ingress bytes, judged by :class:`fabriclab.pfc.IngressPfc` (the switches' dynamic
  threshold).  Over it, the daemon sends the host a real 802.1Qbb PAUSE out of the leaf's
  port facing it (bypassing the port's qdisc, as the PFC daemon does), again at half the
  pause's life while it stays over, and RESUME once below; the host's agent obeys them.
  Without ``switch.pfc`` the VOQs drop what does not fit in the buffer.

Time: fabric time, real time / ``tdf`` from the common start (``GO <t0>``), as the agents.
The daemon's reaction time is reported in fabric ns: its longest turn of the loop
(``max_lag_ns``) and its latest wake-up (``late_max_ns``).

Protocol with the orchestrator (stdin/stdout lines, as the agents): ``READY`` once its
sockets are open, ``GO <t0 ns>``, ``STOP`` (or stdin closing) ends the run: the results
are written to ``plan['out']`` (atomically).
"""

from __future__ import annotations

from array import array
import heapq
import itertools
import json
import os
import selectors
import socket
import struct
import sys
import time
from collections import deque

from ..atomic import write_json_atomic
from ..cc_algorithms.gse import GseParams
from ..nic import ManualTimers
from ..nic.leaf import LeafGsp
from ..pfc import IngressPfc
from ..spec import load as load_spec
from ..wire import frames as W
from ..wire import pfc as wire_pfc
from ..wire import roce as P
from ..wire.frames import new_tag
from ..wire.ipv4 import BTH_OFF, IP_OFF, UDP_OFF, insert_tag, strip_tag, udp_frame
from .control import ControlInput

# FABRICLAB_GSPD_DEBUG=FILE: every grant applied and every frame sent up, as it happens
DEBUG = open(os.environ["FABRICLAB_GSPD_DEBUG"], "w") if os.environ.get("FABRICLAB_GSPD_DEBUG") \
    else None

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
PACKET_OUTGOING = 4
PACKET_STATISTICS = 6  # linux/if_packet.h: struct tpacket_stats {u32 packets, drops}
RX_BUF = 8 << 20
MIN_WAIT_NS = 50_000
PRE_GO_WAIT_NS = 50_000_000
TAG_OFF = BTH_OFF + P.BTH_LEN
#: bytes of a data frame on the wire that are not payload: UDP header, BTH, ICRC
_NOT_PAYLOAD = 8 + P.BTH_LEN + P.ICRC_LEN
_TAG = P.GSE_TAG


class _Container:
    """What a reorder buffer needs of an arriving container frame."""

    __slots__ = ("tag", "size")

    def __init__(self, tag, size: int):
        self.tag, self.size = tag, size


class EmuLeafGsp(LeafGsp):
    """A leaf's GSP on real frames: a reorder buffer that gives up on a lost container
    sends what it held on down (the simulator's lossless leaves never need that)."""

    def __init__(self, leaf: "Leaf", **kw):
        super().__init__(**kw)
        self.leaf = leaf

    def _released(self, now: int, frames: list) -> None:
        for buf in frames:
            self.leaf.down(buf)

    def emit(self, frame, now: int) -> None:  # egress mode is refused by the spec check
        raise AssertionError("the GSP daemon runs with gse.scheduler central only")


class Leaf:
    """One leaf: its GSP port's socket, its GSP, its hosts' ports (for PFC)."""

    def __init__(self, d: dict, daemon: "Daemon"):
        self.d = daemon
        self.name = d["name"]
        self.gsp_id = d["gsp_id"]
        self.ifname = d["ifname"]
        self.mac = d["mac"]
        self.ip = d["ip"]
        self.hosts = d["hosts"]  # [{host, index, ip, ifname, mac, rate_bps}] in port order
        self.local = {h["index"]: k for k, h in enumerate(self.hosts)}  # dst index -> k
        self.by_ip = {socket.inet_aton(h["ip"]): k for k, h in enumerate(self.hosts)}
        n_paths = {int(k): v for k, v in d["n_paths"].items()}
        self.delay = {int(k): v for k, v in d.get("delay_ns", {}).items()}
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RX_BUF)
        self.sock.bind((self.ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.unsent: deque = deque()
        self.gsp = EmuLeafGsp(
            self, forward=self.forward, gsp_id=self.gsp_id, params=daemon.params, frames=W,
            timers=daemon.timers, paths=lambda dst: [None] * n_paths.get(dst, 1),
            port_rate_of=lambda dst: daemon.line, mtu=daemon.mtu, header=daemon.header,
            control_bytes=P.L2_L4_BYTES + P.GSE_CONTROL_HEADER.size, ctrl_prio=0,
            to_gsos=self.to_gsos, fallback=False)
        # PFC towards the hosts
        pfc = daemon.plan["pfc"]
        self.pfc = None
        if pfc is not None:
            self.pfc = IngressPfc(pfc["buffer_bytes"], d["headroom_bytes"], pfc["reserve_bytes"],
                                  pfc["alpha"], pfc["resume_offset_bytes"])
        self.n_ports = len(d["headroom_bytes"])
        self.buffer = daemon.plan["buffer_bytes"]
        self.pfc_socks = []
        for h in self.hosts:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                              socket.htons(wire_pfc.ETHERTYPE))
            s.bind((h["ifname"], wire_pfc.ETHERTYPE))
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            s.setblocking(False)
            self.pfc_socks.append(s)
        self.pause_sent = [False] * len(self.hosts)
        self.pause_tx = [0] * len(self.hosts)
        self.resume_tx = [0] * len(self.hosts)
        self.refresh_at = [0] * len(self.hosts)
        self.c = dict(frames_up=0, frames_down=0, containers_out=0, grants_rx=0, other_rx=0,
                      voq_drops=0, socket_drops=0, pfc_pause_tx=0, pfc_resume_tx=0, send_blocked=0)
        self.events: list = []

    # -- up: into the VOQs, out as containers ----------------------------------------------
    def on_data(self, buf: bytes, now: int) -> None:
        k = self.by_ip.get(buf[IP_OFF + 12:IP_OFF + 16])  # the ingress host, by source IP
        dst = self.d.index_of.get(buf[IP_OFF + 16:IP_OFF + 20])
        if dst is None:
            self.c["other_rx"] += 1
            return
        udp_len = struct.unpack_from("!H", buf, UDP_OFF + 4)[0]
        payload = udp_len - _NOT_PAYLOAD
        size = len(buf)
        if self.pfc is None and self.gsp._held + size > self.buffer:
            self.c["voq_drops"] += 1
            return
        self.c["frames_up"] += 1
        self.gsp.enqueue(now, dst, buf, payload, k, size)
        self.check_pfc(now)

    def forward(self, buf, dst: int, tag: tuple, now: int) -> None:
        src, seq, index, last, path = tag
        self.c["containers_out"] += last
        if dst in self.local:  # to a host of this leaf: one path, straight down
            c = _Container(new_tag(tag), len(buf))
            for b in self.gsp.reorder_accept(now, c, buf, dst):
                self.send_later(b, dst, now)
            return
        self.send_later(insert_tag(buf, P.gse_tag(src, dst, seq, index, last, path),
                                   P.GSE_FLAG, path + 1), dst, now)

    def send_later(self, buf, dst: int, now: int) -> None:
        """Send a frame leaving the VOQ after its path's propagation delay from this leaf
        (the links have none: it is lumped here, as the agents lump their own link's)."""
        d = self.delay.get(dst, 0)
        if DEBUG:
            print(now, self.name, "out", dst, d, file=DEBUG)
        if d <= 0:
            return self.send(buf)
        heapq.heappush(self.d.delayed, (now + d, next(self.d.held_seq), self, buf))

    def to_gsos(self, now: int, dst: int, sizes: list[int]) -> None:
        """A REQUEST for GSOS: UDP 4792 to the destination's IP, from the GSP port (the
        leaf punts it to the controller)."""
        self.send(udp_frame(self.mac, self.mac, self.ip, self.d.ip_of[dst], P.GSE_PORT,
                            P.GSE_PORT, P.gse_request(self.gsp_id, dst, sizes)))

    # -- down: reorder, untag ----------------------------------------------------------------
    def on_container(self, buf: bytes, now: int) -> None:
        src, dst, seq, index, last, path = _TAG.unpack_from(buf, TAG_OFF)
        self.c["frames_down"] += 1
        c = _Container(new_tag((src, seq, index, bool(last & P.GSE_LAST), path)), len(buf))
        for b in self.gsp.reorder_accept(now, c, buf, dst):
            self.down(b)

    def down(self, buf) -> None:
        self.send(strip_tag(buf, _TAG.size, P.GSE_FLAG))

    # -- GSOS's answers ----------------------------------------------------------------------
    def on_gse(self, buf: bytes, now: int) -> None:
        msg = P.parse_gse_control(bytes(buf[UDP_OFF + 8:]))
        if msg is None or msg[0] != "grant":
            self.c["other_rx"] += 1
            return
        self.c["grants_rx"] += 1
        d = self.d
        heapq.heappush(d.held, (now + 2 * d.params.control_latency_ns, next(d.held_seq),
                                self, msg))

    # -- PFC towards the hosts --------------------------------------------------------------
    def check_pfc(self, now: int) -> None:
        if self.pfc is None:
            return
        ing = self.gsp.ingress_bytes
        occ = [ing[k] for k in range(len(self.hosts))]
        occ += [0] * (self.n_ports - len(occ))
        for k, pause in self.pfc.update(occ):
            if k < len(self.hosts):
                self.send_pfc(k, pause, now)

    def send_pfc(self, k: int, pause: bool, now: int) -> None:
        h = self.hosts[k]
        quanta = wire_pfc.MAX_QUANTA if pause else 0
        try:
            self.pfc_socks[k].send(wire_pfc.encode(bytes.fromhex(h["mac"].replace(":", "")),
                                                   {self.d.prio: quanta}))
        except OSError as e:
            print(f"gspd: {h['ifname']}: PFC frame not sent: {e}", file=sys.stderr)
        self.pause_sent[k] = pause
        if pause:
            self.c["pfc_pause_tx"] += 1
            self.pause_tx[k] += 1
            self.refresh_at[k] = now + wire_pfc.quanta_ns(quanta, h["rate_bps"]) // 2
        else:
            self.c["pfc_resume_tx"] += 1
            self.resume_tx[k] += 1
        if len(self.events) < 10_000:
            self.events.append((now, h["host"], "pause" if pause else "resume"))

    def refresh_pfc(self, now: int) -> None:
        for k, on in enumerate(self.pause_sent):
            if on and now >= self.refresh_at[k]:
                self.send_pfc(k, True, now)

    # -- the socket --------------------------------------------------------------------------
    def send(self, buf) -> None:
        if self.unsent or not self._send(buf):
            self.unsent.append(buf)

    def _send(self, buf) -> bool:
        try:
            self.sock.send(buf)
            return True
        except BlockingIOError:
            self.c["send_blocked"] += 1
            return False

    def flush(self) -> None:
        while self.unsent and self._send(self.unsent[0]):
            self.unsent.popleft()

    def receive(self, now: int) -> None:
        sock = self.sock
        while True:
            try:
                buf, addr = sock.recvfrom(4096)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING or len(buf) < BTH_OFF + P.BTH_LEN \
                    or buf[12:14] != b"\x08\x00" or buf[IP_OFF + 9] != 17:
                continue
            dport = struct.unpack_from("!H", buf, UDP_OFF + 2)[0]
            if dport == P.ROCE_PORT:
                if buf[IP_OFF + 1] >> 2 and buf[BTH_OFF + 8] & P.GSE_FLAG:
                    self.on_container(buf, now)
                else:
                    self.on_data(buf, now)
            elif dport == P.GSE_PORT:
                self.on_gse(buf, now)
            else:
                self.c["other_rx"] += 1

    def socket_drops(self) -> int:
        """Frames the kernel dropped for want of room in this daemon's receive buffer (read
        clears the kernel's count)."""
        _, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.c["socket_drops"] += drops
        return self.c["socket_drops"]

    def results(self) -> dict:
        self.socket_drops()
        s = self.gsp.summary()
        return {"gsp_id": self.gsp_id, "counters": self.c,
                "gse": {k: v.tolist() if isinstance(v, array) else v for k, v in s.items()},
                "max_ingress_bytes": self.pfc.max_bytes[:len(self.hosts)] if self.pfc else None,
                "pfc_events": self.events,
                # per leaf port (model numbering) facing a host: the PFC frames sent to it
                "ports": {f"{self.name}:{h['port']}": {"pfc_pause_tx": self.pause_tx[k],
                                                       "pfc_resume_tx": self.resume_tx[k]}
                          for k, h in enumerate(self.hosts)}}


class Daemon:
    def __init__(self, plan: dict):
        self.plan = plan
        self.tdf = plan["tdf"]
        spec = load_spec(plan["spec_path"])
        self.params = GseParams.from_spec(spec.gse)
        self.prio = spec.nic.data_priority
        self.mtu = plan["mtu"]
        self.header = plan["frame_overhead"]
        self.line = plan["line_rate_bps"]
        self.ip_of = {int(k): v for k, v in plan["ip_of"].items()}
        self.index_of = {socket.inet_aton(v): k for k, v in self.ip_of.items()}
        self.timers = ManualTimers()
        self.held: list = []  # heap of (due fabric ns, seq, leaf, GSOS message)
        self.delayed: list = []  # heap of (due fabric ns, seq, leaf, frame): path delays
        self.held_seq = itertools.count()
        self.t0: int | None = None
        self.stop = False
        self.control = ControlInput()
        self.leaves = [Leaf(d, self) for d in plan["leaves"]]
        self.max_lag_ns = 0
        self.late_max_ns = 0

    def now(self) -> int:
        return 0 if self.t0 is None else int((time.monotonic_ns() - self.t0) // self.tdf)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for leaf in self.leaves:
            sel.register(leaf.sock, selectors.EVENT_READ, leaf)
        sel.register(0, selectors.EVENT_READ, None)
        print("READY", flush=True)
        while not self.stop:
            now = max(0, self.now())
            for leaf in self.leaves:
                leaf.receive(now)
            held = self.held
            while held and held[0][0] <= now:
                _, _, leaf, msg = heapq.heappop(held)
                _, _, dst, nbytes, path, idle = msg
                if DEBUG:
                    print(now, leaf.name, "grant", dst, nbytes, path, idle, file=DEBUG)
                leaf.gsp.on_grant(now, dst, nbytes, path, idle)
                leaf.check_pfc(now)
            delayed = self.delayed
            while delayed and delayed[0][0] <= now:
                _, _, leaf, buf = heapq.heappop(delayed)
                leaf.send(buf)
            self.timers.run_due(now)
            for leaf in self.leaves:
                leaf.refresh_pfc(now)
                leaf.flush()
            if self.t0 is not None:
                lag = self.now() - now
                if lag > self.max_lag_ns:
                    self.max_lag_ns = lag
            due = now + 50_000_000 // max(1, int(self.tdf))  # at most 50 ms real apart
            for t in (self.timers.next_wakeup_ns(), held[0][0] if held else None,
                      delayed[0][0] if delayed else None,
                      *(min((r for r, on in zip(lf.refresh_at, lf.pause_sent) if on),
                            default=None) for lf in self.leaves)):
                if t is not None and t < due:
                    due = t
            if any(lf.unsent for lf in self.leaves):
                due = now
            # before GO nothing flows: wait for it on stdin (a real-time process that
            # polled meanwhile would take CPU from the agents starting up)
            wait = PRE_GO_WAIT_NS if self.t0 is None else \
                max(MIN_WAIT_NS, self.t0 + int(due * self.tdf) - time.monotonic_ns())
            planned = time.monotonic_ns() + wait
            events = sel.select(wait / 1e9)
            for key, _ in events:
                if key.data is None:
                    self._control_input()
            if not events and self.t0 is not None:
                late = (time.monotonic_ns() - planned) / self.tdf
                if late > self.late_max_ns:
                    self.late_max_ns = int(late)

    def _control_input(self) -> None:
        lines = self.control.read()
        if lines is None:
            self.stop = True
            return
        for word in lines:
            if word[0] == "GO":
                self.t0 = int(word[1])
            elif word[0] == "STOP":
                self.stop = True

    def results(self) -> dict:
        return {"leaves": {lf.name: lf.results() for lf in self.leaves},
                "max_lag_ns": self.max_lag_ns, "late_max_ns": self.late_max_ns,
                "scheduling": getattr(self, "policy", "normal")}

    def close(self) -> None:
        for lf in self.leaves:
            lf.sock.close()
            for s in lf.pfc_socks:
                s.close()


def realtime() -> str:
    """Run at the lowest real-time priority (SCHED_FIFO 1): the daemon stands for the
    leaves' hardware, and on a machine whose cores the agents and Open vSwitch share, a
    daemon waiting its turn behind them would hand out grants late and in bunches (measured:
    turns of 140 ms of real time, three grants released at once).  It never spins: every
    turn ends in a wait of at least MIN_WAIT_NS.  The kernel's real-time throttling keeps 5 %
    of each core for everything else.  Returns the policy it runs under."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "SCHED_FIFO 1"
    except (OSError, AttributeError) as e:
        print(f"gspd: running at normal priority ({e})", file=sys.stderr)
        return "normal"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = json.loads(open(argv[0]).read())
    policy = realtime()
    d = Daemon(plan)
    d.policy = policy
    try:
        d.run()
    finally:
        write_json_atomic(plan["out"], d.results())
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
