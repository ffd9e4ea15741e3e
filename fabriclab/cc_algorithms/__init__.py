"""Sans-IO congestion control: the same code runs in the simulator and the Mininet agents.

``CONGESTION_CONTROL`` maps a scheme's congestion-control name to a factory
``make(spec, line_rate_bps) -> CongestionControl``.  This package imports nothing from
``fabriclab.sim``, ``fabriclab.emu`` or ``fabriclab.controllers``.
"""

from __future__ import annotations

from .base import CongestionControl
from .dcqcn import Dcqcn, DcqcnParams


def _dcqcn(spec, line_rate_bps: int) -> Dcqcn:
    return Dcqcn(DcqcnParams.from_spec(spec.dcqcn, line_rate_bps))


def _none(spec, line_rate_bps: int) -> CongestionControl:
    return CongestionControl(line_rate_bps)


CONGESTION_CONTROL = {"dcqcn": _dcqcn, None: _none}

__all__ = ["CongestionControl", "Dcqcn", "DcqcnParams", "CONGESTION_CONTROL"]
