"""Ethernet / IPv4 / UDP framing by hand, for the few places that build or read whole frames
on a raw socket: GSOS's GRANTs (the controller's packet-outs) and the GSP in the leaf
(``fabriclab.emu.gspd``), which tags and untags containers on the way through.  Hand-written
with ``struct`` rather than scapy: the GSP daemon does this for every data frame.
"""

from __future__ import annotations

import socket
import struct

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
ETH_TYPE_IPV4 = 0x0800
IP_TTL = 64


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int,
              payload: bytes, dscp: int = 0, ttl: int = IP_TTL) -> bytes:
    """Ethernet / IPv4 (no options, valid header checksum) / UDP (valid checksum)."""
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = _UDP.size + len(payload)
    udp_sum = _csum(src + dst + struct.pack("!BBH", 0, 17, udp_len)
                    + _UDP.pack(sport, dport, udp_len, 0) + payload) or 0xFFFF
    ip = _IPV4.pack(0x45, dscp << 2, 20 + udp_len, 0, 0x4000, ttl, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return (_ETH.pack(_mac(dst_mac), _mac(src_mac), ETH_TYPE_IPV4) + ip
            + _UDP.pack(sport, dport, udp_len, udp_sum) + payload)


def udp_payload(frame: bytes, dport: int | None = None) -> bytes | None:
    """The UDP payload of an Ethernet / IPv4 / UDP frame (to ``dport`` if given), else None.
    A VLAN tag or a fragment is not expected here and gives None."""
    if len(frame) < _ETH.size + 20 + _UDP.size:
        return None
    if _ETH.unpack_from(frame)[2] != ETH_TYPE_IPV4:
        return None
    ip = _ETH.size
    vihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, ip)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or proto != 17 or frag & 0x3FFF:
        return None
    udp = ip + ihl
    if len(frame) < udp + _UDP.size:
        return None
    _, dp, length, _ = _UDP.unpack_from(frame, udp)
    if dport is not None and dp != dport:
        return None
    end = min(udp + max(length, _UDP.size), ip + total, len(frame))
    return bytes(frame[udp + _UDP.size:end])


# -- the GSP in the leaf: containers on the wire -------------------------------------------
#
# A plain RoCE NIC's data frame is Ethernet / IPv4 (20 bytes, no options: what Linux
# sends) / UDP / BTH / payload / ICRC.  The leaf's GSP makes it a container frame by writing
# the container's path in the DSCP (path + 1) and inserting the GSE tag after the BTH (the
# BTH's GSE flag says it is there: :mod:`fabriclab.wire.roce`), and undoes both before the
# frame goes down to the host.  The ECN bits are kept (a CE mark is the receiver's business).
# The UDP checksum is set to 0 (none, which IPv4 allows): the frame changed.
ETH_LEN = _ETH.size
IP_OFF = ETH_LEN
UDP_OFF = ETH_LEN + 20
BTH_OFF = UDP_OFF + _UDP.size
BTH_FLAGS_OFF = BTH_OFF + 8  # the BTH byte carrying the INT / GSE / SACK flags


def _ip_fix(buf: bytearray, total: int, tos: int) -> None:
    """Set the IPv4 header's total length and TOS, and its checksum; the UDP length
    follows the IP length; the UDP checksum becomes 0."""
    struct.pack_into("!BH", buf, IP_OFF + 1, tos, total)
    struct.pack_into("!H", buf, IP_OFF + 10, 0)
    struct.pack_into("!H", buf, IP_OFF + 10, _csum(bytes(buf[IP_OFF:IP_OFF + 20])))
    struct.pack_into("!HH", buf, UDP_OFF + 4, total - 20, 0)


def insert_tag(frame, tag: bytes, flag: int, dscp: int) -> bytearray:
    """``frame`` (a RoCE data frame without a tag) with ``tag`` after its BTH, ``flag`` set
    in the BTH and ``dscp`` in the IPv4 header."""
    buf = bytearray(frame[:BTH_OFF + 12])
    buf += tag
    buf += frame[BTH_OFF + 12:]
    buf[BTH_FLAGS_OFF] |= flag
    total = struct.unpack_from("!H", buf, IP_OFF + 2)[0] + len(tag)
    _ip_fix(buf, total, (dscp << 2) | (buf[IP_OFF + 1] & 3))
    return buf


def strip_tag(frame, tag_len: int, flag: int) -> bytearray:
    """The frame :func:`insert_tag` made, back as it was sent (DSCP 0, its ECN kept)."""
    buf = bytearray(frame[:BTH_OFF + 12])
    buf += frame[BTH_OFF + 12 + tag_len:]
    buf[BTH_FLAGS_OFF] &= ~flag & 0xFF
    total = struct.unpack_from("!H", buf, IP_OFF + 2)[0] - tag_len
    _ip_fix(buf, total, buf[IP_OFF + 1] & 3)
    return buf
