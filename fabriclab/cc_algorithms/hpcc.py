"""HPCC sender, window form, sans-IO.

Li et al., "HPCC: High Precision Congestion Control", SIGCOMM 2019, Algorithm 1 (the window
form, as in the paper and Broadcom csg-htsim's ``hpcc.cpp``; the HPCC ns-3 code is
rate-based).  Every data packet collects one INT record per switch egress on its way
(timestamp, cumulative tx bytes of the port, queue length, link rate); the receiver echoes
the stack in its ACK; per ACK the sender:

* ``MeasureInflight``: per hop, ``u_j = min(qlen, qlen_prev) / (B_j T) + txRate_j / B_j`` with
  ``txRate_j`` from the difference of two successive records of that hop; ``u`` is the most
  loaded hop; ``U`` is an EWMA of ``u`` weighted by the time the records span (``tau/T``);
* ``ComputeWind``: ``W = W_c / (U/eta) + W_AI`` when ``U >= eta`` or after ``max_stage``
  additive steps, else ``W = W_c + W_AI``; the reference window ``W_c`` is committed at most
  once per RTT (when the ACK acknowledges data sent after the last commit), other ACKs
  react without committing ("fast react");
* pacing rate ``R = W / T``.

An INT record is a tuple ``(ts_ns, tx_bytes, qlen_bytes, rate_bps)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..spec import Hpcc as HpccSpec
from ..units import mbps
from ..wire import roce as P
from .base import CongestionControl


@dataclass(frozen=True)
class HpccParams:
    """HPCC's parameters in the units the algorithm uses (bit/s, integer ns).  Each default,
    with its source, is stated once, in the spec (:class:`fabriclab.spec.Hpcc`): build them
    with :meth:`from_spec`, or :meth:`defaults` for the spec's defaults."""

    line_rate_bps: int
    base_rtt_ns: int  # T: the fabric's base round-trip time
    eta: float  # target utilisation
    max_stage: int  # additive steps before a multiplicative one
    rate_ai_bps: int  # W_AI = rate_ai x T
    min_rate_bps: int

    def __post_init__(self):
        if self.line_rate_bps <= 0 or self.base_rtt_ns <= 0:
            raise ValueError("HPCC needs a positive line rate and base RTT")
        if not 0 < self.eta <= 1:
            raise ValueError("eta must be in (0, 1]")
        if self.max_stage < 0:
            raise ValueError("max_stage must be >= 0")

    @property
    def w_init_bytes(self) -> float:
        return self.line_rate_bps * self.base_rtt_ns / 8e9

    @property
    def w_ai_bytes(self) -> float:
        return self.rate_ai_bps * self.base_rtt_ns / 8e9

    @property
    def w_min_bytes(self) -> float:
        return self.min_rate_bps * self.base_rtt_ns / 8e9

    @classmethod
    def from_spec(cls, p: HpccSpec, line_rate_bps: int, base_rtt_ns: int) -> HpccParams:
        """From the spec's ``hpcc`` block (its ``base_rtt_ns`` resolved by the engine); the
        rate floor is capped at the line rate."""
        return cls(line_rate_bps=line_rate_bps, base_rtt_ns=base_rtt_ns, eta=p.eta,
                   max_stage=p.max_stage, rate_ai_bps=mbps(p.rate_ai_mbps),
                   min_rate_bps=min(mbps(p.min_rate_mbps), line_rate_bps))

    @classmethod
    def defaults(cls, line_rate_bps: int, base_rtt_ns: int, **overrides) -> HpccParams:
        """The spec's defaults for a NIC of ``line_rate_bps`` in a fabric of base RTT
        ``base_rtt_ns``, with ``overrides`` (in this class's units) on top."""
        return replace(cls.from_spec(HpccSpec(), line_rate_bps, base_rtt_ns), **overrides)


def base_rtt_ns(spec, topo, int_bytes: int, emulated: bool = False) -> int:
    """HPCC's base RTT, T, for a run of ``spec`` on ``topo``: the spec's value, or the
    fabric's largest RTT with its link delays (netem or the agents emulate them too) for one
    data frame out and one ACK back, each with ``int_bytes`` of INT.  The frames are the
    simulator's (``switch.mtu_bytes`` + ``switch.header_bytes``, ACKs of
    ``switch.header_bytes``) or, ``emulated``, the emulation's (``emu.mtu_bytes`` in RoCE
    v2 frames); the simulator run aligned with an emulation
    (``metrics.agreement.align_sim_to_emulation``) uses the emulation's T."""
    if spec.hpcc.base_rtt_ns != "auto":
        return spec.hpcc.base_rtt_ns
    if emulated:
        data = spec.emu.mtu_bytes + P.DATA_OVERHEAD
        ack = P.L2_L4_BYTES + P.BTH_LEN + P.AETH_LEN + P.ICRC_LEN
    else:
        data = spec.switch.mtu_bytes + spec.switch.header_bytes
        ack = spec.switch.header_bytes
    return topo.base_rtt_ns(data + int_bytes, ack + int_bytes)


class Hpcc(CongestionControl):
    name = "hpcc"
    wants_acks = True

    def __init__(self, params: HpccParams):
        super().__init__(params.line_rate_bps)
        self.p = params
        self.wc = params.w_init_bytes  # W_c, the reference window
        self.window_bytes = round(self.wc)
        self.U = 0.0
        self.inc_stage = 0
        self.last_update_seq = 0
        self.prev = None  # the INT stack of the previous ACK

    def on_ack(self, now_ns: int, acked_bytes: int, int_hops=None, ack_seq: int = 0,
               snd_nxt: int = 0, **info) -> None:
        """Algorithm 1, NewAck: measure, then react (committing W_c once per RTT)."""
        if not int_hops:
            return
        if self.prev is None or len(self.prev) != len(int_hops):
            self.prev = int_hops  # first ACK (or a path change): nothing to difference
            return
        u = self._measure_inflight(int_hops)
        if u is None:  # no hop's clock moved since the last ACK: nothing measured yet
            return
        update = ack_seq > self.last_update_seq
        w = self._compute_window(u, update)
        if update:
            self.last_update_seq = snd_nxt
        w = max(w, self.p.w_min_bytes)
        self.window_bytes = max(1, round(w))
        self.rate_bps = max(self.p.min_rate_bps,
                            min(self.p.line_rate_bps, int(w * 8e9 / self.p.base_rtt_ns)))
        self.prev = int_hops

    def _measure_inflight(self, hops) -> float | None:
        """Algorithm 1, MeasureInflight; None when no hop's time stamp moved since the
        previous ACK's (packets a switch stamped in the same ns: the emulator's clock,
        slowed by the time dilation, stamps a batch of frames alike).  Then nothing is
        measured, and the previous records stay the reference for the next ACK."""
        T = self.p.base_rtt_ns
        u, tau, measured = 0.0, T, False
        for (ts, tx, q, rate), (ts0, tx0, q0, _) in zip(hops, self.prev):
            dt = ts - ts0
            if dt <= 0:
                continue
            measured = True
            tx_rate = (tx - tx0) * 8e9 / dt
            uj = min(q, q0) * 8e9 / (rate * T) + tx_rate / rate
            if uj > u:
                u, tau = uj, dt
        if not measured:
            return None
        tau = min(tau, T)
        self.U = (1 - tau / T) * self.U + tau / T * u
        return self.U

    def _compute_window(self, U: float, update: bool) -> float:
        p = self.p
        if U >= p.eta or self.inc_stage >= p.max_stage:
            w = self.wc / (U / p.eta) + p.w_ai_bytes if U > 0 else self.wc + p.w_ai_bytes
            if update:
                self.inc_stage = 0
                self.wc = min(w, p.w_init_bytes)
        else:
            w = self.wc + p.w_ai_bytes
            if update:
                self.inc_stage += 1
                self.wc = min(w, p.w_init_bytes)
        return min(w, p.w_init_bytes)

    def state(self) -> dict:
        return {"rate_bps": self.rate_bps, "window_bytes": self.window_bytes, "U": self.U,
                "wc_bytes": self.wc, "inc_stage": self.inc_stage}
