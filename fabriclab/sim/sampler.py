"""Periodic sampling of the time series (port counters, queues, hosts, active flows).

The sampling period starts at ``metrics.sample_interval_us`` and doubles whenever
``MAX_SAMPLES`` samples (or ``MAX_PORT_ENTRIES`` port values per series, or
``MAX_FLOW_ENTRIES`` per-flow entries) are held, dropping every other sample: cumulative
counters stay exact (utilisation and goodput come from their differences), queue depths and
rates are instantaneous samples.  So a run of any length, on a fabric of any size, keeps a
bounded series; a row is an ``array('q')`` (8 bytes a value, no object each).  Every active flow is sampled; which of them the results show is
decided after the run (:mod:`fabriclab.metrics.flowseries`).
"""

from __future__ import annotations

from array import array
from math import nan

from ..metrics.assemble import Samples
from ..metrics.flowseries import MAX_FLOW_ENTRIES, FlowSamples

MAX_SAMPLES = 2000
#: port values per series (tx bytes, queue, paused): 8 MB each.  At 1,024 hosts (12,544
#: ports) about 80 samples; the lists of ints they replace took 160 MB there.
MAX_PORT_ENTRIES = 1_000_000


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
        self._zeros = array("q", bytes(8 * len(self.ports)))

    def start(self) -> None:
        loop = self.net.loop
        loop.push(loop.now, self._tick, None)

    def sample(self) -> None:
        now = self.net.loop.now
        if self.times and self.times[-1] == now:
            return
        d = self.data_prio
        self.times.append(now)
        self.tx.append(array("q", [p.tx_bytes for p in self.ports]))
        queue = [p.qbytes[d] for p in self.switch_ports]
        # 4 bytes a value where they fit (queues are bounded by the buffer): half the memory
        self.queue.append(array("I" if max(queue, default=0) < 1 << 32 else "q", queue))
        paused = array("q", [p.paused_ns + (now - p.pause_start[d] if p.paused[d] else 0)
                             for p in self.ports])
        # no port ever paused (PFC off, or never triggered): one shared row of zeros
        self.paused.append(self._zeros if not any(paused) else paused)
        self.goodput.append(array("q", [h.nic.goodput_bytes for h in self.hosts]))
        live = self.net.live.values()
        self.flows.add(now, [f.id for f in live],
                       [f.send.cc.rate_bps if f.sent_ns is None else nan for f in live],
                       [f.recv.delivered for f in live])
        n = len(self.times)
        if (n >= MAX_SAMPLES or n * len(self.ports) > MAX_PORT_ENTRIES
                or self.flows.entries > MAX_FLOW_ENTRIES):
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
        if not self.net.finished and loop.pending():
            loop.push(loop.now + self.interval, self._tick, None)
