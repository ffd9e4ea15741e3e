"""RoCEv2 on real packets: the bytes of every frame fabriclab sends, and their fast codecs.

The headers are RoCEv2's (scapy: ``scapy.contrib.roce``'s ``BTH``, ``AETH``, ``CNPPadding``
on UDP port 4791; fabriclab's extensions are layers in :mod:`fabriclab.wire.layers`), so
captures dissect in scapy and Wireshark.  The host agents send through UDP sockets (the
kernel adds Ethernet, IPv4 with ECT(0) and UDP), so what is defined here is the UDP payload:

====== ========================================================================
data   BTH(opcode RC SEND_ONLY 0x04, dqpn = QPN_BASE + flow id, psn = packet number,
       ackreq on packets the receiver must acknowledge) + [INT area | GSE tag]
       + payload (zeros) + ICRC
ack    BTH(opcode RC ACKNOWLEDGE 0x11, dqpn = QPN_BASE + flow id, psn = next expected)
       + AETH(syndrome 0x00 = ACK, msn = 0) + [SACK] + [INT area, echoed] + ICRC
nack   the same with AETH syndrome 0x60 (NAK: PSN sequence error): the receiver expects
       psn next; + [SACK]
cnp    BTH(opcode 0x81 CNP, becn = 1, dqpn = QPN_BASE + flow id) + 16 reserved + ICRC
====== ========================================================================

The bracketed extensions are flagged in BTH byte 8, in reserved bits next to AckReq
(scapy's ``resv7``): ``INT_FLAG`` (bit 0), ``GSE_FLAG`` (bit 1), ``SACK_FLAG`` (bit 2).
A RoCE NIC ignores them; to Wireshark they are payload.  GSE's REQUEST and GRANT are plain
UDP datagrams (ports 4792, 4793), below.

Differences from a RoCE NIC, on purpose: the ICRC is sent as zero (nothing in the
emulator checks it, and the kernel picks the IP identification it covers); the PSN of an
ACK is the next expected one (IB puts the last acknowledged), which makes the cumulative
acknowledgement explicit.

Two interfaces on the same layout.  :func:`encode_frame` / :func:`decode_frame` translate
the typed frames of :mod:`fabriclab.wire.frames`; :class:`DataHeader`, :func:`encode`,
:func:`decode` and the ``parse_*`` helpers work on bytes with ``struct`` alone, for the
agents' hot path and the eBPF tests.  ``tests/test_wire.py`` checks both against the scapy
layers field by field.  This module imports no scapy: the agents never load it.
"""

from __future__ import annotations

import struct

from .frames import Ack, Cnp, ContainerTag, Data, GseGrant, GseRequest, Nack

ROCE_PORT = 4791
OP_SEND_ONLY = 0x04
OP_ACK = 0x11
OP_CNP = 0x81
AETH_ACK = 0x00
AETH_NAK_SEQ = 0x60

BTH_LEN = 12
AETH_LEN = 4
ICRC_LEN = 4
CNP_PAD_LEN = 16
# Ethernet + IPv4 + UDP headers the kernel adds to every datagram (no FCS on a veth).
L2_L4_BYTES = 14 + 20 + 8
#: bytes on the wire besides the payload of a data packet
DATA_OVERHEAD = L2_L4_BYTES + BTH_LEN + ICRC_LEN

# opcode | se, m, padcount, version | pkey | fecn, becn, resv6, dqpn | ackreq, resv7, psn
_BTH = struct.Struct("!BBHII")
_BTH_WORDS = struct.Struct("!B3xII")  # what a receiver reads: opcode, dqpn word, psn word
_AETH = struct.Struct("!I")
_U32 = struct.Struct("!I")
_ICRC = b"\0\0\0\0"
_CNP_TAIL = bytes(CNP_PAD_LEN) + _ICRC
PKEY = 0xFFFF
PSN_MASK = 0xFFFFFF  # PSNs and QP numbers are 24 bits
#: flow i travels on destination QP QPN_BASE + i: InfiniBand reserves QP0 and QP1 for
#: management (Wireshark dissects their payload as MADs), so no flow may use them
QPN_BASE = 0x100


def qpn(flow_id: int) -> int:
    """The destination QP number a flow's frames carry."""
    return (flow_id + QPN_BASE) & PSN_MASK


def flow_id_of(dqpn: int) -> int:
    """The flow id a destination QP number stands for (:func:`qpn` inverted)."""
    return (dqpn - QPN_BASE) & PSN_MASK

KINDS = ("data", "ack", "nack", "cnp")


def _bth(opcode: int, dqpn: int, psn: int, ackreq: bool = False, becn: bool = False,
         flags: int = 0) -> bytes:
    return _BTH.pack(opcode, 0, PKEY, (becn << 30) | qpn(dqpn),
                     (ackreq << 31) | (flags << 24) | (psn & PSN_MASK))


def _aeth_frame(syndrome: int, flow_id: int, psn: int, sack: int | None, ext: bytes,
                flags: int) -> bytes:
    """An ACK or NAK: BTH + AETH + [SACK] + ``ext`` (an INT area, flagged in ``flags``)."""
    if sack is None:
        return _bth(OP_ACK, flow_id, psn, flags=flags) + _AETH.pack(syndrome << 24) + ext + _ICRC
    return (_bth(OP_ACK, flow_id, psn, flags=flags | SACK_FLAG) + _AETH.pack(syndrome << 24)
            + _U32.pack(sack & PSN_MASK) + ext + _ICRC)


def encode(kind: str, flow_id: int, psn: int, payload: bytes = b"", ackreq: bool = False,
           ext: bytes = b"", flags: int = 0, sack: int | None = None) -> bytes:
    """The UDP payload of one frame of ``kind``; ``ext`` (an INT area or a GSE tag, flagged
    by ``flags`` in BTH byte 8) goes right after the BTH (after the AETH and the SACK on
    ACKs); ``sack`` (ACK, NACK): the psn that triggered it (selective repeat)."""
    if kind == "data":
        return _bth(OP_SEND_ONLY, flow_id, psn, ackreq, flags=flags) + ext + payload + _ICRC
    if kind == "ack":
        return _aeth_frame(AETH_ACK, flow_id, psn, sack, ext, flags)
    if kind == "nack":
        return _aeth_frame(AETH_NAK_SEQ, flow_id, psn, sack, b"", 0)
    if kind == "cnp":
        return _bth(OP_CNP, flow_id, 0, becn=True) + _CNP_TAIL
    raise ValueError(f"unknown frame kind {kind!r}; known: {', '.join(KINDS)}")


class DataHeader:
    """Pre-built BTH of one flow's data packets: only the psn and ackreq bits change."""

    __slots__ = ("_prefix",)

    def __init__(self, flow_id: int):
        self._prefix = _BTH.pack(OP_SEND_ONLY, 0, PKEY, qpn(flow_id), 0)[:8]

    def frame(self, psn: int, payload: bytes, ackreq: bool, ext: bytes = b"",
              flags: int = 0) -> bytes:
        word = (ackreq << 31) | (flags << 24) | (psn & PSN_MASK)
        return self._prefix + word.to_bytes(4, "big") + ext + payload + _ICRC


def decode(buf: bytes) -> tuple[str, int, int, int]:
    """(kind, flow id, psn, payload bytes) of a UDP payload; kind 'other' if not ours.
    The SACK of an ACK or NACK: :func:`parse_sack`; everything at once: :func:`decode_frame`."""
    if len(buf) < BTH_LEN + ICRC_LEN:
        return "other", 0, 0, 0
    opcode, _, _, w2, w3 = _BTH.unpack_from(buf)
    dqpn = flow_id_of(w2 & PSN_MASK)
    psn = w3 & PSN_MASK
    if opcode == OP_SEND_ONLY:
        return "data", dqpn, psn, len(buf) - BTH_LEN - ICRC_LEN - ext_len(buf)
    if opcode == OP_ACK and len(buf) >= BTH_LEN + AETH_LEN:
        syndrome = buf[BTH_LEN]
        return ("nack" if syndrome & 0x60 == 0x60 else "ack"), dqpn, psn, 0
    if opcode == OP_CNP:
        return "cnp", dqpn, 0, 0
    return "other", dqpn, psn, 0


def ext_len(buf) -> int:
    """Bytes of INT area or GSE tag after the BTH of a data frame, from the flags in BTH
    byte 8."""
    f = buf[8]
    return (INT_AREA_LEN if f & INT_FLAG else 0) + (GSE_TAG.size if f & GSE_FLAG else 0)


def ackreq(buf: bytes) -> bool:
    return bool(buf[8] & 0x80)


# --------------------------------------------------------------------------- HPCC: INT
# A data frame (and the ACK that echoes it) may carry an INT area right after the BTH
# (after the AETH and the SACK on an ACK): flagged by bit 0 of BTH byte 8 (a reserved bit
# next to AckReq).  Each switch egress port's eBPF program appends one record while there is
# room (fabriclab/emu/bpf/port.c mirrors this layout).  The agents send these frames with
# UDP checksum 0 (SO_NO_CHECK), so the program can write into them without fixing a sum.
#
#   INT area: u8 hops | u8 max_hops | u16 reserved | max_hops x record
#   record:   u64 ts_ns (CLOCK_MONOTONIC) | u32 tx_bytes (port counter, mod 2^32)
#             | u32 qlen_bytes | u32 rate_kbps                              (20 bytes)
#
# In typed frames a record is that tuple, (ts_ns, tx_bytes, qlen_bytes, rate_kbps), as on
# the wire: turning it into fabric units is the receiving adapter's job.
INT_FLAG = 0x01  # in BTH byte 8
INT_MAX_HOPS = 5
INT_RECORD = struct.Struct("!QIII")
INT_HEADER = struct.Struct("!BBH")
INT_AREA_LEN = INT_HEADER.size + INT_MAX_HOPS * INT_RECORD.size  # 104
#: offset of the INT area in the UDP payload of a data frame (what the eBPF program writes at)
INT_OFFSET = BTH_LEN


def int_area(records=(), max_hops: int = INT_MAX_HOPS) -> bytes:
    """An INT area holding ``records`` [(ts_ns, tx_bytes, qlen_bytes, rate_kbps)], padded."""
    body = b"".join(INT_RECORD.pack(*r) for r in records)
    return (INT_HEADER.pack(len(records), max_hops, 0) + body
            + bytes((max_hops - len(records)) * INT_RECORD.size))


def parse_int(buf, offset: int = INT_OFFSET) -> list[tuple[int, int, int, int]]:
    """The INT records in a UDP payload whose INT area starts at ``offset``."""
    base = offset + INT_HEADER.size
    end = base + min(buf[offset], buf[offset + 1]) * INT_RECORD.size  # hops, max_hops
    if end > len(buf):
        raise struct.error("INT area cut short")
    return list(INT_RECORD.iter_unpack(buf[base:end]))


def has_int(buf) -> bool:
    return len(buf) > 8 and bool(buf[8] & INT_FLAG)


# --------------------------------------------------------------------------- selective repeat
# With selective repeat (IRN) an ACK or NACK names the out-of-order packet that triggered it:
# a u32 right after the AETH (24 bits used, like every PSN), flagged by bit 2 of BTH byte 8.
SACK_FLAG = 0x04  # in BTH byte 8
SACK_LEN = 4
SACK_OFFSET = BTH_LEN + AETH_LEN


def parse_sack(buf) -> int | None:
    """The SACK psn of an ACK or NACK, or None if it carries none."""
    if len(buf) >= SACK_OFFSET + SACK_LEN and buf[8] & SACK_FLAG:
        return _U32.unpack_from(buf, SACK_OFFSET)[0] & PSN_MASK
    return None


# --------------------------------------------------------------------------- GSE
# Data frames of a GSP carry a container tag right after the BTH, flagged by bit 1 of BTH
# byte 8.  The container's path is also written in the IP header's DSCP (path + 1), which is
# what the leaf switches match to pick the uplink (ECN bits untouched).
#
#   tag: u16 src_gsp | u16 dst_port | u32 container seq | u16 index | u8 flags (1 = last)
#        | u8 path                                                           (12 bytes)
GSE_FLAG = 0x02  # in BTH byte 8
GSE_TAG = struct.Struct("!HHIHBB")
GSE_TAG_OFFSET = BTH_LEN
GSE_LAST = 0x01  # in the tag's flags

# REQUEST and GRANT travel as UDP datagrams (not RoCE).  In central mode a GSP sends its
# REQUEST to the destination's IP, port 4792; the leaf punts it to the controller (GSOS),
# which answers with a GRANT packet-out from GSOS_IP/GSOS_MAC to the GSP's port 4792.  In
# egress mode (or when GSOS does not answer) the REQUEST goes to the destination agent's
# port 4793, which grants back to the GSP's port 4793.
#
#   REQUEST: u8 type=1 | u8 n | u16 src_gsp | u16 dst_port | u16 reserved | n x u32 bytes
#   GRANT:   u8 type=2 | u8 path (0xff: none) | u16 src_gsp (grantee) | u16 dst_port
#            | u16 flags (0x0001 idle: no other source was waiting for the port) | u32 bytes
GSE_PORT = 4792  # GRANTs to GSPs, and REQUESTs to GSOS (punted by the leaf)
GSE_EGRESS_PORT = 4793  # REQUESTs to a destination's own scheduler (never punted)
GSE_REQUEST = 1
GSE_GRANT = 2
NO_PATH = 0xFF
GSOS_IP = "10.255.255.254"
GSOS_MAC = "02:00:00:00:ff:fe"
GSE_CONTROL_HEADER = struct.Struct("!BBHHH")  # type | n or path | src_gsp | dst_port | flags
GSE_GRANT_IDLE = 0x0001  # in a GRANT's flags


def gse_tag(src_gsp: int, dst_port: int, seq: int, index: int, last: bool, path: int) -> bytes:
    return GSE_TAG.pack(src_gsp, dst_port, seq & 0xFFFFFFFF, index, GSE_LAST if last else 0,
                        path)


def parse_gse_tag(buf, offset: int = GSE_TAG_OFFSET):
    """(src_gsp, dst_port, seq, index, last, path) of a tagged data frame."""
    src, dst, seq, index, flags, path = GSE_TAG.unpack_from(buf, offset)
    return src, dst, seq, index, bool(flags & GSE_LAST), path


def has_gse_tag(buf) -> bool:
    return len(buf) > 8 and bool(buf[8] & GSE_FLAG)


def gse_request(src_gsp: int, dst_port: int, sizes: list[int]) -> bytes:
    return GSE_CONTROL_HEADER.pack(GSE_REQUEST, len(sizes), src_gsp, dst_port, 0) + b"".join(
        _U32.pack(n) for n in sizes)


def gse_grant(src_gsp: int, dst_port: int, nbytes: int, path: int | None,
              idle: bool = False) -> bytes:
    return GSE_CONTROL_HEADER.pack(GSE_GRANT, NO_PATH if path is None else path, src_gsp,
                                   dst_port, GSE_GRANT_IDLE if idle else 0) + _U32.pack(nbytes)


def parse_gse_control(buf):
    """('request', src_gsp, dst_port, [bytes...]) or ('grant', src_gsp, dst_port, bytes,
    path or None, idle); None if not a GSE control datagram."""
    if len(buf) < GSE_CONTROL_HEADER.size:
        return None
    typ, b1, src, dst, flags = GSE_CONTROL_HEADER.unpack_from(buf)
    body = buf[GSE_CONTROL_HEADER.size:]
    if typ == GSE_REQUEST and len(body) >= 4 * b1:
        return ("request", src, dst, [int.from_bytes(body[4 * i:4 * i + 4], "big")
                                      for i in range(b1)])
    if typ == GSE_GRANT and len(body) >= 4:
        return ("grant", src, dst, int.from_bytes(body[:4], "big"),
                None if b1 == NO_PATH else b1, bool(flags & GSE_GRANT_IDLE))
    return None


def wire_id(x) -> int:
    """A GSP or port id as the wire carries it: a host index (``"h3"`` -> 3, the topology's
    host naming) or an int as it is."""
    return x if isinstance(x, int) else int(x[1:])


# --------------------------------------------------------------------------- typed frames
# The flags as bits of the BTH's last word (ackreq | resv7 | psn).
_INT_BIT, _GSE_BIT, _SACK_BIT = INT_FLAG << 24, GSE_FLAG << 24, SACK_FLAG << 24
_DATA_EXT_BITS = _INT_BIT | _GSE_BIT


def encode_frame(frame, ext: bytes = b"") -> bytes:
    """The UDP payload of a typed frame (:mod:`fabriclab.wire.frames`).

    A data frame carries an INT area if ``frame.ints`` is not None (its records, padded to
    ``INT_MAX_HOPS``), a GSE tag if ``frame.tag`` is not None (its destination port is the
    flow's destination host), and ``frame.payload`` zero bytes.  An ACK echoes
    ``frame.ints`` likewise.  ``ext``, if given, is sent as the extension bytes instead of
    encoding ``ints`` / ``tag`` (an agent keeps one empty INT area for all its frames); the
    flags still come from the frame.  ``frame.size`` and ``frame.prio`` are not encoded: the
    size is what this returns plus ``L2_L4_BYTES``, the priority is the IP header's."""
    kind = frame.kind
    if kind == "data":
        return _encode_data(frame, ext)
    if kind == "ack":
        ints = frame.ints
        if ints is None:
            if ext:
                raise ValueError("extension bytes on an ACK that echoes no INT records")
            return _aeth_frame(AETH_ACK, frame.flow.id, frame.psn, frame.sack, b"", 0)
        return _aeth_frame(AETH_ACK, frame.flow.id, frame.psn, frame.sack,
                           ext or int_area(ints), INT_FLAG)
    if kind == "nack":
        return _aeth_frame(AETH_NAK_SEQ, frame.flow.id, frame.psn, frame.sack, b"", 0)
    if kind == "cnp":
        return _bth(OP_CNP, frame.flow.id, 0, becn=True) + _CNP_TAIL
    if kind == "gse_request":
        return gse_request(frame.src_gsp, frame.dst_port, frame.sizes)
    if kind == "gse_grant":
        return gse_grant(frame.src_gsp, frame.dst_port, frame.nbytes, frame.path, frame.idle)
    raise ValueError(f"no wire encoding for frame kind {kind!r}")


def _encode_data(frame, ext: bytes) -> bytes:
    ints, tag = frame.ints, frame.tag
    flags = (0 if ints is None else INT_FLAG) | (0 if tag is None else GSE_FLAG)
    if not ext:
        if ints is not None:
            ext = int_area(ints)
        if tag is not None:
            ext += gse_tag(wire_id(tag.src_gsp), wire_id(frame.flow.dst), tag.seq, tag.index,
                           tag.last, tag.path)
    elif not flags:
        raise ValueError("extension bytes on a data frame with neither ints nor tag")
    return (_BTH.pack(OP_SEND_ONLY, 0, PKEY, qpn(frame.flow.id),
                      (frame.ackreq << 31) | (flags << 24) | (frame.psn & PSN_MASK))
            + ext + bytes(frame.payload + ICRC_LEN))  # the payload and the ICRC: zeros


def decode_frame(buf, flow_of):
    """The typed frame of a UDP payload (RoCE on port 4791, GSE control on 4792/4793), or
    None if it is not one of ours or ``flow_of(flow id)`` returns None (pass ``dict.get``).

    Decoded frames have ``size`` = ``len(buf) + L2_L4_BYTES`` and ``prio`` 0; a data
    frame's ``ecn`` is 0 (the CE mark is in the IP header: the adapter sets it).  GSE
    REQUESTs and GRANTs start with their type (1, 2), which no frame fabriclab sends on
    port 4791 does (opcodes 0x01, 0x02 are RC SEND_MIDDLE and SEND_LAST)."""
    n = len(buf)
    if n < BTH_LEN + ICRC_LEN:
        return _decode_gse(buf, n) if n >= GSE_CONTROL_HEADER.size else None
    opcode, w2, w3 = _BTH_WORDS.unpack_from(buf)
    if opcode == OP_SEND_ONLY:  # the hot path: plain data first
        flow = flow_of((w2 - QPN_BASE) & PSN_MASK)
        if flow is None:
            return None
        if not w3 & _DATA_EXT_BITS:
            return Data(flow, w3 & PSN_MASK, n - BTH_LEN - ICRC_LEN, n + L2_L4_BYTES, 0,
                        w3 >= 0x80000000)
        try:
            return _decode_data_ext(buf, n, flow, w3)
        except (struct.error, IndexError):  # extensions flagged, but cut short
            return None
    if opcode == OP_ACK:
        flow = flow_of((w2 - QPN_BASE) & PSN_MASK)
        if flow is None or n < BTH_LEN + AETH_LEN + ICRC_LEN:
            return None
        try:
            return _decode_aeth(buf, n, flow, w3)
        except (struct.error, IndexError):
            return None
    if opcode == OP_CNP:
        flow = flow_of((w2 - QPN_BASE) & PSN_MASK)
        return None if flow is None else Cnp(flow, n + L2_L4_BYTES, 0)
    return _decode_gse(buf, n)


def _decode_aeth(buf, n: int, flow, w3: int):
    """An ACK or a NACK: BTH + AETH + [SACK] + [INT area]."""
    off = BTH_LEN + AETH_LEN
    sack = None
    if w3 & _SACK_BIT:
        sack = _U32.unpack_from(buf, off)[0] & PSN_MASK
        off += SACK_LEN
    if buf[BTH_LEN] & 0x60 == 0x60:
        return Nack(flow, w3 & PSN_MASK, n + L2_L4_BYTES, 0, sack)
    ints = parse_int(buf, off) if w3 & _INT_BIT else None
    return Ack(flow, w3 & PSN_MASK, n + L2_L4_BYTES, 0, ints, sack)


def _decode_data_ext(buf, n: int, flow, w3: int) -> Data | None:
    """A data frame with an INT area and/or a GSE tag (in that order) after its BTH."""
    off = BTH_LEN
    ints = tag = None
    if w3 & _INT_BIT:
        ints = parse_int(buf, off)
        off += INT_HEADER.size + buf[off + 1] * INT_RECORD.size
    if w3 & _GSE_BIT:
        src, _, seq, index, flags, path = GSE_TAG.unpack_from(buf, off)
        tag = ContainerTag(src, seq, index, bool(flags & GSE_LAST), path)
        off += GSE_TAG.size
    if off + ICRC_LEN > n:
        return None
    return Data(flow, w3 & PSN_MASK, n - off - ICRC_LEN, n + L2_L4_BYTES, 0,
                w3 >= 0x80000000, ints, tag)


def _decode_gse(buf, n: int):
    msg = parse_gse_control(buf)
    if msg is None:
        return None
    if msg[0] == "request":
        return GseRequest(msg[1], msg[2], msg[3], n + L2_L4_BYTES, 0)
    return GseGrant(msg[1], msg[2], msg[3], msg[4], n + L2_L4_BYTES, 0, msg[5])
