"""scapy layers for fabriclab's extensions to RoCEv2, so that captures dissect in full.

RoCEv2 itself is scapy's (``scapy.contrib.roce``: ``BTH``, ``AETH``, ``CNPPadding``); this
module adds, as declarations, what :mod:`fabriclab.wire.roce` puts on the wire around them:

* :class:`IntArea` of :class:`IntRecord` (HPCC's in-band telemetry), after the BTH of a
  data frame and after the AETH (and SACK) of the ACK that echoes it;
* :class:`GseTag`, the GSE container tag after the BTH of a GSP's data frame;
* :class:`Sack`, the selectively acknowledged psn after the AETH of an ACK or NACK;
* :class:`GseRequest` and :class:`GseGrant`, GSE's control datagrams on UDP 4792 and 4793
  (:class:`GseControl` tells them apart by their first byte).

So ``Ether(raw_bytes)`` of a captured frame gives, for instance,
``Ether/IP/UDP/ExtBTH/IntArea/Raw``, ``Ether/IP/UDP/ExtBTH/ExtAETH/Sack/IntArea`` or
``Ether/IP/UDP/GseRequest``.

The extensions are flagged in reserved bits of BTH byte 8 (scapy's ``resv7``), which
scapy's ``BTH`` does not look at, and an ACK's extensions sit behind the AETH, whose
``guess_payload_class`` cannot see the BTH's fields.  Rather than patch scapy's classes,
this module re-points the dissection of UDP port 4791 (``split_bottom_up`` +
``bind_bottom_up``) from ``BTH`` to :class:`ExtBTH`, a ``BTH`` subclass that follows the
flags (and :class:`ExtAETH` after it).  Both set ``match_subclass``, so ``p[BTH]``,
``p.haslayer(AETH)`` and ``BTH in p`` keep working for any other user of scapy in the
process, and a frame without fabriclab's flags dissects to the same layers as before
(only the BTH's class is the subclass).  Building is untouched: ``UDP()/BTH()`` still gets
port 4791.  The effect starts when this module is first imported.

:func:`scapy_frame` builds any typed frame as these layers; ``tests/test_wire.py`` checks
that its bytes are :func:`fabriclab.wire.roce.encode_frame`'s.
"""

from __future__ import annotations

from scapy.contrib.roce import AETH, BTH, CNPPadding
from scapy.fields import (ByteField, FieldLenField, FieldListField, FlagsField, IntField,
                          LongField, PacketListField, ShortField, StrLenField,
                          ThreeBytesField)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw, bind_bottom_up, bind_top_down, split_bottom_up

from . import roce as R


class _Extension:
    """A layer in one of the extension chains (``_CHAINS``): what follows it is the next
    extension the BTH flags (else scapy's usual guess: Raw, or nothing)."""

    __slots__ = ()

    def guess_payload_class(self, payload):
        bth = self.underlayer
        while bth is not None and not isinstance(bth, BTH):
            bth = bth.underlayer
        nxt = None if bth is None else _next_extension(bth, self)
        return nxt or super().guess_payload_class(payload)


def _next_extension(bth, layer):
    """The extension after ``layer`` in the chain of ``bth``'s frame that ``bth`` flags."""
    chain = _CHAINS.get(bth.opcode, ())
    after = next((i + 1 for i, (_, cls) in enumerate(chain) if isinstance(layer, cls)), 0)
    return next((cls for flag, cls in chain[after:] if bth.resv7 & flag), None)


class IntRecord(Packet):
    """One switch port's INT record (HPCC): when the frame entered the port, the port's byte
    counter (mod 2^32), its queue then, and its rate."""

    name = "INT record"
    fields_desc = [LongField("ts_ns", 0), IntField("tx_bytes", 0), IntField("qlen_bytes", 0),
                   IntField("rate_kbps", 0)]

    def extract_padding(self, s):
        return b"", s  # a record ends where its fields do: the next record follows


class IntArea(_Extension, Packet):
    """HPCC's INT area: ``hops`` records written so far, room for ``max_hops``.  The room
    not yet written is ``unused`` (zeros); building pads it."""

    name = "INT area"
    fields_desc = [
        FieldLenField("hops", None, fmt="B", count_of="records"),
        ByteField("max_hops", R.INT_MAX_HOPS),
        ShortField("reserved", 0),
        PacketListField("records", [], IntRecord,
                        count_from=lambda p: min(p.hops, p.max_hops)),
        StrLenField("unused", b"",
                    length_from=lambda p: (p.max_hops - min(p.hops, p.max_hops))
                    * R.INT_RECORD.size),
    ]

    def post_build(self, p, pay):
        room = R.INT_HEADER.size + self.max_hops * R.INT_RECORD.size
        return p + bytes(max(0, room - len(p))) + pay


class GseTag(_Extension, Packet):
    """GSE: the packet container a data frame belongs to (white paper §3.2.2, PKTC)."""

    name = "GSE container tag"
    fields_desc = [ShortField("src_gsp", 0), ShortField("dst_port", 0), IntField("seq", 0),
                   ShortField("index", 0), FlagsField("flags", 0, 8, ["last"]),
                   ByteField("path", 0)]


class Sack(_Extension, Packet):
    """Selective repeat (IRN): the psn of the out-of-order packet an ACK or NACK answers."""

    name = "SACK"
    fields_desc = [ByteField("reserved", 0), ThreeBytesField("psn", 0)]


class ExtAETH(_Extension, AETH):
    """scapy's AETH, followed by the SACK and the INT area its BTH flags."""

    name = "AETH"
    match_subclass = True


# The extensions each kind of frame may carry, in their order on the wire, with their flag.
_CHAINS = {
    R.OP_SEND_ONLY: ((R.INT_FLAG, IntArea), (R.GSE_FLAG, GseTag)),  # after the BTH
    R.OP_ACK: ((R.SACK_FLAG, Sack), (R.INT_FLAG, IntArea)),  # after the AETH
}
_ACK_FLAGS = R.SACK_FLAG | R.INT_FLAG


class ExtBTH(BTH):
    """scapy's BTH, followed by what fabriclab's flags in ``resv7`` say comes next."""

    name = "BTH"
    match_subclass = True

    def guess_payload_class(self, payload):
        if self.opcode == R.OP_ACK:  # the ACK's extensions follow the AETH
            nxt = ExtAETH if self.resv7 & _ACK_FLAGS else None
        else:
            nxt = _next_extension(self, self) if self.resv7 else None
        return nxt or super().guess_payload_class(payload)


class GseRequest(Packet):
    """GSE REQUEST: GSP ``src_gsp`` asks for one grant per entry of ``sizes`` (bytes)
    towards port ``dst_port``; no sizes: a probe."""

    name = "GSE REQUEST"
    fields_desc = [ByteField("type", R.GSE_REQUEST),
                   FieldLenField("n", None, fmt="B", count_of="sizes"),
                   ShortField("src_gsp", 0), ShortField("dst_port", 0), ShortField("reserved", 0),
                   FieldListField("sizes", [], IntField("size", 0), count_from=lambda p: p.n)]


class GseGrant(Packet):
    """GSE GRANT: ``nbytes`` of credit for GSP ``src_gsp`` towards ``dst_port`` on ``path``
    (``NO_PATH``: the GSP sprays); 0 bytes: GSOS's receipt for a REQUEST.  Flag ``idle``: no
    other source was waiting for the port."""

    name = "GSE GRANT"
    fields_desc = [ByteField("type", R.GSE_GRANT), ByteField("path", R.NO_PATH),
                   ShortField("src_gsp", 0), ShortField("dst_port", 0),
                   FlagsField("flags", 0, 16, ["idle"]), IntField("nbytes", 0)]


class GseControl(Packet):
    """What dissects GSE's UDP ports: a :class:`GseRequest` or a :class:`GseGrant`, by the
    type in the first byte.  Never a layer of its own."""

    name = "GSE control"

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if _pkt and _pkt[0] == R.GSE_GRANT:
            return GseGrant
        return GseRequest


split_bottom_up(UDP, BTH, dport=R.ROCE_PORT)
bind_bottom_up(UDP, ExtBTH, dport=R.ROCE_PORT)
for _port in (R.GSE_PORT, R.GSE_EGRESS_PORT):
    bind_bottom_up(UDP, GseControl, dport=_port)
    bind_bottom_up(UDP, GseControl, sport=_port)
bind_top_down(UDP, GseRequest, dport=R.GSE_PORT)
bind_top_down(UDP, GseGrant, sport=R.GSE_PORT, dport=R.GSE_PORT)


def scapy_frame(frame) -> Packet:
    """A typed frame (:mod:`fabriclab.wire.frames`) as scapy layers: the UDP payload, the
    same bytes as :func:`~fabriclab.wire.roce.encode_frame` (ICRC zero).  Put it under
    ``Ether()/IP()/UDP(dport=...)`` to make a whole frame."""
    kind = frame.kind
    if kind == "gse_request":
        return GseRequest(src_gsp=frame.src_gsp, dst_port=frame.dst_port, sizes=list(frame.sizes))
    if kind == "gse_grant":
        return GseGrant(src_gsp=frame.src_gsp, dst_port=frame.dst_port, nbytes=frame.nbytes,
                        path=R.NO_PATH if frame.path is None else frame.path,
                        flags=R.GSE_GRANT_IDLE if frame.idle else 0)
    fid = frame.flow.id
    if kind == "cnp":
        return ExtBTH(opcode=R.OP_CNP, becn=1, dqpn=R.qpn(fid), icrc=0) / CNPPadding()
    if kind == "data":
        return _data_layers(frame, fid)
    if kind in ("ack", "nack"):
        ints = frame.ints if kind == "ack" else None
        flags = (0 if frame.sack is None else R.SACK_FLAG) | (0 if ints is None else R.INT_FLAG)
        p = ExtBTH(opcode=R.OP_ACK, dqpn=R.qpn(fid), psn=frame.psn, resv7=flags, icrc=0) / ExtAETH(
            syndrome=R.AETH_ACK if kind == "ack" else R.AETH_NAK_SEQ, msn=0)
        if frame.sack is not None:
            p /= Sack(psn=frame.sack)
        return p / _int_area(ints) if ints is not None else p
    raise ValueError(f"no wire encoding for frame kind {kind!r}")


def _data_layers(frame, fid: int) -> Packet:
    ints, tag = frame.ints, frame.tag
    flags = (0 if ints is None else R.INT_FLAG) | (0 if tag is None else R.GSE_FLAG)
    p = ExtBTH(opcode=R.OP_SEND_ONLY, dqpn=R.qpn(fid), psn=frame.psn, ackreq=int(frame.ackreq),
               resv7=flags, icrc=0)
    if ints is not None:
        p /= _int_area(ints)
    if tag is not None:
        p /= GseTag(src_gsp=R.wire_id(tag.src_gsp), dst_port=R.wire_id(frame.flow.dst),
                    seq=tag.seq, index=tag.index, flags=int(tag.last), path=tag.path)
    return p / Raw(bytes(frame.payload)) if frame.payload else p


def _int_area(records) -> IntArea:
    return IntArea(records=[IntRecord(ts_ns=ts, tx_bytes=tx, qlen_bytes=q, rate_kbps=r)
                            for ts, tx, q, r in records])
