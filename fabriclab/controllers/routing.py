"""What the controller installs on each switch, computed from the topology alone.

Pure (no os-ken import), so it is unit-tested without OpenFlow and the os-ken app stays a
thin translation of these tables into OpenFlow messages.

For every switch and every destination host the ECMP set is ``Topology.next_hops`` (model
ports), turned into OpenFlow ports with ``Topology.ofport``.  A set of one port becomes a
direct output; every distinct set of several ports becomes one SELECT group, shared by all
destinations that use the same set (a leaf sends every remote host through the same
"all spines" group).  Group ids are per switch (each switch has its own group table),
numbered 1, 2, ... in the order of the sorted port sets, so two builds of the same topology
give the same ids.

The ready file (see :mod:`fabriclab.controllers.ecmp_app`) is JSON lines, one object per
switch that finished installing; :func:`read_ready_file` parses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fabriclab.topologies import Topology

# How run.py hands its arguments to the os-ken app (os-ken instantiates apps itself).
ENV_TOPOLOGY = "FABRICLAB_TOPOLOGY"
ENV_READY_FILE = "FABRICLAB_READY_FILE"

# IPv4 flows sit above the table-miss entry (priority 0); one fixed priority is enough since
# every match is an exact /32 and no two entries overlap.
ROUTE_PRIORITY = 100
TABLE_MISS_PRIORITY = 0
ETH_TYPE_IPV4 = 0x0800


@dataclass(frozen=True)
class Group:
    """A SELECT group: one bucket (weight 1, single output) per port."""

    group_id: int
    ports: tuple[int, ...]  # OpenFlow port numbers, sorted, at least two


@dataclass(frozen=True)
class Route:
    """``ipv4_dst=ip/32`` goes to ``group_id`` if set, otherwise straight out of ``ports[0]``."""

    host: str
    ip: str
    ports: tuple[int, ...]  # OpenFlow port numbers of the ECMP set, sorted
    group_id: int | None

    @property
    def output_port(self) -> int | None:
        return self.ports[0] if self.group_id is None else None


@dataclass(frozen=True)
class SwitchTable:
    dpid: int
    switch: str
    groups: tuple[Group, ...]
    routes: tuple[Route, ...]  # in host order

    def group(self, group_id: int) -> Group:
        for g in self.groups:
            if g.group_id == group_id:
                return g
        raise KeyError(group_id)

    def route_to(self, ip: str) -> Route:
        for r in self.routes:
            if r.ip == ip:
                return r
        raise KeyError(ip)

    def summary(self) -> dict:
        return {"dpid": self.dpid, "switch": self.switch, "groups": len(self.groups),
                "routes": len(self.routes),
                "group_routes": sum(r.group_id is not None for r in self.routes),
                "direct_routes": sum(r.group_id is None for r in self.routes)}


def switch_table(topo: Topology, switch: str) -> SwitchTable:
    hosts = topo.hosts
    ecmp: dict[str, tuple[int, ...]] = {
        h: tuple(sorted(Topology.ofport(p) for p in topo.next_hops(switch, h))) for h in hosts}
    multi = sorted({ports for ports in ecmp.values() if len(ports) > 1})
    gid = {ports: i + 1 for i, ports in enumerate(multi)}
    routes = []
    for h in hosts:
        ip = topo.nodes[h].ip
        if not ip:
            raise ValueError(f"host {h} has no IPv4 address")
        ports = ecmp[h]
        if not ports:
            raise ValueError(f"{switch} has no path to {h}")
        routes.append(Route(h, ip, ports, gid.get(ports)))
    return SwitchTable(topo.dpid(switch), switch,
                       tuple(Group(gid[p], p) for p in multi), tuple(routes))


def switch_tables(topo: Topology) -> dict[int, SwitchTable]:
    """Every switch's table, keyed by datapath id."""
    return {topo.dpid(s): switch_table(topo, s) for s in topo.switches}


def load_topology(path: str | Path) -> Topology:
    """The topology from a JSON file holding ``Topology.to_dict()``."""
    return Topology.from_dict(json.loads(Path(path).read_text()))


def read_ready_file(path: str | Path) -> set[int]:
    """Datapath ids the controller has reported ready.

    A line still being written (no trailing newline yet, or not valid JSON) is ignored, so a
    reader polling the file never sees a switch before its record is complete.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return set()
    ready = set()
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            ready.add(int(json.loads(line)["dpid"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ready
