"""The host agent: a RoCE NIC model in user space, one process per Mininet host.

Run inside the host's network namespace as ``python -m fabriclab.emu.agent PLAN.json``.
It sends and receives RoCEv2 frames (:mod:`fabriclab.wire.roce`) over UDP sockets, paces
each flow with the same congestion-control object the simulator uses
(``fabriclab.cc_algorithms``), answers CE-marked data with CNPs (at most one per flow per
``cnp_interval``), acknowledges, NACKs a sequence gap (go-back-N) and retransmits on a
timeout.  It is the simulator's ``fabric.Host`` on real packets.

Time: the agent runs in *fabric time*, real time divided by the emulation's time dilation
factor (``tdf``) from the common start ``t0`` (CLOCK_MONOTONIC, shared by all namespaces).
Every algorithm sees fabric nanoseconds and fabric rates; only the sockets see real time.

Protocol with the orchestrator (stdin/stdout lines): the agent prints ``READY`` once its
sockets are bound, starts its fabric clock on ``GO <t0 ns>``, prints ``DONE`` once every
flow it sends is acknowledged and every flow it receives is complete; it keeps answering
until it reads ``STOP`` (or stdin closes, or the stop time passes), then writes its results
to ``plan['out']`` (atomically) and exits 0.

Propagation delay without netem: where the kernel cannot delay packets on the links, the
agent holds every frame it sends to another host for the propagation delay of the path to
it (``plan['path_delay_ns']``, fabric ns, by peer IP) before handing it to the socket: the
links' delays lumped into the sender's NIC.  Round trips, and so every control loop (ACK
clocking, CNPs, HPCC's INT feedback), take as long as the spec says, and packets reach the
last hop (where an incast queues) when they would have; switches earlier on the path see
them later than they would have.  GSE's control datagrams are held on receipt instead (see
:mod:`fabriclab.emu.gsp`).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import socket
import sys
import time
from pathlib import Path

from ..atomic import write_json_atomic
from ..cc_algorithms import CONGESTION_CONTROL
from ..spec import load as load_spec
from ..units import BIT_NS
from ..wire import roce as P
from .gsp import AgentGsp, send_with_tos

RX_BUF = 8 << 20
TX_BUF = 1 << 20
# How far behind schedule pacing may catch up in one go (packets): absorbs wake-up jitter
# without turning a late wake-up into a burst.
CATCH_UP_PKTS = 2
MIN_WAIT_NS = 50_000
SO_NO_CHECK = 11  # Linux: send IPv4 UDP with checksum 0


def _send_frame(sock, frame: bytes, addr, tos: int | None) -> None:
    if addr is not None:
        sock.sendto(frame, addr)
    elif tos is not None:
        send_with_tos(sock, frame, tos)
    else:
        sock.send(frame)


class Flow:
    __slots__ = ("id", "src", "dst", "size", "n_pkts", "start_ns", "deps", "deps_left",
                 "dependents", "sock", "hdr", "cc", "started_ns", "next_avail", "nxt", "una",
                 "max_sent", "timer_at", "last_progress", "rto_at", "sender_done_ns",
                 "expected", "delivered", "unacked", "last_cnp", "last_nack_psn",
                 "last_nack_ns", "end_ns", "is_src", "is_dst", "peer_ip", "cnps_rx", "retx",
                 "dst_gsp", "int_prev")

    def __init__(self, d: dict, host: str, mtu: int):
        self.id = d["id"]
        self.src, self.dst = d["src"], d["dst"]
        self.size = d["size"]  # None: unlimited
        self.n_pkts = -(-self.size // mtu) if self.size is not None else 1 << 24
        if self.n_pkts >= 1 << 24:
            self.n_pkts = (1 << 24) - 1  # the 24-bit PSN space; unlimited flows stop earlier
        self.start_ns = d["start_ns"]
        self.deps = d["deps"]
        self.deps_left = len(self.deps)
        self.dependents: list[Flow] = []
        self.is_src = self.src == host
        self.is_dst = self.dst == host
        self.peer_ip = d["dst_ip"] if self.is_src else d["src_ip"]
        self.sock = None
        self.hdr = P.DataHeader(self.id)
        self.cc = None
        self.started_ns = None
        self.next_avail = 0
        self.nxt = self.una = self.max_sent = 0  # sender, in packets
        self.timer_at = None
        self.last_progress = 0
        self.rto_at = None
        self.sender_done_ns = None
        self.expected = 0  # receiver, next psn
        self.delivered = 0
        self.unacked = 0
        self.last_cnp = -(1 << 62)
        self.last_nack_psn = -1
        self.last_nack_ns = 0
        self.end_ns = None
        self.cnps_rx = 0
        self.retx = 0
        self.dst_gsp = d.get("dst_gsp")
        self.int_prev = []  # per hop: (last raw tx_bytes, unwrapped)


class Agent:
    def __init__(self, plan: dict):
        self.plan = plan
        self.host = plan["host"]
        self.ip = plan["ip"]
        self.tdf = plan["tdf"]
        self.t0 = None  # real CLOCK_MONOTONIC ns of fabric time 0: the orchestrator's "GO"
        self.stop_ns = plan.get("stop_ns")
        self.mtu = plan["mtu"]
        self.line = plan["line_rate_bps"]
        self.reliable = plan["reliable"]
        self.ack_every = plan["ack_every"]
        self.cnp_interval = plan["cnp_interval_ns"]
        self.send_cnp = plan["send_cnp"]
        self.rto = plan["rto_ns"]
        self.nack_gap = plan["nack_gap_ns"]
        spec = load_spec(plan["spec_path"])
        self.make_cc = lambda: CONGESTION_CONTROL[plan["congestion_control"]](
            spec, self.line, plan["base_rtt_ns"])
        self.flows = {d["id"]: Flow(d, self.host, self.mtu) for d in plan["flows"]}
        for f in self.flows.values():
            if f.is_src:  # a flow's dependencies matter to its sender only
                for dep in f.deps:
                    self.flows[dep].dependents.append(f)
        self.senders = [f for f in self.flows.values() if f.is_src]
        self.receivers = [f for f in self.flows.values() if f.is_dst]
        self.active: list[Flow] = []
        self.rr = 0
        self.nic_free = 0
        self.payload = bytes(self.mtu)
        self.counters = dict(tx_bytes=0, tx_pkts=0, rx_bytes=0, goodput_bytes=0, cnps_sent=0, cnps_rx=0,
                             nacks_sent=0, timeouts=0, retx_bytes=0, ce_rx=0, send_blocked=0,
                             max_lag_ns=0)
        self.sample_every = plan["sample_interval_ns"]
        self.next_sample = 0
        self.tracked = [self.flows[i] for i in plan["track_flows"] if i in self.flows]
        self.series = {"t": [], "goodput": [], "flow_rate": {f.id: [] for f in self.tracked},
                       "flow_rx": {f.id: [] for f in self.tracked}}
        self.done_reported = False
        self.stop_requested = False
        self._ctl_buf = b""
        # HPCC: every data frame reserves an INT area that the switch ports fill in
        self.int_on = bool(plan.get("int_telemetry"))
        self.int_ext = P.int_area() if self.int_on else b""
        self.frame_bytes = self.mtu + P.DATA_OVERHEAD + len(self.int_ext)  # a full data frame
        # frames to other hosts held for their path's propagation delay (no netem)
        self.delay_of = {ip: int(d) for ip, d in (plan.get("path_delay_ns") or {}).items()}
        self.outbox: list = []  # heap of (due fabric ns, seq, socket, frame, address, tos)
        self._outbox_seq = itertools.count()
        self.gsp = AgentGsp(self, plan["gse"]) if plan.get("gse") else None
        self._open_sockets()

    # -- set-up ------------------------------------------------------------------------
    def _open_sockets(self) -> None:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RX_BUF)
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        rx.bind((self.ip, P.ROCE_PORT))
        rx.setblocking(False)
        self.rx = rx
        for f in self.senders:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TX_BUF)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x02)  # ECT(0): marks are allowed
            if self.int_on:  # checksum 0, so switch ports may write INT records in
                s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            # One UDP source port per flow, as RoCE uses one per queue pair: ECMP hashes on it.
            s.bind((self.ip, self.plan["sport_base"] + f.id % 16000))
            s.connect((f.peer_ip, P.ROCE_PORT))
            s.setblocking(False)
            f.sock = s

    # -- clocks ------------------------------------------------------------------------
    def now(self) -> int:
        return (time.monotonic_ns() - self.t0) // self.tdf

    def real(self, fabric_ns: int) -> int:
        return self.t0 + fabric_ns * self.tdf

    # -- sending -----------------------------------------------------------------------
    def _start(self, f: Flow, now: int) -> None:
        f.started_ns = now
        f.cc = self.make_cc()
        f.cc.on_start(now)
        f.next_avail = now
        f.last_progress = now
        f.rto_at = now + self.rto if self.reliable else None
        self.active.append(f)
        self._arm(f)
        if self.gsp is not None:
            self._ask(f.dst_gsp, now)

    def _ask(self, dst: int, now: int) -> None:
        pending = sum(f.size - f.nxt * self.mtu for f in self.active if f.dst_gsp == dst)
        self.gsp.ask(dst, max(0, pending), now)

    def _arm(self, f: Flow) -> None:
        t = f.cc.next_timer_ns
        f.timer_at = t

    def _send_data(self, now: int) -> bool:
        """Send one data packet if the NIC and some flow's pacing allow; True if sent."""
        if self.nic_free > now or not self.active:
            return False
        n = len(self.active)
        for k in range(n):
            j = (self.rr + k) % n
            f = self.active[j]
            w = f.cc.window_bytes
            if f.next_avail > now or (w is not None and (f.nxt - f.una) * self.mtu >= w):
                continue
            gsp = self.gsp
            if gsp is not None and gsp.credit(f.dst_gsp) <= 0:
                continue  # GSE: only against a grant
            psn = f.nxt
            size = min(self.mtu, f.size - psn * self.mtu) if f.size is not None else self.mtu
            req = self.reliable and ((psn + 1) % self.ack_every == 0 or psn + 1 == f.n_pkts)
            payload = memoryview(self.payload)[:size]
            closed = False
            try:
                if gsp is not None:
                    more = psn + 1 < f.n_pkts or any(
                        g is not f and g.dst_gsp == f.dst_gsp for g in self.active)
                    tag, tos, closed = gsp.tag(f.dst_gsp, size, not more)
                    frame = f.hdr.frame(psn, payload, req, tag, P.GSE_FLAG)
                    self._emit(f.sock, frame, f.peer_ip, None, tos, now)
                elif self.int_on:
                    frame = f.hdr.frame(psn, payload, req, self.int_ext, P.INT_FLAG)
                    self._emit(f.sock, frame, f.peer_ip, None, None, now)
                else:
                    frame = f.hdr.frame(psn, payload, req)
                    self._emit(f.sock, frame, f.peer_ip, None, None, now)
                frame_len = len(frame)
            except BlockingIOError:
                self.counters["send_blocked"] += 1
                return False
            wire = frame_len + P.L2_L4_BYTES
            self.counters["tx_bytes"] += wire
            self.counters["tx_pkts"] += 1
            if psn < f.max_sent:
                f.retx += size
                self.counters["retx_bytes"] += size
            else:
                f.max_sent = psn + 1
                if f.max_sent >= f.n_pkts and f.size is not None:
                    self._dependency_done(f, now)  # my next message may start
            f.nxt = psn + 1
            cc = f.cc
            slack = CATCH_UP_PKTS * wire * BIT_NS // cc.rate_bps
            f.next_avail = max(f.next_avail, now - slack) + wire * BIT_NS // cc.rate_bps
            self.nic_free = max(self.nic_free, now - CATCH_UP_PKTS * wire * BIT_NS // self.line) \
                + wire * BIT_NS // self.line
            if cc.wants_sends:
                cc.on_send(now, size)
                self._arm(f)
            if f.nxt >= f.n_pkts:
                del self.active[j]
                self.rr = j
            else:
                self.rr = j + 1
            if closed:
                self._ask(f.dst_gsp, now)
            return True
        return False

    def _emit(self, sock, frame: bytes, peer_ip: str, addr, tos: int | None, now: int) -> None:
        """Send a frame now, or after the path's propagation delay (no netem).  Raises
        BlockingIOError (sending now) if the socket is full."""
        d = self.delay_of.get(peer_ip)
        if d:
            heapq.heappush(self.outbox, (now + d, next(self._outbox_seq), sock, frame, addr, tos))
        else:
            _send_frame(sock, frame, addr, tos)

    def _flush_outbox(self, now: int) -> None:
        box = self.outbox
        while box and box[0][0] <= now:
            _, _, sock, frame, addr, tos = box[0]
            try:
                _send_frame(sock, frame, addr, tos)
            except BlockingIOError:  # the socket is full: try again on the next turn
                self.counters["send_blocked"] += 1
                return
            heapq.heappop(box)

    def _control(self, kind: str, f: Flow, psn: int, ext: bytes = b"") -> None:
        frame = P.encode(kind, f.id, psn, ext=ext, flags=P.INT_FLAG if ext else 0)
        try:
            self._emit(self.rx, frame, f.peer_ip, (f.peer_ip, P.ROCE_PORT), None, self.now())
        except BlockingIOError:
            self.counters["send_blocked"] += 1
            return
        self.counters["tx_bytes"] += len(frame) + P.L2_L4_BYTES
        self.counters["tx_pkts"] += 1

    # -- receiving ---------------------------------------------------------------------
    def _receive(self, now: int) -> None:
        rx = self.rx
        anc = socket.CMSG_SPACE(4)
        while True:
            try:
                buf, cmsgs, _, _ = rx.recvmsg(65536, anc)
            except BlockingIOError:
                return
            tos = 0
            for level, typ, data in cmsgs:
                if level == socket.IPPROTO_IP and typ == socket.IP_TOS:
                    tos = data[0]
            self.counters["rx_bytes"] += len(buf) + P.L2_L4_BYTES
            self._handle(buf, tos, now)

    def _handle(self, buf: bytes, tos: int, now: int) -> None:
        """Act on one frame from the fabric (after its path's propagation delay)."""
        kind, fid, psn, plen = P.decode(buf)
        f = self.flows.get(fid)
        if f is None:
            return
        if kind == "data" and f.is_dst:
            if self.gsp is not None and P.has_gse_tag(buf):
                for b, t in self.gsp.reorder_accept(now, buf, (buf, tos)):
                    _, _, p, n = P.decode(b)
                    self._on_data(f, p, n, (t & 3) == 3, P.ackreq(b), now)
            else:
                ints = (bytes(buf[P.INT_OFFSET:P.INT_OFFSET + P.INT_AREA_LEN])
                        if P.has_int(buf) else b"")
                self._on_data(f, psn, plen, (tos & 3) == 3, P.ackreq(buf), now, ints)
        elif kind == "ack" and f.is_src:
            hops = (self._int_records(f, P.parse_int(buf, P.BTH_LEN + P.AETH_LEN))
                    if P.has_int(buf) else None)
            self._on_ack(f, psn, now, hops)
        elif kind == "nack" and f.is_src:
            self._on_ack(f, psn, now)
            if psn < f.nxt:
                f.nxt = psn
                if f not in self.active:
                    self.active.append(f)
        elif kind == "cnp" and f.is_src and f.cc is not None:
            f.cnps_rx += 1
            self.counters["cnps_rx"] += 1
            f.cc.on_cnp(now)
            self._arm(f)

    def _int_records(self, f: Flow, records) -> list:
        """INT records in fabric units: time on the fabric clock, the rate scaled back by the
        time dilation, and tx bytes unwrapped (the switches count mod 2^32) and turned from
        bytes *into* the port (what the eBPF program counts, this frame included) into bytes
        that have *left* it (minus the queue left behind and this frame), as HPCC's txRate
        wants."""
        frame = self.frame_bytes
        out = []
        for i, (ts, tx, q, kbps) in enumerate(records):
            if i < len(f.int_prev):
                raw, total = f.int_prev[i]
                total += (tx - raw) % (1 << 32)
                f.int_prev[i] = (tx, total)
            else:
                total = tx
                f.int_prev.append((tx, tx))
            out.append(((ts - self.t0) // self.tdf, total - q - frame, q,
                        kbps * 1000 * self.tdf))
        return out

    def _on_data(self, f: Flow, psn: int, plen: int, ce: bool, req: bool, now: int,
                 ints: bytes = b"") -> None:
        if ce:
            self.counters["ce_rx"] += 1
            if self.send_cnp and now - f.last_cnp >= self.cnp_interval:
                f.last_cnp = now
                self.counters["cnps_sent"] += 1
                self._control("cnp", f, 0)
        if not self.reliable:
            f.delivered += plen
            self.counters["goodput_bytes"] += plen
            if f.size is not None and f.delivered >= f.size and f.end_ns is None:
                self._finished_receiving(f, now)
            return
        if psn == f.expected:
            f.expected += 1
            f.delivered += plen
            self.counters["goodput_bytes"] += plen
            f.unacked += 1
            if f.expected >= f.n_pkts and f.size is not None:
                f.unacked = 0
                self._control("ack", f, f.expected, ints)
                if f.end_ns is None:
                    self._finished_receiving(f, now)
            elif req or f.unacked >= self.ack_every:
                f.unacked = 0
                self._control("ack", f, f.expected, ints)
        elif psn > f.expected:
            if f.last_nack_psn != f.expected or now - f.last_nack_ns >= self.nack_gap:
                f.last_nack_psn = f.expected
                f.last_nack_ns = now
                self.counters["nacks_sent"] += 1
                self._control("nack", f, f.expected)
        else:
            self._control("ack", f, f.expected)

    def _on_ack(self, f: Flow, psn: int, now: int, hops=None) -> None:
        if psn > f.una:
            acked = (psn - f.una) * self.mtu
            f.una = psn
            f.last_progress = now
            if f.cc.wants_acks:
                f.cc.on_ack(now, acked, int_hops=hops, ack_seq=psn, snd_nxt=f.nxt)
                self._arm(f)
            if f.una >= f.n_pkts and f.sender_done_ns is None and f.size is not None:
                f.sender_done_ns = now

    def _finished_receiving(self, f: Flow, now: int) -> None:
        f.end_ns = now
        self._dependency_done(f, now)

    def _dependency_done(self, f: Flow, now: int) -> None:
        for d in f.dependents:
            d.deps_left -= 1

    # -- timers ------------------------------------------------------------------------
    def _timers(self, now: int) -> int:
        """Run what is due; return the next fabric time something is due."""
        nxt = now + 10 * self.sample_every
        for f in self.senders:
            if f.started_ns is None:
                if f.deps_left == 0 and now >= f.start_ns:
                    self._start(f, now)
                else:
                    if f.deps_left == 0:
                        nxt = min(nxt, f.start_ns)
                    continue
            if f.timer_at is not None:
                if now >= f.timer_at:
                    f.timer_at = None
                    f.cc.on_timer(now)
                    self._arm(f)
                if f.timer_at is not None:
                    nxt = min(nxt, f.timer_at)
            if f.rto_at is not None and f.sender_done_ns is None:
                if now >= f.rto_at:
                    if now - f.last_progress >= self.rto:
                        self.counters["timeouts"] += 1
                        f.nxt = f.una
                        f.last_progress = now
                        if f not in self.active:
                            self.active.append(f)
                    f.rto_at = f.last_progress + self.rto
                nxt = min(nxt, f.rto_at)
            if f in self.active:
                nxt = min(nxt, max(f.next_avail, self.nic_free))
        if now >= self.next_sample:
            self._sample(now)
            self.next_sample = now + self.sample_every
        return min(nxt, self.next_sample)

    def _sample(self, now: int) -> None:
        s = self.series
        s["t"].append(now)
        s["goodput"].append(self.counters["goodput_bytes"])
        for f in self.tracked:
            rate = f.cc.rate_bps if f.cc is not None and f.sender_done_ns is None and f.is_src \
                else 0
            s["flow_rate"][f.id].append(rate)
            s["flow_rx"][f.id].append(f.delivered)

    def _local_work_done(self) -> bool:
        return (all(f.sender_done_ns is not None or (not self.reliable and f.started_ns is not None
                                                     and f.nxt >= f.n_pkts)
                    for f in self.senders if f.size is not None)
                and all(f.end_ns is not None for f in self.receivers if f.size is not None)
                and all(f.size is not None for f in self.flows.values()))

    # -- main loop ---------------------------------------------------------------------
    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.rx, selectors.EVENT_READ, "rx")
        sel.register(0, selectors.EVENT_READ, "ctl")
        if self.gsp is not None:
            sel.register(self.gsp.sock, selectors.EVENT_READ, "gse")
            sel.register(self.gsp.esock, selectors.EVENT_READ, "gse")
        print("READY", flush=True)
        # Every agent starts its fabric clock at the same real instant, given by "GO <t0>".
        while self.t0 is None and not self.stop_requested:
            self._wait(sel, 1_000_000_000)
        while not self.stop_requested:
            now = self.now()
            if now < 0:  # before the common start: wait for it (answering nothing yet)
                self._wait(sel, -now * self.tdf)
                continue
            if self.stop_ns is not None and now >= self.stop_ns:
                break
            self._flush_outbox(now)
            self._receive(now)
            gsp_due = None
            if self.gsp is not None:
                self.gsp.poll(now)
                gsp_due = self.gsp.due_grants(now)
                self.gsp.check_fallback(now)
                for b, t in self.gsp.release_stale(now):
                    _, fid, p, n = P.decode(b)
                    self._on_data(self.flows[fid], p, n, (t & 3) == 3, P.ackreq(b), now)
            while self._send_data(now):
                pass
            due = self._timers(now)
            for t in (gsp_due, self.outbox[0][0] if self.outbox else None,
                      self.gsp.next_held_ns() if self.gsp is not None else None):
                if t is not None:
                    due = min(due, t)
            if not self.done_reported and self._local_work_done():
                self.done_reported = True
                print("DONE", flush=True)
            lag = self.now() - now
            if lag > self.counters["max_lag_ns"]:
                self.counters["max_lag_ns"] = lag
            wait_real = self.real(due) - time.monotonic_ns()
            # Never spin: if something is due but blocked (full socket buffer, window), nap.
            self._wait(sel, max(MIN_WAIT_NS, wait_real))
        if self.t0 is not None:
            self._sample(self.now())

    def _wait(self, sel, real_ns: int) -> None:
        timeout = min(real_ns, 50_000_000) / 1e9
        for key, _ in sel.select(timeout):
            if key.data == "ctl":
                self._control_input()

    def _control_input(self) -> None:
        """Read stdin unbuffered (select() and Python's line buffering do not mix)."""
        chunk = os.read(0, 4096)
        if not chunk:  # the orchestrator is gone
            self.stop_requested = True
            return
        self._ctl_buf += chunk
        while b"\n" in self._ctl_buf:
            line, self._ctl_buf = self._ctl_buf.split(b"\n", 1)
            word = line.decode().split()
            if word and word[0] == "GO":
                self.t0 = int(word[1])
            elif word and word[0] == "STOP":
                self.stop_requested = True

    def results(self) -> dict:
        return {
            "host": self.host,
            "counters": self.counters,
            "gse": self.gsp.results() if self.gsp is not None else None,
            "flows": {str(f.id): {"started_ns": f.started_ns, "sender_done_ns": f.sender_done_ns,
                                  "end_ns": f.end_ns, "delivered": f.delivered,
                                  "retx_bytes": f.retx, "cnps_rx": f.cnps_rx,
                                  "is_src": f.is_src, "is_dst": f.is_dst,
                                  "cc": f.cc.state() if f.cc is not None else None}
                      for f in self.flows.values()},
            "series": {"t": self.series["t"], "goodput": self.series["goodput"],
                       "flow_rate": {str(k): v for k, v in self.series["flow_rate"].items()},
                       "flow_rx": {str(k): v for k, v in self.series["flow_rx"].items()}},
        }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = json.loads(Path(argv[0]).read_text())
    agent = Agent(plan)
    try:
        agent.run()
    finally:
        write_json_atomic(plan["out"], agent.results())
    return 0


if __name__ == "__main__":
    sys.exit(main())
