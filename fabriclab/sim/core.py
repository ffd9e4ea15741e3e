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
    __slots__ = ("now", "heap", "seq", "events", "_stopped")

    def __init__(self):
        self.now = 0
        self.heap: list = []
        self.seq = itertools.count()
        self.events = 0
        self._stopped = False

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
        limit = until_ns if until_ns is not None else float("inf")
        n = 0
        t0 = time.perf_counter()
        chunk = progress_every if progress is not None else 1 << 62
        while heap:
            budget = chunk
            # The inner loop is the simulator's hot path: keep it minimal.
            while heap and budget:
                t, s, fn, arg = pop(heap)
                if t > limit:
                    heappush(heap, (t, s, fn, arg))
                    heap = None
                    break
                self.now = t
                fn(arg)
                budget -= 1
            n += chunk - budget
            if heap is None:  # the next event is after the limit: time has reached it
                self.now = until_ns
                break
            if progress is not None:
                progress(self.now, self.events + n, time.perf_counter() - t0)
        self.events += n
        return n
