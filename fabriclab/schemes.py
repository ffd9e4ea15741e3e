"""The registry of schemes: a scheme is a way of running the fabric (load balancing, transport,
congestion control).  Specs choose one by name; an unknown name fails with the list below.

PFC and ECN marking are switch settings (``switch.pfc``, ``switch.ecn``), so a scheme can be
run with PFC on or off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    load_balancing: str  # "ecmp": one hashed path per flow; "gse": a path per container
    congestion_control: str | None  # a name in fabriclab.cc_algorithms.CONGESTION_CONTROL
    reliable: bool  # ACKs, go-back-N on NACK, retransmission timeout
    int_telemetry: bool = False  # switches stamp INT records, ACKs echo them
    engines: tuple[str, ...] = ("sim", "mininet")  # where it is implemented


SCHEMES: dict[str, Scheme] = {}


def register(scheme: Scheme) -> Scheme:
    if scheme.name in SCHEMES:
        raise ValueError(f"scheme {scheme.name!r} registered twice")
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown scheme {name!r}; allowed: {', '.join(SCHEMES)}") from None


register(Scheme(
    "ecmp_dcqcn",
    "RoCEv2 fabric of today: per-flow ECMP, PFC, ECN marking at the switches, DCQCN rate "
    "control at the sender NIC, go-back-N retransmission",
    load_balancing="ecmp", congestion_control="dcqcn", reliable=True))
register(Scheme(
    "hpcc",
    "HPCC: per-flow ECMP, PFC, in-band telemetry (INT) stamped by every switch egress and "
    "echoed in ACKs, HPCC's window control at the sender (Li et al., SIGCOMM 2019)",
    load_balancing="ecmp", congestion_control="hpcc", reliable=True, int_telemetry=True))
register(Scheme(
    "gse",
    "Global Scheduled Ethernet: packet containers sprayed over every path, request/grant "
    "credit per destination port (DGSQ) from a central (GSOS) or egress scheduler, "
    "reordering at the egress GSP; PFC stays as the last resort",
    load_balancing="gse", congestion_control=None, reliable=True))
register(Scheme(
    "udp",
    "no congestion control: per-flow ECMP, senders at line rate, no ACKs and no "
    "retransmission (the ns-3 speed benchmark's traffic, and a no-CC baseline)",
    load_balancing="ecmp", congestion_control=None, reliable=False))
