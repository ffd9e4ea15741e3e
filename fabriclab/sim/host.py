"""The simulator's host: an adapter that moves the frames of one sans-IO NIC.

Everything a NIC decides (pacing, ACK/NACK/CNP, timeouts, loss recovery, GSE's GSP) is in
:mod:`fabriclab.nic`; the simulator only gives it time (its event loop is the NIC's timer
service), a port that serialises what :meth:`Nic.poll_transmit` hands it, and the frames
that arrive.  The frames carry the fields of the wire's typed frames, and what the
simulator's switches need on each: the index of the next hop on the route and the port it
arrived on (:class:`SimFrame`).
"""

from __future__ import annotations


from ..wire import frames as W
from ..units import BIT_NS
from .fabric import FabricFrame, Port


def _fields(*kinds) -> tuple:
    """The slots of the wire's frame classes ``kinds`` that FabricFrame does not have."""
    return tuple(dict.fromkeys(slot for cls in kinds for base in reversed(cls.__mro__)
                               for slot in getattr(base, "__slots__", ())
                               if slot not in FabricFrame.__slots__))


class SimFrame(FabricFrame):
    """The simulator's data, ACK, NACK and CNP frames, whatever their kind: the fields of
    those typed frames of :mod:`fabriclab.wire.frames` (set as that class's ``__init__``
    sets them), the ``kind``, and what the switches need: ``hop``, the index of the next
    egress port on its route, and ``in_port``, the port it arrived on.

    One class for these kinds because the switches read the same few fields of every frame
    they forward: with one class per kind, those attribute reads see several types and the
    interpreter's attribute caches miss (measured: the demo's DCQCN run 4.5 % slower).  GSE's
    rarer REQUEST and GRANT frames have a class of their own (:class:`SimGseFrame`), so that
    this one stays small: every frame's slots are zeroed when it is made."""

    __slots__ = _fields(W.Data, W.Ack, W.Nack, W.Cnp)


class SimGseFrame(FabricFrame):
    """GSE's REQUEST and GRANT frames in the simulator (see :class:`SimFrame`)."""

    __slots__ = _fields(W.GseRequest, W.GseGrant)


def _maker(cls, sim_cls=SimFrame):
    """A constructor with ``cls``'s signature that makes a ``sim_cls`` frame of its kind."""
    init, kind, new = cls.__init__, cls.kind, sim_cls.__new__

    def make(*args):
        frame = new(sim_cls)
        frame.kind = kind
        init(frame, *args)
        return frame
    make.__name__ = make.__qualname__ = f"Sim{cls.__name__}"
    make.__doc__ = f"A {sim_cls.__name__} of kind {kind!r}, made as {cls.__name__}(...) is."
    return make


_new = SimFrame.__new__
_DATA, _ACK = W.Data.kind, W.Ack.kind


def _data(flow, psn, payload, size, prio, ackreq=False, ints=None, tag=None) -> SimFrame:
    """W.Data(...) as a SimFrame, written out: the NIC makes one per data packet (the
    generic maker's extra call cost 2 % of a DCQCN run; tests/test_sim_frames.py checks that
    it sets what W.Data sets)."""
    f = _new(SimFrame)
    f.kind, f.flow, f.psn = _DATA, flow, psn
    f.payload, f.size, f.prio = payload, size, prio
    f.ackreq, f.ecn, f.ints = ackreq, 0, ints
    f.tag = tag
    return f


def _ack(flow, psn, size, prio, ints=None, sack=None) -> SimFrame:
    """W.Ack(...) as a SimFrame, written out: one per data packet acknowledged."""
    f = _new(SimFrame)
    f.kind, f.flow, f.psn = _ACK, flow, psn
    f.size, f.prio = size, prio
    f.ints, f.sack = ints, sack
    return f


class SimFrames:
    """The frame constructors a NIC (and a GSP) uses in the simulator."""

    Data, Ack, Nack, Cnp = _data, _ack, _maker(W.Nack), _maker(W.Cnp)
    GseRequest, GseGrant = _maker(W.GseRequest, SimGseFrame), _maker(W.GseGrant, SimGseFrame)


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
        # onto the wire as SwitchPort._send puts it (inline: once per frame a host sends)
        num = pkt.size * BIT_NS + self.rem
        ser = num // self.rate
        self.rem = num - ser * self.rate
        t = now + ser
        self.busy_until = t
        self.tx_bytes += pkt.size
        self.tx_pkts += 1
        pkt.in_port = self.peer
        loop = self.loop
        loop.push(t + self.delay, self.peer_recv, pkt)
        self.net.in_flight += 1
        if nic.ctrl or nic.active:
            self.tx_pending = True
            loop.push(t, self.send_ev, None)

    def wake_later(self, t: int, now: int) -> None:
        """The NIC has nothing sendable before ``t`` (pacing): try again then."""
        if self.wake_at is None or t < self.wake_at or self.wake_at <= now:
            self.wake_at = t
            self.loop.push(t, self.wake, t)

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
