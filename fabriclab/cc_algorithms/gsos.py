"""GSOS, GSE's grant scheduler, sans-IO: the one the simulator's event loop and the os-ken
controller both drive.

Per destination port one :class:`~fabriclab.cc_algorithms.gse.EgressScheduler`
(round-robin over the requesting GSPs, grants spaced so that their wire bytes never exceed
the port's rate x overcommit) and, when transit paths are given, one
:class:`~fabriclab.cc_algorithms.gse.TransitTracker` over the fabric links: the grant takes
the path whose transit links are free soonest and reserves its wire bytes on them at the
port's turn; while even that path is reserved further ahead than the grant's own length,
the grant, already reserved, is handed out only when it no longer is.  Without transit
paths (egress mode: one scheduler per GSP, for its own ports) grants carry no path.

The scheduler knows no topology class of either engine: ids are opaque hashables (host
indices in the controller, node names in the simulator, a leaf's name for a leaf-placed
GSP); the port rates and the transit paths are handed to it:

* ``port_rate``: a mapping or a callable, destination port id -> rate in bit/s;
* ``transit``: None, or a callable ``(src, dst) -> paths``, path k being a list of
  ``(link id, rate in bit/s)``, the links a container on path k crosses that GSOS tracks.
  It raises ValueError for a pair that has no path (unknown id, src == dst).
* ``reach``: None, or a callable ``(src, dst) -> ns``, how long after a grant the data of
  ``src`` reaches ``dst``'s switch: a port's grants are then spaced where the data arrives
  (:class:`~fabriclab.cc_algorithms.gse.EgressScheduler`).

Driving it: :meth:`Gsos.request` when a REQUEST arrives, :meth:`Gsos.due` when a timer's
time has come.  Time is integer ns of the driver's clock (simulated time, or
CLOCK_MONOTONIC in the controller); every time handed back is a whole ns.  Each destination
port is a timer: :meth:`Gsos.due` fires every timer whose time has come, in time order, each
at its own scheduled time (not at ``now``), so a driver that wakes late catches up on the
schedule without ever granting faster than the rate: the wire bytes granted towards a port
by time t stay within rate x (t - first grant) + one grant.  Two ways to know when:

* a driver that sleeps (the os-ken app) sleeps until :meth:`Gsos.next_time`;
* a driver with an event queue (the simulator) builds it with ``wakeups=True``, puts one
  event at each time :meth:`Gsos.take_wakeups` returns and calls ``due(now, most=1)`` on
  it: a timer is then one event of its queue, so grants interleave with its other events
  of the same ns in the order the timers were armed, whatever else is due in that ns.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Mapping
from typing import NamedTuple

from ..units import wire_bytes
from .gse import EgressScheduler, TransitTracker


class Grant(NamedTuple):
    src_gsp: Hashable  # the grantee
    dst_port: Hashable  # the destination port the credit is for
    nbytes: int  # payload bytes of credit
    path: int | None  # the path its container takes; None: the GSP picks
    idle: bool = False  # no other source's request for the port was waiting


class Gsos:
    """The grant scheduler.  Not thread-safe: a driver serialises calls (a lock)."""

    def __init__(self, port_rate: Mapping | Callable[[Hashable], int], mtu: int, header: int,
                 overcommit: float,
                 transit: Callable[[Hashable, Hashable], list] | None = None,
                 wakeups: bool = False,
                 reach: Callable[[Hashable, Hashable], float] | None = None):
        if mtu <= 0 or header < 0 or not overcommit > 0:
            raise ValueError("mtu and overcommit must be > 0, header >= 0")
        self.port_rate = port_rate
        self._rate_of = port_rate.__getitem__ if isinstance(port_rate, Mapping) else port_rate
        self.mtu, self.header, self.overcommit = mtu, header, overcommit
        self._transit = transit
        self._reach = reach
        self.tracker = TransitTracker() if transit is not None else None
        self.sched: dict = {}  # destination port -> its EgressScheduler
        self._paths: dict = {}  # (src, dst) -> per path, its transit link ids
        self._heap: list = []  # (time, seq, dst): armed timers
        self._armed: set = set()
        self._seq = itertools.count()
        self._wakeups: list[int] | None = [] if wakeups else None  # times armed, untaken
        # counters
        self.request_messages = 0
        self.requests = 0  # grants asked for (one per size in a REQUEST)
        self.requested_bytes = 0
        self.grants = 0
        self.granted_bytes = 0
        self.transit_waits = 0  # grants handed out later than their turn: links busy

    # -- queries ---------------------------------------------------------------------------
    def paths(self, src, dst) -> list[list]:
        """Transit link ids of each path from ``src`` to ``dst``, by path index (ValueError
        if there is none); needs ``transit``."""
        key = (src, dst)
        p = self._paths.get(key)
        if p is None:
            p = []
            for route in self._transit(src, dst):
                for link, rate in route:
                    self.tracker.add_link(link, rate)
                p.append(tuple(link for link, _ in route))
            self._paths[key] = p
        return p

    def next_time(self) -> int | None:
        """When :meth:`due` next has something to give (ns), None when nothing is pending."""
        return self._heap[0][0] if self._heap else None

    def take_wakeups(self) -> list[int]:
        """The times of the timers armed since the last call, in the order they were armed
        (``wakeups=True`` only)."""
        out = self._wakeups
        if out:
            self._wakeups = []
        return out

    def links_down(self, links) -> None:
        """These transit links are dead (all others alive): no grant takes a path across
        them while another path is left."""
        if self.tracker is not None:
            self.tracker.down = set(links)

    def link_rate(self, link, rate_bps: int) -> None:
        """A transit link now runs at ``rate_bps`` (degraded, or restored)."""
        if self.tracker is not None:
            self.tracker.set_rate(link, rate_bps)

    def pending(self) -> int:
        """Grants asked for and not given yet."""
        return sum(len(q) for s in self.sched.values() for q in s.pending.values())

    def stats(self) -> dict:
        return {"request_messages": self.request_messages, "requests": self.requests,
                "requested_bytes": self.requested_bytes, "grants": self.grants,
                "granted_bytes": self.granted_bytes, "pending": self.pending(),
                "transit_waits": self.transit_waits}

    # -- driving ---------------------------------------------------------------------------
    def request(self, now_ns: int, src, dst, sizes) -> None:
        """A REQUEST from GSP ``src``: one grant wanted per entry of ``sizes`` (payload
        bytes) towards port ``dst``.  ValueError (and nothing recorded) if the port is
        unknown, there is no transit path between the two or a size is not positive."""
        sizes = list(sizes)
        if self._transit is not None:
            self.paths(src, dst)
        s = self.sched.get(dst)
        if s is None:
            try:
                rate = self._rate_of(dst)
            except KeyError:
                raise ValueError(f"no destination port {dst!r}") from None
        for n in sizes:
            if not isinstance(n, int) or n <= 0:
                raise ValueError(f"request sizes must be positive integers: {sizes}")
        self.request_messages += 1
        if not sizes:
            return
        if s is None:
            s = self.sched[dst] = EgressScheduler(
                rate, self.mtu, self.header, self.overcommit,
                None if self._reach is None else (lambda src, d=dst: self._reach(src, d)))
        for n in sizes:
            s.request(src, n)
        self.requests += len(sizes)
        self.requested_bytes += sum(sizes)
        self._arm(dst, now_ns)

    def due(self, now_ns: int, most: int | None = None) -> list[Grant]:
        """Every grant whose time has come by ``now_ns``, in the order given; with ``most``,
        only the first ``most`` timers due are fired."""
        out: list[Grant] = []
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now_ns and (most is None or fired < most):
            t, _, what = heapq.heappop(heap)
            fired += 1
            if type(what) is Grant:  # reserved earlier, handed out now
                out.append(what)
                continue
            self._armed.discard(what)
            self._fire(t, what, out)
        return out

    def _arm(self, dst, now_ns: int) -> None:
        s = self.sched[dst]
        if dst in self._armed or not s.has_pending():
            return
        self._push(s.next_time(now_ns), dst)

    def _push(self, t: int, what) -> None:
        """A timer at ``t``: a port's (``what`` is its id) or a reserved grant's (a Grant)."""
        if type(what) is not Grant:
            self._armed.add(what)
        heapq.heappush(self._heap, (t, next(self._seq), what))
        if self._wakeups is not None:
            self._wakeups.append(t)

    def _fire(self, t: int, dst, out: list[Grant]) -> None:
        """The timer of port ``dst`` at its time ``t``: its next grant.  With transit
        tracking, the grant's bytes are reserved now on the path free soonest, and the grant
        is handed out now if that path's links are reserved no further ahead than the
        grant's own length (its wire time on the path's slowest link), else when they are.
        Reserving at the port's turn keeps the grants in the port's order: a grant that
        waited for busy links and then competed for them again with later grants could
        lose to them again and again, and the port's turn would go unused meanwhile."""
        s = self.sched[dst]
        path = None
        given = t
        if self.tracker is not None:
            src, nbytes = s.head()
            links = self.paths(src, dst)
            path, free = self.tracker.earliest(links, t)
            wire = wire_bytes(nbytes, self.mtu, self.header)
            ahead = free - self.tracker.span(links[path], wire)
            if ahead > t:  # the links are reserved far ahead: the grant goes later
                self.transit_waits += 1
                given = math.ceil(ahead)
            self.tracker.reserve(links[path], t, wire)
        src, nbytes, at = s.grant(t)
        given = max(given, at)
        self.grants += 1
        self.granted_bytes += nbytes
        g = Grant(src, dst, nbytes, path, not s.has_pending())
        if given > t:
            self._push(given, g)
        else:
            out.append(g)
        self._arm(dst, t)
