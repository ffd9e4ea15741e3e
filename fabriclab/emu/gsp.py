"""GSE in the host agent: the GSP in the NIC (``gse.placement: nic``), on real packets.

The decisions are the sans-IO objects the simulator uses (``fabriclab.cc_algorithms.gse``:
``Voq``, ``EgressScheduler``, ``ReorderBuffer``); this module moves their messages:

* REQUESTs go to GSOS (central mode: UDP to the destination's IP, port 4792, which the leaf
  punts to the controller) or to the destination agent (egress mode: port 4793);
* GRANTs arrive on port 4792 from GSOS, or on port 4793 from a destination agent (egress
  mode); GSOS also answers every REQUEST message at once with an empty GRANT (0 bytes), its
  receipt: the GSP's proof that GSOS is alive;
* each container's packets carry the tag (source, destination port, sequence, index, last,
  path) after the BTH, and the path in the IP DSCP (path + 1), which the leaf matches to
  pick the uplink;
* received containers go through a per-source :class:`ReorderBuffer` before the transport.

Fallback when GSOS is gone: a GSP that waits for grants and has heard nothing from GSOS
(no receipt, no grant) for ``fallback_ns`` of fabric time probes it with an empty REQUEST;
if a REQUEST message (a probe or a real one) has had no receipt for ``fallback_ns``, the
GSP switches to egress mode for good: it sends what it
still waits for to the destinations' agents (port 4793), which grant from their own
``EgressScheduler`` (transit capacity is then no longer tracked).  The time it switched is
in the agent's results.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import struct
from collections import defaultdict, deque

from ..cc_algorithms.gse import EgressScheduler, GseParams, ReorderBuffer, Voq
from ..wire import roce as P

ECT0 = 0x02


class AgentGsp:
    def __init__(self, agent, cfg: dict):
        self.agent = agent
        self.params = GseParams(**cfg["params"])
        self.me = cfg["gsp_id"]
        self.ip_of = {int(k): v for k, v in cfg["ip_of"].items()}  # gsp id -> IP
        self.gsp_of = {v: k for k, v in self.ip_of.items()}
        self.n_paths = {int(k): v for k, v in cfg["n_paths"].items()}  # dst gsp -> paths
        self.mode = self.params.scheduler  # "central" until a fallback, or "egress"
        self.fallback_ns = cfg["fallback_ns"]
        self.reorder_timeout = cfg["reorder_timeout_ns"]
        self.fell_back_at = None
        self.header = cfg["frame_overhead"]
        self.voqs: dict[int, Voq] = {}
        self.req_times: dict[int, deque] = defaultdict(deque)
        self.unreceipted: deque = deque()  # send times of REQUEST messages GSOS has not receipted
        self.receipts = 0
        self.probes = 0
        self.last_heard = 0  # fabric ns GSOS last answered (or the start)
        self.reorder: dict[int, ReorderBuffer] = {}
        # egress mode: this host's own port scheduler, in fabric time at the fabric rate
        self.sched = EgressScheduler(agent.line, agent.mtu, self.header,
                                     self.params.grant_overcommit)
        self.requests = self.grants = self.grants_given = 0
        self.control_bytes = 0
        self.grant_latency: list[int] = []
        # Control datagrams are held like data frames (see the agent): for the path's
        # propagation delay, and GSOS's GRANTs for the control network's round trip
        # (``gse.control_latency_ns`` each way, as in the simulator).
        self.held: list = []  # heap of (due fabric ns, seq, message)
        self._held_seq = itertools.count()
        self.delay_of = dict(agent.delay_of)
        self.delay_of[P.GSOS_IP] = 2 * self.params.control_latency_ns
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((agent.ip, P.GSE_PORT))
        self.sock.setblocking(False)
        self.esock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.esock.bind((agent.ip, P.GSE_EGRESS_PORT))
        self.esock.setblocking(False)

    # -- sender side ----------------------------------------------------------------------
    def voq(self, dst: int) -> Voq:
        v = self.voqs.get(dst)
        if v is None:
            v = self.voqs[dst] = Voq(self.params, self.n_paths.get(dst, 1))
        return v

    def ask(self, dst: int, pending_bytes: int, now: int) -> None:
        sizes = self.voq(dst).requests_to_send(pending_bytes)
        if sizes:
            self.requests += len(sizes)
            self.req_times[dst].extend([now] * len(sizes))
            self._send_request(dst, sizes)

    def _send_request(self, dst: int, sizes: list[int]) -> None:
        port = P.GSE_PORT if self.mode == "central" else P.GSE_EGRESS_PORT
        if self.mode == "central":
            self.unreceipted.append(self.agent.now())
        msg = P.gse_request(self.me, dst, sizes)
        self._send(msg, self.ip_of[dst], port)

    def _send(self, msg: bytes, ip: str, port: int) -> None:
        try:
            self.sock.sendto(msg, (ip, port))
            self.control_bytes += len(msg) + P.L2_L4_BYTES
        except BlockingIOError:
            self.agent.counters["send_blocked"] += 1

    def tag(self, dst: int, payload: int, last_data: bool) -> tuple[bytes, int, bool]:
        """(tag bytes, IP TOS with the path's DSCP, container closed?) for one data packet."""
        seq, path, index, last = self.voq(dst).tag(payload, last_data)
        tos = ((path + 1) << 2 | ECT0) if self.n_paths.get(dst, 1) > 1 else ECT0
        return P.gse_tag(self.me, dst, seq, index, last, path), tos, last

    def credit(self, dst: int) -> int:
        v = self.voqs.get(dst)
        return v.credit if v is not None else 0

    def check_fallback(self, now: int) -> None:
        """GSOS silent for too long: ask the destinations instead, from now on."""
        if self.mode != "central" or self.fallback_ns is None:
            return
        if not self.unreceipted:
            waiting = [d for d, v in self.voqs.items() if v.asked]
            if waiting and now - self.last_heard >= self.fallback_ns:
                self.probes += 1  # GSOS may have taken our requests and died: ask it
                self.last_heard = now
                self._send_request(waiting[0], [])
            return
        if now - self.unreceipted[0] < self.fallback_ns:
            return
        self.mode = "egress"
        self.fell_back_at = now
        for dst, v in self.voqs.items():
            if v.asked:
                self._send_request(dst, list(v.asked))

    # -- control datagrams ----------------------------------------------------------------
    def poll(self, now: int) -> list[int]:
        """Read GRANTs and (egress mode) REQUESTs; returns destinations that got credit."""
        credited: list[int] = []
        held = self.held
        for sock in (self.sock, self.esock):
            while True:
                try:
                    buf, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                msg = P.parse_gse_control(buf)
                if msg is None:
                    continue
                d = self.delay_of.get(addr[0])
                if d:
                    heapq.heappush(held, (now + d, next(self._held_seq), msg))
                else:
                    self._apply(msg, now, credited)
        while held and held[0][0] <= now:
            self._apply(heapq.heappop(held)[2], now, credited)
        return credited

    def next_held_ns(self) -> int | None:
        return self.held[0][0] if self.held else None

    def _apply(self, msg, now: int, credited: list[int]) -> None:
        if msg[0] == "grant" and msg[3] == 0:  # GSOS's receipt for a REQUEST message
            self.receipts += 1
            self.last_heard = now
            if self.unreceipted:
                self.unreceipted.popleft()
        elif msg[0] == "grant":
            _, _, dst, nbytes, path = msg
            self.last_heard = now
            self.grants += 1
            times = self.req_times[dst]
            if times:
                self.grant_latency.append(now - times.popleft())
            self.voq(dst).on_grant(nbytes, path)
            credited.append(dst)
        else:  # a REQUEST for this host's port
            _, src, _, sizes = msg
            for n in sizes:
                self.sched.request(src, n)

    def due_grants(self, now: int) -> int | None:
        """Give the grants this host's port scheduler owes; returns when the next is due."""
        while self.sched.has_pending():
            t = self.sched.next_time(now)
            if t > now:
                return t
            src, nbytes = self.sched.grant(now)
            self.grants_given += 1
            self._send(P.gse_grant(src, self.me, nbytes, None), self.ip_of[src],
                       P.GSE_EGRESS_PORT)
        return None

    # -- receiver side --------------------------------------------------------------------
    def reorder_accept(self, now: int, buf: bytes, item) -> list:
        src, _, seq, index, last, _ = P.parse_gse_tag(buf)
        rb = self.reorder.get(src)
        if rb is None:
            rb = self.reorder[src] = ReorderBuffer()
        return rb.accept(now, seq, index, last, item, len(buf))

    def release_stale(self, now: int) -> list:
        """Items of containers given up on (a packet was lost), in order."""
        out = []
        for rb in self.reorder.values():
            if rb.held:
                out += rb.release_stale(now, self.reorder_timeout)
        return out

    def results(self) -> dict:
        delays = [d for rb in self.reorder.values() for d in rb.delays]
        return {"requests": self.requests, "grants": self.grants, "receipts": self.receipts, "probes": self.probes,
                "grants_given": self.grants_given, "control_bytes": self.control_bytes,
                "grant_latency": self.grant_latency,
                "reorder_max_bytes": max((rb.max_held_bytes for rb in self.reorder.values()),
                                         default=0),
                "reorder_delays": delays, "fell_back_at": self.fell_back_at,
                "reorder_skipped": sum(rb.skipped for rb in self.reorder.values()),
                "mode": self.mode}


def send_with_tos(sock, frame: bytes, tos: int) -> None:
    """Send one datagram with its own IP TOS byte (DSCP + ECN) as ancillary data."""
    sock.sendmsg([frame], [(socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", tos))])
