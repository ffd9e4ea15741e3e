"""The PFC accounting the Mininet engine's daemon runs (fabriclab.pfc), against a FIFO
simulated packet by packet and against the thresholds' closed form."""

import random

import pytest

from fabriclab.pfc import FifoAttribution, IngressPfc


def _fifo_run(seed: int, sample_every: int):
    """A FIFO fed by 3 ingress ports at random, drained at a fixed rate; yields, every
    ``sample_every`` steps, (counters, the true bytes of each port in the FIFO, bytes that
    entered since the previous sample)."""
    rng = random.Random(seed)
    queue: list[tuple[int, int]] = []  # (ingress, bytes left of this packet)
    entered, per = 0, [0, 0, 0]
    since = 0
    for step in range(1, 4000):
        for _ in range(rng.choice((0, 1, 1, 2))):  # arrivals: sometimes faster than drain
            i, size = rng.randrange(3), rng.choice((64, 1000, 1500))
            queue.append((i, size))
            entered += size
            per[i] += size
            since += size
        budget = 900  # bytes sent per step
        while budget and queue:
            i, left = queue[0]
            take = min(left, budget)
            budget -= take
            if take == left:
                queue.pop(0)
            else:
                queue[0] = (i, left - take)
        if step % sample_every == 0:
            truth = [sum(b for j, b in queue if j == i) for i in range(3)]
            yield entered, sum(b for _, b in queue), list(per), truth, since
            since = 0


def test_attribution_is_exact_when_sampled_every_packet_step():
    att = FifoAttribution(3)
    for entered, backlog, per, truth, _ in _fifo_run(1, 1):
        got = att.update(entered, backlog, per)
        # exact up to the one packet partly sent (split by bytes, not by packet)
        assert sum(got) == backlog
        assert all(abs(g - t) <= 1500 for g, t in zip(got, truth)), (got, truth)


@pytest.mark.parametrize("every", [3, 10])
def test_attribution_error_is_bounded_by_what_entered_between_two_samples(every):
    att = FifoAttribution(3)
    worst = 0
    for entered, backlog, per, truth, since in _fifo_run(2, every):
        got = att.update(entered, backlog, per)
        assert abs(sum(got) - backlog) <= 3  # rounding of the interpolation only
        err = max(abs(g - t) for g, t in zip(got, truth))
        assert err <= since + 1500, (got, truth, since)
        worst = max(worst, err)
    assert worst > 0  # coarse samples do interpolate (the test can tell)


def test_attribution_forgets_what_has_left():
    att = FifoAttribution(2)
    for k in range(1, 1000):
        att.update(1000 * k, 500, [1000 * k, 0])
    assert len(att._e) <= 3


def test_attribution_refuses_a_counter_going_backwards():
    att = FifoAttribution(1)
    att.update(100, 0, [100])
    with pytest.raises(ValueError):
        att.update(50, 0, [50])


def test_thresholds_follow_the_dynamic_threshold_closed_form():
    # 4 ports, 1 MB buffer, 10 KB headroom each, 4 KB reserve, alpha 1/8
    pfc = IngressPfc(1_000_000, [10_000] * 4, 4096, 0.125, 3072)
    shared_total = 1_000_000 - 40_000 - 4 * 4096
    assert pfc.shared_total == shared_total
    # one port alone: pauses when o - r >= alpha (S - (o - r)), i.e. o - r >= alpha S / (1 + alpha)
    x = 0.125 * shared_total / 1.125
    assert pfc.update([4096 + int(x) - 10, 0, 0, 0]) == []
    assert pfc.update([4096 + int(x) + 10, 0, 0, 0]) == [(0, True)]
    # stays paused until resume_offset below the threshold (hysteresis)
    assert pfc.update([4096 + int(x) - 1000, 0, 0, 0]) == []
    assert pfc.update([4096 + int(x) - 4000, 0, 0, 0]) == [(0, False)]
    # within the reserve: never paused
    assert pfc.update([4096, 0, 0, 0]) == []


def test_a_fuller_buffer_pauses_sooner():
    pfc = IngressPfc(1_000_000, [10_000] * 4, 4096, 0.125, 3072)
    # port 0 below its lone threshold, but three other ports fill the shared pool
    assert pfc.update([80_000, 0, 0, 0]) == []
    assert (0, True) in pfc.update([80_000, 300_000, 300_000, 300_000])


def test_a_buffer_with_no_shared_pool_is_refused():
    with pytest.raises(ValueError, match="no shared pool"):
        IngressPfc(40_000, [10_000] * 4, 4096, 0.125, 3072)
