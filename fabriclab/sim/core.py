"""The discrete-event core: integer-nanosecond time, a binary heap of events.

Heap entries are ``(time_ns, seq, fn, arg)``; ``seq`` is a global insertion counter, so
events at the same time run in the order they were scheduled and a run is deterministic
(the SimPy rule).  Model code schedules with :meth:`EventLoop.at`, or, on the hot path,
pushes onto ``loop.heap`` directly with ``heappush(heap, (t, next(loop.seq), fn, arg))``.
"""

from __future__ import annotations

import itertools
import time
from heapq import heappop, heappush


class EventLoop:
    __slots__ = ("now", "heap", "seq", "events", "_stopped", "_discarded")

    def __init__(self):
        self.now = 0
        self.heap: list = []
        self.seq = itertools.count()
        self.events = 0
        self._stopped = False
        self._discarded = 0

    def at(self, t_ns: int, fn, arg=None) -> None:
        """Call ``fn(arg)`` at simulated time ``t_ns`` (never in the past)."""
        if t_ns < self.now:
            raise ValueError(f"event scheduled in the past: {t_ns} < {self.now}")
        heappush(self.heap, (t_ns, next(self.seq), fn, arg))

    def after(self, dt_ns: int, fn, arg=None) -> None:
        self.at(self.now + dt_ns, fn, arg)

    def stop(self) -> None:
        """End :meth:`run` after the current event (pending events are discarded)."""
        self._stopped = True
        self._discarded += len(self.heap)
        self.heap.clear()

    def run(self, until_ns: int | None = None, progress=None, progress_every: int = 1 << 16):
        """Run events up to and including ``until_ns`` (all of them if None).

        Afterwards ``now`` is ``until_ns`` if events remain beyond it, else the time of the
        last event run.

        ``progress(now_ns, events, wall_s)`` is called every ``progress_every`` events.
        Returns the number of events executed.
        """
        heap = self.heap
        pop = heappop
        # an int, not float("inf"): comparing two ints is the cheaper test, once per event
        limit = until_ns if until_ns is not None else 1 << 62
        # Events run = events there were + events scheduled - events left (or discarded):
        # counted from the insertion counter, so the loop itself counts nothing.
        self._discarded = 0
        before, s0 = len(heap), next(self.seq)
        t0 = time.perf_counter()
        # The inner loops are the simulator's hot path: keep them minimal.
        if progress is None:
            while heap:
                t, s, fn, arg = pop(heap)
                if t > limit:  # the next event is after the limit: time has reached it
                    heappush(heap, (t, s, fn, arg))
                    self.now = until_ns
                    break
                self.now = t
                fn(arg)
        else:
            while heap:
                budget = progress_every
                while heap and budget:
                    t, s, fn, arg = pop(heap)
                    if t > limit:
                        heappush(heap, (t, s, fn, arg))
                        heap = None
                        break
                    self.now = t
                    fn(arg)
                    budget -= 1
                if heap is None:
                    self.now = until_ns
                    break
                progress(self.now, self.events + self._ran(before, s0),
                         time.perf_counter() - t0)
        n = self._ran(before, s0)
        self.events += n
        return n

    def _ran(self, before: int, s0: int) -> int:
        scheduled = next(self.seq) - s0 - 1
        return before + scheduled - len(self.heap) - self._discarded
