"""Captures cut at SNAPLEN get the zero tail of their RoCE frames back (fabriclab.emu.pcap):
the restored file is byte for byte the whole capture; other frames stay cut."""

import struct

from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap

from fabriclab.emu.pcap import SNAPLEN, restore_roce_payload
from fabriclab.wire import roce as R


def _cut(data: bytes, snap: int) -> bytes:
    """What tcpdump -s snap would have written."""
    head = bytearray(data[:24])
    struct.pack_into("<I", head, 16, snap)
    out, off = [bytes(head)], 24
    while off < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, off)
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        keep = frame[:snap]
        out.append(struct.pack("<IIII", sec, frac, len(keep), orig) + keep)
    return b"".join(out)


def test_cut_roce_frames_are_restored_exactly(tmp_path):
    roce = [Ether() / IP(src="10.0.0.1", dst="10.0.1.1", tos=2) / UDP(sport=50000, dport=4791)
            / Raw(R.encode("data", 3, 7, bytes(1000), ackreq=True)),
            Ether() / IP() / UDP(sport=50000, dport=4791) / Raw(R.encode("ack", 3, 8))]
    tcp = Ether() / IP() / TCP(dport=5201) / Raw(b"x" * 1200)
    path = tmp_path / "full.pcap"
    wrpcap(str(path), roce + [tcp])
    full = path.read_bytes()
    cut = _cut(full, SNAPLEN)
    assert len(cut) < len(full)
    restored = _records(restore_roce_payload(cut))
    whole = _records(full)
    assert restored[:2] == whole[:2]  # the RoCE frames: byte for byte what was sent
    assert len(restored[2]) == SNAPLEN and whole[2].startswith(restored[2])  # TCP: still cut
    assert restore_roce_payload(b"not a pcap") == b"not a pcap"


def _records(data: bytes) -> list[bytes]:
    out, off = [], 24
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out
