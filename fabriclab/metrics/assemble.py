"""The results schema, built once for both engines from typed records.

An engine only gathers numbers: one :class:`~fabriclab.metrics.summarize.FlowRecord` per
flow, one :class:`PortRecord` per port (link direction), one :class:`HostRecord` per host,
its time series as :class:`Samples` (and per-flow :class:`FlowSamples`), and what it
dropped (:class:`Drops`).  :func:`assemble` turns them into a :class:`RunResult`: every
summary figure that is a sum over ports or hosts is taken from the records here, and every
table (ports.csv, hosts.csv, flows.csv, collectives.csv, timeseries/*.csv) is built here.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..cc_algorithms.gse import GseParams
from ..spec import resolved_yaml
from . import schema
from .flowseries import FlowSamples, flow_results
from .ports import bottleneck_ports
from .results import RunResult, provenance
from .stats import max_over_mean, percentile
from .summarize import collective_table, flow_stats, flow_table, summary_head

if TYPE_CHECKING:
    from .summarize import FlowRecord


@dataclass(slots=True)
class PortRecord:
    """One port's counters: a row of ports.csv (fields in ``schema.PORT_COLUMNS`` order)."""

    port: str  # "<node>:<index>"
    node: str
    peer: str  # "<node>:<index>" at the other end of the link
    role: str  # Topology.port_role
    rate_gbps: float
    tx_bytes: int
    tx_pkts: int
    drops: int = 0
    drop_bytes: int = 0
    ecn_marks: int = 0
    pfc_pause_tx: int = 0
    pfc_resume_tx: int = 0
    pfc_pause_rx: int = 0
    paused_ns: int = 0
    max_queue_bytes: int = 0
    # losses by cause, included in drops/drop_bytes (queue-full drops are the rest)
    drops_dead_link: int = 0  # sent onto a link that was down (or in flight when it died)
    drops_random: int = 0  # random loss on the link (loss.rate / loss.links)
    drops_watchdog: int = 0  # dropped by the PFC watchdog
    drops_no_path: int = 0  # no way left towards the destination

    def row(self) -> list:
        return [getattr(self, f) for f in self.__slots__]


@dataclass(slots=True)
class HostRecord:
    """One host's counters: a row of hosts.csv (fields in ``schema.HOST_COLUMNS`` order)."""

    host: str
    tx_bytes: int
    rx_bytes: int
    goodput_bytes: int
    cnps_sent: int
    cnps_rx: int
    nacks_sent: int
    timeouts: int
    retx_bytes: int

    def row(self) -> list:
        return [getattr(self, f) for f in self.__slots__]


@dataclass(slots=True)
class Samples:
    """The sampled time series: cumulative counters (rates come from their differences)
    and instantaneous queue depths, one row per time in ``times``."""

    times: list[int]
    ports: list[str]  # the ports of tx_bytes and paused_ns
    port_rates_bps: list[int]
    tx_bytes: list[list[int]]  # cumulative, per port
    paused_ns: list[list[int]]  # cumulative time paused by PFC, per port
    queue_ports: list[str]  # the switch ports of queue_bytes
    queue_bytes: list[list[int]]
    hosts: list[str]
    goodput_bytes: list[list[float]]  # cumulative payload delivered, per host


@dataclass(slots=True)
class FaultRecord:
    """One fault of the spec as it happened: when it struck, when switches detected it and
    when traffic left the dead path (the last frame sent onto it), what it cost; the
    summary's ``faults`` list, one dict per record."""

    index: int  # position in spec.faults
    kind: str
    target: str | None
    at_ns: int
    detected_ns: int | None = None  # switches (or the controller) routed around it
    traffic_left_ns: int | None = None  # the last frame sent onto the dead link(s)
    lost_pkts: int = 0  # frames lost on the dead link(s)
    lost_bytes: int = 0
    reroute_ns: int | None = None  # emulator: fault to new forwarding installed

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(slots=True)
class Drops:
    """What was dropped: packets, bytes, and packets by reason (reasons with 0 are left out
    of the summary)."""

    packets: int
    bytes: int
    reasons: dict[str, int] = field(default_factory=dict)


class _LazyRows:
    """A table's rows, made as they are read (by the CSV writer, one at a time): at 1,024
    hosts a time series of every port held as rows of floats took 35 MB per table.  Plain
    data (it pickles, for the Dask cluster); equal to another table with the same rows."""

    __slots__ = ()

    def __iter__(self):
        raise NotImplementedError

    def __eq__(self, other):
        try:
            return list(self) == list(other)
        except TypeError:
            return NotImplemented

    __hash__ = None


class RateRows(_LazyRows):
    """Per-interval rates from cumulative counters: rows for samples 1..n (time, then each
    column's increase x its scale / the interval)."""

    __slots__ = ("times", "cum", "scale")

    def __init__(self, times, cum, scale_per_col):
        self.times, self.cum, self.scale = times, cum, scale_per_col

    def __len__(self) -> int:
        return max(0, len(self.times) - 1)

    def __iter__(self):
        times, cum, scale = self.times, self.cum, self.scale
        for i in range(1, len(times)):
            dt = times[i] - times[i - 1]
            prev, cur = cum[i - 1], cum[i]
            yield [times[i]] + [(c - p) * s / dt if dt else 0.0
                                for c, p, s in zip(cur, prev, scale)]


class SampleRows(_LazyRows):
    """The samples themselves: rows (time, then each column's value)."""

    __slots__ = ("times", "values")

    def __init__(self, times, values):
        self.times, self.values = times, values

    def __len__(self) -> int:
        return len(self.times)

    def __iter__(self):
        for ti, v in zip(self.times, self.values):
            yield [ti, *v]


def timeseries_tables(s: Samples) -> dict:
    """timeseries/link_util.csv, queue_bytes.csv, pfc_paused_frac.csv and
    host_goodput_gbps.csv."""
    t = s.times
    return {
        "timeseries/link_util.csv": (
            ["time_ns"] + s.ports, RateRows(t, s.tx_bytes, [8 / r * 1e9 for r in s.port_rates_bps])),
        "timeseries/queue_bytes.csv": (
            ["time_ns"] + s.queue_ports, SampleRows(t, s.queue_bytes)),
        "timeseries/pfc_paused_frac.csv": (
            ["time_ns"] + s.ports, RateRows(t, s.paused_ns, [1.0] * len(s.ports))),
        "timeseries/host_goodput_gbps.csv": (
            ["time_ns"] + s.hosts, RateRows(t, s.goodput_bytes, [8.0] * len(s.hosts))),
    }


def gse_summary(params: GseParams, gsps: list[dict], data_bytes: int,
                gsos_control_bytes: int = 0) -> dict:
    """What GSE costs, from the GSPs' summaries (``Gsp.summary()``): grant latency,
    request/grant overhead (``gsos_control_bytes``: GSOS's own GRANT messages, where they
    are counted apart from the GSPs'), reorder depth and delay."""
    lat, delays = array("q"), array("q")  # (as ints, 11 MB at 1,024 hosts)
    for g in gsps:
        lat.extend(g["grant_latency"])
        delays.extend(g["reorder_delays"])
    control = sum(g["control_bytes"] for g in gsps) + gsos_control_bytes
    return {
        "placement": params.placement, "scheduler": params.scheduler,
        "container_bytes": params.container_bytes, "grant_bytes": params.grant_bytes,
        "requests": sum(g["requests"] for g in gsps), "grants": sum(g["grants"] for g in gsps),
        "control_bytes": control,
        "control_overhead": control / data_bytes if data_bytes else None,
        "grant_latency_p50_ns": percentile(lat, 50),
        "grant_latency_p99_ns": percentile(lat, 99),
        "reorder_max_bytes": max((g["reorder_max_bytes"] for g in gsps), default=0),
        "reorder_packets_delayed": len(delays),
        "reorder_delay_p50_ns": percentile(delays, 50),
        "reorder_delay_p99_ns": percentile(delays, 99),
        "unscheduled_containers": sum(g.get("unscheduled_containers", 0) for g in gsps),
    }


def assemble(spec, topo, engine: str, *, load_balancing: str, stopped: str,
             sim_time_ns: int, workload_done_ns: int | None, run: dict, collectives: list,
             flows: list[FlowRecord], ports: list[PortRecord], hosts: list[HostRecord],
             samples: Samples, flow_samples: FlowSamples, drops: Drops,
             mtu: int, header: int, frame_bytes: int, in_flight_bytes: int | None = None,
             switch_sent_bytes: int = 0, switch_received_bytes: int = 0,
             extra: dict | None = None, gse: dict | None = None,
             faults: list[FaultRecord] | None = None, deadlock: dict | None = None,
             files: dict | None = None) -> RunResult:
    """The results of one run of ``engine`` ("sim" or "mininet") on ``spec``.

    ``run``: the engine's figures about the run itself (wall-clock time, events, ...),
    placed after ``workload_done_ns``; ``collectives``: the workload's; ``extra``: the
    engine's own summary blocks, placed after ``collectives``; ``gse``: :func:`gse_summary`
    and what the engine adds to it; ``faults``: one :class:`FaultRecord` per fault of the
    spec (the summary's ``faults``); ``deadlock``: a PFC deadlock the engine found (its
    time and cycle of ports), None if none.  ``mtu`` and ``header`` are the packet sizes the
    collectives' bounds are computed with; a port whose queue never exceeded two frames of
    ``frame_bytes`` did not queue (:func:`~fabriclab.metrics.ports.bottleneck_ports`).
    Bytes sent are the hosts' plus ``switch_sent_bytes`` (the switches' own frames, e.g.
    GSE's between leaves), likewise delivered; ``in_flight_bytes`` None means what was sent
    and neither delivered nor dropped."""
    flow_rows, slowdowns, fcts = flow_table(flows)
    coll_rows, coll_summary = collective_table(collectives, {r.id: r for r in flows},
                                               topo.host_rate_bps, mtu, header)
    uplinks = [p.tx_bytes for p in ports if p.role == "up" and topo.nodes[p.node].tier == 1]
    sent = sum(h.tx_bytes for h in hosts) + switch_sent_bytes
    delivered = sum(h.rx_bytes for h in hosts) + switch_received_bytes
    if in_flight_bytes is None:
        in_flight_bytes = max(0, sent - delivered - drops.bytes)
    summary = {
        **summary_head(spec, topo, engine, load_balancing, stopped),
        "sim_time_ns": sim_time_ns, "workload_done_ns": workload_done_ns,
        **run,
        "drops": drops.packets, "drop_bytes": drops.bytes,
        "drop_reasons": {k: v for k, v in drops.reasons.items() if v},
        "pfc_pause_frames": sum(p.pfc_pause_tx for p in ports),
        "pfc_paused_ns_total": sum(p.paused_ns for p in ports),
        "ecn_marks": sum(p.ecn_marks for p in ports),
        "cnps": sum(h.cnps_sent for h in hosts),
        "nacks": sum(h.nacks_sent for h in hosts),
        "timeouts": sum(h.timeouts for h in hosts),
        "retransmitted_bytes": sum(h.retx_bytes for h in hosts),
        **flow_stats(flows, slowdowns, fcts),
        "uplink_load_max_over_mean": max_over_mean(uplinks) if uplinks and sum(uplinks) else None,
        "bytes_sent": sent, "bytes_delivered": delivered, "bytes_dropped": drops.bytes,
        "bytes_in_flight": in_flight_bytes,
        "collectives": coll_summary,
        **(extra or {}),
    }
    if faults is not None or spec.faults or spec.loss.any:
        summary["faults"] = [r.as_dict() for r in faults or []]
    summary["deadlock"] = deadlock
    bottleneck, contended = bottleneck_ports(ports, samples.times, samples.queue_ports,
                                             samples.queue_bytes, sim_time_ns, frame_bytes)
    flow_summary, flow_tables = flow_results(
        flow_samples, flows, sim_time_ns, spec.scheme, spec.metrics.max_flow_series,
        contended["host"] if contended else None)
    summary.update(flow_summary, bottleneck_port=bottleneck, contended_port=contended)
    if gse is not None:
        summary["gse"] = gse
    tables = {
        "flows.csv": (schema.FLOW_COLUMNS, flow_rows),
        "collectives.csv": (schema.COLLECTIVE_COLUMNS, coll_rows),
        "ports.csv": (schema.PORT_COLUMNS, [p.row() for p in ports]),
        "hosts.csv": (schema.HOST_COLUMNS, [h.row() for h in hosts]),
        **timeseries_tables(samples),
        **flow_tables,
    }
    spec_yaml = resolved_yaml(spec, {"generated_by": provenance() | {"engine": engine}})
    return RunResult(spec_yaml, summary, tables, dict(files or {}))
