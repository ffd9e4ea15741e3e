"""Global Scheduled Ethernet (GSE), sans-IO: the pieces a GSP, an egress scheduler and GSOS
are made of, driven by either engine.

Source: China Mobile's NICC white paper, section 3.2.2 (see ``reference/GSE.md``).  The
white paper gives the mechanisms; where it is silent, the choices below are fabriclab's and
are marked as such.

* :class:`EgressScheduler` -- the scheduler of one destination egress port.  It grants the
  credit sources asked for (``grant_bytes`` each, or less for the tail of their data),
  round-robin, and never faster than the port's line rate x ``grant_overcommit`` (counting
  the bytes on the wire, headers included).  White paper: "the traffic towards any port never exceeds that
  port's capacity".
* :class:`TransitTracker` -- what GSOS knows of the fabric: per transit link, until when
  its capacity is reserved.  A grant takes the path whose links are free soonest (of
  those, the least reserved ahead, then the least recently used) and reserves the grant's
  bytes on each of them ("nor the forwarding capacity of any node on the way").
  :class:`fabriclab.cc_algorithms.gsos.Gsos` runs these two as GSOS (or as the egress
  scheduler of one GSP), for both engines.
* :class:`Voq` -- one GSP's virtual output queue for one destination port (DGSQ): it
  decides how many requests to keep outstanding (pipelining, ``max_outstanding_grants``),
  spends credit, and cuts the traffic into packet containers (PKTC) of ``container_bytes``,
  each on one path, tagged (source, destination port, container sequence, path).
* :class:`ReorderBuffer` -- the egress GSP's per-source reordering: packets of the
  container that is next in sequence are delivered at once, later containers wait, and
  the depth (bytes held) and the delay added are measured.  A container that cannot
  complete (one of its packets was lost) is given up on after a timeout, and the transport
  recovers the data (go-back-N).

fabriclab choices (white paper silent): a grant is credit for ``grant_bytes`` of payload
(default one container), or for the rest of the data when less is left; the scheduler is round-robin over requesting sources; a container
closes when full, or when its source has no more credit or no more data for that port; the
path of a container is the one its grant came with (central scheduler), else round-robin
over the equal-cost paths (``spray: round_robin``), or the path with the least bytes sent
by this GSP lately (``spray: least_loaded``, a stand-in for GSF back-pressure).
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass, replace

from ..spec import Gse as GseSpec
from ..units import BIT_NS, us, wire_bytes


@dataclass(frozen=True)
class GseParams:
    """GSE's parameters in the units the algorithms use (bytes, integer ns).  Each default,
    with its source, is stated once, in the spec (:class:`fabriclab.spec.Gse`): build them
    with :meth:`from_spec`, or :meth:`defaults` for the spec's defaults."""

    container_bytes: int  # payload per packet container
    grant_bytes: int  # credit per grant
    max_outstanding_grants: int  # grants a GSP asks for or holds per destination
    grant_overcommit: float  # grants per egress port at this multiple of its rate
    control_latency_ns: int  # central scheduler: one way between a GSP and GSOS
    scheduler: str  # "central" (GSOS) or "egress"
    placement: str  # "nic" (GSP in the NIC) or "leaf"
    spray: str  # "round_robin" or "least_loaded"
    reorder_timeout_ns: int  # the egress GSP gives up on an incomplete container
    fallback_ns: int  # Mininet: a GSP GSOS leaves unanswered this long asks the egress
    unscheduled_bytes: int = 0  # the unscheduled first window (0: none) ...
    lease_ns: int = 0  # ... within this long of a VOQ running dry after an idle grant

    def __post_init__(self):
        if self.container_bytes <= 0 or self.grant_bytes <= 0:
            raise ValueError("container_bytes and grant_bytes must be > 0")
        if self.max_outstanding_grants < 1:
            raise ValueError("max_outstanding_grants must be >= 1")
        if self.grant_overcommit <= 0:
            raise ValueError("grant_overcommit must be > 0")
        if self.scheduler not in ("central", "egress"):
            raise ValueError("scheduler must be central or egress")
        if self.spray not in ("round_robin", "least_loaded"):
            raise ValueError("spray must be round_robin or least_loaded")
        if self.reorder_timeout_ns <= 0 or self.fallback_ns <= 0:
            raise ValueError("reorder_timeout_ns and fallback_ns must be > 0")
        if self.unscheduled_bytes < 0 or self.lease_ns < 0:
            raise ValueError("unscheduled_bytes and lease_ns must be >= 0")

    @classmethod
    def from_spec(cls, g: GseSpec) -> GseParams:
        """From the spec's ``gse`` block."""
        return cls(container_bytes=g.container_bytes,
                   grant_bytes=g.grant_bytes or g.container_bytes,
                   max_outstanding_grants=g.max_outstanding_grants,
                   grant_overcommit=g.grant_overcommit,
                   control_latency_ns=g.control_latency_ns, scheduler=g.scheduler,
                   placement=g.placement, spray=g.spray,
                   reorder_timeout_ns=us(g.reorder_timeout_us), fallback_ns=us(g.fallback_us),
                   unscheduled_bytes=g.unscheduled_bytes, lease_ns=us(g.unscheduled_lease_us))

    @classmethod
    def defaults(cls, **overrides) -> GseParams:
        """The spec's defaults, with ``overrides`` (in this class's units) on top."""
        return replace(cls.from_spec(GseSpec()), **overrides)


class EgressScheduler:
    """Grants for one destination egress port: round-robin over requesting sources, spaced so
    that the granted bytes (on the wire) never exceed the port's rate x overcommit.

    With ``reach`` (source -> ns from a grant to its data reaching the port's switch) the
    spacing holds where the data arrives, not where the grants leave: grants are decided
    (still round-robin) as far ahead as the farthest source needs, and each is handed out
    its own reach before its data's turn at the port (:meth:`grant` says when).  Spaced at
    the grants alone, two grants a container apart to sources one switch apart and two
    switches apart (2.7 us at 100G with 1 us links) arrive together, and the port queues a
    container (fabriclab's choice: the white paper says only that a port's traffic never
    exceeds its capacity).

    :meth:`next_time` is a whole ns, the one in which the port frees up.  Where it frees up
    inside that ns is kept as a float (``next_free``), as it always was: exact integer
    accounting would move a grant by 1 ns wherever float rounding crossed a whole ns, and so
    change the simulator's results."""

    def __init__(self, port_rate_bps: int, mtu: int, header: int, overcommit: float,
                 reach=None):
        self.rate = port_rate_bps * overcommit
        self.mtu, self.header = mtu, header
        self.reach = reach  # source -> ns, or None (all alike)
        self._reach: dict = {}
        self.lead = 0.0  # the farthest reach of any source so far
        self.next_free = 0.0  # when the port can take the next grant's bytes (sub-ns)
        self.pending: dict = {}  # source -> deque of requested byte counts (dict order = RR)
        self.granted = 0
        self.granted_bytes = 0

    def has_pending(self) -> bool:
        return bool(self.pending)

    def _reach_of(self, src) -> float:
        r = self._reach.get(src)
        if r is None:
            r = self._reach[src] = self.reach(src)
            self.lead = max(self.lead, r)
        return r

    def request(self, src, nbytes: int) -> None:
        if self.reach is not None:
            self._reach_of(src)
        q = self.pending.get(src)
        if q is None:
            q = self.pending[src] = deque()
        q.append(nbytes)

    def next_time(self, now_ns: int) -> int:
        """When the next grant may be decided, in whole ns (call only with pending
        requests)."""
        return max(now_ns, int(self.next_free - self.lead))

    def head(self):
        """(source, bytes) of the grant that comes next."""
        src = next(iter(self.pending))
        return src, self.pending[src][0]

    def grant(self, now_ns: int):
        """Decide the next grant (round-robin: its source goes to the back); (source, bytes,
        the whole ns from which to hand it out: ``now_ns`` without ``reach``)."""
        src = next(iter(self.pending))
        q = self.pending.pop(src)
        nbytes = q.popleft()
        if q:
            self.pending[src] = q  # re-inserted at the end: round-robin
        wire = wire_bytes(nbytes, self.mtu, self.header)
        self.granted += 1
        self.granted_bytes += nbytes
        if self.reach is None:
            self.next_free = max(self.next_free, now_ns) + wire * BIT_NS / self.rate
            return src, nbytes, now_ns
        r = self._reach[src]  # kept where the data arrives
        arrive = max(self.next_free, now_ns + r)
        self.next_free = arrive + wire * BIT_NS / self.rate
        return src, nbytes, max(now_ns, math.ceil(arrive - r))


class TransitTracker:
    """GSOS's view of the transit links: per link, when its capacity is next free; the path
    free soonest takes the grant.

    Times handed out are whole ns.  As in :class:`EgressScheduler`, where a link frees up
    inside a ns is kept as a float (``next_free``), so that results do not change."""

    def __init__(self):
        self.next_free: dict = {}  # link id -> ns (sub-ns)
        self.rate: dict = {}
        self.down: set = set()  # links known dead: no grant takes a path across them

    def add_link(self, link, rate_bps: int) -> None:
        self.rate.setdefault(link, rate_bps)  # a degraded link keeps its rate (set_rate)
        self.next_free.setdefault(link, 0.0)

    def set_rate(self, link, rate_bps: int) -> None:
        """The link now carries ``rate_bps`` (a degraded link: its reservations last
        longer, so the paths across it take fewer grants)."""
        self.rate[link] = rate_bps
        self.next_free.setdefault(link, 0.0)

    def earliest(self, paths: list[list], at_ns: int = 0) -> tuple[int, int]:
        """(index of the path free soonest, the first whole ns from ``at_ns`` on at which
        it is free); paths are lists of link ids.  A path busy at ``at_ns`` is free from the
        first whole ns after its busy time.  Of the paths free equally soon, the one with the
        least reserved beyond ``at_ns`` on its links in all, then the one whose links'
        reservations end earliest in sum (the least recently used), then the lowest index:
        taking the first free path instead stacks the next grants onto the links it shares
        with the others, and puts a lone flow's every container on it.  Paths across a dead
        link are not taken while another is left."""
        inf = float("inf")
        best, when, least_ahead, least_total = 0, inf, inf, inf
        down = self.down
        nf = self.next_free
        for i, links in enumerate(paths):
            if down and not down.isdisjoint(links):
                continue
            t = at_ns
            ahead = total = 0.0
            for k in links:
                f = nf[k]
                total += f
                if f > at_ns:
                    ahead += f - at_ns
                    if f > t:
                        t = f
            if t < when or (t == when and (ahead < least_ahead or (
                    ahead == least_ahead and total < least_total))):
                best, when, least_ahead, least_total = i, t, ahead, total
        if when == float("inf"):  # every path is dead: the grant goes anyway (and is lost)
            self.down, down = set(), self.down
            try:
                return self.earliest(paths, at_ns)
            finally:
                self.down = down
        return best, at_ns if when <= at_ns else math.floor(when) + 1

    def span(self, links: list, wire: int) -> float:
        """How long ``wire`` bytes take on the slowest of ``links`` (ns; 0 without links)."""
        return max((wire * BIT_NS / self.rate[k] for k in links), default=0.0)

    def reserve(self, links: list, at_ns: int, wire: int) -> None:
        """``wire`` bytes on each of ``links``, from ``at_ns`` or when each is free."""
        for k in links:
            self.next_free[k] = max(self.next_free[k], at_ns) + wire * BIT_NS / self.rate[k]


class Container:
    """The container a VOQ is filling: its sequence number, path, bytes and packets so far,
    and ``grant``: [path, credit left] of the grant it spends (None: unscheduled, or a grant
    that named no path)."""

    __slots__ = ("seq", "path", "bytes", "packets", "grant")

    def __init__(self, seq: int, path: int, bytes: int = 0, packets: int = 0,
                 grant: list | None = None):
        self.seq = seq
        self.path = path
        self.bytes = bytes
        self.packets = packets
        self.grant = grant


class Voq:
    """One GSP's virtual output queue towards one destination port."""

    def __init__(self, params: GseParams, n_paths: int):
        self.params = params
        self.n_paths = n_paths
        # (lists, not deques: they hold a few entries, and at 1,024 hosts deques took 2 MB)
        self.asked: list = []  # byte counts requested, not yet granted
        self.requested_bytes = 0
        self.credit = 0  # payload bytes granted, not yet sent
        self.grant_paths: list = []  # [path, credit left] of each grant
        self.container: Container | None = None
        self.next_seq = 0
        self.rr_path = 0
        self.sent_on_path = [0] * n_paths
        self.requests_sent = 0
        self.grants_received = 0
        self.avoid: frozenset = frozenset()  # paths across a dead link (not sprayed over)
        # the unscheduled first window (GseParams.lease_ns): the last grant said no other
        # source was waiting for the port; when the VOQ last ran out of credit; credit taken
        # without a grant and not yet sent; containers sent so
        self.lease = False
        self.drained_at: int | None = None
        self.unscheduled = 0
        self.unscheduled_containers = 0

    def requests_to_send(self, pending_bytes: int) -> list[int]:
        """The byte counts of the new requests that keep enough credit coming for
        ``pending_bytes``: pipelined, at most ``max_outstanding_grants`` grants asked for or
        held, each for ``grant_bytes`` or, for the tail, what is left."""
        g = self.params.grant_bytes
        covered = self.requested_bytes + self.credit
        held = len(self.asked) + (1 if self.credit > 0 else 0)
        out = []
        while covered < pending_bytes and held < self.params.max_outstanding_grants:
            n = min(g, pending_bytes - covered)
            out.append(n)
            self.asked.append(n)
            self.requested_bytes += n
            covered += n
            held += 1
        self.requests_sent += len(out)
        return out

    def on_grant(self, nbytes: int, path: int | None = None, idle: bool = False) -> None:
        """A grant of ``nbytes`` (on ``path``, when GSOS names one); ``idle``: no other
        source was waiting for the port when it was given."""
        if self.asked:
            self.requested_bytes -= self.asked.pop(0)
        self.credit += nbytes
        self.grants_received += 1
        self.lease = idle
        if path is not None:
            self.grant_paths.append([path, nbytes])

    def take_unscheduled(self, now: int, pending_bytes: int) -> int:
        """The unscheduled first window: bytes this VOQ may send now without a grant, and
        takes as credit.  Only when new data finds it without credit or requests, within
        ``lease_ns`` of running dry, and its last grant said no other source was waiting
        for the port: then up to ``unscheduled_bytes``, once per such grant."""
        p = self.params
        if not (self.lease and p.lease_ns and p.unscheduled_bytes and pending_bytes > 0
                and self.credit <= 0 and not self.asked and self.drained_at is not None
                and now - self.drained_at <= p.lease_ns):
            return 0
        n = min(p.unscheduled_bytes, pending_bytes)
        self.lease = False
        self.credit += n
        self.unscheduled += n
        return n

    def _least_loaded(self) -> int:
        """The live path that carried the fewest bytes (the lowest index of those)."""
        live = [i for i in range(self.n_paths) if i not in self.avoid] or range(self.n_paths)
        return min(live, key=lambda i: (self.sent_on_path[i], i))

    def tag(self, payload: int, last_data: bool, now: int = 0) -> tuple[int, int, int, bool]:
        """Account one packet of ``payload`` bytes sent at ``now``; returns its container
        tag (container seq, path, index in the container, last packet of the container?).
        Unscheduled credit is spent first, then each grant's in turn: a container spends
        one grant's credit at most, and takes that grant's path when it names one."""
        c = self.container
        gp = self.grant_paths
        if c is None:
            grant = None
            if self.unscheduled > 0:
                self.unscheduled_containers += 1
            elif gp:
                grant = gp[0]
            if grant is not None:
                path = grant[0]
            elif self.params.spray == "least_loaded":
                path = self._least_loaded()
            else:
                path = self.rr_path
                self.rr_path = (self.rr_path + 1) % self.n_paths
                if self.avoid and len(self.avoid) < self.n_paths:
                    while path in self.avoid:
                        path = self.rr_path
                        self.rr_path = (self.rr_path + 1) % self.n_paths
            c = self.container = Container(self.next_seq, path, grant=grant)
            self.next_seq += 1
        index = c.packets
        c.packets += 1
        c.bytes += payload
        self.credit -= payload
        self.sent_on_path[c.path] += payload
        last = last_data or self.credit <= 0 or c.bytes >= self.params.container_bytes
        g = c.grant
        if g is not None:
            g[1] -= payload
            if g[1] <= 0:  # spent: the next container takes the next grant's path
                gp.pop(0)
                last = True
                if g[1] < 0 and gp:  # the packet overran into the next grant's credit
                    gp[0][1] += g[1]
        elif self.unscheduled > 0:
            self.unscheduled -= payload
            if self.unscheduled <= 0:
                last = True
                if self.unscheduled < 0 and gp:
                    gp[0][1] += self.unscheduled
                self.unscheduled = 0
        if self.credit <= 0:
            self.drained_at = now
        if last:
            self.container = None
        return c.seq, c.path, index, last


class ReorderBuffer:
    """The egress GSP's reordering of one source's containers.

    ``accept`` returns the packets that may now be delivered, in order.  Packets of the
    container next in sequence go through at once; those of later containers wait until
    every earlier container is complete.
    """

    def __init__(self):
        self.expected = 0  # the container whose packets are delivered as they arrive
        self.expected_got = 0
        self.expected_n = None  # its packet count, known once its last packet arrived
        self.held: dict[int, list] = {}  # seq -> [(index, item, arrival)], count
        self.held_n: dict[int, int] = {}
        self.held_bytes = 0
        self.max_held_bytes = 0
        self.delays = array("q")  # delay added to each packet that had to wait
        self.skipped = 0  # times an incomplete container was given up on

    def accept(self, now_ns: int, seq: int, index: int, last: bool, item, nbytes: int) -> list:
        if seq == self.expected:
            out = [item]
            self.expected_got += 1
            if last:
                self.expected_n = index + 1
            if self.expected_n is not None and self.expected_got >= self.expected_n:
                self._advance(now_ns, out)
            return out
        if seq < self.expected:
            return [item]  # a duplicate of something already through: the transport decides
        self.held.setdefault(seq, []).append((index, item, now_ns, nbytes))
        if last:
            self.held_n[seq] = index + 1
        self.held_bytes += nbytes
        self.max_held_bytes = max(self.max_held_bytes, self.held_bytes)
        return []

    def oldest_held(self) -> int | None:
        """Arrival time of the packet that has waited longest, None if nothing waits."""
        return min((t for pk in self.held.values() for _, _, t, _ in pk), default=None)

    def release_stale(self, now_ns: int, timeout_ns: int) -> list:
        """Give up on containers that cannot complete (a packet of theirs was lost, or never
        sent): once something has waited ``timeout_ns``, skip to the oldest container held
        and release in order from there.  The transport recovers the lost data."""
        oldest = self.oldest_held()
        if oldest is None or now_ns - oldest < timeout_ns:
            return []
        self.skipped += 1
        out: list = []
        self.expected = min(self.held) - 1
        self._advance(now_ns, out)
        return out

    def _advance(self, now_ns: int, out: list) -> None:
        """The expected container is complete: move on, releasing what waits."""
        while True:
            self.expected += 1
            self.expected_got, self.expected_n = 0, None
            waiting = self.held.pop(self.expected, None)
            if not waiting:
                self.held_n.pop(self.expected, None)
                return
            waiting.sort(key=lambda x: x[0])
            for _, item, t, nbytes in waiting:
                out.append(item)
                self.delays.append(now_ns - t)
                self.held_bytes -= nbytes
            self.expected_got = len(waiting)
            self.expected_n = self.held_n.pop(self.expected, None)
            if self.expected_n is None or self.expected_got < self.expected_n:
                return
