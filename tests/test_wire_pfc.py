"""PFC frames (IEEE 802.1Qbb): the struct codec round-trips, builds and reads the bytes
scapy's MACControlClassBasedFlowControl builds and reads, rejects bad input, and converts
quanta to time at a link rate."""

import pytest
from scapy.all import Ether, raw
from scapy.contrib.mac_control import MACControlClassBasedFlowControl as ScapyPfc
from scapy.contrib.mac_control import MACControlPause

from fabriclab.wire import pfc

SRC = bytes.fromhex("02000000002a")
SRC_STR = "02:00:00:00:00:2a"
CASES = {
    "pause_one": {3: 0xFFFF},
    "resume_one": {3: 0},
    "mixed": {0: 0, 3: 1000, 7: 12},
    "all": {p: 100 * p + 1 for p in range(8)},
    "none": {},
}


def scapy_frame(quanta: dict[int, int]) -> Ether:
    fields = {}
    for p, q in quanta.items():
        fields[f"c{p}_enabled"] = 1
        fields[f"c{p}_pause_time"] = q
    return Ether(dst="01:80:c2:00:00:01", src=SRC_STR) / ScapyPfc(**fields)


@pytest.mark.parametrize("name", CASES)
def test_round_trip(name):
    q = CASES[name]
    buf = pfc.encode(SRC, q)
    assert len(buf) == pfc.FRAME_BYTES == 60
    assert buf[:6] == pfc.PFC_DST and buf[6:12] == SRC
    assert buf[34:] == bytes(26)  # zero padding
    assert pfc.decode(buf) == q


@pytest.mark.parametrize("name", CASES)
def test_scapy_builds_the_same_bytes(name):
    assert raw(scapy_frame(CASES[name])) == pfc.encode(SRC, CASES[name])


@pytest.mark.parametrize("name", CASES)
def test_scapy_dissects_encode(name):
    """Every class-enable bit and every time field, as scapy reads them."""
    q = CASES[name]
    d = Ether(pfc.encode(SRC, q))
    assert d.dst == "01:80:c2:00:00:01" and d.src == SRC_STR and d.type == pfc.ETHERTYPE
    c = d[ScapyPfc]
    assert c._op_code == pfc.OPCODE and c._reserved == 0
    for p in range(8):
        assert getattr(c, f"c{p}_enabled") == (1 if p in q else 0), p
        assert getattr(c, f"c{p}_pause_time") == q.get(p, 0), p


@pytest.mark.parametrize("name", CASES)
def test_decode_reads_scapy_frames(name):
    assert pfc.decode(raw(scapy_frame(CASES[name]))) == CASES[name]


def test_decode_ignores_disabled_time_fields():
    """A time field whose enable bit is clear does not count, whatever it holds."""
    frame = raw(Ether(dst="01:80:c2:00:00:01", src=SRC_STR)
                / ScapyPfc(c2_enabled=1, c2_pause_time=5, c4_pause_time=999))
    assert pfc.decode(frame) == {2: 5}


def test_decode_rejects_what_is_not_pfc():
    good = pfc.encode(SRC, {3: 7})
    assert pfc.decode(good[:pfc.HEADER_BYTES]) == {3: 7}  # padding is not needed to read
    assert pfc.decode(good[:pfc.HEADER_BYTES - 1]) is None
    assert pfc.decode(b"") is None
    assert pfc.decode(good[:12] + b"\x08\x00" + good[14:]) is None  # IPv4
    # 802.3x PAUSE: MAC Control, another opcode
    assert pfc.decode(raw(Ether(dst="01:80:c2:00:00:01", src=SRC_STR)
                          / MACControlPause(pause_time=100))) is None
    assert pfc.decode(good[:14] + b"\x00\x02" + good[16:]) is None


@pytest.mark.parametrize("src, quanta, words", [
    (SRC, {8: 1}, "priority"),
    (SRC, {-1: 1}, "priority"),
    (SRC, {"3": 1}, "priority"),
    (SRC, {3: 0x10000}, "quanta"),
    (SRC, {3: -1}, "quanta"),
    (SRC, {3: 1.5}, "quanta"),
    (SRC[:5], {3: 1}, "6 bytes"),
    (SRC + b"\0", {3: 1}, "6 bytes"),
    (SRC_STR, {3: 1}, "6 bytes"),
])
def test_encode_rejects_bad_input(src, quanta, words):
    with pytest.raises(ValueError, match=words):
        pfc.encode(src, quanta)


def test_quanta_ns_at_100g():
    # 65535 x 512 bits = 33,553,920 bits; at 100e9 b/s that is 335,539.2 ns, rounded up
    assert 0xFFFF * 512 == 33_553_920
    assert pfc.quanta_ns(pfc.MAX_QUANTA, 100 * 10**9) == 335_540
    assert pfc.quanta_ns(1, 100 * 10**9) == 6  # 5.12 ns
    assert pfc.quanta_ns(0, 100 * 10**9) == 0
    assert pfc.quanta_ns(1, 10**9) == 512  # exact: no rounding
    assert pfc.quanta_ns(0xFFFF, 25 * 10**9) == 1_342_157  # 1,342,156.8 ns


def test_quanta_for_ns():
    r = 100 * 10**9
    assert pfc.quanta_for_ns(0, r) == 0
    assert pfc.quanta_for_ns(1, r) == 1
    assert pfc.quanta_for_ns(512, 10**9) == 1 and pfc.quanta_for_ns(513, 10**9) == 2
    assert pfc.quanta_for_ns(335_539, r) == 0xFFFF  # 65534 quanta = 335,534.08 ns: short
    assert pfc.quanta_for_ns(335_534, r) == 0xFFFE
    assert pfc.quanta_for_ns(10**9, r) == pfc.MAX_QUANTA  # capped
    for ns in (1, 5, 6, 1000, 123_456, 335_000):
        q = pfc.quanta_for_ns(ns, r)
        assert pfc.quanta_ns(q, r) >= ns and (q - 1) * 512 * 10**9 / r < ns


def test_rates_must_be_positive():
    with pytest.raises(ValueError, match="rate"):
        pfc.quanta_ns(1, 0)
    with pytest.raises(ValueError, match="rate"):
        pfc.quanta_for_ns(1, -5)
