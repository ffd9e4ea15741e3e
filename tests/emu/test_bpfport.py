"""The eBPF switch-port program on a real veth shaped by HTB.

Set-up (per test): veth ``flbt0`` (root namespace, 10.199.0.1/24) <-> ``flbt1`` (namespace
``flbtB``, 10.199.0.2/24), ``flbt0`` egress shaped by HTB at 10 Mbit/s over a 2 MB bfifo,
the program attached to ``flbt0``.  UDP is sent from the root namespace; a receiver in
``flbtB`` reports the TOS byte of every datagram, so CE marks (and, since the receiving
kernel drops IPv4 headers with a bad checksum, the checksum fix) are seen end to end.
The INT tests send RoCEv2 frames (``fabriclab.wire.roce``) to UDP port 4791 with UDP
checksum 0, and a second receiver returns every datagram as it arrived, with its TOS and
CLOCK_MONOTONIC arrival time, so the records the program appended can be checked.

Only ``flbt*`` interfaces and the ``flbtB`` namespace are created, and the finalizer
removes exactly those.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fabriclab.emu import bpfport
from fabriclab.wire import roce as P
from fabriclab.emu.bpfport import BpfError, PortProgram

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: creates a netns and veths, loads eBPF with tc"),
    pytest.mark.timeout(120),
]

NS = "flbtB"
IF_SW, IF_HOST = "flbt0", "flbt1"  # switch port (root ns) and the host end (in NS)
IP_SW, IP_HOST = "10.199.0.1", "10.199.0.2"
RATE_BPS = 10_000_000
BFIFO_LIMIT = 2_000_000
PAYLOAD = 1000
WIRE = PAYLOAD + 8 + 20 + 14  # UDP + IPv4 + Ethernet: what the program and HTB count
KMIN, KMAX = 20_000, 100_000
UDP_PORT = 5001
ECT0, CE = 0x02, 0x03
STOP = b"stop"
SO_NO_CHECK = 11  # socket.SO_NO_CHECK is not exported by every Python
RATE_KBPS = RATE_BPS // 1000

# Both receivers: a UDP socket on argv[3]:argv[1] that reports each datagram's TOS; they
# write their findings to argv[2] at b"stop" or after 20 s of silence (5 s once started).
_RECEIVER_SETUP = r'''
import json, socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind((sys.argv[3], port))
s.settimeout(20.0)
print("ready", flush=True)
'''

RECEIVER = _RECEIVER_SETUP + r'''
tos_counts, ce_seqs, n = {}, [], 0
while True:
    try:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(1))
    except socket.timeout:
        break
    if data == b"stop":
        break
    s.settimeout(5.0)
    tos = next((c[2][0] for c in anc
                if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS), -1)
    tos_counts[tos] = tos_counts.get(tos, 0) + 1
    if tos >= 0 and tos & 3 == 3:
        ce_seqs.append(int.from_bytes(data[:4], "big"))
    n += 1
with open(out, "w") as f:
    json.dump({"n": n, "tos": {str(k): v for k, v in tos_counts.items()},
               "ce_seqs": ce_seqs}, f)
'''

# Returns every datagram as it arrived: [monotonic ns after recvmsg, TOS, payload hex].
RAW_RECEIVER = _RECEIVER_SETUP + r'''
got = []
while True:
    try:
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(1))
    except socket.timeout:
        break
    t = time.monotonic_ns()
    if data == b"stop":
        break
    s.settimeout(5.0)
    tos = next((c[2][0] for c in anc
                if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS), -1)
    got.append([t, tos, data.hex()])
with open(out, "w") as f:
    json.dump(got, f)
'''


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res


def _ns(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run("ip", "netns", "exec", NS, *cmd, check=check)


def _remove_resources() -> None:
    # Exactly what this module creates; deleting flbt0 deletes its peer too.
    for ifname in (IF_SW, "flbt2"):
        if os.path.exists(f"/sys/class/net/{ifname}"):
            _run("ip", "link", "del", ifname, check=False)
    if NS in _run("ip", "netns", "list").stdout.split():
        _run("ip", "netns", "del", NS, check=False)


def _mac(ifname: str, netns: str | None = None) -> str:
    cmd = ("ip", "-j", "link", "show", "dev", ifname)
    res = _ns(*cmd) if netns else _run(*cmd)
    return json.loads(res.stdout)[0]["address"]


@pytest.fixture
def link():
    """The shaped veth pair; yields nothing, removes everything it made."""
    _remove_resources()  # left over from an interrupted run
    try:
        _run("ip", "netns", "add", NS)
        _run("ip", "link", "add", IF_SW, "type", "veth", "peer", "name", IF_HOST)
        _run("ip", "link", "set", IF_HOST, "netns", NS)
        # No IPv6 (router solicitations, MLD) and static neighbours (no ARP): the only
        # packets on the link are the test's, so the counters can be checked exactly.
        _run("sysctl", "-qw", f"net.ipv6.conf.{IF_SW}.disable_ipv6=1")
        _ns("sysctl", "-qw", f"net.ipv6.conf.{IF_HOST}.disable_ipv6=1")
        _run("ip", "addr", "add", f"{IP_SW}/24", "dev", IF_SW)
        _ns("ip", "addr", "add", f"{IP_HOST}/24", "dev", IF_HOST)
        _run("ip", "link", "set", IF_SW, "up")
        _ns("ip", "link", "set", IF_HOST, "up")
        _ns("ip", "link", "set", "lo", "up")
        # As the emulator does (emu/network.py): the receiving end takes frames through its
        # NAPI ring, so the shaper's dequeues on either CPU cannot reorder them.
        _run("ethtool", "-K", IF_SW, "tx", "off")
        _ns("ethtool", "-K", IF_HOST, "gro", "on")
        _run("ip", "neigh", "replace", IP_HOST, "lladdr", _mac(IF_HOST, NS), "dev", IF_SW,
             "nud", "permanent")
        _ns("ip", "neigh", "replace", IP_SW, "lladdr", _mac(IF_SW), "dev", IF_HOST,
            "nud", "permanent")
        _run("tc", "qdisc", "add", "dev", IF_SW, "root", "handle", "1:", "htb", "default", "1")
        _run("tc", "class", "add", "dev", IF_SW, "parent", "1:", "classid", "1:1", "htb",
             "rate", f"{RATE_BPS}bit", "ceil", f"{RATE_BPS}bit")
        _run("tc", "qdisc", "add", "dev", IF_SW, "parent", "1:1", "handle", "10:", "bfifo",
             "limit", str(BFIFO_LIMIT))
        yield
    finally:
        _remove_resources()


@pytest.fixture
def port(link):
    p = PortProgram.attach(IF_SW, RATE_BPS, KMIN, KMAX, pmax=0.2)
    yield p
    p.detach()


def _qdisc_stats() -> dict:
    """HTB root backlog and total drops on the switch port, from tc."""
    qs = json.loads(_run("tc", "-s", "-j", "qdisc", "show", "dev", IF_SW).stdout)
    htb = next(q for q in qs if q["kind"] == "htb")
    return {"backlog": htb["backlog"], "drops": sum(q.get("drops", 0) for q in qs)}


class Receiver:
    """The UDP receiver in the namespace; ``result()`` waits for its report."""

    SCRIPT, PORT = RECEIVER, UDP_PORT

    def __init__(self, tmp: Path):
        script, self.out = tmp / "recv.py", tmp / "recv.json"
        script.write_text(self.SCRIPT)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, str(script), str(self.PORT),
             str(self.out), IP_HOST], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", "receiver did not start"

    def _stop(self, timeout: float) -> None:
        stop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stop.sendto(STOP, (IP_HOST, self.PORT))  # queued behind the data: arrives last
        stop.close()
        self.proc.wait(timeout)

    def result(self, timeout: float = 30.0) -> dict:
        self._stop(timeout)
        data = json.loads(self.out.read_text())
        return {"n": data["n"], "tos": {int(k): v for k, v in data["tos"].items()},
                "ce_seqs": set(data["ce_seqs"])}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Arrival:
    t_ns: int  # CLOCK_MONOTONIC just after the receiver got it
    tos: int
    payload: bytes


class RawReceiver(Receiver):
    """Receiver on the RoCEv2 port returning every datagram (``Arrival``) in order."""

    SCRIPT, PORT = RAW_RECEIVER, P.ROCE_PORT

    def result(self, timeout: float = 30.0) -> list[Arrival]:
        self._stop(timeout)
        return [Arrival(t, tos, bytes.fromhex(h)) for t, tos, h in
                json.loads(self.out.read_text())]


@pytest.fixture
def receiver(link, tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.kill()


@pytest.fixture
def roce_receiver(link, tmp_path):
    r = RawReceiver(tmp_path)
    yield r
    r.kill()


@dataclass
class Sent:
    pkts: int
    seconds: float


def send_udp(rate_bps: float, seconds: float, tos: int, max_burst: int | None = None,
             sample=None, sample_every: float = 0.1) -> Sent:
    """Pace UDP datagrams to the receiver at ``rate_bps`` (L2 bytes) for ``seconds``.

    ``max_burst`` bounds how many datagrams are sent back to back when the loop falls
    behind (the schedule slips instead); ``sample()`` is called every ``sample_every`` s.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    # Queued datagrams stay charged to the socket until HTB sends them; without a big
    # buffer the sender would block and the queue could not build up.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    interval = WIRE * 8 / rate_bps
    pad = bytes(PAYLOAD - 4)
    n, t0 = 0, time.perf_counter()
    next_sample = sample_every
    try:
        while True:
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
            due = int(elapsed / interval) + 1
            if max_burst is not None and due - n > max_burst:
                t0 += (due - n - max_burst) * interval
                due = n + max_burst
            while n < due:
                sock.sendto(struct.pack("!I", n) + pad, (IP_HOST, UDP_PORT))
                n += 1
            if sample is not None and elapsed >= next_sample:
                sample()
                next_sample += sample_every
            time.sleep(max(0.0, n * interval - (time.perf_counter() - t0)))
    finally:
        sock.close()
    return Sent(n, time.perf_counter() - t0)


def _seq_joining(q_bytes: int) -> int:
    """The datagram (from 0) that joins a queue of ``q_bytes``, at 30 Mbit/s into 10.

    The queue grows by 2/3 of every datagram (the port sends 1/3 in the meantime), so
    datagram i joins a queue of about (i + 1) * WIRE * 2/3 bytes, itself included.
    """
    return q_bytes * 3 // (2 * WIRE)


def check_red_profile(ce_seqs: set[int], n: int, pmax: float) -> int:
    """Marks follow RED on the queue each datagram joined; returns the ramp's mark count.

    A sender stall can only make a datagram join a *shorter* queue than the schedule
    says, so the windows keep a margin on the side a stall would push them.
    """
    lo, hi = _seq_joining(KMIN), _seq_joining(KMAX)
    assert not {i for i in ce_seqs if i < lo - 3}, "marked below kmin"
    assert set(range(hi + 56, n)) <= ce_seqs, "not every datagram above kmax was marked"
    ramp = range(lo + 6, hi - 9)
    probs = [pmax * ((i + 1) * WIRE * 2 / 3 - KMIN) / (KMAX - KMIN) for i in ramp]
    mean, sd = sum(probs), sum(p * (1 - p) for p in probs) ** 0.5
    marks = len(ce_seqs & set(ramp))
    log.info("RED ramp (datagrams %d..%d): %d marks, expected %.1f +- %.1f",
             ramp.start, ramp.stop - 1, marks, mean, sd)
    assert 1 <= marks and mean - 5 * sd - 3 <= marks <= mean + 5 * sd + 3
    return marks


def _wait_drained(p: PortProgram, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _qdisc_stats()["backlog"] == 0 and p.read().queue_bytes == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the port queue did not drain")


def _ip_header_errors() -> tuple[int, int]:
    """(InHdrErrors, InCsumErrors) of the receiving namespace's IPv4 stack."""
    snmp = _ns("cat", "/proc/net/snmp").stdout.splitlines()
    ip = [ln.split()[1:] for ln in snmp if ln.startswith("Ip:")]
    ext = [ln.split()[1:] for ln in _ns("cat", "/proc/net/netstat").stdout.splitlines()
           if ln.startswith("IpExt:")]
    hdr = int(dict(zip(ip[0], ip[1], strict=True))["InHdrErrors"])
    csum = int(dict(zip(ext[0], ext[1], strict=True)).get("InCsumErrors", 0))
    return hdr, csum


# --------------------------------------------------------------------------- traffic

def test_under_rate_counts_everything_and_marks_nothing(port, receiver):
    sent = send_udp(5_000_000, 1.0, ECT0, max_burst=1)
    c = port.read()
    got = receiver.result()
    log.info("under rate: sent %d, %s, received %d %s", sent.pkts, c, got["n"], got["tos"])
    assert sent.pkts > 500
    # Static neighbours and no IPv6: nothing but the test's datagrams crossed the port.
    assert c.tx_pkts == sent.pkts
    assert c.tx_bytes == sent.pkts * WIRE
    assert c.ect_pkts == sent.pkts
    assert c.ce_marks == 0
    # One packet in service at a time (plus a little for the sender's timing jitter).
    assert WIRE <= c.max_queue_bytes <= 2 * WIRE
    assert got["n"] == sent.pkts and got["tos"] == {ECT0: sent.pkts}
    time.sleep(0.01)  # > one packet time: the phantom queue has drained
    assert port.read().queue_bytes == 0


def test_overdriven_marks_ce_and_tracks_the_real_backlog(port, receiver):
    hdr0 = _ip_header_errors()
    samples = []

    def sample():
        before = port.read().queue_bytes
        real = _qdisc_stats()["backlog"]
        after = port.read().queue_bytes
        samples.append((before, real, after))

    # 30 Mbit/s into 10 Mbit/s for 0.5 s: ~1.25 MB builds up, under the 2 MB bfifo.
    sent = send_udp(30_000_000, 0.5, ECT0, sample=sample, sample_every=0.05)
    c = port.read()
    drops = _qdisc_stats()["drops"]
    got = receiver.result()
    log.info("overdriven: sent %d in %.2f s, %s, bfifo drops %d, received %d %s",
             sent.pkts, sent.seconds, c, drops, got["n"], got["tos"])
    for before, real, after in samples:
        log.info("phantom %7d .. %7d  real backlog %7d", before, after, real)

    assert c.tx_pkts == sent.pkts and c.ect_pkts == sent.pkts
    assert c.max_queue_bytes > KMAX
    assert c.ce_marks > 0
    # Every datagram arrived, so every rewritten IPv4 checksum was valid (the receiving
    # kernel drops bad ones and counts them).
    assert got["n"] == sent.pkts - drops
    assert _ip_header_errors() == hdr0
    assert set(got["tos"]) <= {ECT0, CE}
    ce_seen = got["tos"].get(CE, 0)
    assert c.ce_marks - drops <= ce_seen <= c.ce_marks
    assert len(got["ce_seqs"]) == ce_seen
    check_red_profile(got["ce_seqs"], sent.pkts, pmax=0.2)

    # The phantom queue follows the HTB backlog (phantom read just before and just after
    # tc, while the sender is paused, brackets the real value).
    busy = [s for s in samples if s[1] > 10 * WIRE]
    assert len(busy) >= 5, samples
    for before, real, after in busy:
        slack = 0.2 * real + 2 * WIRE
        assert after - slack <= real <= before + slack, (before, real, after)
    _wait_drained(port)


def test_non_ect_traffic_is_never_marked(port, receiver):
    sent = send_udp(30_000_000, 0.3, 0)
    c = port.read()
    got = receiver.result()
    log.info("non-ECT overdriven: sent %d, %s, received %d %s", sent.pkts, c, got["n"],
             got["tos"])
    assert c.max_queue_bytes > KMAX  # ECT traffic would have been marked
    assert c.tx_pkts == sent.pkts
    assert c.ect_pkts == 0 and c.ce_marks == 0
    assert got["tos"] == {0: got["n"]}


def test_ecn_disabled_by_set_config_counts_but_never_marks(port, receiver):
    port.set_config(RATE_BPS, KMIN, KMAX, pmax=1.0, ecn_enabled=False)
    sent = send_udp(30_000_000, 0.3, ECT0)
    c = port.read()
    got = receiver.result()
    log.info("ECN off: sent %d, %s, received %d %s", sent.pkts, c, got["n"], got["tos"])
    assert c.max_queue_bytes > KMAX
    assert c.ect_pkts == sent.pkts and c.ce_marks == 0
    assert got["tos"] == {ECT0: got["n"]}


def test_pmax_one_marks_everything_above_kmax(link, receiver):
    with PortProgram.attach(IF_SW, RATE_BPS, KMIN, KMAX, pmax=1.0) as p:
        sent = send_udp(30_000_000, 0.3, ECT0)
        c = p.read()
        got = receiver.result()
    log.info("pmax 1: sent %d, %s, received %d %s", sent.pkts, c, got["n"], got["tos"])
    assert got["tos"].get(CE, 0) == c.ce_marks
    check_red_profile(got["ce_seqs"], sent.pkts, pmax=1.0)


# --------------------------------------------------------------------------- INT (HPCC)

def int_frame(psn: int, data_len: int, area: bytes | None = None, flag: bool = True,
              kind: str = "data") -> bytes:
    """UDP payload: BTH (INT flag set if ``flag``) + INT area + data + ICRC.

    The data repeats the psn, so a payload altered beyond the INT area shows.
    """
    data = (psn.to_bytes(4, "big") * (data_len // 4 + 1))[:data_len]
    enc = bytearray(P.encode(kind, 7, psn, data))
    if flag:
        enc[8] |= P.INT_FLAG
    return bytes(enc[:P.BTH_LEN]) + (P.int_area([]) if area is None else area) \
        + bytes(enc[P.BTH_LEN:])


def wire_len(payload: bytes) -> int:
    """skb->len on the veth: Ethernet + IPv4 total length (20 + 8 + payload)."""
    return 14 + 20 + 8 + len(payload)


@dataclass
class SentFrames:
    times: list[tuple[int, int]]  # CLOCK_MONOTONIC ns just before / after each sendto
    samples: list[tuple]          # whatever sample(n_sent) returned, in order


def send_frames(frames: list[bytes], rate_bps: float, tos: int = 0, no_check: bool = True,
                sample=None, sample_every: float = 0.05) -> SentFrames:
    """Send ``frames`` to the RoCEv2 port, paced at ``rate_bps`` of L2 bytes.

    With ``no_check`` the socket sends UDP checksum 0 (SO_NO_CHECK), as the agents do.
    ``sample(n_sent)`` is called every ``sample_every`` s between frames.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    if no_check:
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    due, acc = [], 0.0
    for f in frames:  # the time each frame is due, from the start
        due.append(acc)
        acc += wire_len(f) * 8 / rate_bps
    times, samples = [], []
    dest = (IP_HOST, P.ROCE_PORT)
    n, t0 = 0, time.perf_counter()
    next_sample = sample_every
    try:
        while n < len(frames):
            elapsed = time.perf_counter() - t0
            while n < len(frames) and due[n] <= elapsed:
                before = time.monotonic_ns()
                sock.sendto(frames[n], dest)
                times.append((before, time.monotonic_ns()))
                n += 1
            if sample is not None and elapsed >= next_sample:
                samples.append(sample(n))
                next_sample += sample_every
            if n < len(frames):
                time.sleep(max(0.0, due[n] - (time.perf_counter() - t0)))
    finally:
        sock.close()
    return SentFrames(times, samples)


def one_record(a: Arrival) -> tuple[int, int, int, int]:
    recs = P.parse_int(a.payload)
    assert len(recs) == 1, recs
    return recs[0]


def check_stamped(sent: bytes, got: bytes, hops_before: int = 0) -> None:
    """``got`` is ``sent`` with exactly one record appended at hop ``hops_before``."""
    off = P.INT_OFFSET + P.INT_HEADER.size + hops_before * P.INT_RECORD.size
    assert len(got) == len(sent)
    assert got[P.INT_OFFSET] == hops_before + 1
    assert got[:P.INT_OFFSET] == sent[:P.INT_OFFSET]  # BTH untouched
    assert got[P.INT_OFFSET + 1:off] == sent[P.INT_OFFSET + 1:off]  # max_hops, earlier hops
    assert got[off + P.INT_RECORD.size:] == sent[off + P.INT_RECORD.size:]


def phantom_after(rec, frame_len: int, t_ns: int) -> float:
    """The phantom queue at ``t_ns`` from a record: the packet's queue drained since."""
    ts, _, qlen, rate_kbps = rec
    return max(0.0, qlen + frame_len - (t_ns - ts) * rate_kbps * 1000 / 8e9)


def check_queue_recurrence(recs, lens) -> None:
    """Every record's qlen follows from the previous one by the phantom-queue formula.

    The program drains in whole bytes and carries the remainder in its clock, so the
    float model agrees to within a couple of bytes at every step.
    """
    for i in range(1, len(recs)):
        model = phantom_after(recs[i - 1], lens[i - 1], recs[i][0])
        assert abs(recs[i][2] - model) <= 2, (i, recs[i - 1], recs[i], model)


def test_int_one_record_per_port_with_rate_time_and_tx_bytes(port, roce_receiver):
    # Under the rate, sizes varying so tx_bytes steps by a different length every time.
    frames = [int_frame(i, 100 + (i * 37) % 1200) for i in range(300)]
    sent = send_frames(frames, 5_000_000)
    c = port.read()
    got = roce_receiver.result()
    assert len(got) == len(frames)
    recs = [one_record(a) for a in got]
    lens = [wire_len(f) for f in frames]
    log.info("INT under rate: %s; first records %s", c, recs[:3])
    assert c.int_stamped == len(frames) and c.int_skipped == 0
    assert c.tx_pkts == len(frames)

    tx = 0
    for i, (f, a, (before, after), rec) in enumerate(zip(frames, got, sent.times, recs)):
        ts, tx_bytes, _, rate_kbps = rec
        check_stamped(f, a.payload)
        assert rate_kbps == RATE_KBPS
        # The hook runs inside sendto() (clsact egress, before the qdisc), so the stamp
        # lies within the call; and the frame arrives after it (possibly on another CPU
        # before sendto() has returned).
        assert before <= ts <= after and ts <= a.t_ns, (i, before, ts, after, a.t_ns)
        tx += lens[i]
        assert tx_bytes == tx % 2**32, (i, tx_bytes, tx)
    assert recs[-1][1] == c.tx_bytes % 2**32  # the last record is the port counter
    check_queue_recurrence(recs, lens)
    assert sum(r[2] == 0 for r in recs) > len(recs) // 2  # mostly an empty queue ahead


def _linear_fit(xs, ys) -> tuple[float, float]:
    """Slope and R^2 of a least-squares line."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / sxx, sxy * sxy / (sxx * syy)


def test_int_qlen_tracks_the_phantom_and_the_real_backlog(port, roce_receiver):
    frames = [int_frame(i, PAYLOAD - P.BTH_LEN - P.INT_AREA_LEN - P.ICRC_LEN)
              for i in range(int(30_000_000 * 0.5 / 8 / WIRE))]
    L = wire_len(frames[0])
    assert L == WIRE

    def sample(n):
        t0 = time.monotonic_ns()
        before = port.read().queue_bytes
        ta = time.monotonic_ns()
        real = _qdisc_stats()["backlog"]
        tb = time.monotonic_ns()
        after = port.read().queue_bytes
        return n, t0, ta, before, real, tb, time.monotonic_ns(), after

    # 30 Mbit/s into 10 for 0.5 s, as in the ECN test: ~1.25 MB builds up, no drops.
    sent = send_frames(frames, 30_000_000, sample=sample)
    c = port.read()
    drops = _qdisc_stats()["drops"]
    got = roce_receiver.result()
    assert drops == 0 and len(got) == len(frames)
    recs = [one_record(a) for a in got]
    for f, a in zip(frames, got):
        check_stamped(f, a.payload)
    assert c.int_stamped == len(frames)
    assert all(r[3] == RATE_KBPS for r in recs)
    ts = [r[0] for r in recs]
    q = [r[2] for r in recs]
    log.info("INT overdriven: %d frames in %.3f s, %s; qlen every 100th: %s", len(frames),
             (ts[-1] - ts[0]) / 1e9, c, q[::100])

    # Each qlen is the queue ahead of the frame: exactly the phantom-queue recurrence,
    # and the high-water mark (which includes the packet) is the largest qlen + len.
    check_queue_recurrence(recs, [L] * len(recs))
    assert c.max_queue_bytes == max(q) + L
    assert q[-1] > KMAX

    # It grows linearly at the offered rate minus the shaped rate.
    offered = L * (len(frames) - 1) / ((ts[-1] - ts[0]) / 1e9)  # bytes/s
    slope, r2 = _linear_fit([t / 1e9 for t in ts], q)
    log.info("qlen slope %.0f B/s (offered %.0f - rate %.0f = %.0f), R^2 %.4f",
             slope, offered, RATE_BPS / 8, offered - RATE_BPS / 8, r2)
    assert r2 > 0.97
    assert 0.8 <= slope / (offered - RATE_BPS / 8) <= 1.2

    # PortProgram.read() and the HTB backlog, sampled while the sender paused, agree with
    # the queue the last record before the sample describes (drained to the sample time).
    busy = 0
    for n, t0, ta, before, real, tb, t1, after in sent.samples:
        if n == 0:
            continue
        last = recs[n - 1]
        assert phantom_after(last, L, ta) - 2 <= before <= phantom_after(last, L, t0) + 2
        assert phantom_after(last, L, t1) - 2 <= after <= phantom_after(last, L, tb) + 2
        if real > 10 * WIRE:
            busy += 1
            slack = 0.2 * real + 2 * WIRE
            assert phantom_after(last, L, tb) - slack <= real \
                <= phantom_after(last, L, ta) + slack, (last, real, ta, tb)
        log.info("sample after %4d frames: record says %7.0f, read() %7d, HTB %7d",
                 n, phantom_after(last, L, t0), before, real)
    assert busy >= 5, sent.samples
    _wait_drained(port)


def test_int_frames_that_must_not_be_stamped_pass_unchanged(port, roce_receiver):
    data = 200
    full = [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20)]
    two = [(111, 222, 333, 444), (555, 666, 777, 888)]
    unchanged = {
        "full": int_frame(1, data, P.int_area(full)),
        "full at 2": int_frame(2, data, P.int_area(two, max_hops=2)),
        "too many hops": int_frame(3, data, P.int_area([], max_hops=6)),
        # The INT area is longer than the datagram (hops 0, max_hops 5, 10 bytes of it).
        "truncated": int_frame(4, 0, P.int_area([])[:10])[:-P.ICRC_LEN],
        "no flag": int_frame(5, data, flag=False),
        "an ACK": int_frame(6, 0, kind="ack"),
    }
    for f in unchanged.values():
        send_frames([f], 1_000_000)
    # The same frame with the kernel's UDP checksum (no SO_NO_CHECK): not to be touched.
    with_csum = int_frame(8, data)
    send_frames([with_csum], 1_000_000, no_check=False)
    hop2 = int_frame(7, data, P.int_area(two))  # a third hop: appended after the two
    send_frames([hop2], 1_000_000)
    # A frame whose INT area lies in page fragments: corked with MSG_MORE, the second part
    # goes to a page of the skb (veth does scatter-gather), so the program must read and
    # write outside the linear area.
    split = int_frame(9, 1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    sock.connect((IP_HOST, P.ROCE_PORT))
    sock.send(split[:P.INT_OFFSET + 1], socket.MSG_MORE)
    sock.send(split[P.INT_OFFSET + 1:])
    sock.close()
    c = port.read()
    got = roce_receiver.result()
    log.info("INT edge cases: %s", c)
    assert len(got) == len(unchanged) + 3
    for (name, f), a in zip(unchanged.items(), got):
        assert a.payload == f, name
    assert got[len(unchanged)].payload == with_csum
    # The third hop's record follows the first two, which are kept.
    check_stamped(hop2, got[-2].payload, hops_before=2)
    recs = P.parse_int(got[-2].payload)
    assert recs[:2] == two and recs[2][3] == RATE_KBPS
    assert recs[2][1] == c.tx_bytes - wire_len(split)  # counter before the last frame
    check_stamped(split, got[-1].payload)
    assert one_record(got[-1])[1] == c.tx_bytes
    # Counted: every INT data frame left alone (not the flagless frame nor the ACK).
    assert c.int_stamped == 2
    assert c.int_skipped == 5
    assert c.tx_pkts == len(unchanged) + 3


def test_int_and_ecn_on_the_same_frame(port, roce_receiver):
    hdr0 = _ip_header_errors()
    frames = [int_frame(i, PAYLOAD - P.BTH_LEN - P.INT_AREA_LEN - P.ICRC_LEN)
              for i in range(int(30_000_000 * 0.3 / 8 / WIRE))]
    send_frames(frames, 30_000_000, tos=ECT0)
    c = port.read()
    drops = _qdisc_stats()["drops"]
    got = roce_receiver.result()
    # Every frame arrived, so every IPv4 checksum patched for CE was right.
    assert drops == 0 and len(got) == len(frames)
    assert _ip_header_errors() == hdr0
    recs = [one_record(a) for a in got]
    for f, a in zip(frames, got):
        check_stamped(f, a.payload)
    ce = [a.tos == CE for a in got]
    assert {a.tos for a in got} <= {ECT0, CE}
    log.info("INT + ECN: %s, %d CE received; qlen at the first CE %s", c, sum(ce),
             recs[ce.index(True)][2] if any(ce) else None)
    assert c.int_stamped == len(frames) and c.ect_pkts == len(frames)
    assert c.ce_marks == sum(ce) > 0
    # RED runs on the queue including the packet, i.e. the record's qlen + frame length.
    L = wire_len(frames[0])
    above = [i for i, r in enumerate(recs) if r[2] + L >= KMAX]
    below = [i for i, r in enumerate(recs) if r[2] + L <= KMIN]
    assert len(above) > 100 and len(below) > 10
    assert all(ce[i] for i in above)  # stamped and CE-marked
    assert not any(ce[i] for i in below)
    _wait_drained(port)


# --------------------------------------------------------------------------- life cycle

def _tc_show(*args: str, netns: str | None = None) -> str:
    cmd = ("tc", *args)
    return (_ns(*cmd) if netns else _run(*cmd)).stdout


def test_detach_removes_filter_and_clsact(link):
    fds = len(os.listdir("/proc/self/fd"))
    p = PortProgram.attach(IF_SW, RATE_BPS, KMIN, KMAX, pmax=0.2)
    assert "clsact" in _tc_show("qdisc", "show", "dev", IF_SW)
    assert f"id {p.prog_id} " in _tc_show("filter", "show", "dev", IF_SW, "egress")
    p.detach()
    qdiscs = _tc_show("qdisc", "show", "dev", IF_SW)
    assert "clsact" not in qdiscs and "htb" in qdiscs  # the shaping is left alone
    assert _tc_show("filter", "show", "dev", IF_SW, "egress").strip() == ""
    assert len(os.listdir("/proc/self/fd")) == fds  # map fds closed
    p.detach()  # idempotent
    with pytest.raises(BpfError, match="detached"):
        p.read()


def test_detach_keeps_a_clsact_it_did_not_add(link):
    _run("tc", "qdisc", "add", "dev", IF_SW, "clsact")
    p = PortProgram.attach(IF_SW, RATE_BPS, KMIN, KMAX, pmax=0.2)
    p.detach()
    assert "clsact" in _tc_show("qdisc", "show", "dev", IF_SW)
    assert _tc_show("filter", "show", "dev", IF_SW, "egress").strip() == ""


def test_detach_after_the_interface_is_gone(link):
    _run("ip", "link", "add", "flbt2", "type", "veth", "peer", "name", "flbt3")
    _run("ip", "link", "set", "flbt2", "up")
    p = PortProgram.attach("flbt2", RATE_BPS, KMIN, KMAX, pmax=0.2)
    _run("ip", "link", "del", "flbt2")
    p.detach()  # no error


def test_attach_to_a_missing_interface_names_it(link):
    with pytest.raises(BpfError, match="flbtnope"):
        PortProgram.attach("flbtnope", RATE_BPS, KMIN, KMAX, pmax=0.2)
    with pytest.raises(BpfError, match="flbtnope"):
        PortProgram.attach("flbtnope", RATE_BPS, KMIN, KMAX, pmax=0.2, netns=NS)


def test_attach_in_a_namespace(link):
    p = PortProgram.attach(IF_HOST, RATE_BPS, KMIN, KMAX, pmax=0.2, netns=NS)
    try:
        _ns(sys.executable, "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range(20): s.sendto(b'x' * 100, ('{IP_SW}', 9))")
        c = p.read()
        assert c.tx_pkts >= 20 and c.ce_marks == 0
        assert "clsact" in _tc_show("qdisc", "show", "dev", IF_HOST, netns=NS)
    finally:
        p.detach()
    assert "clsact" not in _tc_show("qdisc", "show", "dev", IF_HOST, netns=NS)


def test_bad_parameters_are_refused(link):
    with pytest.raises(BpfError, match="kmin"):
        PortProgram.attach(IF_SW, RATE_BPS, KMAX, KMIN, pmax=0.2)
    with pytest.raises(BpfError, match="pmax"):
        PortProgram.attach(IF_SW, RATE_BPS, KMIN, KMAX, pmax=1.5)
    assert "clsact" not in _tc_show("qdisc", "show", "dev", IF_SW)  # nothing half-made


# --------------------------------------------------------------------------- compile

def test_compile_is_cached_and_keyed_on_the_source(tmp_path, monkeypatch):
    src = tmp_path / "port.c"
    src.write_bytes(bpfport.SOURCE.read_bytes())
    monkeypatch.setattr(bpfport, "SOURCE", src)
    monkeypatch.setattr(bpfport, "BUILD_DIR", tmp_path / "build")

    obj = bpfport.compile_program()
    assert obj.parent == tmp_path / "build" and obj.stat().st_size > 0
    mtime = obj.stat().st_mtime_ns
    time.sleep(0.01)
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(bpfport.subprocess, "run",
                        lambda cmd, *a, **k: calls.append(cmd) or real_run(cmd, *a, **k))
    assert bpfport.compile_program() == obj
    assert obj.stat().st_mtime_ns == mtime
    assert not any("-c" in cmd for cmd in calls), calls  # clang was not run to compile

    src.write_text(src.read_text() + "\n/* changed */\n")
    obj2 = bpfport.compile_program()
    assert obj2 != obj and obj2.exists()
    assert not obj.exists()  # the stale object is pruned
    assert bpfport.compile_program(force=True) == obj2 and obj2.stat().st_mtime_ns > mtime
    assert not list((tmp_path / "build").glob(".port-*"))  # no temporary left behind


def test_compile_without_clang_says_what_to_install(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(bpfport.shutil, "which", lambda name: None)
    with pytest.raises(BpfError, match="install clang llvm libbpf-dev"):
        bpfport.compile_program()
    monkeypatch.setattr(bpfport.shutil, "which", real_which)
    monkeypatch.setattr(bpfport, "BPF_HELPERS_H", Path("/nonexistent/bpf_helpers.h"))
    with pytest.raises(BpfError, match="libbpf-dev"):
        bpfport.compile_program()
