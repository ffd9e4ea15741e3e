"""GSE's GSP in the NIC (fabriclab.nic.NicGsp) with GSOS (fabriclab.cc_algorithms.gsos) as
its scheduler, on the engine-free harness: the NICs' ports serialise at 10 Gb/s, a frame
arrives one propagation delay after its last bit left, and a controller relays REQUESTs and
GRANTs after a fixed latency, as the simulator's GseContext does.  The harness has no
switch, so nothing but GSOS's pacing keeps a receiver from getting frames faster than its
line rate: what the receiver sees is what GSOS granted."""

from __future__ import annotations

import itertools
import math

import pytest
from nic_harness import HDR, MTU, Fabric, GsosController, attach_gse

from fabriclab.cc_algorithms.gse import GseParams
from fabriclab.units import BIT_NS, wire_bytes

LAT = 2_000  # GSP <-> GSOS, one way
CONTAINER = 16_000  # 16 packets
FRAME = MTU + HDR  # every data frame below is full
RATE = 10_000_000_000
SER = FRAME * BIT_NS // RATE  # 840 ns a frame
DELAY = 1_000  # the harness's propagation delay


def _gse(hosts, scheduler="central", overcommit=1.0, n_paths=1, fate=None,
         loss_recovery="go_back_n", **gse):
    gp = GseParams.defaults(container_bytes=CONTAINER, grant_bytes=CONTAINER,
                            grant_overcommit=overcommit, control_latency_ns=LAT,
                            scheduler=scheduler, **gse)
    fab = Fabric(hosts=hosts, rate_bps=RATE, delay_ns=DELAY, fate=fate,
                 loss_recovery=loss_recovery)
    ctl = GsosController(fab, LAT, overcommit) if scheduler == "central" else None
    gsps = attach_gse(fab, gp, ctl, n_paths=n_paths)
    return fab, ctl, gsps


def _transport_log(nic) -> list:
    """(time, psn, flow id, container seq) of every data frame the GSP hands the transport."""
    log = []
    real = nic.on_data

    def on_data(now, frame):
        log.append((now, frame.psn, frame.flow.id, frame.tag.seq))
        real(now, frame)
    nic.on_data = on_data
    return log


def _max_excess(arrivals, rate_bps) -> float:
    """max over windows [t_i, t_j] of (wire bytes arriving in it) - rate x (t_j - t_i)."""
    best, lowest, before = -math.inf, math.inf, 0
    for t, size in arrivals:
        lowest = min(lowest, before - t * rate_bps / BIT_NS)
        before += size
        best = max(best, before - t * rate_bps / BIT_NS - lowest)
    return best


def _drop_first(psn: int):
    lost = []

    def fate(frame):
        if frame.kind == "data" and frame.psn == psn and not lost:
            lost.append(frame)
            return "drop"
        return None
    return fate


@pytest.mark.parametrize("overcommit", [1.0, 1.5])
def test_incast_is_delivered_once_in_order_at_the_granted_rate(overcommit):
    """3 -> 1 incast of 300 KB each.  Every byte reaches the receiver's transport once and in
    order (psns 0..299 per flow, no NACK).  GSOS spaces grants so that the granted wire
    bytes never exceed rate x overcommit x elapsed + one grant; a container is sent at once
    on its grant, so over every window [t1, t2] the wire bytes arriving at the receiver are
    at most rate x overcommit x (t2 - t1) + W(grant) -- without a switch in between, only
    GSOS's pacing can hold this.  The bound is tight: the port receives at >= 98 % of
    rate x overcommit, and at overcommit 1 it is busy from the first grant's container to
    the last, so the last byte arrives at exactly 2 x latency (REQUEST, GRANT) + every
    frame's serialisation + one propagation delay.  Fails if GSOS grants too fast or too
    slowly, or the GSP sends without (or beyond) credit."""
    fab, _, _ = _gse(("h0", "h1", "h2", "h3"), overcommit=overcommit)
    size = 300_000
    flows = [fab.flow(h, "h0", size) for h in ("h1", "h2", "h3")]
    log = _transport_log(fab.nics["h0"])
    fab.start()
    fab.run()
    for f in flows:
        assert [p for _, p, fid, _ in log if fid == f.id] == list(range(size // MTU))
        assert f.recv.delivered == size and f.send.done_ns is not None
    assert fab.nics["h0"].goodput_bytes == 3 * size and fab.nics["h0"].nacks_sent == 0
    assert sum(n.retx_bytes for n in fab.nics.values()) == 0
    arrivals = [(t, fr.size) for t, h, fr in fab.delivered if h == "h0" and fr.kind == "data"]
    rate = RATE * overcommit
    assert _max_excess(arrivals, rate) <= wire_bytes(CONTAINER, MTU, HDR)
    total = sum(s for _, s in arrivals)
    assert total == 3 * wire_bytes(size, MTU, HDR)
    span = arrivals[-1][0] - (arrivals[0][0] - SER)
    assert total * BIT_NS / span >= 0.98 * rate
    bound = 2 * LAT + math.ceil(total * BIT_NS / rate) + DELAY
    last = max(f.recv.end_ns for f in flows)
    assert last >= bound
    if overcommit == 1.0:
        assert last == bound


@pytest.mark.parametrize("extra_ns", [5_000, 12_500])
def test_sprayed_containers_are_reordered_within_the_path_skew(extra_ns):
    """One 500 KB flow, its containers sprayed round-robin over 2 paths, path 1 slower by
    ``extra_ns`` (less than a container's 13.4 us).  Containers overtake each other on the
    wire, yet the transport gets psns 0..499 once, in order: no NACK, no resend, nothing
    given up.  The reorder buffer holds only what arrives on the fast path while a packet
    of the slow one is late: frames sent within ``extra_ns`` after it, at most
    ceil(extra / 840 ns) - 1 of them (and at least one fewer: the bound is reached); nothing
    waits longer than ``extra_ns``.  Fails if containers are not sprayed, the buffer
    releases out of order, holds too much or holds for too long."""
    def skew(frame):
        return extra_ns if frame.kind == "data" and frame.route[2] == 1 else None
    fab, _, gsps = _gse(("h0", "h1"), n_paths=2, fate=skew)
    f = fab.flow("h0", "h1", 500_000)
    log = _transport_log(fab.nics["h1"])
    fab.start()
    fab.run()
    wire = [fr.tag.seq for t, h, fr in fab.delivered if h == "h1" and fr.kind == "data"]
    assert any(b < a for a, b in itertools.pairwise(wire))  # out of order on the wire
    assert [p for _, p, _, _ in log] == list(range(500))
    assert f.recv.delivered == 500_000
    assert fab.nics["h1"].nacks_sent == 0 and fab.nics["h0"].retx_bytes == 0
    per_path = [sum(1 for _, _, fr in fab.sent if fr.kind == "data" and fr.route[2] == k)
                for k in (0, 1)]
    assert abs(per_path[0] - per_path[1]) <= CONTAINER // MTU
    s = gsps["h1"].summary()
    assert s["reorder_skipped"] == 0
    bound = (math.ceil(extra_ns / SER) - 1) * FRAME
    assert bound - FRAME < s["reorder_max_bytes"] <= bound
    assert s["reorder_delays"] and max(s["reorder_delays"]) < extra_ns


@pytest.mark.parametrize("mode", ["go_back_n", "selective_repeat"])
def test_lost_last_packet_of_a_container_is_given_up_after_the_reorder_timeout(mode):
    """The last packet of container 2 (psn 47) is lost.  Container 2 can never complete, so
    the later containers wait in the reorder buffer until it is given up on: exactly
    reorder_timeout after the first of them arrived, once (reorder_skipped == 1).  The
    buffer then holds what arrives at line rate in that time, at most
    floor(timeout / 840 ns) + 1 frames.  The transport sees the gap only at the release, so
    psn 47 is sent again no earlier than reorder_timeout after it was lost: go-back-N then
    resends everything held (its receiver dropped it as out of order), selective repeat
    only psn 47.  Every byte is delivered once; the retransmissions are sent against credit
    too (GSOS granted payload + retransmitted bytes); the sender never idles, so the flow
    ends when the last of all its frames arrives.  Fails if the give-up timer is missing or
    mistimed, releases out of order, or recovery re-sends more (or less) than it must."""
    timeout = 50_000
    fab, ctl, gsps = _gse(("h0", "h1"), fate=_drop_first(47), loss_recovery=mode,
                          reorder_timeout_ns=timeout)
    size = 200_000
    f = fab.flow("h0", "h1", size)
    log = _transport_log(fab.nics["h1"])
    fab.start()
    fab.run()
    t_lost = next(t for t, _, fr in fab.sent if fr.kind == "data" and fr.psn == 47)
    s = gsps["h1"].summary()
    assert s["reorder_skipped"] == 1
    held_from = min(t for t, h, fr in fab.delivered
                    if h == "h1" and fr.kind == "data" and fr.tag.seq == 3)
    assert min(t for t, _, _, seq in log if seq == 3) == held_from + timeout
    assert s["reorder_max_bytes"] <= (timeout // SER + 1) * FRAME
    resent = [t for t, _, fr in fab.sent if fr.kind == "data" and fr.psn == 47][1:]
    assert resent and resent[0] >= t_lost + timeout
    assert f.recv.delivered == size == fab.nics["h1"].goodput_bytes
    retx = fab.nics["h0"].retx_bytes
    if mode == "go_back_n":
        assert retx >= s["reorder_max_bytes"] // FRAME * MTU
    else:
        assert retx == MTU
    assert ctl.gsos.granted_bytes == ctl.gsos.requested_bytes == size + retx
    frames = sum(1 for _, _, fr in fab.sent if fr.kind == "data")
    assert frames == (size + retx) // MTU
    assert f.recv.end_ns == 2 * LAT + frames * SER + DELAY


@pytest.mark.parametrize("mode", ["go_back_n", "selective_repeat"])
def test_loss_inside_a_container_is_recovered_without_waiting_for_the_reorder_buffer(mode):
    """Psn 40, inside container 2, is lost.  The packets of the container being delivered
    pass straight through the reorder buffer, so the transport sees the gap when psn 41
    arrives and recovers at once: psn 40 is sent again within two round trips (3.68 us
    each), long before the 50 us reorder timeout; go-back-N resends only the few packets
    sent meanwhile, selective repeat psn 40 alone.  Every byte is delivered once, and the
    flow ends when the last of all frames sent arrives (the sender never idles, the
    recovery costs only the frames resent).  Fails if the reorder buffer held the packets of
    the current container, or recovery waited for a timeout."""
    fab, _, _ = _gse(("h0", "h1"), fate=_drop_first(40), loss_recovery=mode)
    size = 200_000
    f = fab.flow("h0", "h1", size)
    fab.start()
    fab.run()
    rtt = 2 * DELAY + 2 * FRAME * BIT_NS // RATE
    sent40 = [t for t, _, fr in fab.sent if fr.kind == "data" and fr.psn == 40]
    assert len(sent40) == 2 and sent40[1] - sent40[0] <= 2 * rtt
    assert f.recv.delivered == size == fab.nics["h1"].goodput_bytes
    assert fab.nics["h0"].timeouts == 0
    retx = fab.nics["h0"].retx_bytes
    gap = (sent40[1] - sent40[0]) // SER  # packets sent between the loss and its resend
    if mode == "go_back_n":
        assert MTU <= retx <= (gap + 1) * MTU
    else:
        assert retx == MTU
    frames = sum(1 for _, _, fr in fab.sent if fr.kind == "data")
    assert f.recv.end_ns == 2 * LAT + frames * SER + DELAY


@pytest.mark.parametrize("scheduler", ["central", "egress"])
def test_every_request_is_granted_once_and_control_bytes_add_up(scheduler):
    """Five flows: four into h0 (two of them from h3, sharing its VOQ) and one h1 -> h2 (h1
    has two VOQs).  Per (GSP, destination), the sizes granted are the sizes requested, in
    the same order (each request granted once, nothing twice, nothing invented), and they
    add up to the payload sent there (no loss: no retransmission); no credit is left over.
    The control overhead is one frame of control size per REQUEST message and per GRANT:
    central, the GSPs count their REQUESTs and the controller saw that many; egress, the
    REQUEST and GRANT frames are on the wire and the GSPs count exactly their bytes.  A
    grant cannot come back before a round trip to the scheduler (2 x latency central, 2 x
    propagation egress), and the first one, on an idle scheduler, takes exactly that.
    Fails on a double grant, lost credit, or control accounting that misses a message."""
    fab, ctl, gsps = _gse(("h0", "h1", "h2", "h3"), scheduler=scheduler)
    want = [("h1", "h0", 150_000), ("h2", "h0", 70_000), ("h3", "h0", 90_000),
            ("h3", "h0", 33_000), ("h1", "h2", 60_000)]
    flows = [fab.flow(*w) for w in want]
    sizes: dict = {}
    for src, dst, n in want:
        sizes[(src, dst)] = sizes.get((src, dst), 0) + n
    fab.start()
    fab.run()
    assert all(f.recv.delivered == f.recv.size for f in flows)
    assert sum(n.retx_bytes for n in fab.nics.values()) == 0
    if scheduler == "central":
        requested = [(src, dst, sz) for _, src, dst, szs in ctl.requests for sz in szs]
        granted = [(g.src_gsp, g.dst_port, g.nbytes) for _, g in ctl.grants]
        assert ctl.gsos.pending() == 0
        n_messages = len(ctl.requests) + len(ctl.grants)
        first_round_trip = 2 * LAT
    else:
        req = [fr for _, _, fr in fab.sent if fr.kind == "gse_request"]
        gr = [fr for _, _, fr in fab.sent if fr.kind == "gse_grant"]
        requested = [(fr.src_gsp, fr.dst_port, sz) for fr in req for sz in fr.sizes]
        granted = [(fr.src_gsp, fr.dst_port, fr.nbytes) for fr in gr]
        assert {fr.size for fr in req + gr} == {HDR}
        n_messages = len(req) + len(gr)
        first_round_trip = 2 * (DELAY + HDR * BIT_NS // RATE)
    for pair, total in sizes.items():
        asked = [sz for src, dst, sz in requested if (src, dst) == pair]
        given = [sz for src, dst, sz in granted if (src, dst) == pair]
        assert given == asked and sum(given) == total, pair
    assert len(granted) == len(requested)
    assert sum(g.control_bytes for g in gsps.values()) + (
        len(ctl.grants) * HDR if ctl else 0) == n_messages * HDR
    for h, g in gsps.items():
        assert g.grants == g.requests == sum(1 for src, _, _ in requested if src == h)
        assert g.grants_given == (sum(1 for _, dst, _ in granted if dst == h)
                                  if scheduler == "egress" else 0)
        for v in g.voqs.values():
            assert v.credit == 0 and not v.asked and v.requested_bytes == 0
    lat = [x for g in gsps.values() for x in g.grant_latency]
    assert len(lat) == len(granted) and min(lat) == first_round_trip
