"""Pure topology models (no engine imports): leaf-spine and k-ary fat-tree."""

from .fat_tree import fat_tree
from .leaf_spine import leaf_spine
from .model import Link, Node, PortId, Topology, ecmp_hash, switch_seed

__all__ = ["Topology", "Node", "Link", "PortId", "leaf_spine", "fat_tree", "ecmp_hash",
           "switch_seed"]
