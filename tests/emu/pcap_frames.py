"""Reading the emulator's captures in tests (imported by the test modules of this folder)."""


def udp_payloads(pcap):
    """(wire length, IP TOS, UDP dport, UDP payload as captured) of every IPv4/UDP frame."""
    from scapy.all import rdpcap
    out = []
    for p in rdpcap(str(pcap)):
        b = bytes(p)
        if len(b) < 42 or b[12:14] != b"\x08\x00" or b[23] != 17:
            continue
        ihl = (b[14] & 0x0F) * 4
        udp = 14 + ihl
        out.append((p.wirelen, b[15], int.from_bytes(b[udp + 2:udp + 4], "big"), b[udp + 8:]))
    return out
