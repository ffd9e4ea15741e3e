"""Two-tier leaf-spine (folded Clos)::

        s0        s1    ...    s{S-1}        every leaf links to every spine
        |  \\    /  |            |
        l0      l1      ...   l{L-1}
       / .. \\  / .. \\         / .. \\
     h0 .. h{H-1} h{H} ..       .. h{L*H-1}  host i sits under leaf i // H

Leaf ``l`` ports: 0..H-1 to its hosts (host ``l*H + j`` on port j), H..H+S-1 to spines
s0..s{S-1}.  Spine ``s`` ports: port l to leaf l.  Host ``i`` has IPv4 address
``10.0.<leaf>.<j+1>`` with j its index under the leaf.  Oversubscription at a leaf is
``H * host rate / (S * fabric rate)``; it follows from the rates.
"""

from __future__ import annotations

from .model import Topology


def leaf_spine(leaves: int, spines: int, hosts_per_leaf: int, host_rate_bps: int,
               fabric_rate_bps: int, delay_ns: int) -> Topology:
    if leaves < 1 or spines < 1 or hosts_per_leaf < 1:
        raise ValueError("leaf_spine needs at least 1 leaf, 1 spine and 1 host per leaf")
    over = hosts_per_leaf * host_rate_bps / (spines * fabric_rate_bps)
    topo = Topology("leaf_spine", f"leaf-spine {leaves} leaves x {spines} spines x "
                                  f"{hosts_per_leaf} hosts/leaf, oversubscription {over:g}:1")
    for h in range(leaves * hosts_per_leaf):
        leaf, j = divmod(h, hosts_per_leaf)
        topo.add_node(f"h{h}", "host", 0, ip=f"10.{leaf // 256}.{leaf % 256}.{j + 1}")
    for l in range(leaves):
        topo.add_node(f"l{l}", "leaf", 1)
    for s in range(spines):
        topo.add_node(f"s{s}", "spine", 2)
    for h in range(leaves * hosts_per_leaf):
        topo.connect(f"l{h // hosts_per_leaf}", f"h{h}", host_rate_bps, delay_ns)
    for l in range(leaves):
        for s in range(spines):
            topo.connect(f"l{l}", f"s{s}", fabric_rate_bps, delay_ns)
    topo.oversubscription = over
    return topo
