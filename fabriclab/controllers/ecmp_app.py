"""os-ken OpenFlow application: static L3 forwarding with per-flow ECMP (SELECT groups).

OpenFlow 1.3 semantics throughout.  One exception, and why: a SELECT group's bucket choice
must hash the UDP source port (RoCE puts its per-queue-pair entropy there, and that is what
per-flow ECMP spreads on), but Open vSwitch's default group hash ignores UDP ports (it is
``flow_hash_symmetric_l4``, ports for TCP and SCTP only).  The hash fields can be chosen
with OVS's selection-method group property, which OVS accepts only in OpenFlow 1.5 group
messages.  So the app also offers 1.5; when a switch negotiates it, the groups carry
``selection_method=hash`` over the IPv4 5-tuple.  A 1.3-only switch still works, with the
default hash (logged as a warning).

Everything is proactive.  When a switch connects, the app wipes its flows and groups and
installs the table from :func:`fabriclab.controllers.routing.switch_tables`:

* one SELECT group per distinct multi-port ECMP set (buckets of weight 1, one output each);
* ``eth_type=0x0800, ipv4_dst=<host>/32`` -> that group, or straight to the single port;
* a table-miss entry that drops: hosts have static ARP, so nothing needs flooding, and
  nothing ever comes to the controller (no packet-in storms);
* with GSE on (``FABRICLAB_GSE`` = ``central`` | ``egress``), on leaves: the container path
  flows ``ip, ip_dscp=k+1`` -> uplink k, the leaf's own hosts' routes raised above them,
  and in central mode the punt of REQUESTs (UDP 4792 from host ports) to the controller,
  where :mod:`fabriclab.controllers.gsos_app` serves them.  Priorities and their reasons:
  :mod:`fabriclab.controllers.routing`;

then a barrier.  When the barrier reply comes back without an error reported since the
install began, the switch is recorded as ready.

Configuration comes from the environment (``run.py`` sets it from its command line):

``FABRICLAB_TOPOLOGY``
    path of a JSON file holding ``Topology.to_dict()``;
``FABRICLAB_GSE``
    ``central``, ``egress``, or unset / empty for no GSE flows;
``FABRICLAB_READY_FILE``
    path of the ready file, truncated at start-up.  One JSON object per line, appended and
    flushed when a switch is ready, e.g.
    ``{"dpid": 1, "switch": "l0", "groups": 1, "routes": 4, ...}``.  A switch that reconnects
    is reinstalled and reported again, so readers should take the set of ``dpid`` values
    (:func:`fabriclab.wire.ready.read_ready_file`).

Handlers run on the app's single event thread, so the bookkeeping dict needs no lock.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                       HANDSHAKE_DISPATCHER, MAIN_DISPATCHER, set_ev_cls)
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

from ..wire.ready import ReadyFile
from .routing import (ENV_GSE, ENV_READY_FILE, ENV_TOPOLOGY, ETH_TYPE_IPV4, GSE_PORT,
                      GSE_PUNT_PRIORITY, IP_PROTO_UDP, PATH_PRIORITY, TABLE_MISS_PRIORITY,
                      SwitchTable, check_gse_mode, load_topology, switch_tables)

LOG = logging.getLogger("fabriclab.controllers.ecmp_app")


class EcmpApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        topo_path = os.environ.get(ENV_TOPOLOGY)
        ready_path = os.environ.get(ENV_READY_FILE)
        if not topo_path or not ready_path:
            raise RuntimeError(f"{ENV_TOPOLOGY} and {ENV_READY_FILE} must both be set")
        topo = load_topology(topo_path)
        self.gse = check_gse_mode(os.environ.get(ENV_GSE))
        self.tables: dict[int, SwitchTable] = switch_tables(topo, self.gse)
        self.ready_file = ReadyFile(ready_path)
        # Installs awaiting their final barrier reply, keyed by the connection (not the
        # dpid) so a reply or error from an older connection of the same switch is ignored.
        self._pending: dict[object, _Pending] = {}
        LOG.info("topology %s: %d switches, %d hosts; GSE %s; ready file %s",
                 topo.description, len(self.tables), len(topo.hosts), self.gse or "off",
                 ready_path)

    def close(self):
        self.ready_file.close()

    # -- handlers ------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        # msg.datapath_id, not datapath.id: os-ken's own handler sets datapath.id on another
        # thread, possibly after this one runs.
        dpid = ev.msg.datapath_id
        table = self.tables.get(dpid)
        if table is None:
            LOG.error("switch with unknown dpid %016x connected; known: %s; installing nothing",
                      dpid, sorted(self.tables))
            return
        dp = ev.msg.datapath
        if dp.ofproto.OFP_VERSION != ofproto_v1_5.OFP_VERSION and table.groups:
            LOG.warning("dpid %016x speaks OpenFlow %#x only: its SELECT groups use Open "
                        "vSwitch's default hash, which ignores UDP ports", dpid,
                        dp.ofproto.OFP_VERSION)
        self._pending[dp] = _Pending(dpid, install(dp, table))
        s = table.summary()
        LOG.info("dpid %016x (%s): sent %d SELECT groups, %d routes (%d via group, "
                 "%d direct) + table-miss drop%s; waiting for barrier", dpid, table.switch,
                 s["groups"], s["routes"], s["group_routes"], s["direct_routes"],
                 f"; GSE {table.gse}: {s['path_rules']} path flows, {s['local_routes']} "
                 f"local routes raised, {s['punt_ports']} REQUEST punts" if table.gse
                 else "")

    @set_ev_cls(ofp_event.EventOFPBarrierReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def barrier_reply_handler(self, ev):
        # Also registered for CONFIG: the reply can overtake os-ken's move to MAIN (that move
        # waits for the port-description reply, handled on another thread).
        pending = self._pending.get(ev.msg.datapath)
        if pending is None or pending.barrier_xid != ev.msg.xid:
            return  # the intermediate barrier
        del self._pending[ev.msg.datapath]
        table = self.tables[pending.dpid]
        if pending.errors:
            LOG.error("dpid %016x (%s): %d OpenFlow errors during install; NOT ready",
                      pending.dpid, table.switch, pending.errors)
            return
        self.ready_file.append({**table.summary(), "time": time.time()})
        LOG.info("dpid %016x (%s): ready", pending.dpid, table.switch)

    @set_ev_cls(ofp_event.EventOFPErrorMsg,
                [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error_handler(self, ev):
        msg = ev.msg
        pending = self._pending.get(msg.datapath)
        if pending is not None:
            pending.errors += 1
        dpid = pending.dpid if pending is not None else msg.datapath.id
        LOG.error("dpid %s: OpenFlow error type=%d code=%d (xid %d)",
                  f"{dpid:016x}" if dpid is not None else "?", msg.type, msg.code, msg.xid)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def disconnect_handler(self, ev):
        pending = self._pending.pop(ev.datapath, None)
        if pending is not None:
            LOG.warning("dpid %016x disconnected before its install completed", pending.dpid)


@dataclass
class _Pending:
    dpid: int
    barrier_xid: int
    errors: int = 0


def install(datapath, table: SwitchTable) -> int:
    """Send the full install for one switch; returns the xid of the final barrier."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser

    # Flows first: deleting a group also removes the flows that point at it, but starting
    # from an empty flow table makes the intent plain.
    datapath.send_msg(parser.OFPFlowMod(datapath, table_id=ofp.OFPTT_ALL,
                                        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                                        out_group=ofp.OFPG_ANY, match=parser.OFPMatch()))
    datapath.send_msg(parser.OFPGroupMod(datapath, command=ofp.OFPGC_DELETE,
                                         group_id=ofp.OFPG_ALL))
    for g in table.groups:
        datapath.send_msg(_select_group(datapath, g.group_id, g.ports))
    # A switch may reorder messages between barriers; the flows below reference the groups.
    datapath.send_msg(parser.OFPBarrierRequest(datapath))

    def flow(priority, match, action):
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [action])]
        datapath.send_msg(parser.OFPFlowMod(datapath, priority=priority, instructions=inst,
                                            match=match))

    for r in table.routes:
        action = (parser.OFPActionGroup(r.group_id) if r.group_id is not None
                  else parser.OFPActionOutput(r.output_port))
        # exact: /32; priority ROUTE_PRIORITY, or LOCAL_ROUTE_PRIORITY (GSE, own hosts)
        flow(r.priority, parser.OFPMatch(eth_type=ETH_TYPE_IPV4, ipv4_dst=r.ip), action)
    # GSE container paths: DSCP path + 1 picks the uplink.
    for rule in table.path_rules:
        flow(PATH_PRIORITY, parser.OFPMatch(eth_type=ETH_TYPE_IPV4, ip_dscp=rule.dscp),
             parser.OFPActionOutput(rule.output_port))
    # GSE central mode: REQUESTs from the hosts go to GSOS, whole (no buffering).
    for port in table.punt_ports:
        flow(GSE_PUNT_PRIORITY,
             parser.OFPMatch(in_port=port, eth_type=ETH_TYPE_IPV4, ip_proto=IP_PROTO_UDP,
                             udp_dst=GSE_PORT),
             parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER))
    # No instructions: the packet is dropped instead of being sent to the controller.
    datapath.send_msg(parser.OFPFlowMod(datapath, priority=TABLE_MISS_PRIORITY,
                                        match=parser.OFPMatch(), instructions=[]))

    barrier = parser.OFPBarrierRequest(datapath)
    datapath.set_xid(barrier)
    datapath.send_msg(barrier)
    return barrier.xid


# OVS's selection-method group property (Netronome experimenter), OpenFlow 1.5 only: see
# ovs/include/openflow/netronome-ext.h, struct ntr_group_prop_selection_method.
NTR_VENDOR_ID = 0x0000154D
NTRT_SELECTION_METHOD = 1
# The fields the hash covers, as OVS wants them: OXM TLVs whose value is the (all-ones)
# mask.  ip_proto is left out on purpose: its 5-byte TLV would make the property's length
# odd in 4-byte units, and the TCP/UDP port fields already imply the protocol (OVS hashes
# only the fields whose prerequisites a packet meets).
_HASH_FIELDS = [(11, 4), (12, 4), (13, 2), (14, 2), (15, 2), (16, 2)]  # ipv4 src, dst,
# tcp src, dst, udp src, dst


def _oxm_tlv(field: int, length: int) -> bytes:
    header = (0x8000 << 16) | (field << 9) | length  # class OpenFlow basic, no mask bit
    return header.to_bytes(4, "big") + b"\xff" * length


def _selection_method_prop(parser):
    method = b"hash".ljust(16, b"\0")
    body = bytes(4) + method + bytes(8)  # pad, selection_method, selection_method_param
    body += b"".join(_oxm_tlv(f, n) for f, n in _HASH_FIELDS)
    words = [int.from_bytes(body[i:i + 4], "big") for i in range(0, len(body), 4)]
    return parser.OFPGroupPropExperimenter(type_=0xFFFF, experimenter=NTR_VENDOR_ID,
                                           exp_type=NTRT_SELECTION_METHOD, data=words)


def _select_group(datapath, group_id: int, ports):
    """An OFPGC_ADD of a SELECT group, one bucket of weight 1 per output port."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    if ofp.OFP_VERSION == ofproto_v1_5.OFP_VERSION:
        buckets = [parser.OFPBucket(bucket_id=i, actions=[parser.OFPActionOutput(p)],
                                    properties=[parser.OFPGroupBucketPropWeight(
                                        type_=ofp.OFPGBPT_WEIGHT, weight=1)])
                   for i, p in enumerate(ports)]
        return parser.OFPGroupMod(datapath, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_SELECT,
                                  group_id=group_id, buckets=buckets,
                                  properties=[_selection_method_prop(parser)])
    buckets = [parser.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                                actions=[parser.OFPActionOutput(p)]) for p in ports]
    return parser.OFPGroupMod(datapath, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_SELECT,
                              group_id=group_id, buckets=buckets)
