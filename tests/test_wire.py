"""The wire format: typed frames -> bytes -> scapy dissection -> the same fields, the fast
struct codecs equal to scapy's layers, and decode_frame(encode_frame(x)) == x."""

from types import SimpleNamespace

import pytest
from scapy.all import IP, UDP, Ether, Raw, raw
from scapy.contrib.roce import AETH, BTH, CNPPadding

from fabriclab.wire import layers as L
from fabriclab.wire import roce as P
from fabriclab.wire.frames import Ack, Cnp, ContainerTag, Data, GseGrant, GseRequest, Nack

FLOW = SimpleNamespace(id=0x123456, src="h1", dst="h3")
FLOWS = {FLOW.id: FLOW}
RECORDS = [(1_000_000_123, 4_000_000_000, 30_000, 100_000_000),
           (1_000_000_456, 17, 0, 400_000_000), (2**64 - 1, 2**32 - 1, 2**32 - 1, 1)]
TAG = ContainerTag(src_gsp=2, seq=0xDEADBEEF, index=64, last=True, path=3)

# Every kind, with its size on the wire written out: Ethernet + IPv4 + UDP = 42 bytes,
# BTH 12, ICRC 4, AETH 4, SACK 4, INT area 4 + 5 x 20, GSE tag 12, CNP padding 16.
FRAMES = {
    "data": Data(FLOW, 0xABCDEF, 1000, 42 + 12 + 1000 + 4, 0, ackreq=True),
    "data_int": Data(FLOW, 7, 1000, 42 + 12 + 104 + 1000 + 4, 0, ints=list(RECORDS)),
    "data_int_empty": Data(FLOW, 8, 1000, 42 + 12 + 104 + 1000 + 4, 0, ints=[]),
    "data_gse": Data(FLOW, 9, 37, 42 + 12 + 12 + 37 + 4, 0, ackreq=True, tag=TAG),
    "ack": Ack(FLOW, 100, 42 + 12 + 4 + 4, 0),
    "ack_int": Ack(FLOW, 100, 42 + 12 + 4 + 104 + 4, 0, ints=RECORDS[:2]),
    "ack_sack": Ack(FLOW, 100, 42 + 12 + 4 + 4 + 4, 0, sack=0xFFFFFF),
    "ack_sack_int": Ack(FLOW, 100, 42 + 12 + 4 + 4 + 104 + 4, 0, ints=RECORDS, sack=105),
    "nack": Nack(FLOW, 100, 42 + 12 + 4 + 4, 0),
    "nack_sack": Nack(FLOW, 100, 42 + 12 + 4 + 4 + 4, 0, sack=103),
    "cnp": Cnp(FLOW, 42 + 12 + 16 + 4, 0),
    "request": GseRequest(2, 3, [65536, 100, 16960], 42 + 8 + 3 * 4, 0),
    "request_one": GseRequest(2, 3, [65536], 42 + 8 + 4, 0),
    "probe": GseRequest(2, 3, [], 42 + 8, 0),
    "grant": GseGrant(3, 1, 65536, 2, 42 + 12, 0),
    "grant_no_path": GseGrant(3, 1, 0, None, 42 + 12, 0),
}


def fields(frame) -> dict:
    """What a frame says (``route``, the engine's handle for its way, is not on the wire)."""
    return {k: getattr(frame, k) for c in type(frame).__mro__
            for k in getattr(c, "__slots__", ()) if k != "route"}


def dissect(frame) -> Ether:
    """The frame sent as fabriclab sends it, captured, and dissected by scapy."""
    port = P.GSE_PORT if frame.kind.startswith("gse") else P.ROCE_PORT
    pkt = (Ether() / IP(src="10.0.0.2", dst="10.0.0.4", tos=2) / UDP(sport=50000, dport=port)
           / P.encode_frame(frame))
    return Ether(raw(pkt))


@pytest.mark.parametrize("name", FRAMES)
def test_decode_frame_inverts_encode_frame(name):
    """Every field of every kind survives encode_frame -> decode_frame."""
    x = FRAMES[name]
    buf = P.encode_frame(x)
    assert len(buf) + P.L2_L4_BYTES == x.size
    assert fields(P.decode_frame(buf, FLOWS.get)) == fields(x)


@pytest.mark.parametrize("name", FRAMES)
def test_scapy_builds_the_same_bytes(name):
    """The layers of scapy_frame build to encode_frame's bytes, byte for byte."""
    assert raw(L.scapy_frame(FRAMES[name])) == P.encode_frame(FRAMES[name])


def test_data_with_int_records_dissects():
    """A data frame with three INT records: BTH flag, hops, each record, room, payload."""
    d = dissect(FRAMES["data_int"])
    assert [type(layer) for layer in d[UDP].iterpayloads()][1:] == [L.ExtBTH, L.IntArea, Raw]
    assert d[BTH].opcode == P.OP_SEND_ONLY and d[BTH].resv7 == P.INT_FLAG
    area = d[L.IntArea]
    assert (area.hops, area.max_hops) == (3, P.INT_MAX_HOPS)
    assert [(r.ts_ns, r.tx_bytes, r.qlen_bytes, r.rate_kbps) for r in area.records] == RECORDS
    assert area.unused == bytes(2 * P.INT_RECORD.size)
    assert len(d[Raw].load) == 1000 and d[BTH].icrc == 0


def test_data_with_gse_tag_dissects():
    d = dissect(FRAMES["data_gse"])
    assert d[BTH].resv7 == P.GSE_FLAG and d[BTH].ackreq == 1 and d[BTH].psn == 9
    t = d[L.GseTag]
    assert (t.src_gsp, t.dst_port, t.seq, t.index, t.flags.last, t.path) == (
        2, 3, 0xDEADBEEF, 64, True, 3)
    assert d[Raw].load == bytes(37)


def test_sack_on_ack_and_nack_dissects():
    """SACK right after the AETH (flag 0x04), then the echoed INT area if any."""
    d = dissect(FRAMES["ack_sack_int"])
    assert d[BTH].resv7 == P.SACK_FLAG | P.INT_FLAG
    assert d[AETH].syndrome == P.AETH_ACK and d[L.Sack].psn == 105
    assert isinstance(d[L.Sack].payload, L.IntArea)
    assert [(r.ts_ns, r.tx_bytes, r.qlen_bytes, r.rate_kbps) for r in d[L.IntArea].records] \
        == RECORDS
    n = dissect(FRAMES["nack_sack"])
    assert n[AETH].syndrome == P.AETH_NAK_SEQ and n[BTH].psn == 100 and n[L.Sack].psn == 103
    assert not n[L.Sack].payload
    assert dissect(FRAMES["ack_sack"])[L.Sack].psn == 0xFFFFFF


def test_ack_with_int_echo_and_no_sack_dissects():
    d = dissect(FRAMES["ack_int"])
    assert isinstance(d[AETH].payload, L.IntArea) and d[L.IntArea].hops == 2


@pytest.mark.parametrize("name", ["request", "request_one", "probe"])
def test_gse_request_dissects(name):
    x = FRAMES[name]
    r = dissect(x)[L.GseRequest]
    assert (r.type, r.n, r.src_gsp, r.dst_port, r.sizes) == (
        P.GSE_REQUEST, len(x.sizes), 2, 3, x.sizes)


@pytest.mark.parametrize("name", ["grant", "grant_no_path"])
def test_gse_grant_dissects(name):
    """GRANTs arrive on both GSE ports, from GSOS (4792) or from a destination (4793)."""
    x = FRAMES[name]
    for port in (P.GSE_PORT, P.GSE_EGRESS_PORT):
        g = Ether(raw(Ether() / IP() / UDP(sport=port, dport=port) / P.encode_frame(x)))
        assert not g.haslayer(L.GseRequest)
        g = g[L.GseGrant]
        assert (g.src_gsp, g.dst_port, g.nbytes) == (3, 1, x.nbytes)
        assert g.path == (P.NO_PATH if x.path is None else x.path)


def test_struct_codecs_equal_scapy_fields():
    """The byte-level helpers the agents and eBPF tests use read what scapy reads."""
    for name, x in FRAMES.items():
        buf = P.encode_frame(x)
        d = dissect(x)
        if x.kind.startswith("gse"):
            msg = P.parse_gse_control(buf)
            layer = d[L.GseRequest] if x.kind == "gse_request" else d[L.GseGrant]
            assert msg[1:3] == (layer.src_gsp, layer.dst_port), name
            assert msg[3] == (layer.sizes if x.kind == "gse_request" else layer.nbytes), name
            continue
        kind, fid, psn, plen = P.decode(buf)
        b = d[BTH]
        assert (kind, P.qpn(fid), psn) == (x.kind, b.dqpn, b.psn), name
        assert P.ackreq(buf) == bool(b.ackreq), name
        assert P.has_int(buf) == d.haslayer(L.IntArea), name
        assert P.has_gse_tag(buf) == d.haslayer(L.GseTag), name
        assert P.parse_sack(buf) == (d[L.Sack].psn if d.haslayer(L.Sack) else None), name
        if kind == "data":
            assert plen == (len(d[Raw].load) if d.haslayer(Raw) else 0), name
            assert P.ext_len(buf) == sum(len(raw(layer)) - len(raw(layer.payload))
                                         for layer in (d.getlayer(L.IntArea), d.getlayer(L.GseTag))
                                         if layer is not None), name
        if d.haslayer(L.IntArea):
            offset = len(buf) - len(raw(d[L.IntArea])) - P.ICRC_LEN
            if kind == "data":
                offset = P.INT_OFFSET
            assert P.parse_int(buf, offset) == [
                (r.ts_ns, r.tx_bytes, r.qlen_bytes, r.rate_kbps) for r in d[L.IntArea].records]
        if d.haslayer(L.GseTag):
            t = d[L.GseTag]
            assert P.parse_gse_tag(buf) == (t.src_gsp, t.dst_port, t.seq, t.index,
                                            bool(t.flags.last), t.path), name


def test_extension_flags_are_bits_of_bth_byte_8():
    """INT bit 0, GSE bit 1, SACK bit 2, next to AckReq (bit 7): what port.c and the labs'
    tcpdump filters (``udp[16] & 2``) read."""
    byte8 = {name: P.encode_frame(x)[8] for name, x in FRAMES.items()
             if not x.kind.startswith("gse")}
    assert (byte8["data"], byte8["data_int"], byte8["data_gse"]) == (0x80, 0x01, 0x82)
    assert (byte8["ack"], byte8["ack_int"], byte8["ack_sack"], byte8["ack_sack_int"]) == (
        0x00, 0x01, 0x04, 0x05)
    assert (byte8["nack"], byte8["nack_sack"], byte8["cnp"]) == (0x00, 0x04, 0x00)


def test_a_record_written_by_a_switch_port_is_read_back():
    """The eBPF port program appends a record at hops x 20 and increments hops (port.c):
    decode_frame and scapy both see it, and the ACK echoing it carries it back."""
    buf = bytearray(P.encode_frame(FRAMES["data_int_empty"]))
    rec = RECORDS[0]
    P.INT_RECORD.pack_into(buf, P.INT_OFFSET + P.INT_HEADER.size, *rec)
    buf[P.INT_OFFSET] += 1
    data = P.decode_frame(bytes(buf), FLOWS.get)
    assert data.ints == [rec] and data.payload == 1000
    assert dissect(data)[L.IntRecord].ts_ns == rec[0]
    ack = P.decode_frame(P.encode_frame(Ack(FLOW, data.psn + 1, 0, 0, ints=data.ints)),
                         FLOWS.get)
    assert ack.ints == [rec]


def test_preencoded_extension_equals_encoding_the_frame():
    """An agent's one empty INT area, passed as ext, gives the frame encode_frame makes."""
    x = FRAMES["data_int_empty"]
    assert P.encode_frame(x, P.int_area()) == P.encode_frame(x)
    tagged = FRAMES["data_gse"]
    ext = P.gse_tag(2, 3, TAG.seq, TAG.index, TAG.last, TAG.path)
    assert P.encode_frame(tagged, ext) == P.encode_frame(tagged)
    assert P.encode_frame(FRAMES["ack_int"], P.int_area(RECORDS[:2])) == P.encode_frame(
        FRAMES["ack_int"])
    with pytest.raises(ValueError):
        P.encode_frame(FRAMES["data"], ext)
    with pytest.raises(ValueError):
        P.encode_frame(FRAMES["ack"], P.int_area())


def test_unflagged_frames_dissect_as_scapy_alone_would():
    """ExtBTH changes nothing for plain RoCE: the same layers, found by scapy's classes."""
    for name, layer in (("data", Raw), ("ack", AETH), ("nack", AETH), ("cnp", CNPPadding)):
        d = dissect(FRAMES[name])
        assert BTH in d and d.haslayer(layer) and type(d[BTH].payload) is layer, name
    assert UDP(raw(UDP() / BTH())).dport == P.ROCE_PORT


def test_decode_frame_rejects_what_is_not_ours():
    assert P.decode_frame(b"abc", FLOWS.get) is None
    assert P.decode_frame(bytes([0x0A]) + bytes(15), FLOWS.get) is None
    assert P.decode_frame(P.encode_frame(FRAMES["data"]), {}.get) is None  # unknown flow
    assert P.decode_frame(P.encode_frame(FRAMES["ack_sack_int"])[:40], FLOWS.get) is None
    assert P.decode_frame(P.encode_frame(FRAMES["data_int"])[:60], FLOWS.get) is None


# --------------------------------------------------------------------------- byte-level codecs
PLAIN = {"data": Data(FLOW, 0xABCDEF, 37, 0, 0, ackreq=True), "ack": Ack(FLOW, 0xABCDEF, 0, 0),
         "nack": Nack(FLOW, 0xABCDEF, 0, 0), "cnp": Cnp(FLOW, 0, 0)}


@pytest.mark.parametrize("kind", P.KINDS)
def test_encoder_matches_scapy(kind):
    psn = 0 if kind == "cnp" else 0xABCDEF
    payload = bytes(37) if kind == "data" else b""
    ours = P.encode(kind, 0x123456, psn, payload, ackreq=kind == "data")
    assert ours == raw(L.scapy_frame(PLAIN[kind]))
    assert P.decode(ours) == (kind, 0x123456, psn, len(payload))


def test_encoder_sack_matches_typed_frames():
    for kind in ("ack", "nack"):
        frame = FRAMES[f"{kind}_sack"]
        assert P.encode(kind, FLOW.id, 100, sack=frame.sack) == P.encode_frame(frame)


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
        assert d[BTH].dqpn == P.QPN_BASE + 5 and P.flow_id_of(d[BTH].dqpn) == 5
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
