"""Three-tier k-ary fat-tree (Al-Fares et al., SIGCOMM 2008)::

                 c0   c1   ...   c{(k/2)^2-1}          core
               /  |    \\  ...
        a0_0 .. a0_{k/2-1}   ...   a{k-1}_*             aggregation (k/2 per pod)
          |  \\/  |
        e0_0 .. e0_{k/2-1}   ...   e{k-1}_*             edge / ToR (k/2 per pod)
        / .. \\
      h0 .. h{k/2-1} ...          h{k^3/4-1}            k/2 hosts per edge switch

k pods.  Edge ``e{p}_{i}``: ports 0..k/2-1 to its hosts, k/2..k-1 to ``a{p}_0..a{p}_{k/2-1}``.
Aggregation ``a{p}_{i}``: ports 0..k/2-1 to the pod's edges, k/2..k-1 to cores
``c{i*k/2} .. c{i*k/2+k/2-1}``.  Core ``c{j}``: port p to pod p.  Host ``h{n}`` under edge
``e{p}_{i}`` (index j) has address ``10.p.i.(j+2)`` (the paper's scheme).  Hosts attach at the
host rate, every switch-to-switch link runs at the fabric rate.
"""

from __future__ import annotations

from .model import Topology


def fat_tree(k: int, host_rate_bps: int, fabric_rate_bps: int, delay_ns: int) -> Topology:
    if k < 2 or k % 2:
        raise ValueError("fat_tree needs an even k >= 2")
    half = k // 2
    topo = Topology("fat_tree", f"{k}-ary fat-tree, {k ** 3 // 4} hosts")
    n = 0
    for p in range(k):
        for i in range(half):
            for j in range(half):
                topo.add_node(f"h{n}", "host", 0, ip=f"10.{p}.{i}.{j + 2}")
                n += 1
    for p in range(k):
        for i in range(half):
            topo.add_node(f"e{p}_{i}", "edge", 1)
    for p in range(k):
        for i in range(half):
            topo.add_node(f"a{p}_{i}", "agg", 2)
    for c in range(half * half):
        topo.add_node(f"c{c}", "core", 3)
    n = 0
    for p in range(k):
        for i in range(half):
            for _ in range(half):
                topo.connect(f"e{p}_{i}", f"h{n}", host_rate_bps, delay_ns)
                n += 1
    for p in range(k):
        for i in range(half):
            for a in range(half):
                topo.connect(f"e{p}_{i}", f"a{p}_{a}", fabric_rate_bps, delay_ns)
    # Core ports must be numbered by pod, so connect pod by pod for each core.
    for c in range(half * half):
        for p in range(k):
            topo.connect(f"a{p}_{c // half}", f"c{c}", fabric_rate_bps, delay_ns)
    topo.oversubscription = host_rate_bps / fabric_rate_bps
    return topo
