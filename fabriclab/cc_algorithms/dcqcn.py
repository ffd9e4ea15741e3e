"""DCQCN reaction point (sender NIC), sans-IO.

Zhu et al., "Congestion Control for Large-Scale RDMA Deployments", SIGCOMM 2015, section 3
(the RP algorithm, Figure 9), with the timer and byte-counter increase of section 3.3.
Parameter defaults and names are those of the HPCC simulator's ``rdma-hw.cc``
(alibaba-edu/High-Precision-Congestion-Control) where they differ from the paper only in
name.  Differences from the paper and from that code:

* alpha decays by ``(1-g)`` once per ``alpha_timer`` period without a CNP, as in the paper;
  it is applied lazily when the next CNP arrives (the same arithmetic, no timer events);
* the rate cut happens when the CNP arrives (paper), not on a 4 us decrease check (the
  Mellanox-style code); the receiver already limits CNPs to one per flow per 50 us;
* the increase timer stops while the flow is at line rate (no observable difference).

Two increase variants (``dcqcn.variant``).  ``paper``: an increase event comes from the
timer or the byte counter, and the stage is fast recovery until either has counted F
events, hyper increase once both have passed F, additive in between (section 3.3).  At low
rates the byte counter (10 MB) may never expire, so hyper increase never starts.  ``mlx``:
the HPCC simulator's Mellanox model (``RateIncEventMlx``) counts stages by the timer alone
-- fast recovery for the first F timer events, one additive increase at the (F+1)-th,
hyper increase from then on -- and has no byte counter.

The congestion point (RED marking at the switch) and the notification point (CNP
generation at the receiver) are engine functions; see ``fabriclab.sim``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..spec import Dcqcn as DcqcnSpec
from ..units import mbps, us
from .base import CongestionControl


@dataclass(frozen=True)
class DcqcnParams:
    """DCQCN's parameters in the units the algorithm uses (bit/s, integer ns).  Each
    default, with its source, is stated once, in the spec (:class:`fabriclab.spec.Dcqcn`):
    build them with :meth:`from_spec`, or :meth:`defaults` for the spec's defaults."""

    line_rate_bps: int
    g: float  # alpha gain
    alpha_timer_ns: int  # K
    increase_timer_ns: int  # T
    byte_counter_bytes: int  # B
    fast_recovery_steps: int  # F
    rate_ai_bps: int  # R_AI
    rate_hai_bps: int  # R_HAI
    min_rate_bps: int
    initial_alpha: float
    variant: str = "paper"  # "paper" or "mlx" (module docstring)

    def __post_init__(self):
        if self.line_rate_bps <= 0:
            raise ValueError("line_rate_bps must be > 0")
        if not 0 < self.g < 1:
            raise ValueError("g must be in (0, 1)")
        if self.alpha_timer_ns <= 0 or self.increase_timer_ns <= 0:
            raise ValueError("DCQCN timers must be > 0")
        if self.min_rate_bps > self.line_rate_bps:
            raise ValueError("min_rate_bps exceeds the line rate")
        if self.variant not in ("paper", "mlx"):
            raise ValueError(f"unknown DCQCN variant {self.variant!r} (paper, mlx)")

    @classmethod
    def from_spec(cls, p: DcqcnSpec, line_rate_bps: int) -> DcqcnParams:
        """From the spec's ``dcqcn`` block; the rate floor is capped at the line rate."""
        return cls(line_rate_bps=line_rate_bps, g=p.g,
                   alpha_timer_ns=us(p.alpha_timer_us),
                   increase_timer_ns=us(p.rate_increase_timer_us),
                   byte_counter_bytes=p.byte_counter_bytes,
                   fast_recovery_steps=p.fast_recovery_steps,
                   rate_ai_bps=mbps(p.rate_ai_mbps), rate_hai_bps=mbps(p.rate_hai_mbps),
                   min_rate_bps=min(mbps(p.min_rate_mbps), line_rate_bps),
                   initial_alpha=p.initial_alpha, variant=p.variant)

    @classmethod
    def defaults(cls, line_rate_bps: int, **overrides) -> DcqcnParams:
        """The spec's defaults for a NIC of ``line_rate_bps``, with ``overrides`` (in this
        class's units) on top."""
        return replace(cls.from_spec(DcqcnSpec(), line_rate_bps), **overrides)


class Dcqcn(CongestionControl):
    """One DCQCN reaction point (one flow / queue pair)."""

    name = "dcqcn"
    wants_sends = True

    def __init__(self, params: DcqcnParams):
        super().__init__(params.line_rate_bps)
        self.p = params
        self.target_bps = params.line_rate_bps  # R_T
        self.alpha = params.initial_alpha
        self._alpha_ref_ns: int | None = None  # last alpha update (None: no CNP yet)
        self.timer_count = 0  # T: increase-timer expiries since the last cut
        self.byte_count = 0  # BC: byte-counter expiries since the last cut
        self._bytes = 0  # payload bytes since the byte counter last expired
        self.cnps = 0
        self.cuts = 0
        self._mlx = params.variant == "mlx"
        self.wants_sends = not self._mlx  # the byte counter needs the sends; mlx has none

    # -- events ----------------------------------------------------------------------------
    def on_cnp(self, now_ns: int) -> None:
        """Paper §3.2: R_T = R_C; R_C = R_C(1 - alpha/2); alpha = (1-g)alpha + g; reset increase."""
        p = self.p
        self.cnps += 1
        self._decay_alpha(now_ns)
        self.target_bps = self.rate_bps
        self.rate_bps = max(p.min_rate_bps, int(self.rate_bps * (1 - self.alpha / 2)))
        self.alpha = (1 - p.g) * self.alpha + p.g
        self._alpha_ref_ns = now_ns
        self.timer_count = 0
        self.byte_count = 0
        self._bytes = 0
        self.cuts += 1
        self.next_timer_ns = now_ns + p.increase_timer_ns

    def on_send(self, now_ns: int, nbytes: int) -> None:
        """Byte counter: one increase event per B bytes sent (paper §3.3; none in mlx)."""
        if self.next_timer_ns is None or self._mlx:  # at line rate: nothing to increase
            return
        self._bytes += nbytes
        if self._bytes >= self.p.byte_counter_bytes:
            self._bytes -= self.p.byte_counter_bytes
            self._increase()
            self.byte_count += 1

    def on_timer(self, now_ns: int) -> None:
        """Rate-increase timer T expired (paper §3.3)."""
        if self.next_timer_ns is None or now_ns < self.next_timer_ns:
            return
        self._increase()
        self.timer_count += 1
        if self.next_timer_ns is not None:
            self.next_timer_ns += self.p.increase_timer_ns

    # -- internals --------------------------------------------------------------------------
    def _decay_alpha(self, now_ns: int) -> None:
        """alpha = (1-g) alpha once per K without a CNP since the last update."""
        if self._alpha_ref_ns is None:
            return
        periods = (now_ns - self._alpha_ref_ns) // self.p.alpha_timer_ns
        if periods > 0:
            self.alpha *= (1 - self.p.g) ** periods

    def stage(self) -> str:
        """Which increase phase the next increase event applies (paper §3.3)."""
        f = self.p.fast_recovery_steps
        if self._mlx:  # RateIncEventMlx: the timer's stage alone
            if self.timer_count < f:
                return "fast_recovery"
            return "additive" if self.timer_count == f else "hyper"
        if max(self.timer_count, self.byte_count) < f:
            return "fast_recovery"
        if min(self.timer_count, self.byte_count) > f:
            return "hyper"
        return "additive"

    def _increase(self) -> None:
        p = self.p
        st = self.stage()
        if st == "additive":
            self.target_bps = min(p.line_rate_bps, self.target_bps + p.rate_ai_bps)
        elif st == "hyper":
            self.target_bps = min(p.line_rate_bps, self.target_bps + p.rate_hai_bps)
        self.rate_bps = min(p.line_rate_bps, (self.target_bps + self.rate_bps) // 2)
        if self.rate_bps >= p.line_rate_bps - 1 and self.target_bps >= p.line_rate_bps:
            self.rate_bps = p.line_rate_bps
            self.next_timer_ns = None

    def alpha_at(self, now_ns: int) -> float:
        """alpha as it would be used by a CNP arriving at ``now_ns``."""
        if self._alpha_ref_ns is None:
            return self.alpha
        periods = (now_ns - self._alpha_ref_ns) // self.p.alpha_timer_ns
        return self.alpha * (1 - self.p.g) ** max(0, periods)

    def state(self) -> dict:
        return {"rate_bps": self.rate_bps, "target_bps": self.target_bps, "alpha": self.alpha,
                "timer_count": self.timer_count, "byte_count": self.byte_count,
                "stage": self.stage()}
