"""PFC ingress accounting for a switch that only sees its egress queues (sans-IO).

A switch sends PAUSE upstream on an ingress port when the bytes that came in on that port
and still sit in its buffer cross a threshold (IEEE 802.1Qbb; the dynamic threshold of the
HPCC simulator's ``switch-mmu.cc``, which :mod:`fabriclab.sim.fabric` implements per
packet).  The Mininet engine's switches keep frames in per-port egress FIFOs and cannot
account per packet, so its PFC daemon (:mod:`fabriclab.emu.pfcd`) rebuilds the same
quantity from counters the eBPF port program keeps for each egress FIFO: data bytes that
entered it in total and from each ingress port, and its backlog.  Two pieces, both plain
objects with no clock and no socket:

* :class:`FifoAttribution` -- how many bytes from each ingress port one FIFO holds.  A FIFO
  sends its bytes in arrival order, so the bytes it has sent are the first
  ``entered - backlog`` of its input; the counters are sampled over time, and the share
  of each ingress port in that prefix is interpolated between samples.  Exact at the
  samples; between two samples it assumes the mix was even.
* :class:`IngressPfc` -- the thresholds: an ingress port's shared use (its bytes beyond
  the reserve) against ``alpha x`` the free shared buffer, PAUSE at or above it, RESUME
  ``resume_offset`` below it or within the reserve.  The simulator moves bytes beyond
  the threshold into a separate headroom; here they stay in the port's count (the
  threshold only decides when to pause), so the shared use is slightly overstated while
  a port is paused, and RESUME comes a little later than in the simulator.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque


def shared_pool(buffer: int, headroom: list[int], reserve: int) -> int:
    """A switch's shared buffer: what its ports' headroom and reserves leave (both engines)."""
    return buffer - sum(headroom) - reserve * len(headroom)


class FifoAttribution:
    """Bytes from each of ``n`` ingress ports in one egress FIFO, from cumulative counters.

    Feed :meth:`update` with samples in time order: ``entered`` (bytes that entered the
    FIFO so far), ``backlog`` (bytes in it now) and ``per_ingress`` (bytes that entered
    from each ingress port so far; bytes from no known port count towards ``entered``
    only)."""

    __slots__ = ("n", "_e", "_arr")

    def __init__(self, n: int):
        self.n = n
        self._e: deque[int] = deque([0])  # entered at each sample, non-decreasing
        self._arr: deque[tuple] = deque([(0,) * n])

    def update(self, entered: int, backlog: int, per_ingress) -> list[int]:
        """Bytes of each ingress port still in the FIFO."""
        arr = tuple(per_ingress[:self.n])
        e, hist = self._e, self._arr
        if entered < e[-1]:
            raise ValueError(f"entered went backwards ({e[-1]} -> {entered})")
        if backlog <= 0:  # empty: everything has left, no history needed
            e.clear()
            hist.clear()
            e.append(entered)
            hist.append(arr)
            return [0] * self.n
        e.append(entered)
        hist.append(arr)
        sent = max(0, entered - max(0, backlog))
        # samples wholly before the sent prefix are no longer needed (keep one before it)
        while len(e) > 2 and e[1] <= sent:
            e.popleft()
            hist.popleft()
        at = self._at(sent)
        return [max(0, a - b) for a, b in zip(arr, at)]

    def _at(self, x: int) -> tuple:
        """Per-ingress bytes entered when ``entered`` was ``x`` (linear between samples)."""
        e, hist = self._e, self._arr
        k = bisect_right(e, x) - 1
        if k < 0:
            return hist[0]
        if k >= len(e) - 1 or e[k + 1] == e[k]:
            return hist[k]
        f = (x - e[k]) / (e[k + 1] - e[k])
        lo, hi = hist[k], hist[k + 1]
        return tuple(a + round((b - a) * f) for a, b in zip(lo, hi))


class IngressPfc:
    """One switch's PAUSE/RESUME decisions per ingress port, from its bytes in the buffer.

    ``buffer``: the switch's buffer; ``headroom``: each port's headroom; ``reserve``,
    ``alpha``, ``resume_offset``: ``switch.pfc``'s.  :meth:`update` takes every port's
    bytes in the buffer and returns the ports whose state changes, as ``(port, pause)``."""

    def __init__(self, buffer: int, headroom: list[int], reserve: int, alpha: float,
                 resume_offset: int):
        self.reserve = reserve
        self.alpha = alpha
        self.resume_offset = resume_offset
        self.shared_total = shared_pool(buffer, headroom, reserve)
        if self.shared_total <= 0:
            raise ValueError(f"a buffer of {buffer} bytes leaves no shared pool after "
                             f"headroom and reserve of {len(headroom)} ports")
        self.paused = [False] * len(headroom)
        self.max_bytes = [0] * len(headroom)

    def threshold(self, occupancy: list[int]) -> float:
        """alpha x the free shared buffer, given every port's bytes."""
        r = self.reserve
        used = sum(o - r for o in occupancy if o > r)
        return self.alpha * max(0, self.shared_total - used)

    def update(self, occupancy: list[int]) -> list[tuple[int, bool]]:
        thr = self.threshold(occupancy)
        out = []
        for i, o in enumerate(occupancy):
            if o > self.max_bytes[i]:
                self.max_bytes[i] = o
            shared = o - self.reserve
            if not self.paused[i]:
                if shared > 0 and shared >= thr:
                    self.paused[i] = True
                    out.append((i, True))
            elif shared <= 0 or shared + self.resume_offset <= thr:
                self.paused[i] = False
                out.append((i, False))
        return out
