"""Workloads: turn the spec's workload items into flows with start times and dependencies.

Both engines consume the same :class:`Workload`: a list of :class:`FlowDef` (a message of
``size`` bytes from ``src`` to ``dst``) and the collectives they make up.  A flow starts at
``start_ns`` or, when it has ``deps``, once every flow in ``deps`` is through, whichever is
later.  A flow its own sender sent is through once its last byte has been handed to the
sender's NIC (a queue pair works through its messages in order, without waiting for the
ACKs); a flow its sender received is through once it has been delivered.  Both are what the
sender itself knows, so both engines start dependent flows at the same moments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..topologies import Topology
from .background import FlowSizeCdf
from .collectives import all_to_all, ring_allreduce

UNLIMITED = None


@dataclass
class FlowDef:
    id: int
    src: str
    dst: str
    size: int | None  # payload bytes; None = unlimited (runs until the stop time)
    start_ns: int
    deps: tuple[int, ...] = ()
    group: str = ""  # the workload item (or collective) this flow belongs to


@dataclass
class CollectiveDef:
    name: str
    kind: str
    hosts: list[str]
    bytes: int  # the collective's message size S (per host)
    flow_ids: list[int] = field(default_factory=list)


@dataclass
class TcpStream:
    """TCP cross traffic (iperf3; Mininet engine only)."""

    name: str
    src: str
    dst: str
    start_ns: int
    duration_ns: int
    parallel: int


@dataclass
class Workload:
    flows: list[FlowDef]
    collectives: list[CollectiveDef]
    tcp: list[TcpStream] = field(default_factory=list)


def _ns(us_value: float) -> int:
    return round(us_value * 1000)


def _size(b) -> int | None:
    return None if b == "unlimited" else int(b)


def _pick_hosts(sel, all_hosts: list[str], rng: random.Random, exclude=()) -> list[str]:
    pool = [h for h in all_hosts if h not in exclude]
    if sel == "all":
        return pool
    if isinstance(sel, int):
        chosen = rng.sample(pool, sel)
        return sorted(chosen, key=all_hosts.index)
    return list(sel)


def permutation_pairs(hosts: list[str], tor_of, rng: random.Random) -> list[tuple[str, str]]:
    """A random permutation in which every host sends to a host under another ToR.

    Same construction as the ns-3 baseline's ``make_flows`` (shuffle, then repair same-ToR
    pairs by swapping with a random partner), so with the same seed and hosts it gives the
    same pairs.
    """
    n = len(hosts)
    perm = list(range(n))
    rng.shuffle(perm)

    def same(i, j):
        return tor_of(hosts[i]) == tor_of(hosts[j])

    bad = [i for i in range(n) if same(perm[i], i)]
    while bad:
        i = bad[0]
        j = rng.randrange(n)
        if not same(perm[j], i) and not same(perm[i], j):
            perm[i], perm[j] = perm[j], perm[i]
        bad = [i for i in range(n) if same(perm[i], i)]
    return [(hosts[i], hosts[perm[i]]) for i in range(n)]


def build(spec, topo: Topology) -> Workload:
    """All flows and collectives of ``spec.workload`` on ``topo`` (deterministic for the seed)."""
    hosts = topo.hosts
    flows: list[FlowDef] = []
    collectives: list[CollectiveDef] = []
    tcp: list[TcpStream] = []

    def add(src, dst, size, start_ns, deps=(), group=""):
        f = FlowDef(len(flows), src, dst, size, start_ns, tuple(deps), group)
        flows.append(f)
        return f

    for idx, item in enumerate(spec.workload):
        rng = random.Random(f"{spec.seed}/workload/{idx}")
        name = item.name or f"{item.kind}{idx}"
        t0 = _ns(item.start_us)
        kind = item.kind
        if kind == "incast":
            for k in range(item.repeat):
                rx = rng.choice(hosts) if item.receiver == "random" else item.receiver
                senders = _pick_hosts(item.senders, hosts, rng, exclude=(rx,))
                cname = name if item.repeat == 1 else f"{name}#{k}"
                coll = CollectiveDef(cname, "incast", senders + [rx], _size(item.bytes) or 0)
                tk = t0 + k * _ns(item.interval_us)
                for i, s in enumerate(senders):
                    f = add(s, rx, _size(item.bytes), tk + i * _ns(item.stagger_us), group=cname)
                    coll.flow_ids.append(f.id)
                collectives.append(coll)
        elif kind == "permutation":
            sel = _pick_hosts(item.hosts, hosts, rng)
            for s, d in permutation_pairs(sel, topo.tor_of, rng):
                add(s, d, _size(item.bytes), t0, group=name)
        elif kind in ("ring_allreduce", "all_to_all"):
            sel = _pick_hosts(item.hosts, hosts, rng)
            make = ring_allreduce if kind == "ring_allreduce" else all_to_all
            # nccl-tests' message size S: per rank, all peers' chunks together for all-to-all.
            total = item.bytes if kind == "ring_allreduce" else item.bytes * len(sel)
            coll = CollectiveDef(name, kind, sel, total)
            for src, dst, size, dep_idx in make(sel, item.bytes):
                base = coll.flow_ids
                f = add(src, dst, size, t0, deps=[base[j] for j in dep_idx], group=name)
                coll.flow_ids.append(f.id)
            collectives.append(coll)
        elif kind == "background":
            cdf = FlowSizeCdf.load(item.cdf)
            sel = _pick_hosts(item.hosts, hosts, rng)
            mean = cdf.mean()
            t_end = t0 + _ns(item.duration_us)
            arrivals = []
            for h in sel:
                rate = topo.host_rate_bps(h)
                lam_per_ns = item.load * rate / (8 * mean) / 1e9
                t = t0 + rng.expovariate(lam_per_ns)
                while t < t_end:
                    dst = rng.choice([x for x in sel if x != h]) if len(sel) > 1 else None
                    if dst is not None:
                        arrivals.append((round(t), h, dst, cdf.sample(rng)))
                    t += rng.expovariate(lam_per_ns)
            arrivals.sort()
            for t, s, d, size in arrivals:
                add(s, d, size, t, group=name)
        elif kind == "flows":
            for fi in item.flows:
                add(fi.src, fi.dst, _size(fi.bytes), t0 + _ns(fi.start_us), group=name)
        elif kind == "tcp_iperf3":
            tcp.append(TcpStream(name, item.src, item.dst, t0, _ns(item.duration_us),
                                 item.parallel))
        else:  # the spec's discriminated union makes this unreachable
            raise ValueError(f"unknown workload kind {kind!r}")
    return Workload(flows, collectives, tcp)
