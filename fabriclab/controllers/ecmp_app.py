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
  where :mod:`fabriclab.controllers.gsos_app` serves them;
* with GSE's placement leaf (``FABRICLAB_GSE_PLACEMENT=leaf``, central mode), on leaves:
  the flows that take the hosts' RoCE data and the containers coming down to the leaf's
  hosts to the GSP port (one after the last model port), and the punt from the GSP port
  instead of the host ports.  Priorities and their reasons:
  :mod:`fabriclab.controllers.routing`;

then a barrier.  When the barrier reply comes back without an error reported since the
install began, the switch is recorded as ready.

Configuration comes from the environment (``run.py`` sets it from its command line):

``FABRICLAB_TOPOLOGY``
    path of a JSON file holding ``Topology.to_dict()``;
``FABRICLAB_GSE``
    ``central``, ``egress``, or unset / empty for no GSE flows;
``FABRICLAB_GSE_PLACEMENT``
    ``nic`` (also unset / empty) or ``leaf`` (with ``central`` only; no faults);
``FABRICLAB_READY_FILE``
    path of the ready file, truncated at start-up.  One JSON object per line, appended and
    flushed when a switch is ready, e.g.
    ``{"dpid": 1, "switch": "l0", "groups": 1, "routes": 4, ...}``.  A switch that reconnects
    is reinstalled and reported again, so readers should take the set of ``dpid`` values
    (:func:`fabriclab.wire.ready.read_ready_file`).

Faults (``FABRICLAB_DETECT_S`` set, by a run whose spec has faults): :class:`Rerouter`
routes around links whose ports go down, ``routing.detect_us`` after Open vSwitch reports
them, as :class:`fabriclab.faults.Routes` says.  It changes the route and path flows only
(it diffs entries of its own, :func:`fabriclab.controllers.routing.fabric_entries`), never
the punt or GSP flows; placement leaf with faults is refused.

Handlers run on the app's single event thread, so the bookkeeping dict needs no lock (the
rerouter, which has a thread of its own, keeps its state under its own lock).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,
                                       HANDSHAKE_DISPATCHER, MAIN_DISPATCHER, set_ev_cls)
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

from ..faults import Routes
from ..topologies import PortId, Topology
from ..wire.ready import ReadyFile
from .routing import (ENV_DETECT_S, ENV_EVENTS_FILE, ENV_GSE, ENV_GSE_PLACEMENT, ENV_ON_NO_PATH,
                      ENV_READY_FILE, ENV_RECONVERGE, ENV_TOPOLOGY, ETH_TYPE_IPV4, GSE_PORT,
                      GSE_PUNT_PRIORITY, GSP_PRIORITY, IP_PROTO_UDP, PATH_PRIORITY,
                      TABLE_MISS_PRIORITY, SwitchTable, bucket_ids, check_gse_mode,
                      check_gse_placement, dead_gse_paths, dead_transit, fabric_entries,
                      link_ports, load_topology, switch_tables)

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
        self.placement = check_gse_placement(os.environ.get(ENV_GSE_PLACEMENT), self.gse)
        detect = os.environ.get(ENV_DETECT_S, "").strip()
        if detect and self.gse is not None and self.placement == "leaf":
            # fabric_entries knows neither the GSP port nor the GSP flows' interplay with
            # rerouted (bounced, DSCP-cleared) frames; the spec layer refuses it too
            raise ValueError("gse.placement leaf on Mininet runs without faults only")
        self.tables: dict[int, SwitchTable] = switch_tables(topo, self.gse, self.placement)
        self.ready_file = ReadyFile(ready_path)
        # Installs awaiting their final barrier reply, keyed by the connection (not the
        # dpid) so a reply or error from an older connection of the same switch is ignored.
        self._pending: dict[object, _Pending] = {}
        self.reroute = (Rerouter(topo, self.gse, self.tables, float(detect),
                                 os.environ.get(ENV_RECONVERGE) or "fabric",
                                 os.environ.get(ENV_ON_NO_PATH) or "drop",
                                 os.environ.get(ENV_EVENTS_FILE) or None)
                        if detect else None)
        LOG.info("topology %s: %d switches, %d hosts; GSE %s; ready file %s; rerouting %s",
                 topo.description, len(self.tables), len(topo.hosts),
                 f"{self.gse} (GSPs in the {self.placement})" if self.gse else "off",
                 ready_path, f"{detect} s after a port goes down or up" if detect else "off")

    def start(self):
        super().start()
        if self.reroute is not None:
            self.reroute.start()

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
        if table.gsp_port is not None:
            LOG.info("dpid %016x (%s): %d flows to the GSP port %d", dpid, table.switch,
                     s["gsp_rules"], table.gsp_port)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def barrier_reply_handler(self, ev):
        # Also registered for CONFIG: the reply can overtake os-ken's move to MAIN (that move
        # waits for the port-description reply, handled on another thread).
        if self.reroute is not None and self.reroute.barrier_reply(ev.msg.xid):
            return
        pending = self._pending.get(ev.msg.datapath)
        if pending is None or pending.barrier_xid != ev.msg.xid:
            return  # the intermediate barrier
        del self._pending[ev.msg.datapath]
        table = self.tables[pending.dpid]
        if pending.errors:
            LOG.error("dpid %016x (%s): %d OpenFlow errors during install; NOT ready",
                      pending.dpid, table.switch, pending.errors)
            return
        if self.reroute is not None:
            self.reroute.switch_ready(table.switch, ev.msg.datapath)
        self.ready_file.append({**table.summary(), "time": time.time()})
        LOG.info("dpid %016x (%s): ready", pending.dpid, table.switch)

    @set_ev_cls(ofp_event.EventOFPPortStatus, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def port_status_handler(self, ev):
        if self.reroute is not None:
            self.reroute.port_status(ev.msg)

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
        if self.reroute is not None:
            self.reroute.switch_gone(ev.datapath)


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
    # GSE placement leaf: the hosts' RoCE data (ECT(0): in_port + udp_dst 4791 + ip_ecn 2)
    # and the containers coming down to the leaf's hosts (ipv4_dst + ip_dscp) go to the GSP
    # port.  The prerequisites hold: eth_type IPv4 for ip_ecn / ip_dscp / ipv4_dst, and the
    # RoCE match carries ip_proto=17 for udp_dst.
    for rule in table.gsp_rules:
        flow(GSP_PRIORITY, parser.OFPMatch(eth_type=ETH_TYPE_IPV4, **dict(rule.match)),
             parser.OFPActionOutput(rule.output_port))
    # GSE central mode: REQUESTs from the hosts (placement leaf: the GSP) go to GSOS, whole
    # (no buffering).
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


def _select_group(datapath, group_id: int, ports, ids=None):
    """An OFPGC_ADD of a SELECT group, one bucket of weight 1 per output port; ``ids``: the
    buckets' ids (OpenFlow 1.5; default 0, 1, ...), see :func:`routing.bucket_ids`."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    if ofp.OFP_VERSION == ofproto_v1_5.OFP_VERSION:
        ids = list(range(len(ports))) if ids is None else ids
        buckets = [parser.OFPBucket(bucket_id=i, actions=[parser.OFPActionOutput(p)],
                                    properties=[parser.OFPGroupBucketPropWeight(
                                        type_=ofp.OFPGBPT_WEIGHT, weight=1)])
                   for i, p in zip(ids, ports)]
        return parser.OFPGroupMod(datapath, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_SELECT,
                                  group_id=group_id, buckets=buckets,
                                  properties=[_selection_method_prop(parser)])
    buckets = [parser.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                                actions=[parser.OFPActionOutput(p)]) for p in ports]
    return parser.OFPGroupMod(datapath, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_SELECT,
                              group_id=group_id, buckets=buckets)


# -- faults: rerouting on port-status events --------------------------------------------------
REROUTE_XID_BASE = 0x50000000  # xids of our own (the install's come from the datapath)


class Rerouter:
    """Routes around dead links, as :class:`fabriclab.faults.Routes` says, after the
    detection time of the spec (``routing.detect_us``).

    * Detection: Open vSwitch reports a port whose interface went down (or came back) with
      an OpenFlow port-status message.  A link is down while either of its switch ports is;
      each change of a link is acted on ``detect_s`` of real time after the first port-status
      that showed it (never earlier: the emulated switches would otherwise react faster than
      the spec's detection time).
    * Acting: the dead links go into (or out of) ``Routes``, every switch's routes are
      recomputed (:func:`routing.fabric_entries`) and each switch gets the difference:
      SELECT groups for new port sets (bucket ids kept: resilient), then the route flows
      modified (``MODIFY_STRICT``), added or deleted, a barrier, then the groups no longer
      used deleted.  The barrier replies of every switch that changed mark the moment the
      new forwarding is in place.
    * GSE: GSOS (central mode, same process) stops granting paths across the dead links at
      once; what GSPs must stop spraying over (:func:`routing.dead_gse_paths`) goes into
      the event record, which the orchestrator passes on to the host agents.
    * Every reroute is appended to the events file (JSON lines, CLOCK_MONOTONIC ns):
      ``{"event": "reroute", "down": [links], "up": [links], "dead": [links],
      "port_status_ns", "due_ns", "start_ns", "installed_ns", "switches", "gse_dead_paths"}``.

    Port-status handlers run on os-ken's event thread; the reroutes on a thread of their
    own, which sleeps until the next detection is due.  One condition variable guards the
    state both touch.
    """

    def __init__(self, topo: Topology, gse: str | None, tables: dict[int, SwitchTable],
                 detect_s: float, reconverge: str, on_no_path: str,
                 events_path: str | None):
        if not detect_s >= 0:
            raise ValueError(f"{ENV_DETECT_S} must be >= 0, not {detect_s}")
        if reconverge not in ("fabric", "local") or on_no_path not in ("drop", "bounce"):
            raise ValueError(f"bad {ENV_RECONVERGE}={reconverge!r} or "
                             f"{ENV_ON_NO_PATH}={on_no_path!r}")
        self.topo, self.gse = topo, gse
        self.detect_ns = round(detect_s * 1e9)
        self.on_no_path = on_no_path
        self.routes = Routes(topo, reconverge)
        self.healthy = fabric_entries(topo, self.routes, gse, on_no_path)
        self.entries = {s: dict(e) for s, e in self.healthy.items()}
        self.switch_of = {t.dpid: t.switch for t in tables.values()}
        self._healthy_gids = {t.switch: {g.ports: g.group_id for g in t.groups}
                              for t in tables.values()}
        self.gids = {s: dict(g) for s, g in self._healthy_gids.items()}
        self.next_gid = {s: max(g.values(), default=0) + 1 for s, g in self.gids.items()}
        self.buckets = {s: bucket_ids(topo, s) for s in topo.switches}
        self.dps: dict[str, object] = {}  # switch -> datapath, once its install is done
        self.port_down: set[PortId] = set()
        self.target: dict = {}  # link -> down (as last scheduled)
        self.due: list = []  # heap of (due ns, seq, link or None, down, port-status ns)
        self._seq = itertools.count()
        self._xids = itertools.count(REROUTE_XID_BASE)
        self.waiting: dict[int, dict] = {}  # barrier xid -> the reroute record it completes
        self.cond = threading.Condition()
        self.events = ReadyFile(events_path) if events_path else None
        self._thread = threading.Thread(target=self._run, name="reroute", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- os-ken's event thread -----------------------------------------------------------
    def switch_ready(self, switch: str, dp) -> None:
        """The install (the healthy table) is done on ``switch``: if links are known dead,
        its routes are brought up to date at once."""
        with self.cond:
            self.dps[switch] = dp
            # the install wiped the switch's flows and groups and put the healthy ones in
            self.entries[switch] = dict(self.healthy[switch])
            self.gids[switch] = dict(self._healthy_gids[switch])
            self.next_gid[switch] = max(max(self.gids[switch].values(), default=0) + 1,
                                        self.next_gid[switch])
            if self.routes.dead:  # a switch that reconnected while links are dead
                heapq.heappush(self.due, (time.monotonic_ns(), next(self._seq), None, False,
                                          None))
                self.cond.notify()

    def switch_gone(self, dp) -> None:
        with self.cond:
            for s, d in list(self.dps.items()):
                if d is dp:
                    del self.dps[s]

    def port_status(self, msg) -> None:
        now = time.monotonic_ns()
        dp = msg.datapath
        ofp = dp.ofproto
        switch = self.switch_of.get(dp.id)
        n = msg.desc.port_no
        if switch is None or not 1 <= n <= len(self.topo.nodes[switch].ports):
            return
        port = PortId(switch, n - 1)
        down = (msg.reason == ofp.OFPPR_DELETE or bool(msg.desc.config & ofp.OFPPC_PORT_DOWN)
                or bool(msg.desc.state & ofp.OFPPS_LINK_DOWN))
        link = self.topo.nodes[switch].ports[n - 1]
        with self.cond:
            if switch not in self.dps:
                return  # still being set up (Mininet brings interfaces up as it builds)
            (self.port_down.add if down else self.port_down.discard)(port)
            link_down = any(p in self.port_down for p in link_ports(self.topo, link))
            if link_down == self.target.get(link, False):
                return
            self.target[link] = link_down
            heapq.heappush(self.due, (now + self.detect_ns, next(self._seq), link, link_down,
                                      now))
            self.cond.notify()
        LOG.info("port-status: %s port %d %s: link %s %s; acting in %.3f s", switch, n,
                 "down" if down else "up", Topology.link_name(link),
                 "down" if link_down else "up", self.detect_ns / 1e9)

    def barrier_reply(self, xid: int) -> bool:
        """True if ``xid`` is one of our barriers (then handled)."""
        with self.cond:
            rec = self.waiting.pop(xid, None)
            if rec is None:
                return False
            rec["_left"] -= 1
            if rec["_left"]:
                return True
            del rec["_left"]
            rec["installed_ns"] = time.monotonic_ns()
        self._record(rec)
        return True

    # -- the reroute thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    now = time.monotonic_ns()
                    if self.due and self.due[0][0] <= now:
                        break
                    self.cond.wait(None if not self.due else (self.due[0][0] - now) / 1e9)
                batch = []
                while self.due and self.due[0][0] <= now:
                    batch.append(heapq.heappop(self.due))
            try:
                self._reroute(batch)
            except Exception:  # noqa: BLE001  (keep the thread alive; the log says what)
                LOG.exception("reroute failed")

    def _reroute(self, batch: list) -> None:
        start = time.monotonic_ns()
        name = Topology.link_name
        down, up = [], []
        with self.cond:
            for _, _, link, is_down, _ in batch:
                if link is None:
                    continue
                if is_down:
                    self.routes.fail([link])
                    down.append(name(link))
                else:
                    self.routes.restore([link])
                    up.append(name(link))
            dead = set(self.routes.dead)
            new = fabric_entries(self.topo, self.routes, self.gse, self.on_no_path)
            rec = {"event": "reroute", "down": down, "up": up,
                   "dead": sorted(name(k) for k in dead),
                   "port_status_ns": min((b[4] for b in batch if b[4] is not None),
                                         default=None),
                   "due_ns": min(b[0] for b in batch), "start_ns": start}
            if self.gse is not None:
                rec["gse_dead_paths"] = dead_gse_paths(self.topo, dead)
            if self.gse == "central":
                gsos = app_manager.lookup_service_brick("GsosApp")
                if gsos is not None:
                    gsos.set_links_down(dead_transit(self.topo, dead))
            xids = []
            changed = []
            for s, dp in self.dps.items():
                xid = self._sync(s, dp, self.entries[s], new[s])
                self.entries[s] = new[s]
                if xid is not None:
                    xids.append(xid)
                    changed.append(s)
            rec["switches"] = changed
            if xids:
                rec["_left"] = len(xids)
                for x in xids:
                    self.waiting[x] = rec
        LOG.info("reroute: down %s, up %s (dead now: %s): %d switches changed, sent in "
                 "%.1f ms", down or "-", up or "-", rec["dead"] or "none", len(changed),
                 (time.monotonic_ns() - start) / 1e6)
        if not xids:
            rec["installed_ns"] = time.monotonic_ns()
            self._record(rec)

    def _record(self, rec: dict) -> None:
        LOG.info("reroute in place %.3f s after the port-status (%s)",
                 (rec["installed_ns"] - rec["port_status_ns"]) / 1e9
                 if rec["port_status_ns"] else 0.0, ", ".join(rec["down"] + rec["up"]) or "resync")
        if self.events is not None:
            self.events.append(rec)

    def _sync(self, switch: str, dp, old: dict, new: dict) -> int | None:
        """Send ``switch`` what turns its routes ``old`` into ``new``; the xid of the barrier
        after the route changes, None if nothing changed."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        gids = self.gids[switch]
        need = {a[1] for acts in new.values() for a in acts if a[0] == "group"}
        sent = False

        def send(msg):
            msg.set_xid(next(self._xids) & 0xFFFFFFFF)
            dp.send_msg(msg)
            return msg.xid

        for ports in sorted(need - gids.keys()):
            gid = gids[ports] = self.next_gid[switch]
            self.next_gid[switch] += 1
            send(_select_group(dp, gid, ports, [self.buckets[switch][p] for p in ports]))
            sent = True
        if sent:
            send(parser.OFPBarrierRequest(dp))  # the groups exist before flows use them

        def match(m):
            return parser.OFPMatch(eth_type=ETH_TYPE_IPV4, **dict(m))

        def action(a):
            kind = a[0]
            if kind == "output":
                return parser.OFPActionOutput(a[1])
            if kind == "group":
                return parser.OFPActionGroup(gids[a[1]])
            if kind == "dscp0":
                return parser.OFPActionSetField(ip_dscp=0)
            if kind == "dec_ttl":
                return parser.OFPActionDecNwTtl()
            raise ValueError(f"unknown action {a!r}")

        for key, acts in new.items():
            if old.get(key) == acts:
                continue
            prio, m = key
            inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                 [action(a) for a in acts])]
            send(parser.OFPFlowMod(dp, priority=prio, match=match(m), instructions=inst,
                                   command=ofp.OFPFC_ADD if key not in old
                                   else ofp.OFPFC_MODIFY_STRICT))
            sent = True
        for key in old.keys() - new.keys():
            prio, m = key
            send(parser.OFPFlowMod(dp, priority=prio, match=match(m),
                                   command=ofp.OFPFC_DELETE_STRICT, out_port=ofp.OFPP_ANY,
                                   out_group=ofp.OFPG_ANY))
            sent = True
        if not sent:
            return None
        xid = send(parser.OFPBarrierRequest(dp))
        for ports, gid in list(gids.items()):
            if ports not in need:
                send(parser.OFPGroupMod(dp, command=ofp.OFPGC_DELETE, group_id=gid))
                del gids[ports]
        return xid
