"""The simulator's event loop (fabriclab/sim/core.py) runs events in (time, order scheduled)
order, the order of a heap of (time, insertion counter) entries, whether the loop is
compiled or not."""

import heapq
import itertools
import random

import pytest

from fabriclab.sim.core import EventLoop


def _reference(schedule):
    """The order a heap of (time, counter, name) entries gives, with the same rule for
    events scheduled while running (``schedule``: name -> [(dt, child), ...])."""
    heap, seq, out = [], itertools.count(), []
    for t, name in schedule["start"]:
        heapq.heappush(heap, (t, next(seq), name))
    while heap:
        t, _, name = heapq.heappop(heap)
        out.append((t, name))
        for dt, child in schedule.get(name, ()):
            heapq.heappush(heap, (t + dt, next(seq), child))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_events_run_in_time_then_schedule_order(seed):
    rng = random.Random(seed)
    names = [f"e{i}" for i in range(400)]
    # few distinct times (events bunch on them, as in a fabric), and children scheduled at
    # the same time as their parent (dt 0) as well as later
    schedule = {"start": [(rng.randrange(5) * 100, n) for n in names[:40]]}
    for i, n in enumerate(names[:300]):
        schedule[n] = [(rng.choice((0, 0, 100, 300)), names[40 + i]) if 40 + i < 400 else
                       (0, f"x{i}")]
    loop, got = EventLoop(), []

    def fire(name):
        got.append((loop.now, name))
        for dt, child in schedule.get(name, ()):
            loop.push(loop.now + dt, fire, child)

    for t, n in schedule["start"]:
        loop.at(t, fire, n)
    n = loop.run()
    assert got == _reference(schedule)
    assert n == loop.events == len(got)
    assert not loop.pending()


def test_run_until_stop_and_pending():
    loop, got = EventLoop(), []
    for t in (10, 20, 20, 30):
        loop.at(t, got.append, t)
    assert loop.run(until_ns=20) == 3 and got == [10, 20, 20]
    assert loop.now == 20 and loop.pending()
    assert [(t, a) for t, _, a in loop.pending_events()] == [(30, 30)]
    with pytest.raises(ValueError):
        loop.at(5, got.append, 5)

    def stopper(_):
        seen_pending.append(loop.pending())
        loop.stop()
    seen_pending = []
    loop.at(30, stopper, None)  # after the event already at 30
    loop.at(40, got.append, 40)
    loop.run()
    assert got == [10, 20, 20, 30] and seen_pending == [True] and not loop.pending()
    assert loop.events == 5
