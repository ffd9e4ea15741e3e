"""GSE's GSP (the edge processor of Global Scheduled Ethernet), sans-IO, written once.

:class:`Gsp` is what a GSP does wherever it sits -- in the NIC (``gse.placement: nic``) or in
the leaf (``placement: leaf``): a VOQ per destination port (DGSQ), the requests that keep
credit coming, the grants it receives, the reorder buffers of its egress side, the egress
scheduler of its own ports (``scheduler: egress``), and the fall-back to egress scheduling
when GSOS stops answering.  The decisions are ``fabriclab.cc_algorithms.gse``'s (Voq,
ReorderBuffer) and ``fabriclab.cc_algorithms.gsos``'s (the grant scheduler); this module
keeps their state and says what to send.

:class:`NicGsp` is the GSP inside a :class:`~fabriclab.nic.transport.Nic`: it holds the NIC's
flows in their VOQs, sends a flow's data only against credit, cuts it into containers
sprayed over the paths, and reorders containers before the transport sees them.

Where messages go is the owner's (an adapter's) business:
* ``to_gsos(now, dst, sizes)``: a REQUEST to the central scheduler (``scheduler: central``);
  the adapter delivers GSOS's grants with :meth:`Gsp.on_grant`.
* egress mode: REQUEST and GRANT frames (:mod:`fabriclab.wire.frames`) through the fabric,
  queued by the owner (:meth:`Gsp.emit`), received through :meth:`Gsp.on_control`.
* ``paths(peer)``: the engine's handles of the equal-cost paths to a peer (their count is
  the number of paths containers are sprayed over; the simulator's are routes).
"""

from __future__ import annotations

from array import array
from collections import defaultdict

from ..cc_algorithms.gse import ReorderBuffer, Voq
from ..cc_algorithms.gsos import Gsos
from ..wire.frames import new_tag


class Gsp:
    """The placement-independent part of a GSP.  Owners provide ``_pending(dst)`` (payload
    bytes waiting for ``dst``), ``_granted(dst, now)`` (credit arrived), ``_unscheduled(dst,
    now)`` (credit taken without a grant) and ``emit(frame)`` (send an egress-mode REQUEST
    or GRANT frame)."""

    def __init__(self, gsp_id, params, frames, timers, paths, port_rate_of, mtu: int,
                 header: int, control_bytes: int, ctrl_prio: int, to_gsos=None,
                 fallback: bool = False, reach=None):
        self.id = gsp_id
        self.params = params
        self.frames = frames
        self.timers = timers
        self.paths = paths  # peer id -> list of path handles
        self.mtu, self.header = mtu, header
        self.control_bytes_each = control_bytes
        self.ctrl_prio = ctrl_prio
        self.to_gsos = to_gsos
        self.mode = params.scheduler  # "central" until a fall-back, or "egress"
        self.voqs: dict = {}
        self.dead_paths = None  # dst -> indices of its paths across a dead link
        self.req_times: dict = defaultdict(list)  # dst -> send times of its grants asked
        self.reorder_bufs: dict = {}
        self.stale_checks: set = set()
        # egress mode: the scheduler of this GSP's own ports (no transit tracking); each of
        # its timers is one alarm, so grants keep their place among same-time events
        # (``reach``: source GSP -> ns from this GSP's GRANT to the source's data reaching
        # the port's switch, so that grants are spaced where the data arrives; None: alike)
        # (made on first use: most GSPs never schedule, and at 1,024 hosts one each took 4 MB)
        self._egress = None
        self._egress_args = (port_rate_of, reach)
        # GSOS fall-back after params.fallback_ns of silence (where GSOS receipts every
        # REQUEST, i.e. on the emulator, whose controller can be killed)
        self.fallback = fallback
        self.unreceipted: list = []  # send times of REQUESTs GSOS has not receipted
        self.last_heard = 0
        self.fell_back_at = None
        self.fallback_armed = None
        # counters
        self.requests = 0
        self.grants = 0
        self.grants_given = 0
        self.receipts = 0
        self.probes = 0
        self.control_bytes = 0
        self.grant_latency = array("q")  # ns from each REQUEST to its grant

    @property
    def egress(self) -> Gsos:
        """The egress-mode scheduler of this GSP's own ports."""
        if self._egress is None:
            port_rate_of, reach = self._egress_args
            self._egress = Gsos(port_rate_of, self.mtu, self.header,
                                self.params.grant_overcommit, wakeups=True,
                                reach=None if reach is None else (lambda src, _dst: reach(src)))
        return self._egress

    # -- requests ------------------------------------------------------------------------
    def voq(self, dst):
        v = self.voqs.get(dst)
        if v is None:
            v = self.voqs[dst] = Voq(self.params, len(self.paths(dst)))
            if self.dead_paths is not None:
                v.avoid = self.dead_paths(dst)
        return v

    def paths_down(self, dead_paths) -> None:
        """Spray no container over the paths ``dead_paths(dst)`` names (indices): they
        cross a link known to be dead."""
        self.dead_paths = dead_paths
        for dst, v in self.voqs.items():
            v.avoid = dead_paths(dst)

    def ask(self, dst, now: int) -> None:
        """Send the requests that keep enough credit coming for ``dst``'s VOQ (after
        taking the unscheduled first window, when the VOQ may)."""
        v = self.voq(dst)
        pending = self._pending(dst)
        if v.lease and v.take_unscheduled(now, pending):
            self._unscheduled(dst, now)
        sizes = v.requests_to_send(pending)
        if not sizes:
            return
        self.requests += len(sizes)
        self.req_times[dst].extend([now] * len(sizes))
        self._request(dst, sizes, now)

    def _request(self, dst, sizes: list[int], now: int) -> None:
        self.control_bytes += self.control_bytes_each  # one REQUEST message carries them all
        if self.mode == "central":
            if self.fallback:  # kept only where GSOS receipts (at 1,024 hosts: 5 MB)
                self.unreceipted.append(now)
            self._arm_fallback(now)
            self.to_gsos(now, dst, sizes)
        else:
            f = self.frames.GseRequest(self.id, dst, sizes, self.control_bytes_each,
                                       self.ctrl_prio)
            f.route = self.paths(dst)[0]
            self.emit(f, now)

    def on_grant(self, now: int, dst, nbytes: int, path, idle: bool = False) -> None:
        """Credit of ``nbytes`` towards ``dst`` (from GSOS, with its path, or an egress
        scheduler); 0 bytes is GSOS's receipt for a REQUEST.  ``idle``: no other source was
        waiting for the port (the unscheduled first window's lease)."""
        self.last_heard = now
        if nbytes == 0:
            self.receipts += 1
            if self.unreceipted:
                self.unreceipted.pop(0)
            return
        self.grants += 1
        times = self.req_times[dst]
        if times:
            self.grant_latency.append(now - times.pop(0))
        self.voq(dst).on_grant(nbytes, path, idle)
        self._granted(dst, now)

    def on_control(self, now: int, frame) -> None:
        """An egress-mode REQUEST (for one of this GSP's ports) or GRANT frame arrived."""
        if frame.kind == "gse_request":
            self.egress.request(now, frame.src_gsp, frame.dst_port, frame.sizes)
            self._arm_egress(now)
        elif frame.kind == "gse_grant":
            self.on_grant(now, frame.dst_port, frame.nbytes, frame.path, frame.idle)

    # -- this GSP's own ports: the egress scheduler ------------------------------------------
    def _arm_egress(self, now: int) -> None:
        for t in self.egress.take_wakeups():
            self.timers.at(t, self._egress_due, t)

    def _egress_due(self, now: int) -> None:
        for g in self.egress.due(now, most=1):
            self.grants_given += 1
            f = self.frames.GseGrant(g.src_gsp, g.dst_port, g.nbytes, g.path,
                                     self.control_bytes_each, self.ctrl_prio, g.idle)
            f.route = self.paths(g.src_gsp)[0]
            self.control_bytes += self.control_bytes_each
            self.emit(f, now)
        self._arm_egress(now)

    # -- GSOS gone: fall back to egress scheduling ----------------------------------------
    def _arm_fallback(self, now: int) -> None:
        fb = self.params.fallback_ns
        if not self.fallback or self.mode != "central" or self.fallback_armed is not None:
            return
        t = (self.unreceipted[0] if self.unreceipted else self.last_heard) + fb
        t = max(t, now + 1)
        self.fallback_armed = t
        self.timers.at(t, self._check_fallback, t)

    def _check_fallback(self, now: int) -> None:
        """GSOS silent for too long: probe it once; if a REQUEST stays unreceipted for
        ``fallback_ns``, ask the destinations' own schedulers from now on."""
        self.fallback_armed = None
        if self.mode != "central":
            return
        fb = self.params.fallback_ns
        if not self.unreceipted:
            waiting = [d for d, v in self.voqs.items() if v.asked]
            if waiting and now - self.last_heard >= fb:
                self.probes += 1  # GSOS may have taken our requests and died: ask it
                self.last_heard = now
                self._request(waiting[0], [], now)
            elif waiting:
                self._arm_fallback(now)
            return
        if now - self.unreceipted[0] < fb:
            self._arm_fallback(now)
            return
        self.mode = "egress"
        self.fell_back_at = now
        for dst, v in self.voqs.items():
            if v.asked:
                self._request(dst, list(v.asked), now)

    # -- the egress side: reordering -------------------------------------------------------
    def reorder_buffer(self, src) -> ReorderBuffer:
        rb = self.reorder_bufs.get(src)
        if rb is None:
            rb = self.reorder_bufs[src] = ReorderBuffer()
        return rb

    def reorder_accept(self, now: int, frame, item, dst=None) -> list:
        """``item`` (``frame`` or what the owner holds for it) and what it releases, in
        order; arms the give-up timer while something waits.  A GSP that serves several
        destination ports (in the leaf) names the port, ``dst``: container sequence numbers
        are per source VOQ, i.e. per (source, destination port)."""
        tag = frame.tag
        key = tag.src_gsp if dst is None else (tag.src_gsp, dst)
        rb = self.reorder_bufs.get(key) or self.reorder_buffer(key)
        out = rb.accept(now, tag.seq, tag.index, tag.last, item, frame.size)
        if rb.held and key not in self.stale_checks:
            self.stale_checks.add(key)
            t = now + self.params.reorder_timeout_ns
            self.timers.at(t, self._stale, (key, t))
        return out

    def _stale(self, arg) -> None:
        src, now = arg
        rb = self.reorder_bufs[src]
        released = rb.release_stale(now, self.params.reorder_timeout_ns)
        if rb.held:
            t = now + self.params.reorder_timeout_ns
            self.timers.at(t, self._stale, (src, t))
        else:
            self.stale_checks.discard(src)
        if released:
            self._released(now, released)

    def summary(self) -> dict:
        """This GSP's counters, for the results (summed over GSPs by the metrics)."""
        delays = array("q")  # 8 bytes each (at 1,024 hosts 229,000 delays: 9 MB as ints)
        for rb in self.reorder_bufs.values():
            delays.extend(rb.delays)
        return {"requests": self.requests, "grants": self.grants, "receipts": self.receipts,
                "probes": self.probes, "grants_given": self.grants_given,
                "control_bytes": self.control_bytes, "grant_latency": self.grant_latency,
                "reorder_max_bytes": max((rb.max_held_bytes for rb in self.reorder_bufs.values()),
                                         default=0),
                "reorder_delays": delays, "fell_back_at": self.fell_back_at,
                "reorder_skipped": sum(rb.skipped for rb in self.reorder_bufs.values()),
                "unscheduled_containers": sum(v.unscheduled_containers
                                              for v in self.voqs.values()),
                "mode": self.mode}


class NicGsp(Gsp):
    """The GSP in a NIC: the NIC's flows wait in VOQs and are sent against credit."""

    def __init__(self, nic, gsp_id_of, **kw):
        super().__init__(**kw)
        self.nic = nic
        self.gsp_id_of = gsp_id_of  # host name -> GSP id (its destination port)
        self.voq_flows: dict = defaultdict(list)
        self.rr_voq = 0
        self.flow_rr: dict = defaultdict(int)
        self.routes: dict = {}  # destination -> its paths (they never change)
        nic.gsp = self
        nic.pick_data = self.next_data
        nic.rx_data = self.rx_data

    # -- sender side -------------------------------------------------------------------------
    def flow_active(self, st) -> None:
        if st.gsp_dst is None:
            st.gsp_dst = self.gsp_id_of(st.flow.dst)
        flows = self.voq_flows[st.gsp_dst]
        if st not in flows:
            flows.append(st)

    def _pending(self, dst) -> int:
        """Payload bytes waiting for ``dst``: what was never sent, and (selective repeat)
        the packets deemed lost, which need credit again."""
        mtu = self.nic.mtu
        total = 0
        for st in self.voq_flows[dst]:
            if st.active:
                total += st.size - min(st.nxt * mtu, st.size)
                for p in st.lost or ():
                    total += min(mtu, st.size - p * mtu)
        return total

    def emit(self, frame, now: int) -> None:
        # Not the NIC's tx_ready() here: a REQUEST may be made while the port is inside its
        # own send (next_data asks when a container closes), and a nested send would put two
        # frames on the wire at once.  The port is started by an alarm at this same time.
        self.nic.ctrl.append(frame)
        self.timers.at(now, self._kick, None)

    def _kick(self, _) -> None:
        self.nic.tx_ready()

    def _unscheduled(self, dst, now: int) -> None:
        self.timers.at(now, self._kick, None)  # not nested in a send: see emit()

    def _granted(self, dst, now: int) -> None:
        self.ask(dst, now)
        self.nic.tx_ready()

    def next_data(self, now: int):
        """Round-robin over the VOQs that hold credit, then over their flows."""
        voq_flows = self.voq_flows
        if len(self.voqs) == 1:  # one destination (most hosts of a collective): no list
            for d, v in self.voqs.items():
                dsts = [d] if v.credit > 0 and voq_flows[d] else []
        else:
            dsts = [d for d, v in self.voqs.items() if v.credit > 0 and voq_flows[d]]
        n = len(dsts)
        for k in range(n):
            dst = dsts[(self.rr_voq + k) % n]
            flows = self.voq_flows[dst]
            start = self.flow_rr[dst]
            for i in range(len(flows)):
                st = flows[(start + i) % len(flows)]
                if st.active and (st.nxt < st.n_pkts or st.lost):
                    self.rr_voq = (self.rr_voq + k + 1) % n
                    self.flow_rr[dst] = (start + i + 1) % len(flows)
                    return self._container_frame(st, dst, now)
        return None

    def _container_frame(self, st, dst, now: int):
        nic = self.nic
        frame = nic.data_frame(st, now, nic.active.index(st))
        voq = self.voqs[dst]
        if not st.active:
            self.voq_flows[dst].remove(st)
        seq, path, index, last = voq.tag(frame.payload, not self.voq_flows[dst], now)
        routes = self.routes.get(dst)
        if routes is None:
            routes = self.routes[dst] = self.paths(dst)
        frame.route = routes[path]
        frame.tag = new_tag((self.id, seq, index, last, path))
        if last:
            self.ask(dst, now)
        return frame

    # -- receiver side -----------------------------------------------------------------------
    def rx_data(self, now: int, frame) -> None:
        """A data frame arrived: containers go through their source's reorder buffer."""
        if frame.tag is None:
            return self.nic.on_data(now, frame)
        for f in self.reorder_accept(now, frame, frame):
            self.nic.on_data(now, f)

    def _released(self, now: int, frames: list) -> None:
        for f in frames:
            self.nic.on_data(now, f)
