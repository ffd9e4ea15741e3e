"""``emu.link_mbps: auto``: the highest emulated rate at which this machine emulates a
fabric faithfully.

What limits an emulation is frames per second of real time: Open vSwitch's userspace
datapath forwards every frame, and the host agents send and receive every frame, all on
the machine's CPUs.  A fabric at ``r`` Mb/s per host link can carry ``r x L`` Mb/s, where
``L`` is its *load units*: the sum, over both directions of every link, of the link's rate
in host-link rates (a 4-leaf, 2-spine fabric of 16 hosts with 100G everywhere: 2 x (16 +
8) = 48).  The cost of a frame grows with the fabric too (more ports polled by Open
vSwitch's userspace datapath, more hops per frame), so the rule is ``r x L^1.5 <=
BUDGET_PER_CPU x CPUs``, rounded down to one of ``RATES``.

The budget and the exponent are fitted to ``benchmarks/emu_fidelity.py`` (every host
sending at line rate: the heaviest load a fabric can carry; docs/mininet.md, "How big a
fabric this machine emulates faithfully") on this project's 2-CPU reference machine:
at 10 Mb/s 16 hosts on a 4x2x4 leaf-spine (L = 48) faithful in every run, on 4x4x4
(L = 64) in one run of two; 32 hosts on 8x4x4 (L = 128) not faithful at 10 or 5 Mb/s,
faithful at 2 Mb/s.  With PFC on (its daemon polls every port, each port has a gate),
``PFC_SHARE`` of the budget: the reduced 16-host permutation (4x4x4) under ECMP + DCQCN
with PFC lost frames inside Open vSwitch at 10 Mb/s and was faithful at 5.  A lighter
workload may be faithful at a higher rate; ``emu.link_mbps`` set by hand overrides this
rule, and every run judges its own fidelity (``fabriclab.metrics.fidelity``) whatever rate
it ran at.
"""

from __future__ import annotations

import os

from ..spec import Spec
from ..topologies import Topology

BUDGET_PER_CPU = 2200.0  # Mb/s x load units^0.5
EXPONENT = 1.5
PFC_SHARE = 0.6  # of the budget left with PFC on: its daemon and each port's gate
RATES = (10.0, 5.0, 2.0, 1.0, 0.5)


def load_units(topo: Topology, host_rate_bps: float) -> float:
    """Both directions of every link, in host-link rates."""
    return sum(2 * link.rate_bps / host_rate_bps for link in topo.links)


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_link_mbps(topo: Topology, host_rate_bps: float, n_cpus: int | None = None,
                   pfc: bool = False) -> float:
    """The rate ``auto`` stands for on a machine with ``n_cpus`` CPUs."""
    budget = BUDGET_PER_CPU * (n_cpus or cpus()) * (PFC_SHARE if pfc else 1.0)
    fit = budget / load_units(topo, host_rate_bps) ** EXPONENT
    return next((r for r in RATES if r <= fit), RATES[-1])


def resolve(spec: Spec, topo: Topology) -> tuple[Spec, str | None]:
    """``spec`` with ``emu.link_mbps`` a number, and a note saying what ``auto`` chose."""
    if spec.emu.link_mbps != "auto":
        return spec, None
    host_bps = spec.topology.host_link_gbps * 1e9
    rate = auto_link_mbps(topo, host_bps, pfc=spec.switch.pfc.enabled)
    note = (f"emu.link_mbps auto: {rate:g} Mb/s for {load_units(topo, host_bps):g} load "
            f"units on {cpus()} CPUs (fabriclab.emu.autorate)")
    emu = spec.emu.model_copy(update={"link_mbps": rate})
    return spec.model_copy(update={"emu": emu}), note
