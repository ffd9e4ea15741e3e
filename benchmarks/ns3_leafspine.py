#!/usr/bin/env python3
# The project's ns-3 speed anchor, kept here unchanged so that sim_speed.py can run it from a
# clone (origin: the ns-3 baseline that NS3_BASELINE.md in the design material describes).
"""ns-3 leaf-spine UDP benchmark: a performance anchor for packet-level simulators.

Builds a two-tier leaf-spine fabric in ns-3 (Python bindings, PyPI wheel ``ns3==3.44``),
drives it with constant-rate UDP at line rate and reports how fast ns-3 simulates it::

        spine0     spine1   ...   spine{S-1}       every leaf links to every spine
          |    \    /    |            |
        leaf0      leaf1    ...   leaf{L-1}
        / .. \     / .. \          / .. \
      h0 .. h{H-1} h{H} ..          .. h{L*H-1}    host i sits under leaf i // H

Model (keep a re-implementation identical to this):
  * Links: full-duplex point-to-point, ``--rate-gbps`` and ``--delay-us`` on every link
    (host-leaf and leaf-spine).  ns-3 keeps time in integer nanoseconds and rounds the
    serialization time to the nearest ns: 1030 B at 100 Gb/s = 82.4 ns -> 82 ns.
  * Queues: one DropTail FIFO per egress port (the PointToPointNetDevice TX queue),
    ``--queue-pkts`` packets (ns-3 default 100) waiting plus the one being serialized.
    The FqCoDel queue disc that ns-3 installs by default is removed; a packet arriving at
    a port with a full queue is dropped (ns-3 counts it in the traffic-control layer's
    TcDrop trace, not in the device queue).
  * Routing: Ipv4GlobalRouting (static shortest paths) with RandomEcmpRouting=true:
    ns-3.44 only offers *per-packet* random ECMP; it has no per-flow (5-tuple hash) ECMP.
    Its route lookup is a linear scan of the node's table (328 entries at a leaf in
    4x4x4, 2832 in 8x8x8), so ns-3's cost per hop grows with the fabric size.
  * Traffic: one OnOff UDP source per flow, always on, 1000 B payload, started at t=0 and
    stopped at --sim-ms.  The source rate is set so that the on-wire packet
    (1000 B + 8 UDP + 20 IPv4 + 2 PPP = 1030 B) is sent at the link rate: one packet
    every 82 ns at 100 Gb/s (12,195 packets per host per simulated ms).
      permutation: host i -> perm[i], a seeded random permutation (Python random.Random,
                   make_flows() below) in which every destination sits under a different
                   leaf than its source.
      incast:      every host except host 0 -> host 0.
  * One PacketSink per destination host (UDP port 9000).
  * ns-3 executes 3 events per packet-hop (TransmitComplete; Receive at the far end after
    the propagation delay; the device queue's dequeue notification) plus 1 per packet sent.

Measurements (printed as text, or one JSON object with --json):
  * wall_run_s: wall-clock of Simulator.Run() alone (not import, topology or routing setup).
  * packet_hops: packets transmitted, summed over every link direction, i.e. over every
    PointToPointNetDevice.  Each transmission starts with a dequeue from the device TX
    queue, so per device: hops = TotalReceivedPackets - NPackets(still queued) -
    DroppedAfterDequeue (always 0 for DropTail).  These counters are maintained by ns-3
    anyway, so counting costs nothing during the timed run.  A packet whose transmission
    has started before the stop time counts as a hop even if it has not arrived yet.
    ``--check`` cross-checks this against C++ counters on the PhyTxBegin trace (slower run;
    do not time with it) and also counts drops exactly.
  * events: Simulator::GetEventCount(), the number of events Simulator::Run() executed.
  * pkts_rx: packets received by the sinks (PacketSink::GetTotalRx / payload size).

Example::

    venv/bin/python ns3_leafspine.py --leaves 8 --spines 8 --hosts-per-leaf 8 --sim-ms 2 --json
"""

import argparse
import json
import random
import sys
import time

PAYLOAD_BYTES = 1000
HEADER_BYTES = 8 + 20 + 2  # UDP + IPv4 + PPP, added by ns-3 below the application
SINK_PORT = 9000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--leaves", type=int, default=4)
    p.add_argument("--spines", type=int, default=4)
    p.add_argument("--hosts-per-leaf", type=int, default=4)
    p.add_argument("--rate-gbps", type=float, default=100.0, help="every link (default 100)")
    p.add_argument("--delay-us", type=float, default=1.0, help="per link (default 1)")
    p.add_argument("--sim-ms", type=float, default=5.0, help="simulated time (default 5)")
    p.add_argument("--pattern", choices=("incast", "permutation"), default="permutation")
    p.add_argument("--flow-bytes", type=int, default=0,
                   help="payload bytes per flow, 0 = unlimited (default 0)")
    p.add_argument("--seed", type=int, default=1, help="ns-3 RNG seed and permutation seed")
    p.add_argument("--queue-pkts", type=int, default=100,
                   help="DropTail capacity per egress port, packets (default 100)")
    p.add_argument("--check", action="store_true",
                   help="also count hops/drops with trace callbacks (slower; do not time)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    if a.leaves < 2 or a.spines < 1 or a.hosts_per_leaf < 1:
        p.error("need --leaves >= 2, --spines >= 1, --hosts-per-leaf >= 1")
    if a.seed < 1:
        p.error("--seed must be >= 1 (ns-3 rejects seed 0)")
    return a


def make_flows(pattern, n_leaves, hosts_per_leaf, seed):
    """Return [(src_host, dst_host), ...]; host i sits under leaf i // hosts_per_leaf."""
    n = n_leaves * hosts_per_leaf
    if pattern == "incast":
        return [(i, 0) for i in range(1, n)]

    def leaf(h):
        return h // hosts_per_leaf

    rng = random.Random(seed)
    perm = list(range(n))
    rng.shuffle(perm)
    # Repair same-leaf pairs by swapping targets with a random partner; terminates because
    # with >= 2 leaves a valid swap always exists.
    bad = [i for i in range(n) if leaf(perm[i]) == leaf(i)]
    while bad:
        i = bad[0]
        j = rng.randrange(n)
        if leaf(perm[j]) != leaf(i) and leaf(perm[i]) != leaf(j):
            perm[i], perm[j] = perm[j], perm[i]
        bad = [i for i in range(n) if leaf(perm[i]) == leaf(i)]
    return [(i, perm[i]) for i in range(n)]


# C++ trace counters for --check, JIT-compiled by cppyy so no Python runs per packet.
CHECK_CPP = r"""
namespace lsbench {
uint64_t g_phyTxBegin = 0, g_tcDrop = 0, g_queueDrop = 0, g_ipDrop = 0;
void OnPhyTx(ns3::Ptr<const ns3::Packet>) { ++g_phyTxBegin; }
void OnTcDrop(ns3::Ptr<const ns3::Packet>) { ++g_tcDrop; }
void OnQueueDrop(ns3::Ptr<const ns3::Packet>) { ++g_queueDrop; }
void OnIpDrop(const ns3::Ipv4Header&, ns3::Ptr<const ns3::Packet>,
              ns3::Ipv4L3Protocol::DropReason, ns3::Ptr<ns3::Ipv4>, uint32_t) { ++g_ipDrop; }
void Connect() {
    using namespace ns3;
    Config::ConnectWithoutContext(
        "/NodeList/*/DeviceList/*/$ns3::PointToPointNetDevice/PhyTxBegin", MakeCallback(&OnPhyTx));
    Config::ConnectWithoutContext(
        "/NodeList/*/DeviceList/*/$ns3::PointToPointNetDevice/TxQueue/Drop",
        MakeCallback(&OnQueueDrop));
    Config::ConnectWithoutContext("/NodeList/*/$ns3::TrafficControlLayer/TcDrop",
                                  MakeCallback(&OnTcDrop));
    Config::ConnectWithoutContext("/NodeList/*/$ns3::Ipv4L3Protocol/Drop", MakeCallback(&OnIpDrop));
}
}
"""


def build_and_run(a):
    t_import = time.perf_counter()
    from ns import ns  # noqa: E402  (slow: ~7 s of cppyy start-up)
    t_setup = time.perf_counter()

    n_hosts = a.leaves * a.hosts_per_leaf
    ns.RngSeedManager.SetSeed(a.seed)
    ns.RngSeedManager.SetRun(1)
    ns.Config.SetDefault("ns3::Ipv4GlobalRouting::RandomEcmpRouting", ns.BooleanValue(True))
    ns.Config.SetDefault("ns3::DropTailQueue<Packet>::MaxSize",
                         ns.QueueSizeValue(ns.QueueSize(f"{a.queue_pkts}p")))

    hosts, leaves, spines = ns.NodeContainer(), ns.NodeContainer(), ns.NodeContainer()
    hosts.Create(n_hosts)
    leaves.Create(a.leaves)
    spines.Create(a.spines)
    stack = ns.InternetStackHelper()
    for c in (hosts, leaves, spines):
        stack.Install(c)

    link_bps = int(round(a.rate_gbps * 1e9))
    p2p = ns.PointToPointHelper()
    p2p.SetDeviceAttribute("DataRate", ns.DataRateValue(ns.DataRate(link_bps)))
    p2p.SetChannelAttribute("Delay", ns.TimeValue(ns.NanoSeconds(round(a.delay_us * 1000))))

    # One /30 per link; remove the default FqCoDel queue disc that Assign() installs.
    addr = ns.Ipv4AddressHelper(ns.Ipv4Address("10.0.0.0"), ns.Ipv4Mask("255.255.255.252"))
    tch = ns.TrafficControlHelper()
    devices, host_addr = [], []

    def connect(n0, n1):
        devs = p2p.Install(n0, n1)
        ifc = addr.Assign(devs)
        addr.NewNetwork()
        tch.Uninstall(devs)
        devices.extend(devs.Get(k) for k in range(2))
        return ifc

    for h in range(n_hosts):
        host_addr.append(connect(hosts.Get(h), leaves.Get(h // a.hosts_per_leaf)).GetAddress(0))
    for l in range(a.leaves):
        for s in range(a.spines):
            connect(leaves.Get(l), spines.Get(s))
    ns.Ipv4GlobalRoutingHelper.PopulateRoutingTables()

    flows = make_flows(a.pattern, a.leaves, a.hosts_per_leaf, a.seed)
    stop = ns.NanoSeconds(round(a.sim_ms * 1e6))
    # OnOff's DataRate counts payload only: scale it so the 1030 B frame fills the link.
    app_bps = link_bps * PAYLOAD_BYTES // (PAYLOAD_BYTES + HEADER_BYTES)
    sinks = []
    for dst in sorted({d for _, d in flows}):
        helper = ns.PacketSinkHelper(
            "ns3::UdpSocketFactory", ns.InetSocketAddress(ns.Ipv4Address.GetAny(), SINK_PORT).ConvertTo())
        apps = helper.Install(hosts.Get(dst))
        apps.Start(ns.Seconds(0))
        sinks.append(ns.DynamicCast[ns.PacketSink](apps.Get(0)))
    for src, dst in flows:
        onoff = ns.OnOffHelper(
            "ns3::UdpSocketFactory", ns.InetSocketAddress(host_addr[dst], SINK_PORT).ConvertTo())
        onoff.SetAttribute("OnTime", ns.StringValue("ns3::ConstantRandomVariable[Constant=1e6]"))
        onoff.SetAttribute("OffTime", ns.StringValue("ns3::ConstantRandomVariable[Constant=0]"))
        onoff.SetAttribute("PacketSize", ns.UintegerValue(PAYLOAD_BYTES))
        onoff.SetAttribute("DataRate", ns.DataRateValue(ns.DataRate(app_bps)))
        onoff.SetAttribute("MaxBytes", ns.UintegerValue(a.flow_bytes))
        apps = onoff.Install(hosts.Get(src))
        apps.Start(ns.Seconds(0))
        apps.Stop(stop)

    lsbench = None
    if a.check:
        import cppyy
        cppyy.cppdef(CHECK_CPP)
        lsbench = cppyy.gbl.lsbench
        lsbench.Connect()

    ns.Simulator.Stop(stop)
    t_run = time.perf_counter()
    ns.Simulator.Run()
    t_end = time.perf_counter()

    # Per-device TX queue counters -> packet-hops (see module docstring).
    p2p_devs = [ns.DynamicCast[ns.PointToPointNetDevice](d) for d in devices]
    queues = [d.GetQueue() for d in p2p_devs]
    hops = [q.GetTotalReceivedPackets() - q.GetNPackets() - q.GetTotalDroppedPacketsAfterDequeue()
            for q in queues]
    host_tx = sum(hops[2 * h] for h in range(n_hosts))  # device 0 of each host link = host NIC
    pkt_hops = sum(hops)
    pkts_rx = sum(s.GetTotalRx() for s in sinks) // PAYLOAD_BYTES
    queued = sum(q.GetNPackets() for q in queues)
    wall = t_end - t_run
    out = {
        "simulator": "ns-3.44 (PyPI wheel ns3==3.44.post0, Python/cppyy-configured)",
        "config": {k: v for k, v in vars(a).items() if k not in ("json",)},
        "hosts": n_hosts, "links": len(devices) // 2, "flows": len(flows),
        "link_bps": link_bps, "app_payload_bps": app_bps,
        "sim_s": ns.Simulator.Now().GetSeconds(),
        "wall_run_s": wall,
        "wall_setup_s": t_run - t_setup,
        "wall_import_s": t_setup - t_import,
        "events": ns.Simulator.GetEventCount(),
        "pkts_tx_hosts": host_tx,
        "pkts_rx": pkts_rx,
        "pkts_queued_at_end": queued,
        # sent - received - still queued = dropped + in flight on a wire at stop time
        "pkts_lost_or_in_flight": host_tx - pkts_rx - queued,
        "packet_hops": pkt_hops,
        "packet_hops_per_wall_s": pkt_hops / wall if wall > 0 else None,
        "events_per_wall_s": ns.Simulator.GetEventCount() / wall if wall > 0 else None,
        "rx_goodput_gbps": pkts_rx * PAYLOAD_BYTES * 8 / ns.Simulator.Now().GetSeconds() / 1e9,
        "flow_list": flows,
    }
    if lsbench is not None:
        out["check"] = {
            "phy_tx_begin": int(lsbench.g_phyTxBegin),
            "hops_match": int(lsbench.g_phyTxBegin) == pkt_hops,
            "drops_tc": int(lsbench.g_tcDrop), "drops_queue": int(lsbench.g_queueDrop),
            "drops_ipv4": int(lsbench.g_ipDrop),
        }
    ns.Simulator.Destroy()
    return out


def main(argv=None):
    a = parse_args(argv)
    out = build_and_run(a)
    if a.json:
        print(json.dumps(out))
        return 0
    for k, v in out.items():
        if k == "flow_list":
            v = f"{len(v)} flows, first: {v[:4]}"
        print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
