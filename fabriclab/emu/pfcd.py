"""The PFC daemon: IEEE 802.1Qbb priority flow control for the emulated switches.

Run by the orchestrator in the root namespace (where every switch port lives) as
``python -m fabriclab.emu.pfcd PLAN.json``; one process serves every switch of the fabric.
Open vSwitch has no PFC, so this process is the switches' PFC logic, on real frames:

* **Ingress accounting.**  The eBPF port program (``bpf/port.c``, PFC mode) counts, for
  each egress FIFO, the data bytes that entered it, per ingress port (told apart by the
  source MAC: every port writes its own MAC as the source of what it sends, as a routed
  switch does) and its backlog.  Every ``poll`` the daemon reads all ports (one locked map
  lookup each) and rebuilds each ingress port's bytes in the switch's buffer
  (:class:`fabriclab.pfc.FifoAttribution`), then applies the dynamic threshold
  (:class:`fabriclab.pfc.IngressPfc`, the simulator's switch-mmu rule).
* **PAUSE and RESUME** are real PFC frames (``fabriclab.wire.pfc``: EtherType 0x8808,
  opcode 0x0101, class-enable vector, eight quanta), sent out of the ingress port towards
  the upstream neighbour with ``PACKET_QDISC_BYPASS``: they jump the port's queue, as in
  hardware.  A PAUSE carries the largest quanta and is sent again at half its life while
  the port stays over the threshold; RESUME carries zero quanta.
* **Reacting to PFC.**  A switch port that receives a PAUSE closes its data class's gate
  (a tbf under the HTB data class, :func:`fabriclab.emu.network.gate_command`, through one
  long-lived ``tc -batch`` process) and freezes its port program's queue clock (the
  "active clock": a paused queue does not drain); RESUME, or the quanta running out,
  opens it and wakes the qdisc up with a frame sent into the kick class (which drops it:
  enqueueing is what makes the kernel run the qdisc).  The control class (ACK, NACK,
  CNP) is never paused.  Hosts react to PAUSE in their agents (``fabriclab.emu.agent``).

Reaction time: a crossing is seen at the next poll (``poll_ns`` of fabric time, at most),
then the frame crosses the veth at once and the upstream port's gate closes when ``tc``
has run; the daemon measures that last part and reports it (``gate_ns``) with ``poll_ns``.

Protocol with the orchestrator (stdin/stdout lines, as the agents): ``READY`` once its
sockets are open, ``GO <t0 ns>`` gives the fabric clock's origin, ``STOP`` (or stdin
closing) ends the run: the results are written to ``plan['out']`` (atomically).
"""

from __future__ import annotations

import heapq
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections import deque

from ..atomic import write_json_atomic
from ..pfc import FifoAttribution, IngressPfc
from ..wire import pfc as wire_pfc
from .bpfport import PAUSED_BIT, PfcPort, PortProgram
from .control import ControlInput
from .network import CLASS_KICK, gate_command

ETH_P_ALL = 0x0003
SOL_PACKET = 263  # linux/socket.h
PACKET_QDISC_BYPASS = 20  # linux/if_packet.h
KICK_ETHERTYPE = 0x88B5  # IEEE local experimental; ETH_P_KICK in port.c
MAX_EVENTS = 200_000
# FABRICLAB_PFCD_DEBUG=FILE: every pause and resume, as it happens, appended to FILE
DEBUG = os.environ.get("FABRICLAB_PFCD_DEBUG")  # pause/resume events kept for the results (the counters are exact)


class Port:
    """One switch port, as PFC sees it: the ingress side (its buffer share, the PAUSE it
    sends upstream) and the egress side (the PAUSE it obeys)."""

    def __init__(self, d: dict, switch: str, frame_cap: int, limit: int, tdf: float):
        self.switch = switch
        self.index = d["index"]
        self.name = f"{switch}:{d['index']}"
        self.ifname = d["ifname"]
        self.mac = bytes.fromhex(d["mac"].replace(":", ""))
        self.rate = d["rate_bps"]  # emulated
        self.fabric_rate = d["fabric_rate_bps"]
        # the link's round trip (fabric: 2 x its delay), in real ns: what the emulator's
        # delay-less links leave out of a PFC frame's effect (see Daemon._receive)
        self.flight = int(2 * d["delay_ns"] * tdf)
        self.prog = PortProgram.open(self.ifname, d["prog_id"], self.rate, PfcPort(
            0, 0, self.mac, tuple(bytes.fromhex(m.replace(":", "")) for m in d["ing_macs"])))
        self.att = FifoAttribution(len(d["ing_macs"]))
        self.close_cmd = gate_command(self.ifname, self.rate, limit, frame_cap, True)
        self.open_cmd = gate_command(self.ifname, self.rate, limit, frame_cap, False)
        # one socket per port: PFC frames in (bound to 0x8808) and out (bypassing the qdisc)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                  socket.htons(wire_pfc.ETHERTYPE))
        self.sock.bind((self.ifname, wire_pfc.ETHERTYPE))
        self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        self.sock.setblocking(False)
        self.kick = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.kick.bind((self.ifname, 0))
        self.kick.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, CLASS_KICK)
        self.kick_frame = b"\xff" * 6 + self.mac + KICK_ETHERTYPE.to_bytes(2, "big") + bytes(46)
        # ingress side
        self.pause_sent = False
        self.pause_tx = 0
        self.resume_tx = 0
        self.refresh_at = 0  # real ns: send the PAUSE again
        # egress side
        self.paused = False
        self.paused_since = 0  # real ns
        self.paused_real = 0  # real ns paused, finished pauses
        self.until = 0  # real ns: the PAUSE's quanta run out
        self.pause_rx = 0
        self.resume_rx = 0

    def close(self) -> None:
        self.sock.close()
        self.kick.close()
        self.prog.detach()


class Daemon:
    def __init__(self, plan: dict):
        self.plan = plan
        self.tdf = plan["tdf"]
        self.prio = plan["data_priority"]
        self.poll_real = max(plan["poll_min_real_ns"], round(plan["poll_ns"] * self.tdf))
        self.t0: int | None = None
        self.stop = False
        # One tc for every gate change.  It says nothing on success, so each opening is
        # followed by a `qdisc show` of the port (not `... parent 1:30`: tc 6.1 keeps that
        # filter for the next show in a batch and exits); its kick qdisc.s line says
        # the gate is open, and only then is the kick sent (a kick before the change would
        # find the gate closed and wake nothing up).
        self.tc = subprocess.Popen(["tc", "-force", "-batch", "-"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=open(plan["tc_log"], "w"),
                                   text=True, bufsize=1)
        os.set_blocking(self.tc.stdout.fileno(), False)
        self._tc_buf = b""
        self._opening: deque[Port] = deque()
        self.switches = []
        self.ports: list[Port] = []
        self.by_fd = {}
        for sw in plan["switches"]:
            ports = [Port(p, sw["name"], plan["frame_cap"], sw["limit_bytes"], self.tdf)
                     for p in sw["ports"]]
            mmu = IngressPfc(sw["buffer_bytes"], sw["headroom_bytes"], plan["reserve_bytes"],
                             plan["alpha"], plan["resume_offset_bytes"])
            self.switches.append((sw["name"], ports, mmu))
            self.ports += ports
        self.peer = {}  # (switch, port) -> the Port at the other end, if a switch port
        for (a, b) in plan["switch_links"]:
            pa, pb = self._port(a), self._port(b)
            self.peer[pa.name], self.peer[pb.name] = pb, pa
        self.events: list[tuple] = []
        self.arriving: list[tuple] = []  # heap: (real ns, seq, port, quanta) PFC to apply
        self._seq = 0
        self.gate_ns: list[int] = []  # real ns from a PAUSE sent to the peer's gate closed
        self._pause_sent_at: dict[str, int] = {}
        self.control = ControlInput()

    def _port(self, name: str) -> Port:
        sw, i = name.split(":")
        for n, ports, _ in self.switches:
            if n == sw:
                return ports[int(i)]
        raise KeyError(name)

    # -- clocks ----------------------------------------------------------------------
    def fabric(self, real: int) -> int:
        return 0 if self.t0 is None else int((real - self.t0) / self.tdf)

    # -- PFC out: the ingress side ---------------------------------------------------
    def _send(self, port: Port, pause: bool, now: int) -> None:
        quanta = wire_pfc.MAX_QUANTA if pause else 0
        try:
            port.sock.send(wire_pfc.encode(port.mac, {self.prio: quanta}))
        except OSError as e:  # the link is down (a fault): the frame is lost, as on a wire
            print(f"pfcd: {port.ifname}: PFC frame not sent: {e}", file=sys.stderr)
        if pause:
            port.pause_tx += 1
            life = wire_pfc.quanta_ns(quanta, port.fabric_rate) * self.tdf
            port.refresh_at = now + int(life / 2)
            self._pause_sent_at[port.name] = now
        else:
            port.resume_tx += 1

    def poll(self, now: int) -> None:
        for _, ports, mmu in self.switches:
            occ = [0] * len(ports)
            for p in ports:
                c = p.prog.read_pfc()
                for i, b in enumerate(p.att.update(c.data_bytes, c.queue_bytes, c.ing_bytes)):
                    occ[i] += b
            for i, pause in mmu.update(occ):
                port = ports[i]
                port.pause_sent = pause
                self._send(port, pause, now)
                self._event(now, port, "pause_tx" if pause else "resume_tx")
        for p in self.ports:  # a PAUSE in force is sent again before it runs out
            if p.pause_sent and now >= p.refresh_at:
                self._send(p, True, now)

    # -- PFC in: the egress side -----------------------------------------------------
    def _receive(self, port: Port, now: int) -> None:
        while True:
            try:
                buf = port.sock.recv(256)
            except BlockingIOError:
                return
            except OSError:  # ENETDOWN: the link went down (a fault); nothing to read
                return
            q = wire_pfc.decode(buf)
            if not q or self.prio not in q:
                continue
            quanta = q[self.prio]
            if quanta:
                port.pause_rx += 1
            else:
                port.resume_rx += 1
            # The emulated links have no delay (the agents hold each frame for its path's
            # delay instead), so a frame reaches the upstream port at once, and what that
            # port sends after it reacts arrives at once too.  On a real link, PAUSE takes
            # one link delay to arrive and the frames the port sent meanwhile one more to
            # land: the same bytes land if the port reacts one round trip late (and after
            # a RESUME the first frame lands a round trip later).  So it does.
            self._seq += 1
            heapq.heappush(self.arriving, (now + port.flight, self._seq, port, quanta))

    def _apply(self, port: Port, quanta: int, now: int) -> None:
        """A PFC frame takes effect on ``port``'s egress."""
        if quanta:
            port.until = now + int(wire_pfc.quanta_ns(quanta, port.fabric_rate) * self.tdf)
            if not port.paused:
                self._close(port, now)
        elif port.paused:
            self._open(port, now)

    def _close(self, port: Port, now: int) -> None:
        self.tc.stdin.write(port.close_cmd + "\n")
        self.tc.stdin.flush()
        port.paused = True
        port.paused_since = now
        # the queue's clock stops: active time = now - paused time so far, frozen
        port.prog.set_pause_word(PAUSED_BIT | (now - port.paused_real))
        sent = self._pause_sent_at.pop(self.peer[port.name].name, None) \
            if port.name in self.peer else None
        if sent is not None:  # beyond the emulated round trip
            self.gate_ns.append(time.monotonic_ns() - sent - port.flight)
        self._event(now, port, "paused")

    def _open(self, port: Port, now: int) -> None:
        self.tc.stdin.write(f"{port.open_cmd}\nqdisc show dev {port.ifname}\n")
        self.tc.stdin.flush()
        self._opening.append(port)
        port.paused = False
        port.paused_real += now - port.paused_since
        port.prog.set_pause_word(port.paused_real)
        self._event(now, port, "resumed")

    def _tc_output(self) -> None:
        """tc has shown a kick qdisc: the gate before it is open; wake that port up."""
        try:
            chunk = os.read(self.tc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            raise RuntimeError("tc exited; see " + self.plan["tc_log"])
        self._tc_buf += chunk
        *lines, self._tc_buf = self._tc_buf.split(b"\n")
        for line in lines:
            if line.startswith(b"qdisc pfifo 30:") and self._opening:
                self._kick(self._opening.popleft())

    @staticmethod
    def _kick(port: Port) -> None:
        try:  # the kick class drops the frame; enqueueing it makes the kernel run the qdisc
            port.kick.send(port.kick_frame)
        except OSError:
            pass  # ENOBUFS: dropped, as intended

    def _event(self, now: int, port: Port, what: str) -> None:
        if DEBUG:
            with open(DEBUG, "a") as f:
                print(f"{self.fabric(now)} {port.name} {what}", file=f)
        if len(self.events) < MAX_EVENTS:
            self.events.append((self.fabric(now), port.name, what))

    # -- main loop -------------------------------------------------------------------
    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for p in self.ports:
            sel.register(p.sock, selectors.EVENT_READ, p)
        sel.register(0, selectors.EVENT_READ, None)
        sel.register(self.tc.stdout, selectors.EVENT_READ, "tc")
        print("READY", flush=True)
        next_poll = time.monotonic_ns()
        while not self.stop:
            now = time.monotonic_ns()
            if now >= next_poll:
                self.poll(now)
                next_poll = max(next_poll + self.poll_real, now + self.poll_real // 4)
            arriving = self.arriving
            while arriving and arriving[0][0] <= now:
                _, _, port, quanta = heapq.heappop(arriving)
                self._apply(port, quanta, now)
            for p in self.ports:
                if p.paused and now >= p.until:
                    self._open(p, now)
            due = next_poll
            if arriving and arriving[0][0] < due:
                due = arriving[0][0]
            for p in self.ports:
                if p.paused and p.until < due:
                    due = p.until
            for key, _ in sel.select(max(0, due - time.monotonic_ns()) / 1e9):
                if key.data is None:
                    self._control_input()
                elif key.data == "tc":
                    self._tc_output()
                else:
                    self._receive(key.data, time.monotonic_ns())

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
        now = time.monotonic_ns()
        ports = {}
        for _, sw_ports, mmu in self.switches:
            for p in sw_ports:
                paused = p.paused_real + (now - p.paused_since if p.paused else 0)
                ports[p.name] = {
                    "pfc_pause_tx": p.pause_tx, "pfc_resume_tx": p.resume_tx,
                    "pfc_pause_rx": p.pause_rx, "pfc_resume_rx": p.resume_rx,
                    "paused_ns": int(paused / self.tdf),
                    "max_ingress_bytes": mmu.max_bytes[p.index]}
        g = sorted(self.gate_ns)
        return {"ports": ports, "events": self.events,
                "poll_ns": int(self.poll_real / self.tdf),
                "gate_ns": {"n": len(g),
                            "mean": int(sum(g) / len(g) / self.tdf) if g else None,
                            "max": int(g[-1] / self.tdf) if g else None}}

    def close(self) -> None:
        for p in self.ports:
            if p.paused:  # leave no gate closed behind (the run is over)
                self._open(p, time.monotonic_ns())
        try:
            self.tc.stdin.close()
            self.tc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.tc.kill()
        for p in self.ports:
            p.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = json.loads(open(argv[0]).read())
    d = Daemon(plan)
    try:
        d.run()
        write_json_atomic(plan["out"], d.results())
    finally:
        d.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
