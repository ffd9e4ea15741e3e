"""The RoCE NIC, sans-IO: flow state, pacing, ACK/NACK/CNP, timeouts and loss recovery.

One :class:`Nic` per host.  It reads no clock and touches no socket: every call carries the
current fabric time, frames go out through :meth:`Nic.poll_transmit` and come in through
:meth:`Nic.on_frame`, and the NIC asks for alarms from the timer service it was given
(:mod:`fabriclab.nic.timers`).  The simulator's host and the emulator's agent are adapters:
they move the frames (an event loop and links; sockets and a clock) and nothing else.

What it does (the RoCEv2 NIC of the DCQCN and HPCC papers, as the HPCC simulator models it):

* **Sending.**  Flows with data take turns, round-robin, each paced at its congestion
  control's rate (``cc.rate_bps``) and held to its window (``cc.window_bytes``) if it has
  one.  Control frames (ACK, NACK, CNP, GSE requests and grants) go first.  A flow starts at
  its start time once the flows it depends on are through: a flow this NIC sends is through
  when its last byte has been handed to the wire, a flow it receives when it is delivered.
* **Receiving.**  In-order data is delivered and acknowledged (every ``ack_every_pkts``
  packets, the last one and those with AckReq set); a CE-marked packet is answered with a
  CNP, at most one per flow per ``cnp_interval``.
* **Loss recovery.**  ``go_back_n`` (RoCE today): a gap is NACKed once per gap (again only
  after the path's round trip), and the sender goes back to the NACKed packet.
  ``selective_repeat`` (IRN, Mittal et al., SIGCOMM 2018): out-of-order packets are kept
  and answered with a NACK naming the packet that arrived (a SACK); the sender resends only
  packets it deems lost -- sent longer than the reorder window before a packet that arrived
  -- and keeps at most about a bandwidth-delay product in flight (IRN's BDP-FC).  Both have
  a retransmission timeout (``rto``) for lost tails.
* **PFC at the host.**  A paused priority is not sent (:meth:`Nic.pause`).

Adapters set ``tx_ready`` (a frame may be sendable now: start the port), ``tx_wake(t, now)``
(nothing is sendable before ``t``: poll again then) and ``observer`` (flow started, sent,
delivered).
"""

from __future__ import annotations

from collections import deque

from ..units import BIT_NS
from .params import RTO_LOW_PKTS
from ..wire import frames as wire_frames


DATA, ACK, NACK, CNP = (wire_frames.Data.kind, wire_frames.Ack.kind, wire_frames.Nack.kind,
                        wire_frames.Cnp.kind)


def _noop(*_):
    return None


class SendFlow:
    """The sending end of one flow."""

    __slots__ = ("flow", "id", "size", "n_pkts", "cc", "route", "deps_left", "dependents",
                 "start_ns", "started_ns", "sent_ns", "done_ns", "active", "nxt", "una",
                 "max_sent", "next_avail", "timer_at", "last_progress", "rtt_ns", "bdp_pkts",
                 "sacked", "lost", "sent_at", "retx_bytes", "cnps_rx", "gsp_dst")

    def __init__(self, flow, size: int, mtu: int, route, rtt_ns: int, bdp_pkts: int):
        self.flow = flow
        self.id = flow.id
        self.size = size
        self.n_pkts = max(1, -(-size // mtu))
        self.cc = None
        self.route = route
        self.deps_left = 0
        self.dependents: list[SendFlow] = []
        self.start_ns = 0
        self.started_ns = None
        self.sent_ns = None  # its last byte first handed to the wire
        self.done_ns = None  # every byte acknowledged
        self.active = False
        self.nxt = self.una = self.max_sent = 0  # packet numbers
        self.next_avail = 0
        self.timer_at = None
        self.last_progress = 0
        self.rtt_ns = rtt_ns
        self.bdp_pkts = bdp_pkts
        self.sacked: set[int] | None = None  # selective repeat: acknowledged above una
        self.lost: list[int] | None = None  # selective repeat: to resend, lowest first
        self.sent_at: dict[int, int] | None = None  # selective repeat: psn -> last send time
        self.retx_bytes = 0
        self.cnps_rx = 0
        self.gsp_dst = None


class RecvFlow:
    """The receiving end of one flow."""

    __slots__ = ("flow", "id", "size", "n_pkts", "route", "expected", "delivered", "unacked",
                 "last_cnp", "last_nack_psn", "last_nack_ns", "nack_gap_ns", "end_ns",
                 "dependents", "ooo")

    def __init__(self, flow, size: int, mtu: int, route, nack_gap_ns: int):
        self.flow = flow
        self.id = flow.id
        self.size = size
        self.n_pkts = max(1, -(-size // mtu))
        self.route = route  # the way back to the sender
        self.expected = 0
        self.delivered = 0  # payload bytes delivered in order
        self.unacked = 0
        self.last_cnp = -(1 << 62)
        self.last_nack_psn = -1
        self.last_nack_ns = 0
        self.nack_gap_ns = nack_gap_ns
        self.end_ns = None
        self.dependents: list[SendFlow] = []
        self.ooo: dict[int, int] | None = None  # selective repeat: psn -> payload held


class Nic:
    """One host's RoCE NIC (see the module docstring)."""

    def __init__(self, name: str, params, make_cc, timers, frames=wire_frames,
                 line_rate_bps: int = 0, paused=None):
        self.name = name
        self.p = params
        self.make_cc = make_cc  # () -> a congestion-control object (one per flow)
        self.timers = timers
        self.line_rate_bps = line_rate_bps
        self.Data, self.Ack, self.Nack, self.Cnp = (frames.Data, frames.Ack, frames.Nack,
                                                    frames.Cnp)
        self.frames = frames
        self.mtu = params.mtu_bytes
        self.hdr = params.data_header_bytes + params.int_bytes
        self.ctl = params.control_bytes
        self.int_bytes = params.int_bytes
        self.data_prio = params.data_prio
        self.ctrl_prio = params.ctrl_prio
        self.reliable = params.reliable
        self.ack_every = params.ack_every_pkts
        self.rto = params.rto_ns
        self.rto_low = params.rto_low_ns
        self.cnp_interval = params.cnp_interval_ns
        self.send_cnp = params.send_cnp
        self.selective = params.loss_recovery == "selective_repeat"
        self.slack = params.pacing_slack_pkts
        self.paused = paused if paused is not None else [False] * 8  # PFC, per priority
        self.ctrl: deque = deque()  # control frames waiting (served before data)
        self.active: list[SendFlow] = []  # flows with data to send
        self.rr = 0
        self.senders: dict[int, SendFlow] = {}
        self.receivers: dict[int, RecvFlow] = {}
        self.gsp = None  # a GSP (GSE in the NIC), see fabriclab.nic.gsp
        self.pick_data = None  # the GSP's choice of data frame, when there is one
        self.rx_data = self.on_data  # the GSP's reordering first when there is one
        # adapter hooks
        self.tx_ready = _noop
        self.tx_wake = _noop
        self.observer = None
        # counters
        self.rx_bytes = 0  # every byte that arrived (data and control)
        self.goodput_bytes = 0  # payload delivered in order
        self.cnps_sent = 0
        self.cnps_rx = 0
        self.nacks_sent = 0
        self.timeouts = 0
        self.retx_bytes = 0
        self.ce_rx = 0

    # -- set-up ------------------------------------------------------------------------
    def add_sender(self, flow, size: int, start_ns: int, route=None, rtt_ns: int = 0,
                   deps=()) -> SendFlow:
        """Register a flow this NIC sends (``size`` payload bytes; ``rtt_ns``: its path's
        base round trip, which gives selective repeat's cap of a BDP in flight, in full data
        packets at this NIC's line rate; deps: ids of flows this NIC sends or receives,
        registered before it, that must be through first)."""
        full = self.mtu + self.p.data_header_bytes  # a full data packet, INT area aside
        bdp_pkts = -(-self.line_rate_bps * rtt_ns // (BIT_NS * full)) + 1
        st = SendFlow(flow, size, self.mtu, route, rtt_ns, bdp_pkts)
        st.start_ns = start_ns
        for d in deps:
            dep = self.senders.get(d) if d in self.senders else self.receivers.get(d)
            if dep is None:
                raise ValueError(f"{self.name}: flow {flow.id} depends on flow {d}, which this "
                                 f"NIC neither sends nor receives")
            dep.dependents.append(st)
            st.deps_left += 1
        self.senders[flow.id] = st
        flow.send = st  # the NIC's state rides on the flow object: no lookup per frame
        return st

    def add_receiver(self, flow, size: int, route=None, nack_gap_ns: int = 0) -> RecvFlow:
        st = RecvFlow(flow, size, self.mtu, route, nack_gap_ns)
        if self.selective:
            st.ooo = {}
        self.receivers[flow.id] = st
        flow.recv = st
        return st

    def schedule_start(self, st: SendFlow, now: int = 0) -> None:
        """Start ``st`` at its start time (its dependencies are met)."""
        t = max(now, st.start_ns)
        self.timers.at(t, self._start, (st, t))

    def pause(self, prio: int, on: bool) -> None:
        """PFC from the switch: stop (or resume) sending priority ``prio``."""
        self.paused[prio] = on
        if not on:
            self.tx_ready()

    # -- sending -------------------------------------------------------------------------
    def _start(self, arg) -> None:
        st, now = arg
        st.started_ns = now
        st.cc = cc = self.make_cc()
        st.next_avail = now
        st.last_progress = now
        if self.selective:
            st.sacked, st.lost, st.sent_at = set(), [], {}
        if self.observer is not None:
            self.observer.flow_started(st.flow, now)
        cc.on_start(now)
        self._activate(st, now)
        self._arm(st)
        if self.reliable:
            t = now + (self.rto_low if self.selective else self.rto)
            self.timers.at(t, self._rto, (st, t))

    def has_work(self) -> bool:
        return bool(self.ctrl or self.active)

    def poll_transmit(self, now: int):
        """The next frame to put on the wire now, or None (then ``tx_wake`` says when).

        Control frames first; then data, by round-robin among the flows whose pacing and
        window allow (or as the GSP decides, when there is one).  The adapters call this
        once per frame they send, so the round-robin is written out here."""
        paused = self.paused
        if self.ctrl and not paused[self.ctrl_prio]:
            return self.ctrl.popleft()
        act = self.active
        if not act or paused[self.data_prio]:
            return None
        if self.pick_data is not None:
            return self.pick_data(now)
        n = len(act)
        j = self.rr if self.rr < n else 0
        earliest = None
        mtu = self.mtu
        selective = self.selective
        for _ in range(n):
            st = act[j]
            if st.next_avail <= now:
                w = st.cc.window_bytes
                if selective:
                    if self._sr_may_send(st, w):
                        return self.data_frame(st, now, j)
                elif w is None or min(st.nxt * mtu, st.size) - min(st.una * mtu, st.size) < w:
                    return self.data_frame(st, now, j)
            elif earliest is None or st.next_avail < earliest:
                earliest = st.next_avail
            j += 1
            if j == n:
                j = 0
        if earliest is not None:
            self.tx_wake(earliest, now)
        return None

    def _activate(self, st: SendFlow, now: int) -> None:
        if not st.active:
            st.active = True
            self.active.append(st)
            if self.gsp is not None:
                self.gsp.flow_active(st)
        self.tx_ready()
        if self.gsp is not None:
            self.gsp.ask(st.gsp_dst, now)

    def data_frame(self, st: SendFlow, now: int, j: int):
        """Build the next data frame of ``st`` (at position ``j`` of the active list)."""
        if st.lost:  # selective repeat: what was lost goes first
            psn = st.lost.pop(0)
        else:
            psn = st.nxt
            st.nxt = psn + 1
        mtu = self.mtu
        remaining = st.size - psn * mtu
        payload = mtu if remaining > mtu else remaining
        size = payload + self.hdr
        ack_every = self.ack_every
        frame = self.Data(st.flow, psn, payload, size, self.data_prio,
                          ack_every == 1 or (psn + 1) % ack_every == 0 or psn + 1 == st.n_pkts,
                          [] if self.int_bytes else None)
        frame.route = st.route
        if psn < st.max_sent:
            st.retx_bytes += payload
            self.retx_bytes += payload
        else:
            st.max_sent = psn + 1
            if st.max_sent >= st.n_pkts:
                self._sent(st, now)
        if st.sent_at is not None:
            st.sent_at[psn] = now
        cc = st.cc
        gap = size * BIT_NS // cc.rate_bps
        if self.slack:
            st.next_avail = max(st.next_avail, now - self.slack * gap) + gap
        else:
            st.next_avail = now + gap
        if st.nxt >= st.n_pkts and not st.lost:
            del self.active[j]
            st.active = False
            self.rr = j
        else:
            self.rr = j + 1
        if cc.wants_sends:
            cc.on_send(now, payload)
            if cc.next_timer_ns is not None and (st.timer_at is None
                                                 or cc.next_timer_ns < st.timer_at):
                self._arm(st)
        return frame

    def _sent(self, st: SendFlow, now: int) -> None:
        st.sent_ns = now
        if self.observer is not None:
            self.observer.flow_sent(st.flow, now)
        for d in st.dependents:
            self._dependency_met(d, now)

    def _dependency_met(self, d: SendFlow, now: int) -> None:
        d.deps_left -= 1
        if d.deps_left == 0:
            self.schedule_start(d, now)

    def control(self, frame) -> None:
        """Queue a control frame (served before data)."""
        self.ctrl.append(frame)
        self.tx_ready()

    def _ack(self, r: RecvFlow, ints=None, sack=None) -> None:
        size = self.ctl if ints is None else self.ctl + self.int_bytes
        frame = self.Ack(r.flow, r.expected, size, self.ctrl_prio, ints, sack)
        frame.route = r.route
        self.ctrl.append(frame)  # self.control(frame), inlined: once per data packet
        self.tx_ready()

    def _nack(self, r: RecvFlow, sack=None) -> None:
        frame = self.Nack(r.flow, r.expected, self.ctl, self.ctrl_prio, sack)
        frame.route = r.route
        self.nacks_sent += 1
        self.control(frame)

    def _cnp(self, r: RecvFlow) -> None:
        frame = self.Cnp(r.flow, self.ctl, self.ctrl_prio)
        frame.route = r.route
        self.cnps_sent += 1
        self.control(frame)

    # -- congestion-control timers and the retransmission timeout ------------------------
    def _arm(self, st: SendFlow) -> None:
        t = st.cc.next_timer_ns
        if t is not None and (st.timer_at is None or t < st.timer_at):
            st.timer_at = t
            self.timers.at(t, self._cc_timer, (st, t))

    def _cc_timer(self, arg) -> None:
        st, now = arg
        if st.timer_at != now or st.done_ns is not None:
            return  # stale (re-armed earlier) or the flow is over
        st.timer_at = None
        cc = st.cc
        t = cc.next_timer_ns
        if t is not None and t <= now:
            cc.on_timer(now)
        self._arm(st)

    def _rto(self, arg) -> None:
        """The retransmission timeout: no progress for ``rto`` (selective repeat: for
        ``rto_low`` while at most RTO_LOW_PKTS packets are in flight, IRN's RTO_low, so a
        lost tail costs less; it looks again every ``rto_low`` in case in-flight falls)."""
        st, now = arg
        if st.una >= st.n_pkts:
            return
        selective = self.selective
        low = selective and st.nxt - st.una - len(st.sacked) <= RTO_LOW_PKTS
        deadline = st.last_progress + (self.rto_low if low else self.rto)
        if now >= deadline:
            self.timeouts += 1
            if selective:
                self._sr_timeout(st)
            else:
                st.nxt = st.una
            st.next_avail = now
            st.last_progress = now
            self._activate(st, now)
            deadline = now + (self.rto_low if selective else self.rto)
        elif selective and not low and deadline > now + self.rto_low:
            deadline = now + self.rto_low
        self.timers.at(deadline, self._rto, (st, deadline))

    # -- receiving -----------------------------------------------------------------------
    def on_frame(self, now: int, frame) -> None:
        """A frame from the fabric arrived."""
        self.rx_bytes += frame.size
        kind = frame.kind
        if kind is DATA:
            self.rx_data(now, frame)
        elif kind is ACK:
            self._on_ack(now, frame)
        elif kind is CNP:
            st = frame.flow.send
            if st.cc is not None:
                self.cnps_rx += 1
                st.cnps_rx += 1
                st.cc.on_cnp(now)
                self._arm(st)
        elif kind is NACK:
            self._on_nack(now, frame)
        elif self.gsp is not None:
            self.gsp.on_control(now, frame)

    def on_data(self, now: int, frame) -> None:
        """A data packet for the transport (after the GSP's reordering, if any)."""
        r = frame.flow.recv
        if self.reliable:
            psn = frame.psn
            if psn == r.expected:
                r.expected = psn + 1
                r.delivered += frame.payload
                self.goodput_bytes += frame.payload
                r.unacked += 1
                if r.ooo:
                    self._sr_drain(r)
                last = r.expected >= r.n_pkts
                if last or r.unacked >= self.ack_every or frame.ackreq:
                    r.unacked = 0
                    # self._ack(r, frame.ints), inlined: once per data packet
                    ints = frame.ints
                    ack = self.Ack(r.flow, r.expected, self.ctl if ints is None
                                   else self.ctl + self.int_bytes, self.ctrl_prio, ints)
                    ack.route = r.route
                    self.ctrl.append(ack)
                    self.tx_ready()
                    if last and r.end_ns is None:
                        self._delivered(r, now)
            elif psn > r.expected:
                if r.ooo is not None:  # selective repeat: keep it, say what arrived
                    if psn not in r.ooo:
                        r.ooo[psn] = frame.payload
                    self._nack(r, psn)
                elif r.last_nack_psn != r.expected or now - r.last_nack_ns >= r.nack_gap_ns:
                    # go-back-N: ask once per gap (again only after a round trip's grace)
                    r.last_nack_psn = r.expected
                    r.last_nack_ns = now
                    self._nack(r)
            else:
                self._ack(r)  # a duplicate: acknowledge again
        else:
            r.delivered += frame.payload
            self.goodput_bytes += frame.payload
            if r.delivered >= r.size and r.end_ns is None:
                self._delivered(r, now)
        if frame.ecn:
            self.ce_rx += 1
            if self.send_cnp and now - r.last_cnp >= self.cnp_interval:
                r.last_cnp = now
                self._cnp(r)

    def _delivered(self, r: RecvFlow, now: int) -> None:
        r.end_ns = now
        if self.observer is not None:
            self.observer.flow_delivered(r.flow, now)
        for d in r.dependents:
            self._dependency_met(d, now)

    def _on_ack(self, now: int, frame) -> None:
        st = frame.flow.send
        if self.selective and frame.sack is not None:
            self._sr_sack(st, frame.sack, now)
        psn = frame.psn
        if psn > st.una:
            una = st.una
            st.una = psn
            st.last_progress = now
            if st.sacked:
                self._sr_forget(st)
            cc = st.cc
            if cc.wants_acks:
                mtu, size = self.mtu, st.size
                acked = min(psn * mtu, size)
                cc.on_ack(now, acked - min(una * mtu, size), int_hops=frame.ints,
                          ack_seq=acked, snd_nxt=min(st.nxt * mtu, size))
                self._arm(st)
            if st.una >= st.n_pkts:
                st.done_ns = now
            elif (cc.window_bytes is not None or self.selective) and st.active:
                self.tx_ready()

    def _on_nack(self, now: int, frame) -> None:
        st = frame.flow.send
        psn = frame.psn
        if psn > st.una:
            st.una = psn
            st.last_progress = now
            if st.sacked:
                self._sr_forget(st)
        if st.sacked is not None:  # selective repeat: the sack says what arrived
            if frame.sack is not None:
                self._sr_sack(st, frame.sack, now)
            return
        if psn < st.nxt:
            st.nxt = psn
            self._activate(st, now)

    # -- selective repeat (IRN) ----------------------------------------------------------
    def _sr_may_send(self, st: SendFlow, window) -> bool:
        """Something to (re)send, within the window and about a BDP in flight."""
        if st.lost:
            return True
        if st.nxt >= st.n_pkts:
            return False
        if st.nxt - st.una >= st.bdp_pkts:
            return False
        if window is not None:
            mtu = self.mtu
            return min(st.nxt * mtu, st.size) - min(st.una * mtu, st.size) < window
        return True

    def _sr_sack(self, st: SendFlow, psn: int, now: int) -> None:
        """Packet ``psn`` arrived out of order: remember it, and deem lost what was sent
        longer than the reorder window before it and has not arrived."""
        if psn < st.una or psn in st.sacked:
            return
        st.sacked.add(psn)
        sent = st.sent_at.get(psn)
        if sent is None:
            return
        window = st.rtt_ns // 2  # reorder tolerance: half the path's base round trip
        lost = [p for p in range(st.una, psn) if p not in st.sacked and p not in st.lost
                and st.sent_at.get(p, sent) + window < sent]
        if lost:
            st.lost.extend(lost)
            st.lost.sort()
            st.last_progress = now
            self._activate(st, now)

    def _sr_forget(self, st: SendFlow) -> None:
        una = st.una
        st.sacked = {p for p in st.sacked if p >= una}
        if st.lost:
            st.lost = [p for p in st.lost if p >= una]
        for p in [p for p in st.sent_at if p < una]:
            del st.sent_at[p]

    def _sr_timeout(self, st: SendFlow) -> None:
        """Nothing moved for an RTO: resend everything in flight that has not arrived."""
        st.lost = [p for p in range(st.una, st.nxt) if p not in st.sacked]

    def _sr_drain(self, r: RecvFlow) -> None:
        """The gap closed: deliver what was held after it, in order."""
        ooo = r.ooo
        while r.expected in ooo:
            n = ooo.pop(r.expected)
            r.expected += 1
            r.delivered += n
            self.goodput_bytes += n
