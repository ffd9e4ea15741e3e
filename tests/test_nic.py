"""The sans-IO NIC alone (fabriclab.nic), on model links with no engine: delivery, pacing,
ACK/NACK/CNP policy, go-back-N and selective repeat, timeouts, dependencies, PFC."""

from __future__ import annotations

import pytest

from fabriclab.units import BIT_NS

from nic_harness import HDR, MTU, Fabric, FixedRate


def _drop_psns(flow_id: int, psns: set[int]):
    """A wire that loses the first transmission of the given data packets of one flow."""
    lost = set()

    def fate(frame):
        if frame.kind == "data" and frame.flow.id == flow_id and frame.psn in psns \
                and frame.psn not in lost:
            lost.add(frame.psn)
            return "drop"
        return None
    return fate


def test_a_flow_is_delivered_once_in_order_and_acknowledged():
    """100 KB over an idle link: every byte delivered once, in order; the sender learns it
    (its last ACK) one round trip after the last byte left; one ACK per packet."""
    fab = Fabric()
    f = fab.flow("h0", "h1", 100_000)
    fab.start()
    fab.run()
    r, s = f.recv, f.send
    assert r.delivered == 100_000 and r.end_ns is not None and s.done_ns is not None
    psns = [fr.psn for _, dst, fr in fab.delivered if dst == "h1" and fr.kind == "data"]
    assert psns == list(range(100))
    acks = [fr for _, dst, fr in fab.delivered if dst == "h0" and fr.kind == "ack"]
    assert len(acks) == 100 and acks[-1].psn == 100
    assert fab.nics["h0"].retx_bytes == 0 and fab.nics["h1"].nacks_sent == 0
    # the receiver has it all once the last packet arrived: 100 frames serialised + 1 delay
    wire = 100 * (MTU + HDR) * BIT_NS // fab.rate
    assert r.end_ns == pytest.approx(wire + fab.delay, abs=100)


def test_pacing_spaces_packets_at_the_rate():
    """A sender held to 1 Gb/s on a 10 Gb/s link sends a frame every size x 8 / 1 Gb/s."""
    fab = Fabric(make_cc=lambda: FixedRate(1_000_000_000))
    f = fab.flow("h0", "h1", 20_000)
    fab.start()
    fab.run()
    times = [t for t, h, fr in fab.sent if fr.kind == "data"]
    gaps = {b - a for a, b in zip(times, times[1:])}
    assert gaps == {(MTU + HDR) * BIT_NS // 1_000_000_000}
    assert f.recv.delivered == 20_000


def test_ack_every_n_and_the_last():
    """With ack_every_pkts 4, a 10-packet flow gets ACKs after packets 4, 8 and 10."""
    fab = Fabric(ack_every_pkts=4)
    fab.flow("h0", "h1", 10 * MTU)
    fab.start()
    fab.run()
    acks = [fr.psn for _, dst, fr in fab.delivered if dst == "h0" and fr.kind == "ack"]
    assert acks == [4, 8, 10]


def test_cnp_at_most_once_per_interval():
    """Every data packet CE-marked: the receiver answers with one CNP per 50 us, and the
    sender's congestion control hears each."""
    def mark(frame):
        if frame.kind == "data":
            frame.ecn = 1
        return None
    heard = []

    class Cc(FixedRate):
        def on_cnp(self, now_ns):
            heard.append(now_ns)

    fab = Fabric(fate=mark, make_cc=lambda: Cc(1_000_000_000))
    f = fab.flow("h0", "h1", 100 * MTU)  # ~840 us at 1 Gb/s
    fab.start()
    fab.run()
    cnps = [t for t, h, fr in fab.sent if fr.kind == "cnp"]
    assert all(b - a >= 50_000 for a, b in zip(cnps, cnps[1:]))
    span = f.recv.end_ns - f.send.started_ns
    assert len(cnps) in (span // 50_000, span // 50_000 + 1)
    assert len(heard) == len(cnps) and fab.nics["h1"].ce_rx == 100


@pytest.mark.parametrize("mode", ["go_back_n", "selective_repeat"])
def test_one_lost_packet(mode):
    """Packet 10 of 100 is lost.  Go-back-N: one NACK, and everything from 10 on is sent
    again.  Selective repeat: only packet 10 is sent again.  Both deliver every byte once."""
    fab = Fabric(fate=_drop_psns(0, {10}), loss_recovery=mode)
    f = fab.flow("h0", "h1", 100 * MTU)
    fab.start()
    fab.run()
    assert f.recv.delivered == 100 * MTU and f.send.done_ns is not None
    sent = fab.data_sent(f)
    back = next(i for i in range(1, len(sent)) if sent[i] < sent[i - 1])
    if mode == "go_back_n":
        assert fab.nics["h1"].nacks_sent == 1
        assert sent[back] == 10 and sent[back:] == list(range(10, 100))
        assert fab.nics["h0"].retx_bytes == (len(sent) - 100) * MTU
    else:
        assert fab.data_sent(f).count(10) == 2 and len(fab.data_sent(f)) == 101
        assert fab.nics["h0"].retx_bytes == MTU
    assert fab.nics["h0"].timeouts == 0


def test_selective_repeat_tolerates_reordering():
    """Packets 20..29 take 1.5 us longer (another path): they arrive after later ones, the
    receiver holds the later ones, and nothing is sent again: 1.5 us is within the reorder
    window (half the 5.7 us round trip) before which a missing packet counts as lost."""
    def slow(frame):
        return 1_500 if frame.kind == "data" and 20 <= frame.psn < 30 else None
    fab = Fabric(fate=slow, loss_recovery="selective_repeat", delay_ns=2000)
    f = fab.flow("h0", "h1", 100 * MTU)
    fab.start()
    fab.run()
    assert f.recv.delivered == 100 * MTU
    assert fab.nics["h1"].nacks_sent > 0  # the receiver saw them out of order
    assert fab.nics["h0"].retx_bytes == 0 and len(fab.data_sent(f)) == 100


def test_go_back_n_resends_on_reordering():
    """The same reordering under go-back-N is taken for loss: packets are sent again."""
    def slow(frame):
        return 1_500 if frame.kind == "data" and 20 <= frame.psn < 30 else None
    fab = Fabric(fate=slow, loss_recovery="go_back_n", delay_ns=2000)
    f = fab.flow("h0", "h1", 100 * MTU)
    fab.start()
    fab.run()
    assert f.recv.delivered == 100 * MTU and fab.nics["h0"].retx_bytes > 0


@pytest.mark.parametrize("mode", ["go_back_n", "selective_repeat"])
def test_lost_tail_recovered_by_timeout(mode):
    """The last packet is lost (nothing after it to reveal the gap): the retransmission
    timeout fires and the flow completes.  Go-back-N waits the rto (200 us here); selective
    repeat, with one packet in flight, IRN's RTO_low (50 us here) and not the rto."""
    fab = Fabric(fate=_drop_psns(0, {9}), loss_recovery=mode)
    f = fab.flow("h0", "h1", 10 * MTU)
    fab.start()
    fab.run()
    assert f.recv.delivered == 10 * MTU
    assert fab.nics["h0"].timeouts == 1
    if mode == "go_back_n":
        assert f.recv.end_ns >= 200_000  # not before the rto
    else:
        assert 50_000 <= f.recv.end_ns < 200_000


def test_selective_repeat_waits_the_long_timeout_while_more_is_in_flight():
    """IRN's RTO_low applies only while at most 3 packets are in flight: the last 6 packets
    lost (nothing after them arrives, no SACK), the sender waits the full rto (200 us),
    then resends exactly those 6."""
    fab = Fabric(fate=_drop_psns(0, set(range(14, 20))), loss_recovery="selective_repeat")
    f = fab.flow("h0", "h1", 20 * MTU)
    fab.start()
    fab.run()
    assert f.recv.delivered == 20 * MTU
    assert fab.nics["h0"].timeouts == 1
    assert f.recv.end_ns >= 200_000
    assert fab.nics["h0"].retx_bytes == 6 * MTU


def test_selective_repeat_caps_in_flight_at_a_bdp():
    """Selective repeat never has more than bdp_pkts packets past the cumulative ACK."""
    fab = Fabric(loss_recovery="selective_repeat", delay_ns=20_000)
    f = fab.flow("h0", "h1", 500 * MTU)
    fab.start()
    worst = 0
    timers = fab.timers
    while timers.next_wakeup_ns() is not None:
        fab.now = timers.next_wakeup_ns()
        timers.run_due(fab.now)
        worst = max(worst, f.send.nxt - f.send.una)
    assert worst <= f.send.bdp_pkts and f.recv.delivered == 500 * MTU


def test_dependencies_start_flows_when_what_they_wait_for_is_through():
    """h1 forwards: flow b (h1 -> h0) depends on flow a (h0 -> h1), which h1 receives, so b
    starts when a is delivered; flow c (h0 -> h1) depends on a, which h0 sends, so c starts
    when a's last byte is on the wire (not when it is acknowledged)."""
    fab = Fabric()
    a = fab.flow("h0", "h1", 10 * MTU)
    b = fab.flow("h1", "h0", 10 * MTU, deps=[a.id])
    c = fab.flow("h0", "h1", 10 * MTU, deps=[a.id])
    fab.start()
    fab.run()
    assert b.send.started_ns == a.recv.end_ns
    assert c.send.started_ns == a.send.sent_ns < a.send.done_ns
    assert all(f.recv.delivered == 10 * MTU for f in (a, b, c))


def test_pfc_pause_holds_data_not_control():
    """A paused data priority stops data but lets ACKs out; resuming lets data go on."""
    fab = Fabric()
    a = fab.flow("h0", "h1", 50 * MTU)
    b = fab.flow("h1", "h0", 50 * MTU)
    fab.start()
    nic = fab.nics["h1"]
    fab.run(until_ns=10_000)
    nic.pause(3, True)
    before = len(fab.data_sent(b))
    fab.run(until_ns=30_000)
    during = [fr for t, h, fr in fab.sent if h == "h1" and 10_000 < t <= 30_000]
    assert len(fab.data_sent(b)) <= before + 1  # at most the one already on the wire
    assert any(fr.kind == "ack" for fr in during)
    nic.pause(3, False)
    fab.run()
    assert a.recv.delivered == b.recv.delivered == 50 * MTU
