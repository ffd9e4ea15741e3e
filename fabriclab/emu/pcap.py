"""Captures: frames are captured cut at :data:`SNAPLEN` bytes (every header; capturing
whole frames on this 2-core machine slowed the emulation enough to lose frames), and when
a capture is saved the RoCE frames get their cut tail back.

That tail is known exactly: a fabriclab RoCE data frame's payload is zeros and its ICRC is
sent as zero (:mod:`fabriclab.wire.roce`), so padding a cut RoCE frame (UDP to port 4791)
with zeros up to its original length gives the bytes that were on the wire.  Without it,
Wireshark's RoCE dissector checks the frame against its IP length and marks every data
frame ``[Malformed Packet] Invalid Packet Length from LRH!``.  Other cut frames (TCP cross
traffic) are left as they are.
"""

from __future__ import annotations

import struct

from ..wire.roce import ROCE_PORT

SNAPLEN = 160
_GLOBAL = struct.Struct("<IHHiIII")  # little-endian classic pcap header
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
_MAGICS = {0xA1B2C3D4, 0xA1B23C4D}  # microsecond / nanosecond timestamps


def _is_roce(frame: bytes) -> bool:
    """Ethernet + IPv4 (no options) + UDP to the RoCE port."""
    return (len(frame) >= 14 + 20 + 8 and frame[12:14] == b"\x08\x00"
            and frame[14] == 0x45 and frame[23] == 17
            and int.from_bytes(frame[36:38], "big") == ROCE_PORT)


def restore_roce_payload(data: bytes) -> bytes:
    """``data`` (a little-endian classic pcap file, as tcpdump writes) with every cut RoCE
    frame padded with zeros to its original length; other files are returned unchanged."""
    if len(data) < _GLOBAL.size:
        return data
    magic, vmaj, vmin, zone, sigfigs, snaplen, linktype = _GLOBAL.unpack_from(data)
    if magic not in _MAGICS or linktype != 1:
        return data
    out = [_GLOBAL.pack(magic, vmaj, vmin, zone, sigfigs, max(snaplen, 65535), linktype)]
    off = _GLOBAL.size
    while off + _RECORD.size <= len(data):
        sec, frac, incl, orig = _RECORD.unpack_from(data, off)
        off += _RECORD.size
        frame = data[off:off + incl]
        off += incl
        if incl < orig and _is_roce(frame):
            frame += bytes(orig - incl)
            incl = orig
        out.append(_RECORD.pack(sec, frac, incl, orig) + frame)
    return b"".join(out)
