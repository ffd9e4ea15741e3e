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
                data_prio=3, ctrl_prio=7, reliable=True, ack_every_pkts=1, rto_ns=200_000, rto_low_ns=50_000,
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
        self.nics[src].add_sender(f, size, start_ns, route=(src, dst), rtt_ns=rtt, deps=deps)
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


# -- GSE: GSPs in the NICs, GSOS behind a control network ----------------------------------
class GsosController:
    """GSOS (:class:`~fabriclab.cc_algorithms.gsos.Gsos`) behind a control network of fixed
    one-way ``latency_ns``, as the simulator's ``GseContext`` drives it: a REQUEST reaches
    GSOS ``latency_ns`` after the GSP made it, each GSOS timer is one alarm, and a GRANT
    reaches its GSP ``latency_ns`` after GSOS gave it.  It records what crossed it:
    ``requests`` (time sent, src, dst, sizes) and ``grants`` (time given, Grant)."""

    def __init__(self, fab: Fabric, latency_ns: int, overcommit: float = 1.0, transit=None):
        from fabriclab.cc_algorithms.gsos import Gsos
        self.fab = fab
        self.latency = latency_ns
        self.gsos = Gsos(lambda _dst: fab.rate, MTU, HDR, overcommit, transit, wakeups=True)
        self.gsps: dict = {}
        self.requests: list = []
        self.grants: list = []

    def to_gsos(self, src):
        """What GSP ``src`` calls to send a REQUEST."""
        def send(now: int, dst, sizes: list[int]) -> None:
            self.requests.append((now, src, dst, list(sizes)))
            self.fab.timers.at(now + self.latency, self._request, (src, dst, list(sizes)))
        return send

    def _request(self, arg) -> None:
        src, dst, sizes = arg
        self.gsos.request(self.fab.now, src, dst, sizes)
        self._schedule()

    def _schedule(self) -> None:
        for t in self.gsos.take_wakeups():
            self.fab.timers.at(t, self._wake, None)

    def _wake(self, _) -> None:
        now = self.fab.now
        for g in self.gsos.due(now, most=1):
            self.grants.append((now, g))
            self.fab.timers.at(now + self.latency, self._grant_arrives, g)
        self._schedule()

    def _grant_arrives(self, g) -> None:
        self.gsps[g.src_gsp].on_grant(self.fab.now, g.dst_port, g.nbytes, g.path)


def attach_gse(fab: Fabric, gse_params, controller: GsosController | None = None,
               n_paths: int = 1) -> dict:
    """A :class:`~fabriclab.nic.NicGsp` in every NIC of ``fab`` (GSP id = host name), with
    ``n_paths`` paths between any two hosts: path ``k`` from ``a`` to ``b`` is the route
    ``(a, b, k)`` (the harness delivers on ``route[1]``; a fate may look at ``route[2]``).
    ``controller``: GSOS for ``scheduler: central``; None for ``egress`` (REQUEST and GRANT
    frames on the wire).  Returns host -> NicGsp."""
    from fabriclab.nic import NicGsp
    from fabriclab.wire import frames as W
    gsps = {}
    for h, nic in fab.nics.items():
        gsps[h] = NicGsp(nic, lambda host: host, gsp_id=h, params=gse_params, frames=W,
                         timers=fab.timers,
                         paths=lambda peer, h=h: [(h, peer, k) for k in range(n_paths)],
                         port_rate_of=lambda _dst: fab.rate, mtu=MTU, header=HDR,
                         control_bytes=HDR, ctrl_prio=nic.ctrl_prio,
                         to_gsos=controller.to_gsos(h) if controller is not None else None)
    if controller is not None:
        controller.gsps.update(gsps)
    return gsps
