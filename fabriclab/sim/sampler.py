"""Periodic sampling of the time series (port counters, queues, hosts, active flows).

The sampling period starts at ``metrics.sample_interval_us`` and doubles whenever
``MAX_SAMPLES`` samples (or ``MAX_FLOW_ENTRIES`` per-flow entries) are held, dropping every
other sample: cumulative counters stay exact (utilisation and goodput come from their
differences), queue depths and rates are instantaneous samples.  So a run of any length
keeps a bounded series.  Every active flow is sampled; which of them the results show is
decided after the run (:mod:`fabriclab.metrics.flowseries`).
"""

from __future__ import annotations

from heapq import heappush
from math import nan

from ..metrics.assemble import Samples
from ..metrics.flowseries import MAX_FLOW_ENTRIES, FlowSamples

MAX_SAMPLES = 2000


class Sampler:
    def __init__(self, net, interval_ns: int):
        self.net = net
        self.interval = max(1, interval_ns)
        self.switch_ports = [p for s in net.switches.values() for p in s.ports]
        self.nic_ports = [h.port for h in net.hosts.values()]
        self.ports = self.switch_ports + self.nic_ports
        self.hosts = list(net.hosts.values())
        self.flows = FlowSamples()
        self.data_prio = net.cfg.data_prio
        self.times: list[int] = []
        self.tx: list[list[int]] = []
        self.queue: list[list[int]] = []
        self.paused: list[list[int]] = []
        self.goodput: list[list[int]] = []

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
        self.goodput.append([h.nic.goodput_bytes for h in self.hosts])
        live = self.net.live.values()
        self.flows.add(now, [f.id for f in live],
                       [f.send.cc.rate_bps if f.sent_ns is None else nan for f in live],
                       [f.recv.delivered for f in live])
        if len(self.times) >= MAX_SAMPLES or self.flows.entries > MAX_FLOW_ENTRIES:
            for series in (self.times, self.tx, self.queue, self.paused, self.goodput):
                del series[1::2]
            self.flows.thin()
            self.interval *= 2

    def samples(self) -> Samples:
        """What was sampled, for the results."""
        return Samples(self.times, [p.name for p in self.ports], [p.rate for p in self.ports],
                       self.tx, self.paused, [p.name for p in self.switch_ports], self.queue,
                       [h.name for h in self.hosts], self.goodput)

    def _tick(self, _) -> None:
        self.sample()
        loop = self.net.loop
        # Stop with the workload, or when nothing else is scheduled (an idle network stays idle).
        if not self.net.finished and loop.heap:
            heappush(loop.heap, (loop.now + self.interval, next(loop.seq), self._tick, None))
