"""GSOS as the controller runs it: the os-ken side of
:class:`fabriclab.cc_algorithms.gsos.Gsos` (pure: no os-ken, no sockets).

* :func:`make_gsos` -- the scheduler for a topology: GSP and port ids are host indices
  (``h<n>`` -> ``n``, as on the wire), the rates are the *emulated* ones (topology rate x
  ``scale``, ``FABRICLAB_EMU_SCALE``), so the controller needs no time dilation, and path k
  is the k-th uplink of the source leaf (spine k in a leaf-spine; see
  :func:`fabriclab.controllers.routing.transit_paths`).  Time is CLOCK_MONOTONIC ns.
* :func:`config_from_env` -- its settings from the environment ``run`` passes;
* the REQUEST frame parser (:func:`parse_request_frame`) and the GRANT frame builder
  (:func:`grant_frame`) the os-ken app (``gsos_app``) uses.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping

from fabriclab.cc_algorithms.gse import GseParams
from fabriclab.cc_algorithms.gsos import Grant, Gsos
from fabriclab.topologies import Topology
from fabriclab.wire import roce as packets

from .routing import (ENV_EMU_SCALE, ENV_GSE_HEADER, ENV_GSE_MTU, ENV_GSE_OVERCOMMIT, fabric_link_rates,
                      host_port_rates, transit_paths)

DEFAULT_MTU = 1000
DEFAULT_HEADER = 58


def config_from_env(env: Mapping[str, str]) -> dict:
    """``scale``, ``mtu``, ``header`` and ``overcommit`` keyword arguments of
    :func:`make_gsos` from the environment (defaults 1.0, 1000, 58 and the spec's
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
           "header": num(ENV_GSE_HEADER, int, DEFAULT_HEADER)}
    if env.get(ENV_GSE_OVERCOMMIT, "").strip():
        cfg["overcommit"] = num(ENV_GSE_OVERCOMMIT, float, None)
    return cfg


def host_index(host: str) -> int:
    return int(host[1:])


def make_gsos(topo: Topology, scale: float = 1.0, mtu: int = DEFAULT_MTU,
              header: int = DEFAULT_HEADER, overcommit: float | None = None) -> Gsos:
    """GSOS over ``topo``'s host ports and fabric links, at the emulated rates (bit/s x
    ``scale``, rounded to whole bit/s), granting at ``overcommit`` x a port's rate (None:
    the spec's default ``gse.grant_overcommit``), spaced where the data arrives (each
    source's reach, from the topology's delays and rates, in real ns).  A REQUEST naming a
    host the topology does not have, or a host to itself, is refused with ValueError."""
    if not scale > 0:
        raise ValueError("scale must be > 0")
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

    def transit(src: int, dst: int) -> list[list]:
        return [[(link, link_rate[link]) for link in path]
                for path in transit_paths(topo, host(src), host(dst))]

    def reach(src: int, dst: int) -> float:  # real ns: fabric ns stretched by 1 / scale
        return topo.reach_ns(host(src), host(dst), mtu + header) / scale

    return Gsos(port_rate, mtu, header, overcommit, transit, reach=reach)


# -- frames ------------------------------------------------------------------------------
_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
ETH_TYPE_IPV4 = 0x0800
IP_TTL = 64


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int,
              payload: bytes, dscp: int = 0, ttl: int = IP_TTL) -> bytes:
    """Ethernet / IPv4 (no options, valid header checksum) / UDP (valid checksum)."""
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = _UDP.size + len(payload)
    udp_sum = _csum(src + dst + struct.pack("!BBH", 0, 17, udp_len)
                    + _UDP.pack(sport, dport, udp_len, 0) + payload) or 0xFFFF
    ip = _IPV4.pack(0x45, dscp << 2, 20 + udp_len, 0, 0x4000, ttl, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return (_ETH.pack(_mac(dst_mac), _mac(src_mac), ETH_TYPE_IPV4) + ip
            + _UDP.pack(sport, dport, udp_len, udp_sum) + payload)


def grant_frame(topo: Topology, grant: Grant) -> bytes:
    """The GRANT as GSOS sends it to the grantee host: from GSOS_MAC / GSOS_IP, UDP port
    4792 both ways, DSCP 0, TTL 64."""
    host = f"h{grant.src_gsp}"
    return udp_frame(packets.GSOS_MAC, topo.host_mac(host), packets.GSOS_IP, topo.nodes[host].ip,
                     packets.GSE_PORT, packets.GSE_PORT,
                     packets.gse_grant(grant.src_gsp, grant.dst_port, grant.nbytes, grant.path,
                                       grant.idle))


def grant_egress(topo: Topology, src_gsp: int) -> tuple[int, int]:
    """(dpid, OpenFlow port) a GRANT for GSP ``src_gsp`` leaves by: its host's leaf port."""
    host = f"h{src_gsp}"
    peer = topo.peer(host, 0)
    return topo.dpid(peer.node), Topology.ofport(peer.port)


def udp_payload(frame: bytes, dport: int | None = None) -> bytes | None:
    """The UDP payload of an Ethernet / IPv4 / UDP frame (to ``dport`` if given), else None.
    A VLAN tag or a fragment is not expected here and gives None."""
    if len(frame) < _ETH.size + 20 + _UDP.size:
        return None
    if _ETH.unpack_from(frame)[2] != ETH_TYPE_IPV4:
        return None
    ip = _ETH.size
    vihl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", frame, ip)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or proto != 17 or frag & 0x3FFF:
        return None
    udp = ip + ihl
    if len(frame) < udp + _UDP.size:
        return None
    _, dp, length, _ = _UDP.unpack_from(frame, udp)
    if dport is not None and dp != dport:
        return None
    end = min(udp + max(length, _UDP.size), ip + total, len(frame))
    return bytes(frame[udp + _UDP.size:end])


def parse_request_frame(frame: bytes) -> tuple[int, int, list[int]] | None:
    """(src_gsp, dst_port, sizes) of a REQUEST frame to UDP 4792, else None."""
    body = udp_payload(frame, packets.GSE_PORT)
    if body is None:
        return None
    msg = packets.parse_gse_control(body)
    if msg is None or msg[0] != "request":
        return None
    return msg[1], msg[2], msg[3]
