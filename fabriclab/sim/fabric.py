"""Ports and switches of the packet-level simulator.

Model (what a result from this simulator means):

* **Links** are full duplex with a rate and a propagation delay.  A port serialises one
  packet at a time; the serialisation time is exact on average (the sub-nanosecond
  remainder carries to the next packet), so a link carries exactly its rate.  A packet is
  delivered to the far node when its last bit arrives (store and forward).
* **Switches** are output-queued with a shared buffer and 8 strict priorities per port.
  Data travels on one lossless priority (``nic.data_priority``); ACK/NACK/CNP travel on
  ``nic.control_priority``, are served first, and are not counted against the buffer.
* **PFC** follows the HPCC simulator's ``switch-mmu.cc``: per ingress port, bytes are
  counted against a reserve, then the shared pool, then a headroom.  An ingress port sends
  PAUSE upstream when its shared use reaches ``alpha x (free shared buffer)`` or it spills
  into headroom, and RESUME when it drops ``resume_offset`` below.  The upstream port stops
  serving that priority once the PAUSE arrives (one link delay later), so head-of-line
  blocking and pause propagation happen.  PFC frames take a 64-byte slot of time but are
  not queued behind data (they jump the queue, as in hardware).
* **ECN** is RED on the egress queue, decided when a packet is dequeued, on the queue
  left behind (HPCC simulator: mark at dequeue).
* **NICs** are :mod:`fabriclab.nic`'s, the same objects the emulator's agents drive; the
  simulator's host (:mod:`fabriclab.sim.host`) only moves their frames.

Frames are the wire's typed frames (:mod:`fabriclab.wire.frames`) with the route they
follow.  Every node has ``receive(pkt)``; every port has the same counters, read by the
metrics.
"""

from __future__ import annotations

from collections import deque

from ..pfc import shared_pool
from ..units import BIT_NS
from ..wire import pfc as wire_pfc
from ..wire.frames import Frame

UNLIMITED_BYTES = 1 << 62
PFC_FRAME_BYTES = wire_pfc.FRAME_BYTES + 4  # with the FCS


class FabricFrame:
    """What the ports and switches read and write on every frame they move: the frames of
    :mod:`fabriclab.sim.host` extend it with the fields of the wire's typed frames.
    ``route`` is the tuple of egress ports the frame follows, ``hop`` the index of the next
    one, ``in_port`` the port it arrived on (PFC's ingress accounting)."""

    __slots__ = ("kind", "hop", "in_port", "flow", "size", "prio", "route")


class Port:
    """The egress half of one end of a link; ``peer`` is the port at the other end."""

    __slots__ = ("loop", "send_ev", "net", "node", "index", "name", "role", "rate", "delay",
                 "peer", "peer_recv", "rem", "busy_until", "tx_pending", "tx_bytes", "tx_pkts",
                 "paused", "pause_start", "paused_ns", "pfc_pause_rx", "pfc_frame_ns",
                 "drops", "drop_bytes", "down", "loss", "nominal_rate", "wd_until", "lost")

    def __init__(self, net, node, index: int, rate_bps: int, delay_ns: int, role: str):
        self.loop = net.loop
        self.send_ev = self._send  # the bound method, made once: it is scheduled per packet
        self.net = net
        self.node = node
        self.index = index
        self.name = f"{node.name}:{index}"
        self.role = role  # "nic", "host" (switch port to a host), "up", "down"
        self.rate = rate_bps
        self.delay = delay_ns
        self.peer = None
        self.peer_recv = None
        self.rem = 0  # serialisation remainder, in bit-ns units below one ns
        self.busy_until = 0
        self.tx_pending = False  # a _send event is scheduled
        self.tx_bytes = 0
        self.tx_pkts = 0
        self.paused = [False] * 8
        self.pause_start = [0] * 8
        self.paused_ns = 0
        self.pfc_pause_rx = 0
        self.pfc_frame_ns = -(-PFC_FRAME_BYTES * BIT_NS // rate_bps)
        self.drops = 0  # frames lost after this port sent them, or dropped in its queue
        self.drop_bytes = 0
        # faults (fabriclab.sim.faults): the link is down; loss probability of frames that
        # arrive on this port; rate before degradation; PFC watchdog: the queue is disabled
        # until this time; frames lost by cause (fabriclab.faults.LOSS_CAUSES)
        self.down = False
        self.loss = 0.0
        self.nominal_rate = rate_bps
        self.wd_until = 0
        self.lost = None

    def connect(self, peer: "Port") -> None:
        self.peer = peer
        self.peer_recv = peer.node.receive

    def kick(self) -> None:
        """Something may have become sendable: start now, or when the current packet ends."""
        if self.tx_pending:
            return
        now = self.loop.now
        if self.busy_until > now:
            self.tx_pending = True
            self.loop.push(self.busy_until, self.send_ev, None)
        else:
            self._send()

    def _send(self, _=None):
        """Start the next transmission if any (also the event at the end of one)."""
        raise NotImplementedError

    def pfc_rx(self, arg) -> None:
        """A PFC frame from the peer arrived: (priority, pause?)."""
        prio, on = arg
        paused = self.paused
        if on:
            self.pfc_pause_rx += 1
            if not paused[prio]:
                paused[prio] = True
                self.pause_start[prio] = self.loop.now
        elif paused[prio]:
            paused[prio] = False
            self.paused_ns += self.loop.now - self.pause_start[prio]
            self.kick()

    def paused_ns_at(self, now: int) -> int:
        """Total paused time, counting a pause still in force at ``now``."""
        extra = sum(now - self.pause_start[p] for p in range(8) if self.paused[p])
        return self.paused_ns + extra


class SwitchPort(Port):
    """A switch egress port (8 strict-priority FIFOs) that is also an ingress port for PFC."""

    __slots__ = ("sw", "queues", "qbytes", "order", "npkts", "kmin", "kmax", "pslope",
                 "ing_bytes", "hdrm_bytes", "headroom", "pause_sent", "ecn_marks",
                 "max_qbytes", "pfc_pause_tx", "pfc_resume_tx")

    def __init__(self, net, sw, index, rate_bps, delay_ns, role):
        super().__init__(net, sw, index, rate_bps, delay_ns, role)
        self.sw = sw
        # a FIFO for each priority frames use (data and control), None for the others: at
        # 1,024 hosts, 8 deques on each of 11,520 ports took 30 MB
        self.queues = [deque() if p in sw.prio_order else None for p in range(8)]
        self.qbytes = [0] * 8
        self.order = sw.prio_order
        self.npkts = 0
        self.kmin = self.kmax = 0  # ECN off unless configure_ecn is called
        self.pslope = 0.0
        self.ing_bytes = 0  # PFC ingress accounting of the lossless priority
        self.hdrm_bytes = 0
        self.headroom = 0
        self.pause_sent = False
        self.ecn_marks = 0
        self.max_qbytes = 0
        self.pfc_pause_tx = 0
        self.pfc_resume_tx = 0

    def configure_ecn(self, kmin: int, kmax: int, pmax: float) -> None:
        self.kmin, self.kmax = kmin, kmax
        self.pslope = pmax / (kmax - kmin)

    def _send(self, _=None):
        self.tx_pending = False
        queues = self.queues
        paused = self.paused
        for prio in self.order:
            q = queues[prio]
            if q and not paused[prio]:
                break
        else:
            return
        pkt = q.popleft()
        size = pkt.size
        qb = self.qbytes[prio] - size
        self.qbytes[prio] = qb
        self.npkts -= 1
        sw = self.sw
        if prio == sw.data_prio:
            sw.used -= size
            if sw.pfc:  # PFC: release the ingress accounting (inlined: once per hop)
                inp = pkt.in_port
                from_hdrm = inp.hdrm_bytes if inp.hdrm_bytes < size else size
                rest = size - from_hdrm
                ing = inp.ing_bytes
                reserve = sw.reserve
                if ing > reserve:
                    sw.shared_used -= rest if rest < ing - reserve else ing - reserve
                inp.hdrm_bytes -= from_hdrm
                inp.ing_bytes = ing - rest
                if inp.pause_sent and inp.hdrm_bytes == 0:
                    shared = inp.ing_bytes - reserve
                    if shared <= 0 or shared + sw.resume_offset <= sw._threshold():
                        sw._send_pfc(inp, False)
            # RED at dequeue on the queue left behind (HPCC simulator's ShouldSendCN).
            if qb > self.kmin and self.kmax:
                if qb >= self.kmax or sw.rand() < (qb - self.kmin) * self.pslope:
                    pkt.ecn = 1
                    self.ecn_marks += 1
            if sw.on_dequeue is not None:
                sw.on_dequeue(self, pkt, qb)
        # put the frame on the wire: serialise it (carrying the sub-ns remainder), count it,
        # and deliver it to the peer a link delay after its last bit (inline: hottest path)
        num = size * BIT_NS + self.rem
        ser = num // self.rate
        self.rem = num - ser * self.rate
        t = self.loop.now + ser
        self.busy_until = t
        self.tx_bytes += size
        self.tx_pkts += 1
        pkt.in_port = self.peer
        loop = self.loop
        loop.push(t + self.delay, self.peer_recv, pkt)
        if self.npkts:
            self.tx_pending = True
            loop.push(t, self.send_ev, None)


class Switch:
    """An output-queued shared-buffer switch; forwarding follows each packet's route."""

    def __init__(self, net, name: str, cfg):
        self.net = net
        self.name = name
        self.ports: list[SwitchPort] = []
        self.data_prio = cfg.data_prio
        self.prio_order = cfg.prio_order
        self.buffer = cfg.buffer_bytes
        self.qlimit = cfg.queue_limit_bytes or 0
        self.used = 0  # data bytes in the buffer
        self.pfc = cfg.pfc_enabled
        self.alpha = cfg.pfc_alpha
        self.reserve = cfg.pfc_reserve
        self.resume_offset = cfg.pfc_resume_offset
        self.shared_total = 0  # buffer - headrooms - reserves, set by finish_pfc()
        self.shared_used = 0
        self.rand = cfg.rng_for(name).random
        self.on_dequeue = None  # optional hook (port, pkt, queue_bytes_left), e.g. INT
        self.spray_rng = None  # a spraying switch's (SprayingSwitch)
        self.next_hops: dict = {}  # spraying: destination host -> tuple of egress ports

    def add_port(self, index, rate_bps, delay_ns, role) -> SwitchPort:
        p = SwitchPort(self.net, self, index, rate_bps, delay_ns, role)
        self.ports.append(p)
        return p

    def finish_pfc(self, headroom_of) -> None:
        """Fix per-port headroom and the shared pool once every port exists."""
        for p in self.ports:
            p.headroom = headroom_of(p)
        self.shared_total = shared_pool(self.buffer, [p.headroom for p in self.ports],
                                        self.reserve)

    def receive(self, pkt: Frame) -> None:
        """Forward: per-flow ECMP, the flow's route (hashed once per switch) names the
        egress port; a spraying switch picks a random one of the data packet's next hops.
        Then buffer admission (PFC or drop) and the egress queue."""
        prio = pkt.prio
        if self.spray_rng is not None and prio == self.data_prio:
            ports = self.next_hops[pkt.flow.dst]
            out = ports[self.spray_rng.randrange(len(ports))] if len(ports) > 1 else ports[0]
        else:
            out = pkt.route[pkt.hop]
            pkt.hop += 1
        # self.put(pkt, out), inlined: this runs once per packet and hop
        if prio == self.data_prio and not self.admit(pkt, out):
            return
        out.queues[prio].append(pkt)
        qb = out.qbytes[prio] + pkt.size
        out.qbytes[prio] = qb
        if qb > out.max_qbytes:
            out.max_qbytes = qb
        out.npkts += 1
        if not out.tx_pending:
            if out.busy_until > out.loop.now:
                out.tx_pending = True
                out.loop.push(out.busy_until, out.send_ev, None)
            else:
                out._send()

    def admit(self, pkt: Frame, out: SwitchPort) -> bool:
        """Take a data packet into the buffer (PFC accounting, or drop it); False if dropped."""
        size = pkt.size
        if self.qlimit and out.qbytes[pkt.prio] + size > self.qlimit:
            self._drop(out, pkt, "queue_limit")
            return False
        if self.pfc:
            # PFC ingress admission (HPCC simulator switch-mmu.cc, one lossless priority):
            # the reserve, then the shared pool up to alpha x its free part, then headroom.
            inp = pkt.in_port
            new = inp.ing_bytes + size
            reserve = self.reserve
            if new <= reserve:
                inp.ing_bytes = new
            elif new - reserve > (self.shared_total - self.shared_used) * self.alpha:
                if inp.hdrm_bytes + size > inp.headroom:
                    self._drop(out, pkt, "pfc_headroom_overflow")
                    return False  # headroom overflow: the lossless promise is broken
                inp.hdrm_bytes += size
            else:
                inp.ing_bytes = new
                self.shared_used += min(size, new - reserve)
            if not inp.pause_sent and (
                    inp.hdrm_bytes > 0 or inp.ing_bytes - reserve
                    >= (self.shared_total - self.shared_used) * self.alpha):
                self._send_pfc(inp, True)
        elif self.used + size > self.buffer:
            self._drop(out, pkt, "buffer_full")
            return False
        self.used += size
        return True

    def put(self, pkt: Frame, out: SwitchPort) -> None:
        """Append an admitted packet to an egress queue and start the port if idle."""
        prio = pkt.prio
        out.queues[prio].append(pkt)
        qb = out.qbytes[prio] + pkt.size
        out.qbytes[prio] = qb
        if qb > out.max_qbytes:
            out.max_qbytes = qb
        out.npkts += 1
        if not out.tx_pending:
            if out.busy_until > out.loop.now:
                out.tx_pending = True
                out.loop.push(out.busy_until, out.send_ev, None)
            else:
                out._send()

    def unqueue(self, port: SwitchPort, pkt: Frame) -> None:
        """``pkt`` was taken from ``port``'s queue without being sent (the PFC watchdog):
        release its buffer and PFC accounting as :meth:`SwitchPort._send` does."""
        size, prio = pkt.size, pkt.prio
        port.qbytes[prio] -= size
        port.npkts -= 1
        if prio != self.data_prio:
            return
        self.used -= size
        if self.pfc:
            inp = pkt.in_port
            from_hdrm = min(inp.hdrm_bytes, size)
            rest = size - from_hdrm
            ing, reserve = inp.ing_bytes, self.reserve
            if ing > reserve:
                self.shared_used -= min(rest, ing - reserve)
            inp.hdrm_bytes -= from_hdrm
            inp.ing_bytes = ing - rest
            if inp.pause_sent and inp.hdrm_bytes == 0:
                shared = inp.ing_bytes - reserve
                if shared <= 0 or shared + self.resume_offset <= self._threshold():
                    self._send_pfc(inp, False)

    def _drop(self, port: SwitchPort, pkt: Frame, reason: str) -> None:
        port.drops += 1
        port.drop_bytes += pkt.size
        reasons = self.net.drop_reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        self.net.packet_gone(pkt, dropped=True)

    # -- PFC (admission in admit(), release in SwitchPort._send) ----------------------------
    def _threshold(self) -> float:
        return (self.shared_total - self.shared_used) * self.alpha

    def _send_pfc(self, inp: SwitchPort, on: bool) -> None:
        inp.pause_sent = on
        if on:
            inp.pfc_pause_tx += 1
        else:
            inp.pfc_resume_tx += 1
        t = self.net.loop.now + inp.pfc_frame_ns + inp.delay
        inp.loop.push(t, inp.peer.pfc_rx, (self.data_prio, on))


def int_stamper(loop):
    """The dequeue hook that appends an INT record to each data packet (HPCC): timestamp,
    the port's cumulative tx bytes (this packet included), the queue left behind, the rate."""
    def stamp(port: SwitchPort, pkt: Frame, qbytes: int) -> None:
        if pkt.ints is not None:
            pkt.ints.append((loop.now, port.tx_bytes + pkt.size, qbytes, port.rate))
    return stamp


class SprayingSwitch(Switch):
    """Per-packet load balancing: each data packet picks a random port among the equal-cost
    next hops to its destination (ns-3's RandomEcmpRouting; 'random packet spraying').
    Control frames keep their flow's route."""

    def __init__(self, net, name, cfg):
        super().__init__(net, name, cfg)
        self.spray_rng = cfg.rng_for(name + "/spray")  # Switch.receive sprays with it
