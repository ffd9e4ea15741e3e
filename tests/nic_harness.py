"""Two or more sans-IO NICs joined by model links, with no engine: the tests of
:mod:`fabriclab.nic` drive the NIC alone through this.

Each NIC has one port serialising at its line rate; a frame reaches its destination NIC a
propagation delay after its last bit left.  A ``fate(frame) -> "drop" | delay_ns | None``
hook decides per frame what the wire does to it (lose it, hold it longer, or nothing), so a
test can lose or reorder exactly the packets it wants.  Time is integer nanoseconds from one
:class:`~fabriclab.nic.ManualTimers`, which also runs the NICs' own alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabriclab.cc_algorithms import CongestionControl
from fabriclab.nic import ManualTimers, Nic, NicParams
from fabriclab.units import BIT_NS

MTU, HDR = 1000, 50


@dataclass
class FlowDef:
    id: int
    src: str
    dst: str
    send: object = None
    recv: object = None


def params(**kw) -> NicParams:
    base = dict(mtu_bytes=MTU, data_header_bytes=HDR, control_bytes=HDR, int_bytes=0,
                data_prio=3, ctrl_prio=7, reliable=True, ack_every_pkts=1, rto_ns=200_000,
                cnp_interval_ns=50_000, send_cnp=True, loss_recovery="go_back_n")
    base.update(kw)
    return NicParams(**base)


class FixedRate(CongestionControl):
    """A sender at a fixed rate (no reaction): what pacing tests need."""

    def __init__(self, rate_bps: int):
        super().__init__(rate_bps)


class Fabric:
    """NICs ``h0``, ``h1`` ... fully meshed by links of ``rate_bps`` and ``delay_ns``."""

    def __init__(self, hosts=("h0", "h1"), rate_bps: int = 10_000_000_000, delay_ns: int = 1000,
                 make_cc=None, fate=None, **kw):
        self.timers = ManualTimers()
        self.now = 0
        self.rate, self.delay = rate_bps, delay_ns
        self.fate = fate or (lambda frame: None)
        self.nics: dict[str, Nic] = {}
        self.free_at: dict[str, int] = {}
        self.sent: list = []  # (time, host, frame) of everything put on a wire
        self.delivered: list = []  # (time, host, frame)
        p = params(**kw)
        for h in hosts:
            nic = Nic(h, p, make_cc or (lambda: CongestionControl(rate_bps)), self.timers,
                      line_rate_bps=rate_bps)
            nic.tx_ready = lambda h=h: self._kick(h)
            nic.tx_wake = lambda t, now, h=h: self.timers.at(t, self._kick_at, h)
            self.nics[h] = nic
            self.free_at[h] = 0
        self.flows: list[FlowDef] = []

    def flow(self, src: str, dst: str, size: int, start_ns: int = 0, deps=()) -> FlowDef:
        f = FlowDef(len(self.flows), src, dst)
        self.flows.append(f)
        rtt = 2 * self.delay + 2 * (MTU + HDR) * BIT_NS // self.rate
        bdp = -(-self.rate * rtt // (BIT_NS * (MTU + HDR))) + 1
        self.nics[src].add_sender(f, size, start_ns, route=(src, dst), rtt_ns=rtt,
                                  bdp_pkts=bdp, deps=deps)
        self.nics[dst].add_receiver(f, size, route=(dst, src), nack_gap_ns=rtt)
        return f

    def start(self) -> None:
        for f in self.flows:
            if f.send.deps_left == 0:
                self.nics[f.src].schedule_start(f.send)

    def _kick_at(self, h: str) -> None:
        self._kick(h)

    def _kick(self, h: str) -> None:
        if self.free_at[h] > self.now:
            self.timers.at(self.free_at[h], self._kick_at, h)
            return
        frame = self.nics[h].poll_transmit(self.now)
        if frame is None:
            return
        ser = frame.size * BIT_NS // self.rate
        self.free_at[h] = self.now + ser
        self.sent.append((self.now, h, frame))
        fate = self.fate(frame)
        if fate != "drop":
            dst = frame.route[1]
            self.timers.at(self.now + ser + self.delay + (fate or 0), self._arrive, (dst, frame))
        if self.nics[h].has_work():
            self.timers.at(self.free_at[h], self._kick_at, h)

    def _arrive(self, arg) -> None:
        dst, frame = arg
        self.delivered.append((self.now, dst, frame))
        self.nics[dst].on_frame(self.now, frame)

    def run(self, until_ns: int = 1_000_000_000) -> int:
        """Run until nothing is left to do (or ``until_ns``); returns the time reached."""
        timers = self.timers
        heap = timers._heap
        while heap and heap[0][0] <= until_ns:
            self.now = heap[0][0]
            timers.run_due(self.now)
        return self.now

    def data_sent(self, flow: FlowDef) -> list[int]:
        return [fr.psn for _, _, fr in self.sent if fr.kind == "data" and fr.flow is flow]
