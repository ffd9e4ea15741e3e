"""GSOS, GSE's central scheduler, as the controller runs it (pure: no os-ken, no sockets).

:class:`Gsos` gives grants exactly as the simulator's ``GrantDispatcher`` (in ``central``
mode) does: per destination host port one
:class:`~fabriclab.cc_algorithms.gse.EgressScheduler` (round-robin over the requesting
GSPs, grants spaced so that their wire bytes never exceed the port's rate x overcommit),
and one :class:`~fabriclab.cc_algorithms.gse.TransitTracker` over the fabric links: the
grant takes the path whose transit links are free soonest and reserves its wire bytes on
them; while even that path is still busy with earlier grants, the grant waits.

Time is CLOCK_MONOTONIC nanoseconds.  The rates are the *emulated* ones (topology rate x
``scale``, ``FABRICLAB_EMU_SCALE``), so the controller needs no time dilation.  Each
destination port is a timer: :meth:`Gsos.due` fires every timer whose time has come, in
time order, each at its own scheduled time (not at ``now``), so a driver that wakes late
catches up on the schedule without ever granting faster than the rate: the wire bytes
granted towards a port by time t stay within rate x (t - first grant) + one grant.

Identifiers on the wire: a GSP id and a destination port id are host indices (``h<n>`` ->
``n``).  Path k = the k-th uplink of the source leaf in port order (spine k in a
leaf-spine); see :func:`fabriclab.controllers.routing.transit_paths`.

Also here, pure as well: the REQUEST frame parser (:func:`parse_request_frame`) and the
GRANT frame builder (:func:`grant_frame`) the os-ken app (``gsos_app``) uses.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import struct
from collections.abc import Mapping
from typing import NamedTuple

from fabriclab.cc_algorithms.gse import EgressScheduler, TransitTracker, wire_bytes
from fabriclab.emu import packets
from fabriclab.topologies import PortId, Topology

from .routing import (ENV_EMU_SCALE, ENV_GSE_HEADER, ENV_GSE_MTU, fabric_link_rates,
                      host_port_rates, transit_paths)

DEFAULT_MTU = 1000
DEFAULT_HEADER = 58


class Grant(NamedTuple):
    src_gsp: int  # the grantee (host index)
    dst_port: int  # the destination port the credit is for (host index)
    nbytes: int  # payload bytes of credit
    path: int | None  # the path its container takes (DSCP path + 1); None: no path


def config_from_env(env: Mapping[str, str]) -> dict:
    """``scale``, ``mtu`` and ``header`` keyword arguments of :class:`Gsos` from the
    environment (defaults 1.0, 1000, 58); ValueError on a bad value."""
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

    return {"scale": num(ENV_EMU_SCALE, float, 1.0), "mtu": num(ENV_GSE_MTU, int, DEFAULT_MTU),
            "header": num(ENV_GSE_HEADER, int, DEFAULT_HEADER)}


def host_index(host: str) -> int:
    return int(host[1:])


class Gsos:
    """The central scheduler.  Not thread-safe: a driver serialises calls (a lock)."""

    def __init__(self, topo: Topology, scale: float = 1.0, mtu: int = DEFAULT_MTU,
                 header: int = DEFAULT_HEADER, overcommit: float = 1.0):
        if not scale > 0 or mtu <= 0 or header < 0 or not overcommit > 0:
            raise ValueError("scale, mtu and overcommit must be > 0, header >= 0")
        self.topo = topo
        self.scale, self.mtu, self.header, self.overcommit = scale, mtu, header, overcommit
        self.hosts: dict[int, str] = {host_index(h): h for h in topo.hosts}
        self.port_rate: dict[int, float] = {host_index(h): r * scale
                                            for h, r in host_port_rates(topo).items()}
        self.tracker = TransitTracker()
        for link, rate in fabric_link_rates(topo).items():
            self.tracker.add_link(link, rate * scale)
        self.sched: dict[int, EgressScheduler] = {}  # destination port -> its scheduler
        self._paths: dict[tuple[int, int], list[list[PortId]]] = {}
        self._heap: list[tuple[int, int, int]] = []  # (time, seq, dst_port): armed timers
        self._armed: set[int] = set()
        self._seq = itertools.count()
        # counters
        self.request_messages = 0
        self.requests = 0  # grants asked for (one per size in a REQUEST)
        self.requested_bytes = 0
        self.grants = 0
        self.granted_bytes = 0
        self.transit_waits = 0  # times a grant was held back by busy transit links

    # -- queries ---------------------------------------------------------------------------
    def host(self, index: int) -> str:
        try:
            return self.hosts[index]
        except KeyError:
            raise ValueError(f"no host h{index} in the topology") from None

    def paths(self, src_gsp: int, dst_port: int) -> list[list[PortId]]:
        """Transit links of each path from ``src_gsp`` to ``dst_port``, by path index."""
        key = (src_gsp, dst_port)
        p = self._paths.get(key)
        if p is None:
            p = self._paths[key] = transit_paths(self.topo, self.host(src_gsp),
                                                 self.host(dst_port))
        return p

    def next_time(self) -> int | None:
        """When :meth:`due` next has something to give (ns), None when nothing is pending."""
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        """Grants asked for and not given yet."""
        return sum(len(q) for s in self.sched.values() for q in s.pending.values())

    def stats(self) -> dict:
        return {"request_messages": self.request_messages, "requests": self.requests,
                "requested_bytes": self.requested_bytes, "grants": self.grants,
                "granted_bytes": self.granted_bytes, "pending": self.pending(),
                "transit_waits": self.transit_waits}

    # -- driving ---------------------------------------------------------------------------
    def request(self, now_ns: int, src_gsp: int, dst_port: int, sizes) -> None:
        """A REQUEST from GSP ``src_gsp``: one grant wanted per entry of ``sizes`` (payload
        bytes) towards host port ``dst_port``.  ValueError (and nothing recorded) if a host
        is unknown, the two are the same or a size is not positive."""
        sizes = list(sizes)
        self.paths(src_gsp, dst_port)  # validates both ids and src != dst
        if any(not isinstance(n, int) or n <= 0 for n in sizes):
            raise ValueError(f"request sizes must be positive integers: {sizes}")
        self.request_messages += 1
        if not sizes:
            return
        s = self.sched.get(dst_port)
        if s is None:
            s = self.sched[dst_port] = EgressScheduler(self.port_rate[dst_port], self.mtu,
                                                       self.header, self.overcommit)
        for n in sizes:
            s.request(src_gsp, n)
        self.requests += len(sizes)
        self.requested_bytes += sum(sizes)
        self._arm(dst_port, now_ns)

    def due(self, now_ns: int) -> list[Grant]:
        """Every grant whose time has come by ``now_ns``, in the order given."""
        out: list[Grant] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            t, _, dst = heapq.heappop(heap)
            self._armed.discard(dst)
            self._fire(t, dst, out)
        return out

    def _arm(self, dst: int, now_ns: int) -> None:
        s = self.sched[dst]
        if dst in self._armed or not s.has_pending():
            return
        self._push(s.next_time(now_ns), dst)

    def _push(self, t: int, dst: int) -> None:
        self._armed.add(dst)
        heapq.heappush(self._heap, (t, next(self._seq), dst))

    def _fire(self, t: int, dst: int, out: list[Grant]) -> None:
        """GrantDispatcher._fire of the simulator, at the timer's time ``t``."""
        s = self.sched[dst]
        src, nbytes = s.head()
        links = self.paths(src, dst)
        path, when = self.tracker.earliest(links)
        if when > t:  # the transit links are still busy with earlier grants
            self.transit_waits += 1
            self._push(int(when) + 1, dst)
            return
        self.tracker.reserve(links[path], t, wire_bytes(nbytes, self.mtu, self.header))
        src, nbytes = s.grant(t)
        self.grants += 1
        self.granted_bytes += nbytes
        out.append(Grant(src, dst, nbytes, path))
        self._arm(dst, t)


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
                     packets.gse_grant(grant.src_gsp, grant.dst_port, grant.nbytes, grant.path))


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
