"""Typed frames: what NICs, switches, GSPs and GSOS exchange, engine-neutral.

One class per frame kind, each with its own fields (no layout that changes with the kind).
The NIC (:mod:`fabriclab.nic`) creates them, an engine moves them: the simulator as Python
objects through its switches (its subclasses add the route a frame follows), the Mininet
engine as bytes on real sockets (:mod:`fabriclab.wire.roce` encodes and decodes them, and
:mod:`fabriclab.wire.layers` dissects captures in scapy).

Sequence numbers are packet numbers (PSN): packet ``psn`` of a flow carries payload bytes
``psn * mtu`` up to ``(psn + 1) * mtu``, so every packet but a message's last is full.
``size`` is the frame's length on the wire, headers included, in bytes.

``flow`` is the flow the frame belongs to: any object with ``id``, ``src`` and ``dst``
(the workload's :class:`~fabriclab.workloads.FlowDef`); ``None`` for GSE's control frames.
GSE identifies GSPs and destination ports by ids: host indices on the wire (``h3`` -> 3),
any hashable id inside the simulator (a leaf's name when the GSP sits in the leaf).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple


class ContainerTag(NamedTuple):
    """GSE: the packet container a data packet belongs to (white paper §3.2.2, PKTC)."""

    src_gsp: object  # the sending GSP's id
    seq: int  # the container's sequence number, per (source GSP, destination port)
    index: int  # the packet's index in the container
    last: bool  # the container's last packet
    path: int  # the equal-cost path the container takes


#: ``new_tag((src_gsp, seq, index, last, path))``: a ContainerTag made without the Python
#: call a NamedTuple's constructor costs (once per data packet under GSE)
new_tag = partial(tuple.__new__, ContainerTag)


class Frame:
    """The fields every frame has.  ``route`` is the engine's handle for the way the frame
    goes (the simulator's route of egress ports), set by whoever sends it."""

    __slots__ = ("flow", "size", "prio", "route")
    kind = "frame"

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k, None)!r}" for c in type(self).__mro__
                           for k in getattr(c, "__slots__", ()) if k not in ("flow", "route"))
        fid = getattr(getattr(self, "flow", None), "id", None)
        return f"{type(self).__name__}(flow={fid}, {fields})"


class Data(Frame):
    """A data packet.  ``ackreq``: the receiver must acknowledge it at once; ``ecn``: 1 once
    a switch marked it CE; ``ints``: the INT records switches appended (HPCC), a list, or
    None when the flow carries no INT; ``tag``: its GSE container, or None."""

    __slots__ = ("psn", "payload", "ackreq", "ecn", "ints", "tag")
    kind = "data"

    def __init__(self, flow, psn: int, payload: int, size: int, prio: int,
                 ackreq: bool = False, ints=None, tag: ContainerTag | None = None):
        self.flow = flow
        self.psn = psn
        self.payload = payload
        self.size = size
        self.prio = prio
        self.ackreq = ackreq
        self.ecn = 0
        self.ints = ints
        self.tag = tag


class Ack(Frame):
    """A cumulative acknowledgement: every packet before ``psn`` arrived.  ``ints``: the INT
    records of the data packet it answers (HPCC), echoed; ``sack``: with selective repeat,
    the psn of the out-of-order packet that triggered it (else None)."""

    __slots__ = ("psn", "ints", "sack")
    kind = "ack"

    def __init__(self, flow, psn: int, size: int, prio: int, ints=None, sack: int | None = None):
        self.flow = flow
        self.psn = psn
        self.size = size
        self.prio = prio
        self.ints = ints
        self.sack = sack


class Nack(Frame):
    """A sequence error: the receiver expects ``psn`` next.  Go-back-N resends from there;
    selective repeat (``sack``: the psn that arrived instead) resends only what is missing."""

    __slots__ = ("psn", "sack")
    kind = "nack"

    def __init__(self, flow, psn: int, size: int, prio: int, sack: int | None = None):
        self.flow = flow
        self.psn = psn
        self.size = size
        self.prio = prio
        self.sack = sack


class Cnp(Frame):
    """A congestion notification (RoCEv2 CNP): the receiver saw CE-marked data (DCQCN)."""

    __slots__ = ()
    kind = "cnp"

    def __init__(self, flow, size: int, prio: int):
        self.flow = flow
        self.size = size
        self.prio = prio


class GseRequest(Frame):
    """GSE: GSP ``src_gsp`` asks for one grant per entry of ``sizes`` (payload bytes)
    towards destination port ``dst_port``.  An empty ``sizes`` is a probe (is GSOS alive?)."""

    __slots__ = ("src_gsp", "dst_port", "sizes")
    kind = "gse_request"

    def __init__(self, src_gsp: int, dst_port: int, sizes: list[int], size: int, prio: int):
        self.flow = None
        self.src_gsp = src_gsp
        self.dst_port = dst_port
        self.sizes = sizes
        self.size = size
        self.prio = prio


class GseGrant(Frame):
    """GSE: ``nbytes`` of payload credit for GSP ``src_gsp`` towards ``dst_port``; ``path``
    is the path its container takes (GSOS chooses it; None: the GSP sprays); ``idle``: no
    other source was waiting for the port (the lease of the unscheduled first window).  A
    grant of 0 bytes is GSOS's receipt for a REQUEST (proof that it is alive)."""

    __slots__ = ("src_gsp", "dst_port", "nbytes", "path", "idle")
    kind = "gse_grant"

    def __init__(self, src_gsp: int, dst_port: int, nbytes: int, path: int | None, size: int,
                 prio: int, idle: bool = False):
        self.flow = None
        self.src_gsp = src_gsp
        self.dst_port = dst_port
        self.nbytes = nbytes
        self.path = path
        self.size = size
        self.prio = prio
        self.idle = idle


FRAME_TYPES = (Data, Ack, Nack, Cnp, GseRequest, GseGrant)
