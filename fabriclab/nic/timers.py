"""The timer service a NIC asks for alarms: ``at(t_ns, fn, arg)`` calls ``fn(arg)`` at
fabric time ``t_ns``.

The simulator passes its event loop (which has ``at``), so a NIC's timers are events like
any other and keep their place among them.  A driver that polls (the emulator's agent, a
unit test) passes a :class:`ManualTimers` and calls :meth:`ManualTimers.run_due` whenever
:meth:`ManualTimers.next_wakeup_ns` has come.
"""

from __future__ import annotations

import heapq
import itertools


class ManualTimers:
    """Alarms kept in a heap, run by whoever owns the clock."""

    def __init__(self):
        self._heap: list = []
        self._seq = itertools.count()

    def at(self, t_ns: int, fn, arg=None) -> None:
        if not isinstance(t_ns, int):
            raise TypeError(f"timer at {t_ns!r}: times are integer nanoseconds")
        heapq.heappush(self._heap, (t_ns, next(self._seq), fn, arg))

    def next_wakeup_ns(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now_ns: int) -> int:
        """Run every alarm due by ``now_ns`` (in time order, alarms they set included)."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            _, _, fn, arg = heapq.heappop(heap)
            fn(arg)
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._heap)
