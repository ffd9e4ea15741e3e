"""Shared helpers: build specs from small dicts and run them on the simulator."""

from __future__ import annotations

import copy


from fabriclab import spec as S
from fabriclab.sim.network import Network
from fabriclab.metrics.flowseries import FlowSeries
from fabriclab.sim.runner import collect, flow_records
from fabriclab.sim.sampler import Sampler


def make_spec(**fields) -> S.Spec:
    """A spec from keyword sections, e.g. make_spec(topology={...}, workload=[...])."""
    return S.validate(copy.deepcopy(fields), "test spec")


def run_net(spec: S.Spec, sample_ns: int | None = None) -> Network:
    """Run ``spec`` and return the network, with its objects, for inspection."""
    net = Network(spec)
    if sample_ns:
        net.sampler = Sampler(net, sample_ns)
    net.run()
    if net.sampler:
        net.sampler.sample()
    return net


def run_result(spec: S.Spec, sample_ns: int = 10_000):
    net = Network(spec)
    net.sampler = Sampler(net, sample_ns)
    net.run()
    net.sampler.sample()
    return net, collect(net, spec, wall_s=0.0, wall_run_s=0.0)







def flow_series(net: Network) -> FlowSeries:
    """The sampled flows of a finished run, indexed per flow (needs a sampler)."""
    return FlowSeries(net.sampler.flows, flow_records(net), net.loop.now)
