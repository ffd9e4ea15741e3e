"""Packets, ports, switches and NICs of the packet-level simulator.

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
* **NICs** pace each flow at its congestion-control rate, serve flows round-robin, send
  ACKs (every ``ack_every_pkts``), NACK on a sequence gap (go-back-N), and CNPs at most once
  per flow per ``cnp_interval``; a retransmission timeout covers lost tails.

Every node has ``receive(pkt)``; every port has the same counters, read by the metrics.
"""

from __future__ import annotations

from collections import deque
from heapq import heappush

from ..units import BIT_NS

# Packet kinds handled here.  Other protocols add their own kinds and register a handler
# in Host.handlers; nothing here needs to change for them.
DATA = "data"
ACK = "ack"
NACK = "nack"
CNP = "cnp"

UNLIMITED_BYTES = 1 << 62
PFC_FRAME_BYTES = 64


class Packet:
    __slots__ = ("kind", "flow", "seq", "payload", "size", "prio", "route", "hop", "in_port",
                 "ecn", "ints", "meta")

    def __init__(self, kind, flow, seq, payload, size, prio, route):
        self.kind = kind
        self.flow = flow
        self.seq = seq  # byte offset (DATA) or cumulative ack (ACK/NACK)
        self.payload = payload
        self.size = size  # bytes on the wire
        self.prio = prio
        self.route = route  # tuple of egress ports, route[0] is the sender's NIC port
        self.hop = 1  # index in route of the next egress port
        self.in_port = None  # the port of the current node it arrived on
        self.ecn = 0  # 1 = CE marked
        self.ints = None  # INT records (ts, tx_bytes, qlen, rate) stamped at each egress
        self.meta = None  # other protocol extensions (e.g. a container tag)


class Port:
    """The egress half of one end of a link; ``peer`` is the port at the other end."""

    __slots__ = ("loop", "heap", "seq", "net", "node", "index", "name", "role", "rate", "delay",
                 "peer", "peer_recv", "rem", "busy_until", "tx_pending", "tx_bytes", "tx_pkts",
                 "paused", "pause_start", "paused_ns", "pfc_pause_rx", "pfc_frame_ns")

    def __init__(self, net, node, index: int, rate_bps: int, delay_ns: int, role: str):
        self.loop = net.loop
        self.heap = net.loop.heap
        self.seq = net.loop.seq
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

    def connect(self, peer: "Port") -> None:
        self.peer = peer
        self.peer_recv = peer.node.receive

    def _transmit(self, pkt: Packet, now: int) -> int:
        """Put ``pkt`` on the wire now; returns when the port is free again."""
        num = pkt.size * BIT_NS + self.rem
        ser = num // self.rate
        self.rem = num - ser * self.rate
        t = now + ser
        self.busy_until = t
        self.tx_bytes += pkt.size
        self.tx_pkts += 1
        pkt.in_port = self.peer
        heappush(self.heap, (t + self.delay, next(self.seq), self.peer_recv, pkt))
        return t

    def kick(self) -> None:
        """Something may have become sendable: start now, or when the current packet ends."""
        if self.tx_pending:
            return
        now = self.loop.now
        if self.busy_until > now:
            self.tx_pending = True
            heappush(self.heap, (self.busy_until, next(self.seq), self._send, None))
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
                 "ing_bytes", "hdrm_bytes", "headroom", "pause_sent", "ecn_marks", "drops",
                 "drop_bytes", "max_qbytes", "pfc_pause_tx", "pfc_resume_tx")

    def __init__(self, net, sw, index, rate_bps, delay_ns, role):
        super().__init__(net, sw, index, rate_bps, delay_ns, role)
        self.sw = sw
        self.queues = [deque() for _ in range(8)]
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
        self.drops = 0
        self.drop_bytes = 0
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
            if sw.pfc:
                sw.pfc_release(pkt.in_port, size)
            # RED at dequeue on the queue left behind (HPCC simulator's ShouldSendCN).
            if qb > self.kmin and self.kmax:
                if qb >= self.kmax or sw.rand() < (qb - self.kmin) * self.pslope:
                    pkt.ecn = 1
                    self.ecn_marks += 1
            if sw.on_dequeue is not None:
                sw.on_dequeue(self, pkt, qb)
        # transmit (Port._transmit, inlined: this is the hottest path)
        num = size * BIT_NS + self.rem
        ser = num // self.rate
        self.rem = num - ser * self.rate
        t = self.loop.now + ser
        self.busy_until = t
        self.tx_bytes += size
        self.tx_pkts += 1
        pkt.in_port = self.peer
        heap = self.heap
        seq = self.seq
        heappush(heap, (t + self.delay, next(seq), self.peer_recv, pkt))
        if self.npkts:
            self.tx_pending = True
            heappush(heap, (t, next(seq), self._send, None))


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

    def add_port(self, index, rate_bps, delay_ns, role) -> SwitchPort:
        p = SwitchPort(self.net, self, index, rate_bps, delay_ns, role)
        self.ports.append(p)
        return p

    def finish_pfc(self, headroom_of) -> None:
        """Fix per-port headroom and the shared pool once every port exists."""
        total_hdrm = 0
        for p in self.ports:
            p.headroom = headroom_of(p)
            total_hdrm += p.headroom
        self.shared_total = self.buffer - total_hdrm - self.reserve * len(self.ports)

    def receive(self, pkt: Packet) -> None:
        """Per-flow ECMP: the flow's route (hashed once per switch) names the egress port."""
        out = pkt.route[pkt.hop]
        pkt.hop += 1
        self.enqueue(pkt, out)

    def enqueue(self, pkt: Packet, out: SwitchPort) -> None:
        """Buffer admission (PFC or drop), then the egress queue."""
        if pkt.prio == self.data_prio and not self.admit(pkt, out):
            return
        self.put(pkt, out)

    def admit(self, pkt: Packet, out: SwitchPort) -> bool:
        """Take a data packet into the buffer (PFC accounting, or drop it); False if dropped."""
        size = pkt.size
        if self.qlimit and out.qbytes[pkt.prio] + size > self.qlimit:
            self._drop(out, pkt, "queue_limit")
            return False
        if self.pfc:
            if not self.pfc_admit(pkt.in_port, size):
                self._drop(out, pkt, "pfc_headroom_overflow")
                return False
        elif self.used + size > self.buffer:
            self._drop(out, pkt, "buffer_full")
            return False
        self.used += size
        return True

    def put(self, pkt: Packet, out: SwitchPort) -> None:
        """Append an admitted packet to an egress queue and start the port if idle."""
        prio = pkt.prio
        out.queues[prio].append(pkt)
        qb = out.qbytes[prio] + pkt.size
        out.qbytes[prio] = qb
        if qb > out.max_qbytes:
            out.max_qbytes = qb
        out.npkts += 1
        if not out.tx_pending:
            if out.busy_until > self.net.loop.now:
                out.tx_pending = True
                heappush(out.heap, (out.busy_until, next(out.seq), out._send, None))
            else:
                out._send()

    def _drop(self, port: SwitchPort, pkt: Packet, reason: str) -> None:
        port.drops += 1
        port.drop_bytes += pkt.size
        reasons = self.net.drop_reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        self.net.packet_gone(pkt, dropped=True)

    # -- PFC (HPCC simulator switch-mmu.cc, one lossless priority) --------------------------
    def _threshold(self) -> float:
        return (self.shared_total - self.shared_used) * self.alpha

    def pfc_admit(self, inp: SwitchPort, size: int) -> bool:
        new = inp.ing_bytes + size
        reserve = self.reserve
        if new <= reserve:
            inp.ing_bytes = new
        elif new - reserve > (self.shared_total - self.shared_used) * self.alpha:
            if inp.hdrm_bytes + size > inp.headroom:
                return False  # headroom overflow: the lossless promise is broken
            inp.hdrm_bytes += size
        else:
            inp.ing_bytes = new
            self.shared_used += min(size, new - reserve)
        if not inp.pause_sent and (
                inp.hdrm_bytes > 0
                or inp.ing_bytes - reserve >= (self.shared_total - self.shared_used) * self.alpha):
            self._send_pfc(inp, True)
        return True

    def pfc_release(self, inp: SwitchPort, size: int) -> None:
        from_hdrm = inp.hdrm_bytes if inp.hdrm_bytes < size else size
        rest = size - from_hdrm
        ing = inp.ing_bytes
        reserve = self.reserve
        if ing > reserve:
            self.shared_used -= rest if rest < ing - reserve else ing - reserve
        inp.hdrm_bytes -= from_hdrm
        inp.ing_bytes = ing - rest
        if inp.pause_sent and inp.hdrm_bytes == 0:
            shared = inp.ing_bytes - reserve
            if shared <= 0 or shared + self.resume_offset <= self._threshold():
                self._send_pfc(inp, False)

    def _send_pfc(self, inp: SwitchPort, on: bool) -> None:
        inp.pause_sent = on
        if on:
            inp.pfc_pause_tx += 1
        else:
            inp.pfc_resume_tx += 1
        t = self.net.loop.now + inp.pfc_frame_ns + inp.delay
        heappush(inp.heap, (t, next(inp.seq), inp.peer.pfc_rx, (self.data_prio, on)))


def int_stamper(loop):
    """The dequeue hook that appends an INT record to each data packet (HPCC): timestamp,
    the port's cumulative tx bytes (this packet included), the queue left behind, the rate."""
    def stamp(port: SwitchPort, pkt: Packet, qbytes: int) -> None:
        if pkt.ints is not None:
            pkt.ints.append((loop.now, port.tx_bytes + pkt.size, qbytes, port.rate))
    return stamp


class SprayingSwitch(Switch):
    """Per-packet load balancing: each data packet picks a random port among the equal-cost
    next hops to its destination (ns-3's RandomEcmpRouting; 'random packet spraying').
    Control frames keep their flow's route."""

    def __init__(self, net, name, cfg):
        super().__init__(net, name, cfg)
        self.next_hops: dict = {}  # destination host -> tuple of egress ports
        self.spray_rng = cfg.rng_for(name + "/spray")

    def receive(self, pkt: Packet) -> None:
        if pkt.prio == self.data_prio:
            ports = self.next_hops[pkt.flow.dst]
            out = ports[self.spray_rng.randrange(len(ports))] if len(ports) > 1 else ports[0]
        else:
            out = pkt.route[pkt.hop]
            pkt.hop += 1
        self.enqueue(pkt, out)


class NicPort(Port):
    """A host NIC's egress: control frames first, then data pulled from the host's flows."""

    __slots__ = ("host", "ctrl", "wake_at")

    def __init__(self, net, host, rate_bps, delay_ns):
        super().__init__(net, host, 0, rate_bps, delay_ns, "nic")
        self.host = host
        self.ctrl = deque()
        self.wake_at = None

    def _send(self, _=None):
        self.tx_pending = False
        host = self.host
        now = self.loop.now
        paused = self.paused
        if self.ctrl and not paused[host.ctrl_prio]:
            pkt = self.ctrl.popleft()
        elif host.active and not paused[host.data_prio]:
            pkt = host.next_data(now)
            if pkt is None:
                return
        else:
            return
        t = self._transmit(pkt, now)
        self.net.in_flight += 1
        if self.ctrl or host.active:
            self.tx_pending = True
            heappush(self.heap, (t, next(self.seq), self._send, None))

    def wake(self, t):
        if self.wake_at == t:
            self.wake_at = None
            self.kick()


class Host:
    """A host and its NIC: sender and receiver of the reliable (or UDP) transport."""

    def __init__(self, net, name: str, cfg):
        self.net = net
        self.loop = net.loop
        self.name = name
        self.port: NicPort | None = None
        self.active: list = []  # flows with data to send
        self.rr = 0
        self.mtu = cfg.mtu
        self.hdr = cfg.header
        self.data_prio = cfg.data_prio
        self.ctrl_prio = cfg.ctrl_prio
        self.reliable = cfg.reliable
        self.ack_every = cfg.ack_every
        self.cnp_interval = cfg.cnp_interval_ns
        self.send_cnp = cfg.send_cnp
        self.rto = cfg.rto_ns
        self.int_bytes = cfg.int_bytes  # INT header each data packet and ACK carries
        self.handlers = {}  # extra packet kinds -> handler(pkt)
        # counters
        self.rx_bytes = 0  # every byte that arrived (data and control)
        self.rx_goodput = 0  # payload delivered in order to the application
        self.cnps_sent = 0
        self.cnps_rx = 0
        self.nacks_sent = 0
        self.timeouts = 0
        self.retx_bytes = 0

    def attach(self, rate_bps, delay_ns) -> NicPort:
        self.port = NicPort(self.net, self, rate_bps, delay_ns)
        return self.port

    # -- sending -------------------------------------------------------------------------
    def start_flow(self, f) -> None:
        now = self.loop.now
        f.next_avail = now
        f.last_progress = now
        f.cc.on_start(now)
        self._activate(f)
        self._arm(f)
        if self.reliable:
            heappush(self.loop.heap, (now + self.rto, next(self.loop.seq), self._rto, f))

    def _activate(self, f) -> None:
        if not f.active:
            f.active = True
            self.active.append(f)
        self.port.kick()

    def next_data(self, now: int):
        """The next data packet by round-robin among flows whose pacing and window allow."""
        act = self.active
        n = len(act)
        j = self.rr if self.rr < n else 0
        earliest = None
        for _ in range(n):
            f = act[j]
            if f.next_avail <= now:
                w = f.cc.window_bytes
                if w is None or f.snd_nxt - f.snd_una < w:
                    return self._data_packet(f, now, j)
            elif earliest is None or f.next_avail < earliest:
                earliest = f.next_avail
            j += 1
            if j == n:
                j = 0
        if earliest is not None:
            port = self.port
            if port.wake_at is None or earliest < port.wake_at or port.wake_at <= now:
                port.wake_at = earliest
                heappush(self.loop.heap, (earliest, next(self.loop.seq), port.wake, earliest))
        return None

    def _data_packet(self, f, now: int, j: int) -> Packet:
        seq = f.snd_nxt
        remaining = f.size - seq
        payload = self.mtu if remaining > self.mtu else remaining
        size = payload + self.hdr + self.int_bytes
        pkt = Packet(DATA, f, seq, payload, size, self.data_prio, f.route)
        if self.int_bytes:
            pkt.ints = []
        f.snd_nxt = seq + payload
        if seq < f.max_sent:
            self.retx_bytes += payload
        else:
            f.max_sent = seq + payload
            if f.max_sent >= f.size:
                self.net.flow_sent(f)
        cc = f.cc
        f.next_avail = now + size * BIT_NS // cc.rate_bps
        if f.snd_nxt >= f.size:
            del self.active[j]
            f.active = False
            self.rr = j
        else:
            self.rr = j + 1
        if cc.wants_sends:
            cc.on_send(now, payload)
            if cc.next_timer_ns is not None and (f.timer_at is None or cc.next_timer_ns < f.timer_at):
                self._arm(f)
        return pkt

    def _control(self, kind: str, f, seq: int, ints=None) -> None:
        pkt = Packet(kind, f, seq, 0, self.hdr, self.ctrl_prio, f.rroute)
        if ints is not None:  # the ACK echoes the data packet's INT stack
            pkt.ints = ints
            pkt.size += self.int_bytes
        port = self.port
        port.ctrl.append(pkt)
        if not port.tx_pending:
            port.kick()

    # -- congestion-control timers and the retransmission timeout ------------------------
    def _arm(self, f) -> None:
        t = f.cc.next_timer_ns
        if t is not None and (f.timer_at is None or t < f.timer_at):
            f.timer_at = t
            heappush(self.loop.heap, (t, next(self.loop.seq), self._cc_timer, f))

    def _cc_timer(self, f) -> None:
        now = self.loop.now
        if f.timer_at != now or f.end_ns is not None:
            return  # stale (re-armed earlier) or the flow is over
        f.timer_at = None
        cc = f.cc
        t = cc.next_timer_ns
        if t is not None and t <= now:
            cc.on_timer(now)
        self._arm(f)

    def _rto(self, f) -> None:
        if f.snd_una >= f.size or self.net.finished:
            return
        now = self.loop.now
        deadline = f.last_progress + self.rto
        if now >= deadline:
            self.timeouts += 1
            f.snd_nxt = f.snd_una
            f.next_avail = now
            f.last_progress = now
            self._activate(f)
            deadline = now + self.rto
        heappush(self.loop.heap, (deadline, next(self.loop.seq), self._rto, f))

    # -- receiving -----------------------------------------------------------------------
    def receive(self, pkt: Packet) -> None:
        self.rx_bytes += pkt.size
        kind = pkt.kind
        if kind is DATA:
            self._on_data(pkt)
        elif kind is ACK:
            self._on_ack(pkt)
        elif kind is CNP:
            self.cnps_rx += 1
            f = pkt.flow
            f.cc.on_cnp(self.loop.now)
            self._arm(f)
        elif kind is NACK:
            self._on_nack(pkt)
        else:
            self.handlers[kind](pkt)
        self.net.packet_gone(pkt, dropped=False)

    def _on_data(self, pkt: Packet) -> None:
        f = pkt.flow
        now = self.loop.now
        if self.reliable:
            seq = pkt.seq
            if seq == f.rcv_nxt:
                f.rcv_nxt = seq + pkt.payload
                self.rx_goodput += pkt.payload
                f.unacked += 1
                if f.rcv_nxt >= f.size:
                    f.unacked = 0
                    self._control(ACK, f, f.rcv_nxt, pkt.ints)
                    self.net.flow_done(f)
                elif f.unacked >= self.ack_every:
                    f.unacked = 0
                    self._control(ACK, f, f.rcv_nxt, pkt.ints)
            elif seq > f.rcv_nxt:
                # Go-back-N: ask once per gap (again only after a base RTT's grace).
                if f.last_nack_seq != f.rcv_nxt or now - f.last_nack_ns >= f.nack_gap_ns:
                    f.last_nack_seq = f.rcv_nxt
                    f.last_nack_ns = now
                    self.nacks_sent += 1
                    self._control(NACK, f, f.rcv_nxt)
            else:
                self._control(ACK, f, f.rcv_nxt)  # duplicate: re-acknowledge
        else:
            f.rcv_nxt += pkt.payload
            self.rx_goodput += pkt.payload
            if f.rcv_nxt >= f.size and f.end_ns is None:
                self.net.flow_done(f)
        if pkt.ecn and self.send_cnp and now - f.last_cnp >= self.cnp_interval:
            f.last_cnp = now
            self.cnps_sent += 1
            self._control(CNP, f, 0)

    def _on_ack(self, pkt: Packet) -> None:
        f = pkt.flow
        if pkt.seq > f.snd_una:
            now = self.loop.now
            acked = pkt.seq - f.snd_una
            f.snd_una = pkt.seq
            f.last_progress = now
            cc = f.cc
            if cc.wants_acks:
                cc.on_ack(now, acked, int_hops=pkt.ints, ack_seq=pkt.seq, snd_nxt=f.snd_nxt)
                self._arm(f)
            if f.snd_una >= f.size:
                f.sender_done_ns = now
            elif cc.window_bytes is not None and f.active:
                self.port.kick()

    def _on_nack(self, pkt: Packet) -> None:
        f = pkt.flow
        now = self.loop.now
        if pkt.seq > f.snd_una:
            f.snd_una = pkt.seq
            f.last_progress = now
        if pkt.seq < f.snd_nxt:
            f.snd_nxt = pkt.seq
            self._activate(f)
