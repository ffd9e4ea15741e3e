"""The GSP in the leaf, written once (issue 14, part 2): ``fabriclab.nic.leaf.LeafGsp`` is
what the simulator's leaves and the emulator's GSP daemon both drive, and the container
frames the daemon makes of plain RoCE frames (``fabriclab.wire.ipv4``)."""

import struct

from scapy.all import IP, UDP, Ether

from fabriclab.cc_algorithms.gse import GseParams
from fabriclab.nic import ManualTimers
from fabriclab.nic.leaf import LeafGsp
from fabriclab.wire import frames as W
from fabriclab.wire import roce as P
from fabriclab.wire.ipv4 import insert_tag, strip_tag, udp_frame

MTU = 1000


def _data_frame(psn: int, tos: int = 0x02) -> bytes:
    """A plain RoCE data frame as a host's kernel sends it (ECT(0) unless told)."""
    payload = P.encode("data", 7, psn, bytes(MTU))
    f = bytearray(udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.2", "10.0.0.1",
                            50007, P.ROCE_PORT, payload))
    f[15] = tos
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", _ip_csum(bytes(f[14:34])))
    return bytes(f)


def _ip_csum(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def test_a_container_tag_goes_in_and_out_with_valid_headers():
    """The GSP daemon tags a host's frame on the way up (DSCP = path + 1, the tag after the
    BTH, lengths and IPv4 checksum right, ECN kept) and strips it on the way down (the
    frame as the host sent it, DSCP 0, a CE mark from the fabric kept)."""
    plain = _data_frame(5)
    tag = P.gse_tag(1, 0, 9, 3, True, 1)
    up = insert_tag(plain, tag, P.GSE_FLAG, 2)
    assert len(up) == len(plain) + P.GSE_TAG.size
    ip = Ether(bytes(up))[IP]
    assert ip.tos == (2 << 2) | 0x02 and ip.len == len(up) - 14
    assert _ip_csum(bytes(up[14:34])) == 0  # a valid header sums to 0xFFFF
    assert ip[UDP].len == len(up) - 34 and ip[UDP].chksum == 0
    body = bytes(ip[UDP].payload)
    assert P.has_gse_tag(body) and P.parse_gse_tag(body) == (1, 0, 9, 3, True, 1)
    assert P.decode(body)[:3] == ("data", 7, 5)
    up[15] |= 0x03  # CE on the way
    down = strip_tag(up, P.GSE_TAG.size, P.GSE_FLAG)
    assert bytes(down[34:40]) == plain[34:40] and bytes(down[42:]) == plain[42:]
    assert down[15] == 0x03 and _ip_csum(bytes(down[14:34])) == 0
    assert not P.has_gse_tag(bytes(down[42:]))


class _Owner:
    """A leaf as the GSP sees it: what it forwards and what it asks GSOS."""

    def __init__(self, n_paths: int = 2):
        self.sent, self.requests = [], []
        self.timers = ManualTimers()
        params = GseParams.defaults()
        self.gsp = LeafGsp(forward=lambda item, dst, tag, now: self.sent.append((item, tag)),
                           gsp_id=4, params=params, frames=W, timers=self.timers,
                           paths=lambda dst: [None] * n_paths, port_rate_of=lambda d: 10**11,
                           mtu=MTU, header=70, control_bytes=64, ctrl_prio=0,
                           to_gsos=lambda now, dst, sizes: self.requests.append((dst, sizes)))
        self.params = params


def test_the_leaf_gsp_holds_data_until_credit_and_charges_its_ingress_port():
    """Nothing leaves without credit; the VOQ's bytes are charged to the port they came in
    by until they leave; a grant of one container lets exactly that much go, tagged as one
    container (consecutive indices, the last one flagged) on the granted path."""
    o = _Owner()
    g = o.gsp
    c = o.params.container_bytes
    n = 2 * c // MTU
    for i in range(n):
        g.enqueue(1000 + i, 0, f"f{i}", MTU, src="port1", size=MTU + 70)
    assert o.sent == [] and o.requests and o.requests[0][0] == 0
    assert all(dst == 0 and all(0 < x <= c for x in s) for dst, s in o.requests)
    assert g.ingress_bytes["port1"] == n * (MTU + 70)
    assert g.voq_max_bytes == n * MTU
    g.on_grant(5000, 0, c, 1)
    first = o.sent
    assert len(first) == -(-c // MTU)  # while credit is left: the last one overdraws
    assert [t[2] for _, t in first] == list(range(len(first)))  # index in the container
    assert {t[1] for _, t in first} == {first[0][1][1]} and {t[4] for _, t in first} == {1}
    assert [t[3] for _, t in first] == [False] * (len(first) - 1) + [True]
    assert [item for item, _ in first] == [f"f{i}" for i in range(len(first))]  # in order
    assert g.ingress_bytes["port1"] == (n - len(first)) * (MTU + 70)
    assert g.summary()["voq_max_bytes"] == n * MTU


def test_the_leaf_gsp_reorders_per_source_and_destination_port():
    """Containers of one source towards one port come out in container order, whatever
    order they arrive in; another destination port's sequence is its own."""
    o = _Owner()
    g = o.gsp

    class F:
        def __init__(self, src, seq, index, last):
            self.tag, self.size = W.new_tag((src, seq, index, last, 0)), 1070

    out = g.reorder_accept(0, F(1, 1, 0, True), "b", dst=0)  # container 1 before 0
    assert out == []
    assert g.reorder_accept(1, F(1, 0, 0, False), "a0", dst=0) == ["a0"]
    assert g.reorder_accept(2, F(1, 0, 1, True), "a1", dst=0) == ["a1", "b"]
    assert g.reorder_accept(3, F(1, 0, 0, True), "x", dst=5) == ["x"]  # port 5: its own


def test_both_engines_drive_the_same_leaf_gsp():
    """The simulator's leaf GSP and the emulator's daemon's are the shared class, not
    copies of it."""
    from fabriclab.emu.gspd import EmuLeafGsp
    from fabriclab.sim import gse as sim_gse
    assert issubclass(EmuLeafGsp, LeafGsp) and issubclass(sim_gse._LeafGsp, LeafGsp)
    for cls in (EmuLeafGsp, sim_gse._LeafGsp):
        assert "release" not in vars(cls) and "enqueue" not in vars(cls)
