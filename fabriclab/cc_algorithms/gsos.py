"""PROVISIONAL (lead's worktree only; replaced by helper gsos's module)."""

from __future__ import annotations

import heapq
import itertools
from typing import NamedTuple

from .gse import EgressScheduler, TransitTracker, wire_bytes


class Grant(NamedTuple):
    src_gsp: object
    dst_port: object
    nbytes: int
    path: int | None


class Gsos:
    def __init__(self, port_rate_of, mtu, header, overcommit=1.0, transit=None, link_rate=None):
        self.port_rate_of = port_rate_of
        self.mtu, self.header, self.overcommit = mtu, header, overcommit
        self.transit = transit  # (src, dst) -> list of per-path link lists
        self.tracker = TransitTracker() if transit is not None else None
        self.link_rate = link_rate
        self.sched = {}
        self._heap = []
        self._armed = set()
        self._seq = itertools.count()
        self._known = set()

    def next_time(self):
        return self._heap[0][0] if self._heap else None

    def request(self, now, src, dst, sizes):
        s = self.sched.get(dst)
        if s is None:
            s = self.sched[dst] = EgressScheduler(self.port_rate_of(dst), self.mtu, self.header,
                                                  self.overcommit)
        for n in sizes:
            s.request(src, n)
        self._arm(dst, now)

    def _arm(self, dst, now):
        s = self.sched[dst]
        if dst in self._armed or not s.has_pending():
            return
        self._armed.add(dst)
        heapq.heappush(self._heap, (s.next_time(now), next(self._seq), dst))

    def due(self, now):
        out = []
        while self._heap and self._heap[0][0] <= now:
            t, _, dst = heapq.heappop(self._heap)
            self._armed.discard(dst)
            s = self.sched[dst]
            src, nbytes = s.head()
            path = None
            if self.tracker is not None:
                links = self.transit(src, dst)
                for route in links:
                    for k in route:
                        if k not in self.tracker.rate:
                            self.tracker.add_link(k, self.link_rate(k))
                path, when = self.tracker.earliest(links)
                if when > t:
                    self._armed.add(dst)
                    heapq.heappush(self._heap, (int(when) + 1, next(self._seq), dst))
                    continue
                self.tracker.reserve(links[path], t, wire_bytes(nbytes, self.mtu, self.header))
            src, nbytes = s.grant(t)
            out.append(Grant(src, dst, nbytes, path))
            self._arm(dst, t)
        return out
