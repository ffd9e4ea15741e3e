"""The simulator's host: an adapter that moves the frames of one sans-IO NIC.

Everything a NIC decides (pacing, ACK/NACK/CNP, timeouts, loss recovery, GSE's GSP) is in
:mod:`fabriclab.nic`; the simulator only gives it time (its event loop is the NIC's timer
service), a port that serialises what :meth:`Nic.poll_transmit` hands it, and the frames
that arrive.  The frames are the wire's typed frames, extended with what the simulator's
switches need on each: the index of the next hop on the route and the port it arrived on.
"""

from __future__ import annotations

from heapq import heappush

from ..wire import frames as W
from ..units import BIT_NS
from .fabric import Port


class SimData(W.Data):
    __slots__ = ("hop", "in_port")


class SimAck(W.Ack):
    __slots__ = ("hop", "in_port")


class SimNack(W.Nack):
    __slots__ = ("hop", "in_port")


class SimCnp(W.Cnp):
    __slots__ = ("hop", "in_port")


class SimGseRequest(W.GseRequest):
    __slots__ = ("hop", "in_port")


class SimGseGrant(W.GseGrant):
    __slots__ = ("hop", "in_port")


class SimFrames:
    """The frame classes a NIC makes in the simulator."""

    Data, Ack, Nack, Cnp = SimData, SimAck, SimNack, SimCnp
    GseRequest, GseGrant = SimGseRequest, SimGseGrant


class NicPort(Port):
    """A host NIC's egress: it puts on the wire what the NIC hands it, one frame at a time."""

    __slots__ = ("nic", "wake_at")

    def __init__(self, net, host, rate_bps, delay_ns):
        super().__init__(net, host, 0, rate_bps, delay_ns, "nic")
        self.nic = None
        self.wake_at = None

    def _send(self, _=None):
        self.tx_pending = False
        nic = self.nic
        now = self.loop.now
        pkt = nic.poll_transmit(now)
        if pkt is None:
            return
        pkt.hop = 1
        # self._transmit(pkt, now), inlined: this runs once per frame a host sends
        num = pkt.size * BIT_NS + self.rem
        ser = num // self.rate
        self.rem = num - ser * self.rate
        t = now + ser
        self.busy_until = t
        self.tx_bytes += pkt.size
        self.tx_pkts += 1
        pkt.in_port = self.peer
        heappush(self.heap, (t + self.delay, next(self.seq), self.peer_recv, pkt))
        self.net.in_flight += 1
        if nic.ctrl or nic.active:
            self.tx_pending = True
            heappush(self.heap, (t, next(self.seq), self._send, None))

    def wake_later(self, t: int, now: int) -> None:
        """The NIC has nothing sendable before ``t`` (pacing): try again then."""
        if self.wake_at is None or t < self.wake_at or self.wake_at <= now:
            self.wake_at = t
            heappush(self.heap, (t, next(self.seq), self.wake, t))

    def wake(self, t):
        if self.wake_at == t:
            self.wake_at = None
            self.kick()


class Host:
    """A host: its NIC (``nic``, a :class:`fabriclab.nic.Nic`) behind one port."""

    def __init__(self, net, name: str):
        self.net = net
        self.loop = net.loop
        self.name = name
        self.port: NicPort | None = None
        self.nic = None
        self.on_frame = None

    def attach(self, rate_bps, delay_ns) -> NicPort:
        self.port = NicPort(self.net, self, rate_bps, delay_ns)
        return self.port

    def connect_nic(self, nic) -> None:
        """Drive ``nic`` from this host's port and the event loop."""
        self.nic = nic
        self.on_frame = nic.on_frame
        port = self.port
        port.nic = nic
        nic.paused = port.paused  # PFC from the leaf pauses the NIC's priorities
        nic.tx_ready = port.kick
        nic.tx_wake = port.wake_later

    def receive(self, pkt) -> None:
        self.on_frame(self.loop.now, pkt)
        net = self.net  # net.packet_gone(pkt, dropped=False), inlined: once per frame
        net.in_flight -= 1
        if net.finished and net.in_flight == 0:
            net.loop.stop()
