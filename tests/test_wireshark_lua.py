"""fabriclab's Wireshark dissector (fabriclab/wireshark/fabriclab.lua) in tshark: frames
built by fabriclab's own encoders (fabriclab.wire.roce), captured to a pcap, dissect to the
values that were encoded; plain RoCE frames get nothing from it; no Lua error, no malformed
mark."""

import shutil
import struct
import subprocess
from types import SimpleNamespace

import pytest
from scapy.all import IP, UDP, Ether, Raw
from scapy.utils import wrpcap

from fabriclab.wire import roce as P
from fabriclab.wire.frames import Ack, ContainerTag, Data
from fabriclab.wireshark import LUA, tshark_args

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None,
    reason="tshark is not on PATH (apt-get install tshark; scripts/setup.sh installs it)")

FLOW = SimpleNamespace(id=5, src="h1", dst="h3")
RECORDS = [(0x123456789ABCDEF0, 4_000_000_000, 30_000, 100_000_000),
           (1_000_000_456, 17, 0, 400_000_000)]
TAG = ContainerTag(src_gsp=2, seq=0xDEADBEEF, index=64, last=True, path=3)
TAG2 = ContainerTag(src_gsp=7, seq=11, index=0, last=False, path=1)
SIZES = [65536, 100, 16960]

# (name, UDP destination port, UDP payload); frame numbers in the pcap are 1 + the index
FRAMES = [
    ("data_int", P.ROCE_PORT, P.encode_frame(Data(FLOW, 7, 100, 0, 0, ints=RECORDS))),
    ("data_gse", P.ROCE_PORT, P.encode_frame(Data(FLOW, 9, 37, 0, 0, ackreq=True, tag=TAG))),
    ("data_int_gse", P.ROCE_PORT,
     P.encode_frame(Data(FLOW, 10, 37, 0, 0, ints=RECORDS[1:], tag=TAG2))),
    ("data_plain", P.ROCE_PORT, P.encode_frame(Data(FLOW, 11, 50, 0, 0, ackreq=True))),
    ("ack_sack_int", P.ROCE_PORT, P.encode_frame(Ack(FLOW, 100, 0, 0, ints=RECORDS, sack=105))),
    ("request", P.GSE_PORT, P.gse_request(2, 3, SIZES)),
    ("grant", P.GSE_PORT, P.gse_grant(3, 1, 65536, 2, idle=True)),
    ("grant_egress", P.GSE_EGRESS_PORT, P.gse_grant(4, 6, 500, None)),
    ("probe_egress", P.GSE_EGRESS_PORT, P.gse_request(4, 6, [])),
]
NUM = {name: i + 1 for i, (name, _, _) in enumerate(FRAMES)}


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    path = tmp_path_factory.mktemp("wireshark") / "frames.pcap"
    wrpcap(str(path), [Ether() / IP(src="10.0.0.2", dst="10.0.0.4", tos=2)
                       / UDP(sport=50000, dport=port, chksum=0) / Raw(payload)
                       for _, port, payload in FRAMES])
    return path


def tshark(pcap, *args: str) -> str:
    r = subprocess.run(["tshark", *tshark_args(), "-r", str(pcap), *args], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "Lua" not in r.stderr, r.stderr  # a script that fails to load only warns
    return r.stdout


def fields(pcap, *names: str, filt: str | None = None) -> dict[int, list[str]]:
    """{frame number: [value of each field]} (repeated fields: comma-separated)."""
    args = ["-T", "fields", "-e", "frame.number"] + [a for n in names for a in ("-e", n)]
    out = tshark(pcap, *args, *(["-Y", filt] if filt else []))
    rows = [line.split("\t") for line in out.splitlines()]
    return {int(r[0]): r[1:] for r in rows}


def _csv(*values) -> str:
    return ",".join(str(v) for v in values)


def test_helper_points_at_the_installed_script():
    assert LUA.is_file() and LUA.name == "fabriclab.lua"
    assert tshark_args() == ["-X", f"lua_script:{LUA}"]


def test_int_records_dissect_to_the_encoded_values(pcap):
    names = ["fabriclab.int.hops", "fabriclab.int.max_hops", "fabriclab.int.ts_ns",
             "fabriclab.int.tx_bytes", "fabriclab.int.qlen_bytes", "fabriclab.int.rate_kbps"]
    got = fields(pcap, *names, filt="fabriclab.int")
    want = {n: [str(len(recs)), str(P.INT_MAX_HOPS)] + [_csv(*col) for col in zip(*recs)]
            for n, recs in ((NUM["data_int"], RECORDS), (NUM["data_int_gse"], RECORDS[1:]),
                            (NUM["ack_sack_int"], RECORDS))}
    assert got == want


def test_gse_tag_dissects_alone_and_after_the_int_area(pcap):
    names = ["fabriclab.gse.tag.src_gsp", "fabriclab.gse.tag.dst_port", "fabriclab.gse.tag.seq",
             "fabriclab.gse.tag.index", "fabriclab.gse.tag.flags.last",
             "fabriclab.gse.tag.path"]
    got = fields(pcap, *names, filt="fabriclab.gse.tag")
    dst = P.wire_id(FLOW.dst)
    assert got == {
        NUM["data_gse"]: [str(v) for v in (2, dst, 0xDEADBEEF, 64, 1, 3)],
        NUM["data_int_gse"]: [str(v) for v in (7, dst, 11, 0, 0, 1)],
    }


def test_sack_and_extension_flags(pcap):
    got = fields(pcap, "fabriclab.sack.psn", "fabriclab.flags.int", "fabriclab.flags.gse",
                 "fabriclab.flags.sack", filt="fabriclab")
    assert got == {NUM["data_int"]: ["", "1", "0", "0"],
                   NUM["data_gse"]: ["", "0", "1", "0"],
                   NUM["data_int_gse"]: ["", "1", "1", "0"],
                   NUM["ack_sack_int"]: ["105", "1", "0", "1"]}


def test_gse_request_and_grant_dissect_on_both_ports(pcap):
    req = fields(pcap, "fabriclab.gse.type", "fabriclab.gse.request.n",
                 "fabriclab.gse.request.src_gsp", "fabriclab.gse.request.dst_port",
                 "fabriclab.gse.request.reserved", "fabriclab.gse.request.size",
                 filt="fabriclab.gse.request")
    assert req == {NUM["request"]: ["1", "3", "2", "3", "0x0000", _csv(*SIZES)],
                   NUM["probe_egress"]: ["1", "0", "4", "6", "0x0000", ""]}
    grant = fields(pcap, "fabriclab.gse.type", "fabriclab.gse.grant.path",
                   "fabriclab.gse.grant.src_gsp", "fabriclab.gse.grant.dst_port",
                   "fabriclab.gse.grant.flags", "fabriclab.gse.grant.flags.idle",
                   "fabriclab.gse.grant.nbytes", filt="fabriclab.gse.grant")
    assert grant == {NUM["grant"]: ["2", "2", "3", "1", "0x0001", "1", "65536"],
                     NUM["grant_egress"]: ["2", str(P.NO_PATH), "4", "6", "0x0000", "0",
                                           "500"]}


def test_filters_select_the_frames(pcap):
    def frames(filt):
        return set(fields(pcap, filt=filt))

    assert frames("fabriclab.int.hops == 2") == {NUM["data_int"], NUM["ack_sack_int"]}
    assert frames("fabriclab.int.qlen_bytes == 30000") == {NUM["data_int"], NUM["ack_sack_int"]}
    assert frames("fabriclab.gse.tag.flags.last == 1") == {NUM["data_gse"]}
    assert frames("fabriclab.gse") == {NUM[n] for n in ("request", "grant", "grant_egress",
                                                         "probe_egress")}
    # the plain data frame: nothing of fabriclab's, but still Wireshark's own RoCE dissection
    assert NUM["data_plain"] not in frames("fabriclab or fabriclab.gse")
    assert NUM["data_plain"] in frames("infiniband.bth.opcode == 4")


def test_verbose_dissection_is_clean(pcap):
    out = tshark(pcap, "-V")
    assert "Lua Error" not in out and "Malformed" not in out and "Expert Info" not in out
    for text in ("fabriclab RoCEv2 extensions", "fabriclab INT: 2 of 5 hops",
                 "fabriclab GSE container tag", "fabriclab SACK: PSN 105",
                 "fabriclab GSE control, REQUEST", "fabriclab GSE control, GRANT"):
        assert text in out
    n = NUM["data_plain"]
    plain = out.split(f"\nFrame {n}:")[1].split(f"\nFrame {n + 1}:")[0]
    assert "Base Transport Header" in plain and "fabriclab" not in plain


def test_a_capture_cut_at_the_snaplen_says_so_without_errors(pcap, tmp_path):
    """A capture cut like the emulator's (160 bytes, fabriclab.emu.pcap) before its RoCE frames
    are restored: an INT area + tag frame is cut inside its tag; the dissector notes it."""
    data = pcap.read_bytes()
    cut, off = [data[:24]], 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        keep = data[off + 16:off + 16 + incl][:160]
        cut.append(struct.pack("<IIII", sec, usec, len(keep), orig) + keep)
        off += 16 + incl
    path = tmp_path / "cut.pcap"
    path.write_bytes(b"".join(cut))
    out = tshark(path, "-V", "-Y", f"frame.number == {NUM['data_int_gse']}")
    assert "Lua Error" not in out
    assert "Expert Info (Note/Undecoded): GSE container tag: 12 bytes" in out
    assert "fabriclab INT: 1 of 5 hops" in out
