"""GSOS as the controller runs it: the os-ken side of
:class:`fabriclab.cc_algorithms.gsos.Gsos` (pure: no os-ken, no sockets).

* :func:`make_gsos` -- the scheduler for a topology: GSP and port ids are host indices
  (``h<n>`` -> ``n``, as on the wire), the rates are the *emulated* ones (topology rate x
  ``scale``, ``FABRICLAB_EMU_SCALE``), so the controller needs no time dilation, and path k
  is the k-th uplink of the source leaf (spine k in a leaf-spine; see
  :func:`fabriclab.controllers.routing.transit_paths`).  Time is CLOCK_MONOTONIC ns.
  With ``placement="leaf"`` the GSPs are the leaves' (one per leaf, its id that of the
  leaf's first host, :func:`~fabriclab.controllers.routing.leaf_gsp_id`); destination
  ports are still hosts.
* :func:`config_from_env` -- its settings from the environment ``run`` passes;
* the REQUEST frame parser (:func:`parse_request_frame`), the GRANT frame builder
  (:func:`grant_frame`) and where a GRANT leaves (:func:`grant_egress`) the os-ken app
  (``gsos_app``) uses.
"""

from __future__ import annotations

from collections.abc import Mapping

from fabriclab.cc_algorithms.gse import GseParams
from fabriclab.cc_algorithms.gsos import Grant, Gsos
from fabriclab.topologies import Topology
from fabriclab.wire import roce as packets
from fabriclab.wire.ipv4 import udp_frame, udp_payload  # noqa: F401  (part of this module's API)

from .routing import (ENV_EMU_SCALE, ENV_GSE_HEADER, ENV_GSE_MTU, ENV_GSE_OVERCOMMIT,
                      ENV_GSE_PLACEMENT, check_gse_placement, fabric_link_rates, gsp_leaf,
                      gsp_ofport, host_port_rates, leaf_gsp_id, transit_paths)

DEFAULT_MTU = 1000
DEFAULT_HEADER = 58


def config_from_env(env: Mapping[str, str]) -> dict:
    """``scale``, ``mtu``, ``header``, ``placement`` and ``overcommit`` keyword arguments
    of :func:`make_gsos` from the environment (defaults 1.0, 1000, 58, "nic" and the spec's
    ``gse.grant_overcommit``); ValueError on a bad value."""
    def num(name, conv, default):
        text = env.get(name, "").strip()
        if not text:
            return default
        try:
            v = conv(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a valid {conv.__name__}") from None
        if not 0 < v < float("inf"):
            raise ValueError(f"{name}={text!r} must be a finite number > 0")
        return v

    cfg = {"scale": num(ENV_EMU_SCALE, float, 1.0), "mtu": num(ENV_GSE_MTU, int, DEFAULT_MTU),
           "header": num(ENV_GSE_HEADER, int, DEFAULT_HEADER),
           "placement": check_gse_placement(env.get(ENV_GSE_PLACEMENT, "").strip())}
    if env.get(ENV_GSE_OVERCOMMIT, "").strip():
        cfg["overcommit"] = num(ENV_GSE_OVERCOMMIT, float, None)
    return cfg


def host_index(host: str) -> int:
    return int(host[1:])


def make_gsos(topo: Topology, scale: float = 1.0, mtu: int = DEFAULT_MTU,
              header: int = DEFAULT_HEADER, overcommit: float | None = None,
              placement: str = "nic") -> Gsos:
    """GSOS over ``topo``'s host ports and fabric links, at the emulated rates (bit/s x
    ``scale``, rounded to whole bit/s), granting at ``overcommit`` x a port's rate (None:
    the spec's default ``gse.grant_overcommit``), spaced where the data arrives (each
    source's reach, from the topology's delays and rates, in real ns).

    ``placement``: ``"nic"``, a GSP per host (its index); a REQUEST naming a host the
    topology does not have, or a host to itself, is refused with ValueError.  ``"leaf"``,
    a GSP per leaf (:func:`~fabriclab.controllers.routing.leaf_gsp_id`, the index of the
    leaf's first host): a REQUEST from an id that is no leaf's GSP is refused; one for a
    host of the GSP's own leaf (its own host's index included) has one path with no transit
    link, and reaches the port from the leaf."""
    if not scale > 0:
        raise ValueError("scale must be > 0")
    placement = check_gse_placement(placement)
    if overcommit is None:
        overcommit = GseParams.defaults().grant_overcommit
    hosts = {host_index(h): h for h in topo.hosts}
    port_rate = {host_index(h): round(r * scale) for h, r in host_port_rates(topo).items()}
    link_rate = {link: round(r * scale) for link, r in fabric_link_rates(topo).items()}

    def host(index) -> str:
        try:
            return hosts[index]
        except KeyError:
            raise ValueError(f"no host h{index} in the topology") from None

    if placement == "leaf":
        tors = {topo.tor_of(h) for h in topo.hosts}
        leaf_of = {leaf_gsp_id(topo, s): s for s in tors}  # GSP id -> its leaf

        def leaf(gsp: int) -> str:
            try:
                return leaf_of[gsp]
            except (KeyError, TypeError):
                raise ValueError(f"no leaf GSP with id {gsp!r} (placement leaf: "
                                 f"{sorted(leaf_of)})") from None

        def transit(src: int, dst: int) -> list[list]:
            ls, d = leaf(src), host(dst)
            if topo.tor_of(d) == ls:  # own leaf, own first host included: no transit link
                return [[]]
            return [[(link, link_rate[link]) for link in path]
                    for path in transit_paths(topo, topo.hosts[src], d)]

        def reach(src: int, dst: int) -> float:  # real ns, from the leaf
            return topo.reach_ns(leaf(src), host(dst), mtu + header) / scale
    else:
        def transit(src: int, dst: int) -> list[list]:
            return [[(link, link_rate[link]) for link in path]
                    for path in transit_paths(topo, host(src), host(dst))]

        def reach(src: int, dst: int) -> float:  # real ns: fabric ns stretched by 1 / scale
            return topo.reach_ns(host(src), host(dst), mtu + header) / scale

    return Gsos(port_rate, mtu, header, overcommit, transit, reach=reach)


# -- frames ------------------------------------------------------------------------------
def grant_frame(topo: Topology, grant: Grant) -> bytes:
    """The GRANT as GSOS sends it to the grantee host: from GSOS_MAC / GSOS_IP, UDP port
    4792 both ways, DSCP 0, TTL 64.  Placement leaf: addressed to the leaf's first host all
    the same (:func:`grant_egress` puts it out of the GSP port, and the GSP daemon reads the
    UDP payload whatever the addresses)."""
    host = f"h{grant.src_gsp}"
    return udp_frame(packets.GSOS_MAC, topo.host_mac(host), packets.GSOS_IP, topo.nodes[host].ip,
                     packets.GSE_PORT, packets.GSE_PORT,
                     packets.gse_grant(grant.src_gsp, grant.dst_port, grant.nbytes, grant.path,
                                       grant.idle))


def grant_egress(topo: Topology, src_gsp: int, placement: str = "nic") -> tuple[int, int]:
    """(dpid, OpenFlow port) a GRANT for GSP ``src_gsp`` leaves by: placement nic, its
    host's leaf port; placement leaf, its leaf's GSP port."""
    if check_gse_placement(placement) == "leaf":
        leaf = gsp_leaf(topo, src_gsp)
        return topo.dpid(leaf), gsp_ofport(topo, leaf)
    host = f"h{src_gsp}"
    peer = topo.peer(host, 0)
    return topo.dpid(peer.node), Topology.ofport(peer.port)


def parse_request_frame(frame: bytes) -> tuple[int, int, list[int]] | None:
    """(src_gsp, dst_port, sizes) of a REQUEST frame to UDP 4792, else None."""
    body = udp_payload(frame, packets.GSE_PORT)
    if body is None:
        return None
    msg = packets.parse_gse_control(body)
    if msg is None or msg[0] != "request":
        return None
    return msg[1], msg[2], msg[3]
