"""RoCEv2 frames: the agents' fast encoder equals scapy's build, and dissects back."""

import pytest
from scapy.all import IP, UDP, Ether, raw
from scapy.contrib.roce import AETH, BTH, CNPPadding

from fabriclab.emu import packets as P


@pytest.mark.parametrize("kind", P.KINDS)
def test_encoder_matches_scapy(kind):
    psn = 0 if kind == "cnp" else 0xABCDEF
    payload = b"\x5a" * 37 if kind == "data" else b""
    ours = P.encode(kind, 0x123456, psn, payload, ackreq=kind == "data")
    assert ours == raw(P.scapy_frame(kind, 0x123456, psn, payload, ackreq=kind == "data"))
    assert P.decode(ours) == (kind, 0x123456, psn, len(payload))


def test_prebuilt_data_header_equals_encoder():
    h = P.DataHeader(77)
    for psn, req in ((0, False), (1, True), (0xFFFFFF, True)):
        assert h.frame(psn, b"ab", req) == P.encode("data", 77, psn, b"ab", req)
        assert P.ackreq(h.frame(psn, b"ab", req)) is req


def test_full_frame_dissects_as_roce():
    """Ethernet/IPv4(ECT)/UDP 4791/BTH: scapy's bind_layers picks BTH, AETH and CNP padding."""
    for kind, layer in (("data", BTH), ("ack", AETH), ("nack", AETH), ("cnp", CNPPadding)):
        frame = Ether() / IP(dst="10.0.0.2", tos=2) / UDP(sport=50000, dport=P.ROCE_PORT) / \
            P.encode(kind, 5, 9 if kind != "cnp" else 0, b"y" * 8 if kind == "data" else b"")
        d = Ether(raw(frame))
        assert d.haslayer(layer)
        assert d[BTH].dqpn == 5
        if kind == "cnp":
            assert d[BTH].opcode == P.OP_CNP and d[BTH].becn == 1
        if kind == "nack":
            assert d[AETH].syndrome == P.AETH_NAK_SEQ


def test_wire_overhead():
    """A data frame on a veth: Ethernet 14 + IPv4 20 + UDP 8 + BTH 12 + ICRC 4 = 58 bytes."""
    assert P.DATA_OVERHEAD == 58
    frame = Ether() / IP() / UDP(dport=P.ROCE_PORT) / P.encode("data", 1, 1, b"z" * 1000)
    assert len(raw(frame)) == 1000 + P.DATA_OVERHEAD


def test_decode_rejects_short_and_unknown():
    assert P.decode(b"abc")[0] == "other"
    assert P.decode(bytes([0x0A]) + bytes(15))[0] == "other"
    with pytest.raises(ValueError):
        P.encode("bogus", 1, 1)
