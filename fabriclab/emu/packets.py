"""RoCEv2 frames of the host agents, defined once.

The headers are scapy's (``scapy.contrib.roce``: ``BTH``, ``AETH``, ``CNPPadding``, bound to
UDP port 4791), so captures dissect in scapy and Wireshark.  The agents send through UDP
sockets (the kernel adds Ethernet, IPv4 with ECT(0) and UDP), so what is defined here is
the UDP payload:

====== ========================================================================
data   BTH(opcode RC SEND_ONLY 0x04, dqpn = flow id, psn = packet index,
       ackreq on packets the receiver must acknowledge) + payload + ICRC
ack    BTH(opcode RC ACKNOWLEDGE 0x11, dqpn = flow id, psn = next expected psn)
       + AETH(syndrome 0x00 = ACK, msn = 0) + ICRC
nack   the same with AETH syndrome 0x60 (NAK: PSN sequence error): go back to psn
cnp    BTH(opcode 0x81 CNP, becn = 1, dqpn = flow id) + 16 reserved bytes + ICRC
====== ========================================================================

Differences from a RoCE NIC, on purpose: the ICRC is sent as zero (nothing in the
emulator checks it, and the kernel picks the IP identification it covers); the PSN of an
ACK is the next expected one (IB puts the last acknowledged), which makes the cumulative
acknowledgement explicit.  The agents' hot path uses :func:`encode` / :func:`decode`
(``struct`` on the same layout); ``tests/emu/test_packets.py`` checks them against scapy.
"""

from __future__ import annotations

import struct

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

_BTH = struct.Struct("!BBHII")  # opcode, flags(se/m/pad/ver), pkey, fecn/becn/resv + dqpn, ackreq + psn
_AETH = struct.Struct("!I")
_ICRC = b"\0\0\0\0"
_CNP_TAIL = bytes(CNP_PAD_LEN) + _ICRC
PKEY = 0xFFFF

KINDS = ("data", "ack", "nack", "cnp")


def _bth(opcode: int, dqpn: int, psn: int, ackreq: bool = False, becn: bool = False) -> bytes:
    return _BTH.pack(opcode, 0, PKEY, (becn << 30) | (dqpn & 0xFFFFFF),
                     (ackreq << 31) | (psn & 0xFFFFFF))


def encode(kind: str, flow_id: int, psn: int, payload: bytes = b"", ackreq: bool = False,
           ext: bytes = b"", flags: int = 0) -> bytes:
    """The UDP payload of one frame of ``kind``; ``ext`` (an INT area or a GSE tag, flagged
    by ``flags`` in BTH byte 8) goes right after the BTH (after the AETH on ACKs)."""
    if kind == "data":
        return _flagged(_bth(OP_SEND_ONLY, flow_id, psn, ackreq), flags) + ext + payload + _ICRC
    if kind == "ack":
        return (_flagged(_bth(OP_ACK, flow_id, psn), flags) + _AETH.pack(AETH_ACK << 24) + ext
                + _ICRC)
    if kind == "nack":
        return _bth(OP_ACK, flow_id, psn) + _AETH.pack(AETH_NAK_SEQ << 24) + _ICRC
    if kind == "cnp":
        return _bth(OP_CNP, flow_id, 0, becn=True) + _CNP_TAIL
    raise ValueError(f"unknown frame kind {kind!r}; known: {', '.join(KINDS)}")


def _flagged(bth: bytes, flags: int) -> bytes:
    return bth[:8] + bytes([bth[8] | flags]) + bth[9:] if flags else bth


class DataHeader:
    """Pre-built BTH of one flow's data packets: only the psn and ackreq bits change."""

    __slots__ = ("_prefix",)

    def __init__(self, flow_id: int):
        self._prefix = _BTH.pack(OP_SEND_ONLY, 0, PKEY, flow_id & 0xFFFFFF, 0)[:8]

    def frame(self, psn: int, payload: bytes, ackreq: bool, ext: bytes = b"",
              flags: int = 0) -> bytes:
        word = (ackreq << 31) | (flags << 24) | (psn & 0xFFFFFF)
        return self._prefix + word.to_bytes(4, "big") + ext + payload + _ICRC


def decode(buf: bytes) -> tuple[str, int, int, int]:
    """(kind, flow id, psn, payload bytes) of a UDP payload; kind 'other' if not ours."""
    if len(buf) < BTH_LEN + ICRC_LEN:
        return "other", 0, 0, 0
    opcode, _, _, w2, w3 = _BTH.unpack_from(buf)
    dqpn = w2 & 0xFFFFFF
    psn = w3 & 0xFFFFFF
    if opcode == OP_SEND_ONLY:
        return "data", dqpn, psn, len(buf) - BTH_LEN - ICRC_LEN - ext_len(buf)
    if opcode == OP_ACK and len(buf) >= BTH_LEN + AETH_LEN:
        syndrome = buf[BTH_LEN]
        return ("nack" if syndrome & 0x60 == 0x60 else "ack"), dqpn, psn, 0
    if opcode == OP_CNP:
        return "cnp", dqpn, 0, 0
    return "other", dqpn, psn, 0


def ext_len(buf) -> int:
    """Bytes of INT area or GSE tag after the BTH, from the flags in BTH byte 8."""
    f = buf[8]
    return (INT_AREA_LEN if f & INT_FLAG else 0) + (GSE_TAG.size if f & GSE_FLAG else 0)


def ackreq(buf: bytes) -> bool:
    return bool(buf[8] & 0x80)


def scapy_frame(kind: str, flow_id: int, psn: int, payload: bytes = b"", ackreq: bool = False):
    """The same frame as a scapy packet (BTH / AETH / CNPPadding / Raw), for tests and labs."""
    from scapy.contrib.roce import AETH, BTH, CNPPadding
    from scapy.packet import Raw
    if kind == "data":
        p = BTH(opcode=OP_SEND_ONLY, dqpn=flow_id, psn=psn, ackreq=int(ackreq), icrc=0)
        return p / Raw(payload) if payload else p
    if kind in ("ack", "nack"):
        syn = AETH_ACK if kind == "ack" else AETH_NAK_SEQ
        return BTH(opcode=OP_ACK, dqpn=flow_id, psn=psn, icrc=0) / AETH(syndrome=syn, msn=0)
    if kind == "cnp":
        return BTH(opcode=OP_CNP, becn=1, dqpn=flow_id, icrc=0) / CNPPadding()
    raise ValueError(f"unknown frame kind {kind!r}")


# --------------------------------------------------------------------------- HPCC: INT
# A data frame (and the ACK that echoes it) may carry an INT area right after the BTH:
# flagged by bit 0 of BTH byte 8 (a reserved bit next to AckReq).  Each switch egress port's
# eBPF program appends one record while there is room.  The agents send these frames with
# UDP checksum 0 (SO_NO_CHECK), so the program can write into them without fixing a sum.
#
#   INT area: u8 hops | u8 max_hops | u16 reserved | max_hops x record
#   record:   u64 ts_ns (CLOCK_MONOTONIC) | u32 tx_bytes (port counter, mod 2^32)
#             | u32 qlen_bytes | u32 rate_kbps                              (20 bytes)
INT_FLAG = 0x01  # in BTH byte 8
INT_MAX_HOPS = 5
INT_RECORD = struct.Struct("!QIII")
INT_HEADER = struct.Struct("!BBH")
INT_AREA_LEN = INT_HEADER.size + INT_MAX_HOPS * INT_RECORD.size  # 104
#: offset of the INT area in the UDP payload (what the eBPF program writes at)
INT_OFFSET = BTH_LEN


def int_area(records=(), max_hops: int = INT_MAX_HOPS) -> bytes:
    """An INT area holding ``records`` [(ts_ns, tx_bytes, qlen_bytes, rate_kbps)], padded."""
    body = b"".join(INT_RECORD.pack(*r) for r in records)
    return (INT_HEADER.pack(len(records), max_hops, 0) + body
            + bytes((max_hops - len(records)) * INT_RECORD.size))


def parse_int(buf, offset: int = INT_OFFSET) -> list[tuple[int, int, int, int]]:
    """The INT records in a UDP payload whose INT area starts at ``offset``."""
    hops, max_hops, _ = INT_HEADER.unpack_from(buf, offset)
    hops = min(hops, max_hops)
    base = offset + INT_HEADER.size
    return [INT_RECORD.unpack_from(buf, base + i * INT_RECORD.size) for i in range(hops)]


def has_int(buf) -> bool:
    return len(buf) > 8 and bool(buf[8] & INT_FLAG)


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

# REQUEST and GRANT travel as UDP datagrams (not RoCE).  In central mode a GSP sends its
# REQUEST to the destination's IP, port 4792; the leaf punts it to the controller (GSOS),
# which answers with a GRANT packet-out from GSOS_IP/GSOS_MAC to the GSP's port 4792.  In
# egress mode (or when GSOS does not answer) the REQUEST goes to the destination agent's
# port 4793, which grants back to the GSP's port 4793.
#
#   REQUEST: u8 type=1 | u8 n | u16 src_gsp | u16 dst_port | u16 reserved | n x u32 bytes
#   GRANT:   u8 type=2 | u8 path (0xff: none) | u16 src_gsp (grantee) | u16 dst_port
#            | u16 reserved | u32 bytes
GSE_PORT = 4792  # GRANTs to GSPs, and REQUESTs to GSOS (punted by the leaf)
GSE_EGRESS_PORT = 4793  # REQUESTs to a destination's own scheduler (never punted)
GSE_REQUEST = 1
GSE_GRANT = 2
NO_PATH = 0xFF
GSOS_IP = "10.255.255.254"
GSOS_MAC = "02:00:00:00:ff:fe"
_GSE_HDR = struct.Struct("!BBHHH")


def gse_tag(src_gsp: int, dst_port: int, seq: int, index: int, last: bool, path: int) -> bytes:
    return GSE_TAG.pack(src_gsp, dst_port, seq & 0xFFFFFFFF, index, 1 if last else 0, path)


def parse_gse_tag(buf, offset: int = GSE_TAG_OFFSET):
    """(src_gsp, dst_port, seq, index, last, path) of a tagged data frame."""
    src, dst, seq, index, flags, path = GSE_TAG.unpack_from(buf, offset)
    return src, dst, seq, index, bool(flags & 1), path


def has_gse_tag(buf) -> bool:
    return len(buf) > 8 and bool(buf[8] & GSE_FLAG)


def gse_request(src_gsp: int, dst_port: int, sizes: list[int]) -> bytes:
    return _GSE_HDR.pack(GSE_REQUEST, len(sizes), src_gsp, dst_port, 0) + b"".join(
        n.to_bytes(4, "big") for n in sizes)


def gse_grant(src_gsp: int, dst_port: int, nbytes: int, path: int | None) -> bytes:
    return _GSE_HDR.pack(GSE_GRANT, NO_PATH if path is None else path, src_gsp, dst_port,
                         0) + nbytes.to_bytes(4, "big")


def parse_gse_control(buf):
    """('request', src_gsp, dst_port, [bytes...]) or ('grant', src_gsp, dst_port, bytes,
    path or None); None if not a GSE control datagram."""
    if len(buf) < _GSE_HDR.size:
        return None
    typ, b1, src, dst, _ = _GSE_HDR.unpack_from(buf)
    body = buf[_GSE_HDR.size:]
    if typ == GSE_REQUEST and len(body) >= 4 * b1:
        return ("request", src, dst, [int.from_bytes(body[4 * i:4 * i + 4], "big")
                                      for i in range(b1)])
    if typ == GSE_GRANT and len(body) >= 4:
        return ("grant", src, dst, int.from_bytes(body[:4], "big"),
                None if b1 == NO_PATH else b1)
    return None
