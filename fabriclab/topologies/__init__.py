"""Pure topology models (no engine imports): leaf-spine and k-ary fat-tree."""

from .fat_tree import fat_tree
from .leaf_spine import leaf_spine
from .model import Link, Node, PortId, Topology, ecmp_hash, switch_seed

__all__ = ["Topology", "Node", "Link", "PortId", "leaf_spine", "fat_tree", "ecmp_hash",
           "switch_seed", "from_spec"]


def from_spec(t) -> Topology:
    """The topology a spec's ``topology`` section describes (leaf_spine or fat_tree)."""
    host, fab = round(t.host_link_gbps * 1e9), round(t.fabric_link_gbps * 1e9)
    if t.kind == "leaf_spine":
        return leaf_spine(t.leaves, t.spines, t.hosts_per_leaf, host, fab, t.link_delay_ns)
    return fat_tree(t.k, host, fab, t.link_delay_ns)
