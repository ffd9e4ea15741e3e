"""Sans-IO congestion control: the same code runs in the simulator and the Mininet agents.

``CONGESTION_CONTROL`` maps a scheme's congestion-control name to a factory
``make(spec, line_rate_bps, base_rtt_ns) -> CongestionControl`` (one object per flow).  This
package imports nothing from ``fabriclab.sim``, ``fabriclab.emu`` or
``fabriclab.controllers``.
"""

from __future__ import annotations

from .base import CongestionControl
from .dcqcn import Dcqcn, DcqcnParams
from .hpcc import Hpcc, HpccParams


def _dcqcn(spec, line_rate_bps: int, base_rtt_ns: int) -> Dcqcn:
    return Dcqcn(DcqcnParams.from_spec(spec.dcqcn, line_rate_bps))


def _hpcc(spec, line_rate_bps: int, base_rtt_ns: int) -> Hpcc:
    return Hpcc(HpccParams.from_spec(spec.hpcc, line_rate_bps, base_rtt_ns))


def _none(spec, line_rate_bps: int, base_rtt_ns: int) -> CongestionControl:
    return CongestionControl(line_rate_bps)


CONGESTION_CONTROL = {"dcqcn": _dcqcn, "hpcc": _hpcc, None: _none}

__all__ = ["CongestionControl", "Dcqcn", "DcqcnParams", "Hpcc", "HpccParams",
           "CONGESTION_CONTROL"]
