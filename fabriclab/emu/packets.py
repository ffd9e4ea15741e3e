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


def encode(kind: str, flow_id: int, psn: int, payload: bytes = b"", ackreq: bool = False) -> bytes:
    """The UDP payload of one frame of ``kind``."""
    if kind == "data":
        return _bth(OP_SEND_ONLY, flow_id, psn, ackreq) + payload + _ICRC
    if kind == "ack":
        return _bth(OP_ACK, flow_id, psn) + _AETH.pack(AETH_ACK << 24) + _ICRC
    if kind == "nack":
        return _bth(OP_ACK, flow_id, psn) + _AETH.pack(AETH_NAK_SEQ << 24) + _ICRC
    if kind == "cnp":
        return _bth(OP_CNP, flow_id, 0, becn=True) + _CNP_TAIL
    raise ValueError(f"unknown frame kind {kind!r}; known: {', '.join(KINDS)}")


class DataHeader:
    """Pre-built BTH of one flow's data packets: only the psn and ackreq bits change."""

    __slots__ = ("_prefix",)

    def __init__(self, flow_id: int):
        self._prefix = _BTH.pack(OP_SEND_ONLY, 0, PKEY, flow_id & 0xFFFFFF, 0)[:8]

    def frame(self, psn: int, payload: bytes, ackreq: bool) -> bytes:
        return self._prefix + ((ackreq << 31) | (psn & 0xFFFFFF)).to_bytes(4, "big") + payload + _ICRC


def decode(buf: bytes) -> tuple[str, int, int, int]:
    """(kind, flow id, psn, payload bytes) of a UDP payload; kind 'other' if not ours."""
    if len(buf) < BTH_LEN + ICRC_LEN:
        return "other", 0, 0, 0
    opcode, _, _, w2, w3 = _BTH.unpack_from(buf)
    dqpn = w2 & 0xFFFFFF
    psn = w3 & 0xFFFFFF
    if opcode == OP_SEND_ONLY:
        return "data", dqpn, psn, len(buf) - BTH_LEN - ICRC_LEN
    if opcode == OP_ACK and len(buf) >= BTH_LEN + AETH_LEN:
        syndrome = buf[BTH_LEN]
        return ("nack" if syndrome & 0x60 == 0x60 else "ack"), dqpn, psn, 0
    if opcode == OP_CNP:
        return "cnp", dqpn, 0, 0
    return "other", dqpn, psn, 0


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
