"""The experiment spec: load a YAML file, apply ``--set`` overrides, validate, freeze.

The spec is the single source of truth for a run: topology, switch buffers and
thresholds, scheme and its parameters, workload, stop condition, seed and engine.  A bad
spec is rejected before anything runs, with one message per problem naming the field, the
value and what is allowed (:class:`SpecError`).

Units are in the field names (``_gbps``, ``_ns``, ``_us``, ``_bytes``).  Defaults cite
their source in the field description.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .schemes import SCHEMES

log = logging.getLogger(__name__)

UNLIMITED = "unlimited"
ENGINES = ("sim", "mininet")


class Problem(NamedTuple):
    """One problem with a spec: where it is (a dotted path such as ``topology.leaves``, ""
    for the spec as a whole) and the message line, which starts with that place."""

    loc: str
    text: str


class SpecError(Exception):
    """A spec that cannot run.  ``problems`` holds one line per problem, ``located`` the same
    as :class:`Problem` (place and line), ``source`` says where they come from: the YAML
    file, a ``--set``, the command line."""

    def __init__(self, problems: list, source: str = "spec"):
        self.located = [p if isinstance(p, Problem) else Problem("", str(p)) for p in problems]
        self.problems = [p.text for p in self.located]
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.problems))

    def __reduce__(self):  # keep the problem list across process pools
        return (SpecError, (self.located, self.source))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"error in {self.source}: {self.problems[0]}"
        return f"errors in {self.source}:\n" + "\n".join(f"  - {p}" for p in self.problems)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- topology
class _TopologyCommon(Strict):
    host_link_gbps: float = Field(100.0, gt=0, le=3200,
                                  description="host-to-ToR link rate (HPCC evaluation: 100G)")
    fabric_link_gbps: float = Field(100.0, gt=0, le=3200,
                                    description="switch-to-switch link rate")
    link_delay_ns: int = Field(1000, ge=0, le=10_000_000,
                               description="propagation delay of every link "
                                           "(HPCC evaluation and ns-3 baseline: 1 us)")


class LeafSpine(_TopologyCommon):
    kind: Literal["leaf_spine"] = "leaf_spine"
    leaves: int = Field(4, ge=1, le=4096)
    spines: int = Field(4, ge=1, le=4096)
    hosts_per_leaf: int = Field(4, ge=1, le=4096)

    @property
    def n_hosts(self) -> int:
        return self.leaves * self.hosts_per_leaf


class FatTree(_TopologyCommon):
    kind: Literal["fat_tree"]
    k: int = Field(4, ge=2, le=128, description="switch radix of the k-ary fat-tree (even)")

    @field_validator("k")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"k must be even (k-ary fat-tree), got {v}")
        return v

    @property
    def n_hosts(self) -> int:
        return self.k ** 3 // 4


Topology = Annotated[Union[LeafSpine, FatTree], Field(discriminator="kind")]


# --------------------------------------------------------------------------- switch
class EcnPoint(Strict):
    kmin_bytes: int = Field(ge=0)
    kmax_bytes: int = Field(gt=0)
    pmax: float = Field(gt=0, le=1)


class Ecn(Strict):
    enabled: bool = True
    kmin_bytes: int = Field(100_000, ge=0, description=(
        "RED Kmin at reference_gbps (HPCC simulator run.py: 100 KB per 25G, 'from "
        "Alibaba's production'; the DCQCN paper used 5 KB)"))
    kmax_bytes: int = Field(400_000, gt=0, description=(
        "RED Kmax at reference_gbps (HPCC simulator: 400 KB per 25G; DCQCN paper: 200 KB)"))
    pmax: float = Field(0.2, gt=0, le=1, description=(
        "marking probability at Kmax (HPCC simulator: 0.2; DCQCN paper: 0.01)"))
    scale_with_rate: bool = Field(True, description=(
        "scale Kmin/Kmax linearly with the port rate, as the HPCC simulator does"))
    reference_gbps: float = Field(25.0, gt=0)
    per_rate_gbps: dict[float, EcnPoint] = Field(default_factory=dict, description=(
        "explicit thresholds for ports of a given rate, overriding the scaled ones"))

    @model_validator(mode="after")
    def _order(self):
        if self.kmin_bytes >= self.kmax_bytes:
            raise ValueError(f"kmin_bytes ({self.kmin_bytes}) must be below kmax_bytes "
                             f"({self.kmax_bytes})")
        for rate, p in self.per_rate_gbps.items():
            if p.kmin_bytes >= p.kmax_bytes:
                raise ValueError(f"per_rate_gbps[{rate:g}]: kmin_bytes must be below kmax_bytes")
        return self

    def thresholds(self, rate_bps: int) -> tuple[int, int, float]:
        """(Kmin bytes, Kmax bytes, Pmax) for a port of ``rate_bps``."""
        gb = rate_bps / 1e9
        for r, p in self.per_rate_gbps.items():
            if abs(r - gb) < 1e-9:
                return p.kmin_bytes, p.kmax_bytes, p.pmax
        scale = gb / self.reference_gbps if self.scale_with_rate else 1.0
        return round(self.kmin_bytes * scale), round(self.kmax_bytes * scale), self.pmax


class Pfc(Strict):
    enabled: bool = True
    alpha: float = Field(0.125, gt=0, le=64, description=(
        "dynamic threshold: PAUSE when an ingress queue's shared use reaches alpha x free "
        "shared buffer (HPCC simulator switch-mmu.cc, pfc_a_shift 3 = 1/8)"))
    headroom_bytes: Union[int, Literal["auto"]] = Field("auto", description=(
        "per-port headroom for in-flight bytes after PAUSE; auto = 3 x rate x link delay + "
        "2 max frames (reference/DCQCN.md: ~3 x rate x delay)"))
    reserve_bytes: int = Field(4096, ge=0, description=(
        "guaranteed bytes per (ingress port, priority) (HPCC simulator: 4 KB)"))
    resume_offset_bytes: int = Field(3072, ge=0, description=(
        "RESUME this far below the threshold (HPCC simulator: 3 KB)"))
    watchdog_us: Union[float, None] = Field(None, gt=0, description=(
        "PFC watchdog: a queue paused without a break for this long is disabled -- what it "
        "holds and what arrives for it is dropped (SONiC's drop action) -- for "
        "watchdog_restore_us (Junos: detect after 2 polls of 100 ms; SONiC: per port); "
        "null = off"))
    watchdog_restore_us: float = Field(200_000.0, gt=0, description=(
        "how long a queue the watchdog disabled stays disabled (Junos default: 200 ms)"))
    deadlock_detect_us: Union[float, None] = Field(1000.0, gt=0, description=(
        "simulator: stop and report a PFC deadlock when a cycle of ports, each paused by "
        "the next, has made no progress for this long; null = do not look"))

    @field_validator("headroom_bytes")
    @classmethod
    def _hdrm(cls, v):
        if isinstance(v, int) and v < 0:
            raise ValueError("headroom_bytes must be >= 0 or 'auto'")
        return v


class Switch(Strict):
    ports: int = Field(64, ge=2, le=4096, description="switch radix (ports per switch)")
    buffer_bytes: int = Field(32_000_000, gt=0, description=(
        "shared packet buffer per switch (HPCC simulator at 100G: 32 MB)"))
    mtu_bytes: int = Field(4096, ge=64, le=65536, description=(
        "payload bytes per data packet (RoCE path MTU; UEC htsim validation: 4096)"))
    header_bytes: int = Field(64, ge=0, le=1024, description=(
        "per-packet bytes on the wire besides payload, also the size of ACK/NACK/CNP "
        "frames (UEC htsim validation: 64)"))
    queue_limit_bytes: Union[int, None] = Field(None, gt=0, description=(
        "optional static cap on one egress queue (DropTail); null = shared buffer only"))
    load_balancing: Literal["scheme", "ecmp", "packet_spray"] = Field("scheme", description=(
        "scheme = the scheme's own; ecmp = one hashed path per flow; packet_spray = every "
        "data packet picks a random equal-cost next hop (ns-3 RandomEcmpRouting)"))
    ecn: Ecn = Field(default_factory=Ecn)
    pfc: Pfc = Field(default_factory=Pfc)


# --------------------------------------------------------------------------- schemes
class Dcqcn(Strict):
    """DCQCN parameters (Zhu et al., SIGCOMM 2015; HPCC simulator rdma-hw.cc)."""

    variant: Literal["paper", "mlx"] = Field("paper", description=(
        "paper: increase events from the timer and the byte counter, hyper increase once "
        "both have passed F (SIGCOMM 2015, section 3.3); mlx: the timer alone counts the "
        "stages, hyper increase from the (F+2)-th timer event on (the HPCC simulator's "
        "Mellanox model, rdma-hw.cc RateIncEventMlx; docs/dcqcn.md)"))
    g: float = Field(1 / 256, gt=0, lt=1, description="alpha EWMA gain (paper: 1/256)")
    alpha_timer_us: float = Field(55.0, gt=0, description="alpha decay period K (paper: 55 us)")
    rate_increase_timer_us: float = Field(55.0, gt=0, description=(
        "rate-increase timer T (paper: 55 us; HPCC simulator's production-like set: 300 us)"))
    byte_counter_bytes: int = Field(10_000_000, gt=0, description="byte counter B (paper: 10 MB)")
    fast_recovery_steps: int = Field(5, ge=0, le=100, description="F (paper: 5)")
    rate_ai_mbps: float = Field(40.0, gt=0, description=(
        "additive increase R_AI (paper at 40G: 40 Mb/s; HPCC simulator at 100G: 20 Mb/s)"))
    rate_hai_mbps: float = Field(200.0, gt=0, description=(
        "hyper increase R_HAI (HPCC simulator at 100G: 200 Mb/s)"))
    min_rate_mbps: float = Field(100.0, gt=0, description="rate floor (100 Mb/s - 1 Gb/s)")
    cnp_interval_us: float = Field(50.0, ge=0, description=(
        "receiver sends at most one CNP per flow per interval (NIC behaviour: 50 us)"))
    initial_alpha: float = Field(1.0, ge=0, le=1, description="alpha on the first CNP (1.0)")


class Hpcc(Strict):
    """HPCC parameters (Li et al., SIGCOMM 2019; HPCC ns-3 simulator)."""

    eta: float = Field(0.95, gt=0, le=1, description=(
        "target utilisation (paper: 0.95; the project page later used 0.99)"))
    max_stage: int = Field(5, ge=0, le=100, description=(
        "additive-increase steps before a multiplicative one (paper: 5; the project page "
        "calls that a simulation typo and uses 0)"))
    rate_ai_mbps: float = Field(50.0, gt=0, description=(
        "additive increase as a rate, W_AI = rate_ai x T (paper: ~40-50 Mb/s at 100G)"))
    min_rate_mbps: float = Field(100.0, gt=0, description="rate floor")
    base_rtt_ns: Union[int, Literal["auto"]] = Field("auto", description=(
        "T; auto = the fabric's largest base RTT (propagation plus one data and one ACK "
        "packet per hop)"))
    int_header_bytes: int = Field(42, ge=0, le=512, description=(
        "INT bytes every data packet and ACK carries (HPCC simulator: 42 = 2 + 5 hops x 8)"))


class Gse(Strict):
    """GSE parameters (reference/GSE.md; where the white paper is silent, fabriclab's
    choices, documented in docs/gse.md)."""

    placement: Literal["nic", "leaf"] = Field("nic", description=(
        "nic = the GSP in the host's NIC (end-to-end GSE); leaf = the GSP in the leaf switch "
        "(network-side GSE, NICs plain)"))
    scheduler: Literal["central", "egress"] = Field("central", description=(
        "central = GSOS arbitrates every request; egress = the destination's GSP grants"))
    container_bytes: int = Field(32768, ge=64, le=16 << 20, description=(
        "payload per packet container (fabriclab default: 32 KiB; docs/gse.md says why)"))
    grant_bytes: Union[int, None] = Field(None, ge=64, description=(
        "credit per grant; null = one container"))
    max_outstanding_grants: int = Field(4, ge=1, le=1024, description=(
        "grants a GSP may have asked for or hold per destination (request pipelining)"))
    grant_overcommit: float = Field(1.0, gt=0, le=4, description=(
        "grants per egress port at this multiple of its line rate"))
    control_latency_ns: int = Field(2000, ge=0, description=(
        "central scheduler: one-way latency between a GSP and GSOS"))
    spray: Literal["round_robin", "least_loaded"] = Field("round_robin", description=(
        "path of each container when the grant does not name one"))
    reorder_timeout_us: float = Field(50.0, gt=0, description=(
        "the egress GSP gives up on a container that has not completed after this long (a "
        "packet of it was lost); the transport recovers the data"))
    unscheduled_bytes: int = Field(65536, ge=0, description=(
        "the unscheduled first window: what a GSP may send to a port before its grant "
        "comes, when the port's last grant to it said no other source was waiting (0: "
        "never).  Default: one grant round trip (2 x 2 us) at 100 Gb/s, 50 KB, in whole "
        "32 KiB containers"))
    unscheduled_lease_us: float = Field(10.0, ge=0, description=(
        "... and only within this long of the GSP's VOQ for the port running out of "
        "credit: a new message that comes later asks first"))
    fallback_us: float = Field(100.0, gt=0, description=(
        "Mininet engine: a GSP whose REQUESTs GSOS has not answered for this long asks the "
        "destinations' own schedulers instead (egress mode)"))


class Nic(Strict):
    ack_every_pkts: Union[Annotated[int, Field(ge=1, le=1024)], Literal["auto"]] = Field(
        "auto", description=(
            "the receiver ACKs every n-th data packet (and the last one); auto: once per "
            "GSE container under gse (its ACKs carry only reliability; ACK coalescing, "
            "which InfiniBand allows a responder), every packet otherwise (HPCC's INT "
            "feedback rides on each ACK, L2_ACK_INTERVAL 1 in the HPCC simulator)"))
    rto_us: float = Field(1000.0, gt=0, description=(
        "retransmission timeout: go back to the first unacked byte after this long "
        "without progress"))
    rto_low_us: float = Field(100.0, gt=0, description=(
        "selective repeat only: the timeout when at most 3 packets of the flow are in "
        "flight, so that a lost tail is resent sooner (IRN's RTO_low; rto_us is RTO_high)"))
    data_priority: int = Field(3, ge=0, le=7, description="802.1p priority of data (lossless)")
    control_priority: int = Field(7, ge=0, le=7, description=(
        "priority of ACK/NACK/CNP frames (strict priority above data, never paused)"))
    loss_recovery: Literal["go_back_n", "selective_repeat"] = Field("go_back_n", description=(
        "go_back_n: a gap is NACKed and the sender resends from there (RoCE NICs today); "
        "selective_repeat: out-of-order packets are kept, only lost ones are resent and at "
        "most about a BDP is in flight (IRN, Mittal et al., SIGCOMM 2018)"))

    @model_validator(mode="after")
    def _distinct(self):
        if self.data_priority == self.control_priority:
            raise ValueError("data_priority and control_priority must differ")
        if self.rto_low_us > self.rto_us:
            raise ValueError(f"rto_low_us ({self.rto_low_us:g}) must not exceed rto_us "
                             f"({self.rto_us:g})")
        return self


# --------------------------------------------------------------------------- workload
Bytes = Union[Annotated[int, Field(gt=0)], Literal["unlimited"]]
Hosts = Union[Literal["all"], Annotated[int, Field(ge=1)], list[str]]


class _Item(Strict):
    name: Union[str, None] = None
    start_us: float = Field(0.0, ge=0)


class Incast(_Item):
    kind: Literal["incast"]
    receiver: str = Field("h0", description="a host name, or 'random' (drawn per repetition)")
    senders: Hosts = Field("all", description=(
        "'all' (every other host), a count N (N other hosts drawn with the seed), or a list "
        "of host names"))
    bytes: Bytes
    stagger_us: float = Field(0.0, ge=0, description="sender i starts at start + i x stagger")
    repeat: int = Field(1, ge=1, le=100_000, description="number of incast events")
    interval_us: float = Field(0.0, ge=0, description="time between incast events")


class Permutation(_Item):
    kind: Literal["permutation"]
    bytes: Bytes
    hosts: Hosts = "all"


class RingAllreduce(_Item):
    kind: Literal["ring_allreduce"]
    bytes: Annotated[int, Field(gt=0)]
    hosts: Hosts = "all"


class AllToAll(_Item):
    kind: Literal["all_to_all"]
    bytes: Annotated[int, Field(gt=0)] = Field(description="bytes each host sends to each other host")
    hosts: Hosts = "all"


class Background(_Item):
    kind: Literal["background"]
    cdf: str = Field("websearch", description="websearch, fb_hadoop, or a path to a CDF file")
    load: float = Field(gt=0, lt=1, description="offered load as a fraction of host link rate")
    duration_us: float = Field(gt=0, description="flows arrive during this window")
    hosts: Hosts = "all"


class FlowItem(Strict):
    src: str
    dst: str
    bytes: Bytes
    start_us: float = Field(0.0, ge=0)


class Flows(_Item):
    kind: Literal["flows"]
    flows: list[FlowItem] = Field(min_length=1)


class TcpIperf3(_Item):
    """TCP cross traffic from iperf3 (Mininet engine only: the simulator has no TCP)."""

    kind: Literal["tcp_iperf3"]
    src: str
    dst: str
    duration_us: float = Field(gt=0, description="fabric time; real time is this x the "
                                                 "emulation's time dilation")
    parallel: int = Field(1, ge=1, le=64, description="iperf3 -P: parallel TCP streams")


WorkloadItem = Annotated[Union[Incast, Permutation, RingAllreduce, AllToAll, Background, Flows,
                               TcpIperf3],
                         Field(discriminator="kind")]


class Emu(Strict):
    """How the Mininet engine scales the fabric onto one machine.

    Every link runs at ``link_mbps`` x (its rate / host_link rate): 100G hosts at 10 Mb/s is
    a time dilation of 10,000.  Time-like quantities of the algorithms (timers, CNP interval,
    RTO) are kept in fabric time and the agents run them on a clock slowed by that factor,
    so the dynamics are those of the real fabric, slowed down; byte quantities (buffers,
    ECN thresholds, packet sizes) are unchanged.  Results are written in fabric time, with
    the emulated (real) figures alongside.
    """

    link_mbps: Union[Literal["auto"], Annotated[float, Field(gt=0, le=2000)]] = Field(
        10.0, description=(
            "emulated rate of a host link; every link is scaled by the same factor.  "
            "'auto': the highest rate this machine emulates the fabric at faithfully, from "
            "its size and the CPUs (fabriclab.emu.autorate; capped at 10)"))
    mtu_bytes: int = Field(1000, ge=64, le=1400, description=(
        "payload per data packet in emulation (veth MTU 1500 holds it with headers)"))
    datapath: Literal["auto", "kernel", "netdev"] = Field("auto", description=(
        "Open vSwitch datapath: kernel where the openvswitch module exists, else netdev "
        "(userspace)"))
    sample_interval_ms: float = Field(20.0, gt=0, description="real-time sampling period of "
                                                              "the port counters")
    timeout_s: float = Field(600.0, gt=0, description=(
        "real-time limit of one emulation run; the run is stopped and reported unfinished"))
    pcap_hosts: list[str] = Field(default_factory=list, description=(
        "capture these hosts' traffic with tcpdump into pcap/<host>.pcap in the results "
        "(the first 160 bytes of each frame hold every header; the zero payload of RoCE "
        "frames is restored when the capture is saved, so Wireshark dissects them whole)"))


# --------------------------------------------------------------------------- faults
LINK_FAULTS = ("link_down", "link_up", "link_degrade")
SWITCH_FAULTS = ("switch_down", "switch_up")


class Fault(Strict):
    """One fault at a fabric time: a link (``l0-s1``, either end first) or a switch that
    fails, comes back or degrades, or the emulator's SDN controller killed."""

    at_us: float = Field(ge=0, description="fabric time of the fault")
    kind: Literal["link_down", "link_up", "link_degrade", "switch_down", "switch_up",
                  "controller_kill"]
    target: Union[str, None] = Field(None, description=(
        "a link as <node>-<node> (link kinds) or a switch name (switch kinds); none for "
        "controller_kill"))
    fraction: Union[float, None] = Field(None, gt=0, le=1, description=(
        "link_degrade: the link runs at this fraction of its rate (a gray failure, e.g. a "
        "bad optic); 1 restores it"))

    @model_validator(mode="after")
    def _fields_of_kind(self):
        if self.kind in LINK_FAULTS + SWITCH_FAULTS and not self.target:
            what = "a link such as l0-s1" if self.kind in LINK_FAULTS else "a switch such as s1"
            raise ValueError(f"kind {self.kind} needs a target: {what}")
        if self.kind == "controller_kill" and self.target:
            raise ValueError("kind controller_kill takes no target (there is one controller)")
        if (self.kind == "link_degrade") != (self.fraction is not None):
            raise ValueError("fraction goes with kind link_degrade, and only with it"
                             if self.fraction is not None else
                             "kind link_degrade needs a fraction (0 < fraction <= 1)")
        return self


class Loss(Strict):
    """Random loss (corruption): each frame crossing a link is lost with a probability."""

    rate: float = Field(0.0, ge=0, lt=1, description=(
        "probability that a frame is lost, per frame and link crossed, on every link"))
    links: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict, description=(
            "per link (<node>-<node>, both directions), a probability replacing rate"))

    @property
    def any(self) -> bool:
        return self.rate > 0 or any(v > 0 for v in self.links.values())


class Routing(Strict):
    """How switches react to a dead link (the same model on both engines)."""

    detect_us: float = Field(100.0, ge=0, description=(
        "time from a link's failure until switches stop sending onto it; until then "
        "packets hashed onto it are lost (hardware fast fail-over: the IETF draft for AI "
        "fabrics draft-clad-rtgwg-ipfrr-aiml targets under 100 us; a PHY's loss of signal "
        "takes milliseconds, BFD hundreds of milliseconds)"))
    reconverge: Literal["fabric", "local"] = Field("fabric", description=(
        "fabric = after detect_us every switch routes around the dead link (rehash over "
        "the equal-cost next hops left); local = only the two switches at its ends do, the "
        "rest keep sending towards it, as before a routing protocol has converged"))
    on_no_path: Literal["drop", "bounce"] = Field("drop", description=(
        "a switch with no way left towards a destination drops the packet, or bounces it "
        "down to another switch that sends it up another way (some fail-over schemes)"))


class Stop(Strict):
    time_us: Union[float, None] = Field(None, gt=0, description=(
        "stop at this simulated time; null = when every flow has finished"))
    max_time_us: float = Field(1_000_000.0, gt=0, description=(
        "safety limit on simulated time when time_us is null"))


class Metrics(Strict):
    sample_interval_us: float = Field(1.0, gt=0, description=(
        "first sampling period of the time series; it doubles whenever 2000 samples "
        "are held, so long runs keep a bounded series"))
    max_flow_series: int = Field(32, ge=0, le=10_000, description=(
        "per-flow rate/goodput series are written for at most n flows: every flow of a run "
        "that has at most n, else the flows that matter, chosen after the run (open-ended "
        "flows, and per workload item the most cut, the slowest and the median one)"))


class Spec(Strict):
    name: str = "experiment"
    question: str = Field("", description=(
        "the question the experiment answers, in one sentence (the comparison page opens "
        "with it, then the description)"))
    description: str = ""
    engine: Literal["sim", "mininet"] = "sim"
    seed: int = Field(1, ge=0, le=2 ** 63 - 1)
    scheme: str = "ecmp_dcqcn"
    topology: Topology = Field(default_factory=LeafSpine)
    switch: Switch = Field(default_factory=Switch)
    nic: Nic = Field(default_factory=Nic)
    dcqcn: Dcqcn = Field(default_factory=Dcqcn)
    hpcc: Hpcc = Field(default_factory=Hpcc)
    gse: Gse = Field(default_factory=Gse)
    workload: list[WorkloadItem] = Field(min_length=1)
    stop: Stop = Field(default_factory=Stop)
    metrics: Metrics = Field(default_factory=Metrics)
    emu: Emu = Field(default_factory=Emu)
    faults: list[Fault] = Field(default_factory=list, description=(
        "faults at fabric times: links and switches that fail, come back or degrade"))
    loss: Loss = Field(default_factory=Loss)
    routing: Routing = Field(default_factory=Routing)
    compare: list[str] = Field(default_factory=list, description=(
        "schemes `fabriclab compare` runs when --schemes is not given"))
    reduced: dict[str, Any] = Field(default_factory=dict, description=(
        "--set style overrides that make a small, fast version (used by CI and --reduced)"))

    @model_validator(mode="before")
    @classmethod
    def _default_topology_kind(cls, data):
        topo = data.get("topology") if isinstance(data, dict) else None
        if isinstance(topo, dict) and "kind" not in topo:
            data = {**data, "topology": {"kind": "leaf_spine", **topo}}
        emu = data.get("emu") if isinstance(data, dict) else None
        if isinstance(emu, dict) and emu.get("kill_controller_at_us") is not None:
            # the older shortcut for a controller_kill fault
            emu = dict(emu)
            at = emu.pop("kill_controller_at_us")
            if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
                raise ValueError(f"emu.kill_controller_at_us = {at!r}: must be a fabric time "
                                 f">= 0 in us (it stands for a faults entry of kind "
                                 f"controller_kill)")
            faults = data.get("faults") or []
            data = {**data, "emu": emu,
                    "faults": [*faults, {"at_us": at, "kind": "controller_kill"}]
                    if isinstance(faults, list) else faults}
        elif isinstance(emu, dict) and "kill_controller_at_us" in emu:
            data = {**data, "emu": {k: v for k, v in emu.items() if k != "kill_controller_at_us"}}
        return data

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v not in SCHEMES:
            raise ValueError(f"unknown scheme {v!r}; allowed: {', '.join(SCHEMES)}")
        return v

    @field_validator("compare")
    @classmethod
    def _compare(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SCHEMES]
        if bad:
            raise ValueError(f"unknown scheme(s) {', '.join(map(repr, bad))}; allowed: "
                             f"{', '.join(SCHEMES)}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self):
        problems = list(_cross_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # convenience
    def host_names(self) -> list[str]:
        return [f"h{i}" for i in range(self.topology.n_hosts)]


def _cross_problems(spec: Spec):
    """Checks that need several fields at once; each yields one message."""
    t, sw = spec.topology, spec.switch
    if isinstance(t, LeafSpine):
        need = t.hosts_per_leaf + t.spines
        if need > sw.ports:
            yield (f"topology: a leaf needs hosts_per_leaf + spines = {t.hosts_per_leaf} + "
                   f"{t.spines} = {need} ports but switch.ports = {sw.ports}; lower them or "
                   f"raise switch.ports")
        if t.leaves > sw.ports:
            yield (f"topology.leaves = {t.leaves}: a spine has only switch.ports = {sw.ports} "
                   f"ports")
    else:
        if t.k > sw.ports:
            yield f"topology.k = {t.k}: a k-ary fat-tree needs switches of k ports, switch.ports = {sw.ports}"
    scheme = SCHEMES.get(spec.scheme)
    if scheme is not None and spec.engine not in scheme.engines:
        yield (f"scheme = {spec.scheme!r} runs on engine {' or '.join(scheme.engines)} only, "
               f"not {spec.engine}; choose another scheme or engine")
    if spec.engine == "mininet" and spec.scheme == "gse":
        if spec.gse.placement == "leaf":
            # the GSP daemon beside each leaf (fabriclab.emu.gspd)
            if spec.gse.scheduler != "central":
                yield ("gse.placement = 'leaf' on engine mininet runs with gse.scheduler = "
                       "'central' only (GSOS in the controller); use placement nic for the "
                       "egress scheduler, or engine sim")
            if not isinstance(t, LeafSpine):
                yield ("gse.placement = 'leaf' on engine mininet runs on leaf-spine fabrics "
                       "only; use placement nic on a fat-tree, or engine sim")
            if spec.faults:
                yield ("gse.placement = 'leaf' on engine mininet runs without faults; use "
                       "placement nic, or engine sim")
        if not isinstance(t, LeafSpine):
            paths = (t.k // 2) ** 2
            if paths > 63:
                yield (f"scheme gse on engine mininet: a {t.k}-ary fat-tree has (k/2)^2 = "
                       f"{paths} container paths between pods, but the DSCP that pins a "
                       f"container's path carries at most 63; use topology.k <= 14, or the "
                       f"simulator (engine sim)")
        elif t.spines > 63:
            yield (f"scheme gse on engine mininet: {t.spines} spines are {t.spines} container "
                   f"paths, but the DSCP that pins a container's path carries at most 63")
    if sw.pfc.enabled:
        yield from _buffer_problems(spec)
    yield from _fault_problems(spec)
    hosts = set(spec.host_names())
    n = len(hosts)
    hint = f"hosts are h0..h{n - 1}"
    for h in spec.emu.pcap_hosts:
        if h not in hosts:
            yield f"emu.pcap_hosts: unknown host {h!r} ({hint})"
    unlimited = False
    for i, w in enumerate(spec.workload):
        where = f"workload.{i}"
        for fld in ("hosts", "senders"):
            v = getattr(w, fld, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > n:
                yield f"{where}.{fld} = {v}: the topology has only {n} hosts"
            if isinstance(v, list):
                for h in v:
                    if h not in hosts:
                        yield f"{where}.{fld}: unknown host {h!r} ({hint})"
        if isinstance(w, Incast):
            if w.receiver not in hosts and w.receiver != "random":
                yield f"{where}.receiver = {w.receiver!r}: unknown host ({hint}, or 'random')"
            if w.receiver == "random" and isinstance(w.senders, list):
                yield f"{where}.senders: with receiver 'random', give a count or 'all'"
            if w.repeat > 1 and w.interval_us <= 0:
                yield f"{where}.interval_us: repeat = {w.repeat} needs an interval_us > 0"
            if isinstance(w.senders, list) and w.receiver in w.senders:
                yield f"{where}.senders: the receiver {w.receiver} cannot also send"
            if isinstance(w.senders, int) and w.senders > n - 1:
                yield f"{where}.senders = {w.senders}: at most {n - 1} hosts besides the receiver"
        if isinstance(w, Permutation) and isinstance(t, LeafSpine) and t.leaves < 2:
            yield f"{where}: a permutation sends across leaves, which needs topology.leaves >= 2"
        if isinstance(w, (RingAllreduce, AllToAll)):
            if (isinstance(w.hosts, int) and w.hosts < 2) or (isinstance(w.hosts, list)
                                                               and len(w.hosts) < 2):
                yield f"{where}.hosts: a collective needs at least 2 hosts"
        if isinstance(w, Flows):
            for j, f in enumerate(w.flows):
                for end in ("src", "dst"):
                    if getattr(f, end) not in hosts:
                        yield f"{where}.flows.{j}.{end} = {getattr(f, end)!r}: unknown host ({hint})"
                if f.src == f.dst:
                    yield f"{where}.flows.{j}: src and dst are both {f.src}"
                unlimited |= f.bytes == UNLIMITED
        if isinstance(w, TcpIperf3):
            if spec.engine != "mininet":
                yield (f"{where}: kind tcp_iperf3 runs only on engine mininet (the simulator "
                       f"has no TCP); use --engine mininet or remove it")
            for end in ("src", "dst"):
                if getattr(w, end) not in hosts:
                    yield f"{where}.{end} = {getattr(w, end)!r}: unknown host ({hint})"
            if w.src == w.dst:
                yield f"{where}: src and dst are both {w.src}"
        if isinstance(w, Background):
            from .workloads.background import known_cdf
            if not known_cdf(w.cdf):
                yield (f"{where}.cdf = {w.cdf!r}: not a built-in CDF (websearch, fb_hadoop) "
                       f"nor a readable file")
        unlimited |= getattr(w, "bytes", None) == UNLIMITED
    if unlimited and spec.stop.time_us is None:
        yield "stop.time_us: a workload has bytes: unlimited, so the run needs a stop time"


def _fault_problems(spec: Spec):
    """Faults and per-link loss must name links and switches of the topology."""
    if spec.loss.any and spec.engine == "mininet":
        yield ("loss: random loss runs on engine sim only (the kernel has no netem to lose "
               "frames at random); use --engine sim")
    if not spec.faults and not spec.loss.links:
        return
    from .topologies import from_spec
    topo = from_spec(spec.topology)
    switches = topo.switches
    fabric = [topo.link_name(k) for k in topo.links
              if not (topo.nodes[k.a].is_host or topo.nodes[k.b].is_host)]
    host = [topo.link_name(k) for k in topo.links if topo.link_name(k) not in fabric]

    def names(kind: str, items: list[str]) -> str:
        shown = ", ".join(items[:24]) + (f" and {len(items) - 24} more" if len(items) > 24 else "")
        if kind == "links":
            shown += f"; host links {host[0]} .. {host[-1]}" if host else ""
        return f"valid {kind}: {shown}"
    for i, f in enumerate(spec.faults):
        where = f"faults.{i}.target"
        if f.kind in LINK_FAULTS and topo.find_link(f.target) is None:
            yield f"{where} = {f.target!r}: no such link ({names('links', fabric)})"
        elif f.kind in SWITCH_FAULTS and f.target not in switches:
            yield f"{where} = {f.target!r}: no such switch ({names('switches', switches)})"
        if f.kind == "controller_kill" and spec.engine != "mininet":
            yield (f"faults.{i}: kind controller_kill runs on engine mininet only (the "
                   f"simulator has no controller process); use --engine mininet or remove it")
    for name in spec.loss.links:
        if topo.find_link(name) is None:
            yield f"loss.links: {name!r}: no such link ({names('links', fabric)})"


def ack_every_pkts(spec: Spec, mtu_bytes: int | None = None) -> int:
    """``nic.ack_every_pkts`` as a number of data packets of ``mtu_bytes`` (default
    ``switch.mtu_bytes``): ``auto`` is one ACK per container under GSE, else one per
    packet."""
    n = spec.nic.ack_every_pkts
    if n != "auto":
        return n
    if spec.scheme == "gse":
        return min(1024, -(-spec.gse.container_bytes // (mtu_bytes or spec.switch.mtu_bytes)))
    return 1


def pfc_headroom_bytes(spec: Spec, rate_bps: int, delay_ns: int) -> int:
    """Headroom of one ingress port: the spec's value, or 3 x rate x delay + 2 max frames."""
    h = spec.switch.pfc.headroom_bytes
    if h != "auto":
        return h
    frame = spec.switch.mtu_bytes + spec.switch.header_bytes
    return 3 * rate_bps * delay_ns // 8_000_000_000 + 2 * frame


def _buffer_problems(spec: Spec):
    """Each switch's buffer must hold its ports' PFC headroom and reserve, with room to share."""
    t, sw = spec.topology, spec.switch
    host = round(t.host_link_gbps * 1e9)
    fab = round(t.fabric_link_gbps * 1e9)
    if isinstance(t, LeafSpine):
        kinds = {"leaf": [host] * t.hosts_per_leaf + [fab] * t.spines, "spine": [fab] * t.leaves}
    else:
        kinds = {"edge": [host] * (t.k // 2) + [fab] * (t.k // 2), "aggregation/core": [fab] * t.k}
    for kind, rates in kinds.items():
        need = sum(pfc_headroom_bytes(spec, r, t.link_delay_ns) + sw.pfc.reserve_bytes
                   for r in rates)
        if need >= sw.buffer_bytes:
            yield (f"switch.buffer_bytes = {sw.buffer_bytes}: a {kind} switch needs {need} bytes "
                   f"for PFC headroom and reserve alone ({len(rates)} ports); raise "
                   f"switch.buffer_bytes, or lower switch.pfc.headroom_bytes / reserve_bytes")


# --------------------------------------------------------------------------- loading
class Override(NamedTuple):
    """One change to a spec before validation: a dotted key, its value, and how the user
    wrote it (``--set topology.leaves=2``), so that a problem it causes is blamed on it."""

    key: str
    value: Any
    label: str


def parse_override(assignment: str) -> Override:
    """``a.b.c=value`` (value parsed as YAML) as an :class:`Override`."""
    if "=" not in assignment:
        raise SpecError([f"--set {assignment!r}: expected KEY=VALUE, e.g. topology.leaves=8"],
                        "command line")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not all(key.split(".")):
        raise SpecError([f"--set {assignment!r}: empty key part"], "command line")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise SpecError([f"--set {key}: value {raw!r} is not valid YAML ({e})"],
                        "command line") from None
    return Override(key, value, f"--set {key}={raw.strip()}")


def override(key: str, value: Any, option: str = "--set") -> Override:
    """An :class:`Override` from a key and a Python value (labelled as ``--set key=value``)."""
    if not isinstance(key, str) or not all(key.split(".")):
        raise SpecError([f"{option} {key!r}: expected a dotted key such as topology.leaves"],
                        "command line")
    return Override(key, value, f"{option} {key}={inline_yaml(value)}")


def inline_yaml(value: Any) -> str:
    """``value`` as one line of YAML (``{kind: fat_tree, k: 4}``, ``2``, ``unlimited``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return text.removesuffix("\n...").strip()


def apply_override(data: dict, assignment: str | Override) -> None:
    """Apply one ``a.b.c=value`` override (or :class:`Override`) to ``data`` in place."""
    o = parse_override(assignment) if isinstance(assignment, str) else assignment
    set_value(data, o.key, o.value)


def set_value(data: dict, key: str, value: Any) -> None:
    """Set the dotted ``key`` of ``data`` (list items by index) to ``value``, in place.

    Changing ``topology.kind`` drops the old kind's fields that the new kind does not have
    (``leaves`` has no meaning in a fat-tree), so ``--set topology.kind=fat_tree`` works.
    """
    parts = key.split(".")
    node: Any = data
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise SpecError([f"--set {key}: {'.'.join(parts[:i + 1])} has no element {p} "
                                 f"(the list has {len(node)})"], "command line")
            node = node[int(p)]
            continue
        if not isinstance(node, dict):
            raise SpecError([f"--set {key}: {'.'.join(parts[:i])} is not a mapping"], "command line")
        if p not in node or node[p] is None:
            node[p] = [] if nxt.isdigit() else {}
        node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise SpecError([f"--set {key}: no list element {last}"], "command line")
        node[int(last)] = value
    elif isinstance(node, dict):
        if parts == ["topology", "kind"]:
            _switch_topology_kind(node, value)
        node[last] = value
    else:
        raise SpecError([f"--set {key}: {'.'.join(parts[:-1])} is not a mapping"], "command line")


_TOPOLOGY_KINDS = {"leaf_spine": LeafSpine, "fat_tree": FatTree}


def _switch_topology_kind(topo: dict, kind: Any) -> None:
    old = topo.get("kind", "leaf_spine")
    new = _TOPOLOGY_KINDS.get(kind) if isinstance(kind, str) else None
    if new is None or kind == old:
        return
    dropped = [k for k in topo if k != "kind" and k not in new.model_fields]
    for k in dropped:
        del topo[k]
    if dropped:
        log.info("topology.kind %s -> %s: dropped %s (no such field in a %s; set the new "
                 "kind's fields with --set topology.<field>=...)", old, kind,
                 ", ".join(dropped), kind)


def _format_errors(err: ValidationError, data: dict) -> list[Problem]:
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc = [str(x) for x in e["loc"]]
        # Drop pydantic's union-member tags (e.g. 'incast', 'int') from the location path.
        clean = []
        for x in loc:
            if x in _UNION_TAGS or x.startswith("function-") or x.startswith("literal["):
                continue
            clean.append(x)
        where = ".".join(clean) or "spec"
        at = ".".join(clean)
        typ, msg, inp = e["type"], e["msg"], e.get("input")
        if typ == "extra_forbidden":
            parent = clean[:-1]
            allowed = _allowed_keys(data, parent)
            hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
            out.append(Problem(at, f"unknown key '{where}'{hint}"))
        elif typ == "union_tag_invalid":
            tags = e.get("ctx", {}).get("expected_tags", "")
            out.append(Problem(f"{at}.kind", f"{where}.kind = {e.get('ctx', {}).get('tag')!r}: "
                                             f"unknown kind; allowed: {tags.replace(chr(39), '')}"))
        elif typ == "union_tag_not_found":
            out.append(Problem(f"{at}.kind", f"{where}: missing 'kind' (one of "
                                             f"{e.get('ctx', {}).get('discriminator', 'kind')})"))
        elif typ == "missing":
            out.append(Problem(at, f"{where}: required field is missing"))
        elif typ == "value_error":
            for line in str(msg).removeprefix("Value error, ").split("\n"):
                # A check of the whole spec starts each line with the place it is about.
                out.append(Problem(_leading_loc(line), line) if where == "spec"
                           else Problem(at, f"{where}: {line}"))
        else:
            shown = repr(inp) if not isinstance(inp, (dict, list)) else type(inp).__name__
            out.append(Problem(at, f"{where} = {shown}: {msg[0].lower() + msg[1:]}"))
    # One message per location: a union failure reports each member; keep the first.
    seen, uniq = set(), []
    for p in out:
        key = p.text.split(" ", 1)[0]
        if key in seen and not p.text.startswith("unknown key"):
            continue
        seen.add(key)
        uniq.append(p)
    return uniq


def _leading_loc(line: str) -> str:
    """The dotted field path a message line starts with ("" when it names no field)."""
    m = re.match(r"[A-Za-z_]\w*(?:\.\w+)*", line)
    return m.group(0) if m and m.group(0).split(".")[0] in Spec.model_fields else ""


_UNION_TAGS = {"incast", "permutation", "ring_allreduce", "all_to_all", "background", "flows",
               "tcp_iperf3",
               "leaf_spine", "fat_tree", "int", "str", "list[str]", "float", "bool",
               "constrained-int", "none", "dict[float,EcnPoint]"}


def _allowed_keys(data: dict, parent: list[str]) -> list[str]:
    """The field names valid at ``parent`` (for the 'unknown key' message)."""
    model: Any = Spec
    node: Any = data
    for p in parent:
        if isinstance(model, str):  # inside a list: pick the element's model
            node = node[int(p)] if isinstance(node, list) and p.isdigit() and int(p) < len(node) else {}
            model = {"workload": _item_model(node), "faults": Fault}.get(model, FlowItem)
            if model is None:
                return []
            continue
        node = node.get(p, {}) if isinstance(node, dict) else {}
        field = model.model_fields.get(p)
        if field is None:
            return []
        if p == "topology":
            model = FatTree if isinstance(node, dict) and node.get("kind") == "fat_tree" else LeafSpine
        elif p in ("workload", "flows", "faults"):
            model = p
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
        else:
            return []
    return list(model.model_fields) if isinstance(model, type) else []


def _item_model(node: Any):
    kinds = {"incast": Incast, "permutation": Permutation, "ring_allreduce": RingAllreduce,
             "all_to_all": AllToAll, "background": Background, "flows": Flows,
             "tcp_iperf3": TcpIperf3}
    return kinds.get(node.get("kind") if isinstance(node, dict) else None)


def validate(data: Any, source: str = "spec") -> Spec:
    """Validate a spec mapping; raise :class:`SpecError` with every problem found."""
    if not isinstance(data, dict):
        raise SpecError([f"the spec must be a YAML mapping, got {type(data).__name__}"], source)
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(e, data), source) from None


def load_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"no such file {str(p)!r}"], "command line")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError([f"not valid YAML: {e}"], str(p)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([f"the spec must be a YAML mapping, got {type(data).__name__}"], str(p))
    return data


def load(path: str | Path, overrides: list = (), reduced: bool = False) -> Spec:
    """Load ``path``, apply the spec's ``reduced`` block if asked, then the overrides
    (``a.b=value`` strings or :class:`Override`); problems caused by an override name it."""
    return load_data(load_raw(path), overrides, reduced, str(path))


def load_data(data: dict, overrides: list = (), reduced: bool = False,
              source: str = "spec") -> Spec:
    """:func:`load` for a spec mapping already in memory (``source`` names it in errors)."""
    data = copy.deepcopy(data)
    # A results directory's spec.yaml carries its provenance; it reruns as it stands.
    data.pop(PROVENANCE_KEY, None)
    if reduced:
        for k, v in (data.get("reduced") or {}).items():
            apply_override(data, f"{k}={v}" if isinstance(v, str) else Override(k, v, k))
    applied = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    for o in applied:
        set_value(data, o.key, o.value)
    try:
        return validate(data, source)
    except SpecError as e:
        raise _attribute(e.located, applied, source) from None


def _attribute(problems: list[Problem], applied: list[Override], source: str) -> SpecError:
    """Blame each problem on the last override at, above or below its place, else on
    ``source`` (the file)."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        src = next((o.label for o in reversed(applied) if p.loc and (
            p.loc == o.key or p.loc.startswith(o.key + ".") or o.key.startswith(p.loc + "."))),
            source)
        groups.setdefault(src, []).append(p)
    if len(groups) == 1:
        (src, probs), = groups.items()
        return SpecError(probs, src)
    return SpecError([Problem(p.loc, f"in {src}: {p.text}") for src, probs in groups.items()
                      for p in probs], f"{source} and its overrides")


PROVENANCE_KEY = "generated_by"


def resolved_yaml(spec: Spec, extra: dict | None = None) -> str:
    """The fully resolved spec (every default filled in) as YAML, with provenance."""
    doc = {}
    if extra:
        doc.update(extra)
    doc.update(spec.model_dump(mode="json"))
    return yaml.safe_dump(doc, sort_keys=False)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"
