"""IEEE 802.1Qbb priority-based flow control (PFC) frames, with a fast ``struct`` codec.

PFC is IEEE 802.1Qbb (now IEEE 802.1Q clause 36); its frame is a MAC Control frame (IEEE
802.3 clause 31) with the class-based flow control opcode, laid out in IEEE 802.3 Annex 31D:

======= ====== ==============================================================
offset  bytes  field
======= ====== ==============================================================
0       6      destination: 01-80-C2-00-00-01 (the MAC Control multicast)
6       6      source: the sending port's MAC
12      2      EtherType 0x8808 (MAC Control)
14      2      opcode 0x0101 (class-based flow control)
16      2      priority-enable vector: reserved high byte, bit p of the low byte
               set = the time field of priority p is valid
18      16     eight time fields, priority 0 first, big-endian unsigned 16 bits
34      26     zero padding to the minimum frame (60 bytes without the FCS)
======= ====== ==============================================================

A time field counts *quanta*; one quantum is 512 bit times at the port's speed
(``QUANTUM_BITS``), so 0xFFFF quanta last 65535 x 512 / 100e9 s = 335.5392 us at
100 Gb/s.  A PAUSE of ``q > 0`` quanta stops the priority for that long from its arrival,
and a later PAUSE reloads the timer; a time of **0 resumes** the priority at once (the
switch's XON).  Priorities whose enable bit is clear are not affected by the frame.

scapy dissects the same bytes as ``scapy.contrib.mac_control``'s
``MACControlClassBasedFlowControl``; ``tests/test_wire_pfc.py`` checks the codec against it.
This module imports no scapy: the host agents never load it.  Only untagged frames are
read (PFC frames carry no VLAN tag).
"""

from __future__ import annotations

import struct

from ..units import NS_PER_S

PFC_DST = bytes.fromhex("0180c2000001")
ETHERTYPE = 0x8808
OPCODE = 0x0101
#: one pause quantum: 512 bit times at the port's speed
QUANTUM_BITS = 512
MAX_QUANTA = 0xFFFF
#: a PFC frame's length on the wire without the FCS (the minimum Ethernet frame)
FRAME_BYTES = 60
N_PRIO = 8

# dst | src | ethertype | opcode | class-enable vector | 8 x quanta
_FRAME = struct.Struct("!6s6sHHH8H")
_HEAD = struct.Struct("!HHH8H")  # what a receiver reads from offset 12
HEADER_BYTES = _FRAME.size  # 34
_PAD = bytes(FRAME_BYTES - HEADER_BYTES)


def encode(src_mac: bytes, quanta: dict[int, int]) -> bytes:
    """A PFC frame from ``src_mac`` (6 bytes) pausing each priority in ``quanta`` for its
    value (0 = resume); the other classes are not enabled.  60 bytes, FCS not included."""
    if not isinstance(src_mac, (bytes, bytearray)) or len(src_mac) != 6:
        raise ValueError(f"PFC source MAC must be 6 bytes, got {src_mac!r}")
    times = [0] * N_PRIO
    vector = 0
    for prio, q in quanta.items():
        if not isinstance(prio, int) or not 0 <= prio < N_PRIO:
            raise ValueError(f"PFC priority must be an integer 0..7, got {prio!r}")
        if not isinstance(q, int) or not 0 <= q <= MAX_QUANTA:
            raise ValueError(f"PFC quanta for priority {prio} must be an integer "
                             f"0..{MAX_QUANTA:#x}, got {q!r}")
        vector |= 1 << prio
        times[prio] = q
    return _FRAME.pack(PFC_DST, bytes(src_mac), ETHERTYPE, OPCODE, vector, *times) + _PAD


def decode(frame: bytes) -> dict[int, int] | None:
    """``{priority: quanta}`` for the classes a PFC frame enables, or None if ``frame``
    (an Ethernet frame from its destination address) is not a PFC frame: too short, not
    MAC Control, or another MAC Control opcode (802.3x PAUSE among them)."""
    if len(frame) < HEADER_BYTES:
        return None
    etype, op, vector, *times = _HEAD.unpack_from(frame, 12)
    if etype != ETHERTYPE or op != OPCODE:
        return None
    return {p: times[p] for p in range(N_PRIO) if vector >> p & 1}


def quanta_ns(quanta: int, rate_bps: int) -> int:
    """How long a pause of ``quanta`` lasts on a link of ``rate_bps``: quanta x 512 bit
    times, in ns, rounded up."""
    if rate_bps <= 0:
        raise ValueError(f"link rate must be positive, got {rate_bps!r} b/s")
    return -(-quanta * QUANTUM_BITS * NS_PER_S // rate_bps)


def quanta_for_ns(ns: int, rate_bps: int) -> int:
    """The fewest quanta whose pause lasts at least ``ns`` on a link of ``rate_bps``,
    capped at ``MAX_QUANTA``."""
    if rate_bps <= 0:
        raise ValueError(f"link rate must be positive, got {rate_bps!r} b/s")
    if ns <= 0:
        return 0
    return min(MAX_QUANTA, -(-ns * rate_bps // (QUANTUM_BITS * NS_PER_S)))
