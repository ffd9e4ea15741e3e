"""Periodic sampling of the time series (port counters, queues, hosts, tracked flows).

The sampling period starts at ``metrics.sample_interval_us`` and doubles whenever
``MAX_SAMPLES`` samples are held, dropping every other sample: cumulative counters stay
exact (utilisation and goodput come from their differences), queue depths and rates are
instantaneous samples.  So a run of any length keeps a bounded series.
"""

from __future__ import annotations

from heapq import heappush

MAX_SAMPLES = 2000


class Sampler:
    def __init__(self, net, interval_ns: int, max_flows: int):
        self.net = net
        self.interval = max(1, interval_ns)
        self.switch_ports = [p for s in net.switches.values() for p in s.ports]
        self.nic_ports = [h.port for h in net.hosts.values()]
        self.ports = self.switch_ports + self.nic_ports
        self.hosts = list(net.hosts.values())
        self.flows = net.flows[:max_flows]
        self.data_prio = net.cfg.data_prio
        self.times: list[int] = []
        self.tx: list[list[int]] = []
        self.queue: list[list[int]] = []
        self.paused: list[list[int]] = []
        self.goodput: list[list[int]] = []
        self.flow_rate: list[list[int]] = []
        self.flow_rx: list[list[int]] = []

    def start(self) -> None:
        loop = self.net.loop
        heappush(loop.heap, (loop.now, next(loop.seq), self._tick, None))

    def sample(self) -> None:
        now = self.net.loop.now
        if self.times and self.times[-1] == now:
            return
        d = self.data_prio
        self.times.append(now)
        self.tx.append([p.tx_bytes for p in self.ports])
        self.queue.append([p.qbytes[d] for p in self.switch_ports])
        self.paused.append([p.paused_ns + (now - p.pause_start[d] if p.paused[d] else 0)
                            for p in self.ports])
        self.goodput.append([h.rx_goodput for h in self.hosts])
        self.flow_rate.append([f.cc.rate_bps if f.started_ns is not None and f.end_ns is None
                               else 0 for f in self.flows])
        self.flow_rx.append([f.rcv_nxt for f in self.flows])
        if len(self.times) >= MAX_SAMPLES:
            for series in (self.times, self.tx, self.queue, self.paused, self.goodput,
                           self.flow_rate, self.flow_rx):
                del series[1::2]
            self.interval *= 2

    def _tick(self, _) -> None:
        self.sample()
        loop = self.net.loop
        # Stop with the workload, or when nothing else is scheduled (an idle network stays idle).
        if not self.net.finished and loop.heap:
            heappush(loop.heap, (loop.now + self.interval, next(loop.seq), self._tick, None))
