"""os-ken app running GSOS, GSE's central scheduler (``FABRICLAB_GSE=central`` only; ``run``
loads it next to :mod:`fabriclab.controllers.ecmp_app`, which installs the flows).

* GSP placement (``FABRICLAB_GSE_PLACEMENT``): ``nic`` (default), a GSP in each host agent,
  its id the host's index; ``leaf``, a GSP daemon beside each leaf on the leaf's *GSP port*
  (:func:`fabriclab.controllers.routing.gsp_ofport`), its id the index of the leaf's first
  host (:func:`~fabriclab.controllers.routing.leaf_gsp_id`).  Destination ports are hosts
  either way.
* Leaves punt every UDP datagram to port 4792 arriving from a host port (placement nic) or
  from the GSP port (placement leaf; see :mod:`fabriclab.controllers.routing`); a packet-in
  holding a REQUEST goes to
  :meth:`Gsos.request <fabriclab.cc_algorithms.gsos.Gsos.request>` and is answered at once
  with a receipt (a GRANT of 0 bytes, GSOS's sign of life for the GSP's fallback), anything
  else is counted as ignored.  The GSP id in the REQUEST is trusted (not checked against
  the port it came in by): the grants go to that GSP's port (placement leaf: an id that is
  no leaf's GSP is rejected).
* A driver thread sleeps until
  :meth:`Gsos.next_time <fabriclab.cc_algorithms.gsos.Gsos.next_time>` (or a new request)
  and sends each due grant as a packet-out to the grantee's leaf, out of the grantee
  host's port (placement nic) or of the leaf's GSP port (placement leaf;
  :func:`fabriclab.controllers.gsos.grant_egress`):
  Ethernet(GSOS_MAC -> host MAC) / IPv4(GSOS_IP -> host IP, DSCP 0, TTL 64) / UDP(4792 ->
  4792) / GRANT (:func:`fabriclab.controllers.gsos.grant_frame`; placement leaf: the
  addresses of the leaf's first host, which the GSP daemon does not check).
* Counters go to the controller log (every 10 s when they changed, and at exit) and to the
  JSON file named by ``FABRICLAB_GSOS_STATS`` (if set): rewritten atomically every second
  and at a clean exit (SIGTERM / SIGINT, through ``run``'s ``on_exit`` hook).  After a
  SIGKILL the file holds the last second's numbers.

Threads: os-ken's native hub runs this app's handlers on its own event thread and the
driver is a plain daemon thread; one condition variable (lock) serialises every use of the
:class:`~fabriclab.cc_algorithms.gsos.Gsos` object and of the datapath map.  Packet-outs
are sent outside the lock (``Datapath.send_msg`` is a thread-safe queue put); they carry
xids of their own so the driver never touches the datapath's xid counter, which the
install uses.

If the controller dies, the switches (fail-mode secure) keep the punt flows and drop the
REQUESTs they would punt: the GSPs' fallback handles a silent GSOS, not the fabric.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

from ..atomic import write_json_atomic
from ..cc_algorithms.gsos import Grant
from .gsos import config_from_env, grant_egress, grant_frame, make_gsos, parse_request_frame
from ..topologies import PortId
from .routing import ENV_GSOS_STATS, ENV_TOPOLOGY, fabric_link_rates, load_topology

LOG = logging.getLogger("fabriclab.controllers.gsos_app")
STATS_INTERVAL_S = 1.0
LOG_INTERVAL_S = 10.0


class GsosApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.topo = load_topology(os.environ[ENV_TOPOLOGY])
        cfg = config_from_env(os.environ)
        self.gsos = make_gsos(self.topo, **cfg)
        self.scale = cfg["scale"]
        self.placement = cfg["placement"]
        self.stats_path = os.environ.get(ENV_GSOS_STATS) or None
        self._cond = threading.Condition()
        self._dps: dict[int, object] = {}  # dpid -> datapath (leaves are what we use)
        self._xid = itertools.count(0x40000000)
        self.ignored = 0  # packet-ins that were not REQUESTs
        self.rejected = 0  # REQUESTs naming unknown hosts / bad sizes
        self.unsent = 0  # grants for a leaf not connected
        self.receipts = 0  # empty GRANTs answering REQUEST messages
        self._stopping = False
        self._write_lock = threading.Lock()  # the driver and on_exit both write the file
        self._final_written = False
        self._thread = threading.Thread(target=self._drive, name="gsos-driver", daemon=True)
        self._transit = set(fabric_link_rates(self.topo))
        LOG.info("GSOS: %d host ports, GSPs placed in the %s, scale %g, mtu %d, header %d; "
                 "stats file %s", len(self.topo.hosts), self.placement, cfg["scale"],
                 cfg["mtu"], cfg["header"], self.stats_path)

    def start(self):
        super().start()
        self._thread.start()

    # -- handlers (thin) ---------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        with self._cond:
            self._dps[ev.msg.datapath_id] = ev.msg.datapath

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def disconnect_handler(self, ev):
        with self._cond:
            for dpid, dp in list(self._dps.items()):
                if dp is ev.datapath:
                    del self._dps[dpid]

    # CONFIG too: a REQUEST can come in before os-ken moves the switch to MAIN.
    @set_ev_cls(ofp_event.EventOFPPacketIn, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def packet_in_handler(self, ev):
        req = parse_request_frame(ev.msg.data)
        now = time.monotonic_ns()
        with self._cond:
            if req is None:
                self.ignored += 1
                return
            try:
                self.gsos.request(now, *req)
            except ValueError as e:
                self.rejected += 1
                LOG.warning("REQUEST rejected: %s", e)
                return
            self.receipts += 1
            self._cond.notify()
        # The receipt (an empty GRANT) tells the GSP that GSOS is alive: no receipt within
        # gse.fallback_us and it falls back to egress scheduling.
        self._send_grant(Grant(req[0], req[1], 0, None), ev.msg.datapath)

    # -- driver ------------------------------------------------------------------------------
    def _drive(self) -> None:
        next_stats = next_log = time.monotonic()
        logged = None
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic_ns()
                grants = self.gsos.due(now)
                sends = [(g, self._dps.get(
                    grant_egress(self.topo, g.src_gsp, self.placement)[0])) for g in grants]
                if not grants:
                    timeout = next_stats - now / 1e9
                    nt = self.gsos.next_time()
                    if nt is not None:
                        timeout = min(timeout, (nt - now) / 1e9)
                    if timeout > 0:
                        self._cond.wait(timeout)
            for g, dp in sends:
                self._send_grant(g, dp)
            t = time.monotonic()
            if t >= next_stats:
                next_stats = t + STATS_INTERVAL_S
                stats = self.stats()
                self._write_stats(stats)
                if t >= next_log and stats != logged:
                    next_log = t + LOG_INTERVAL_S
                    logged = stats
                    LOG.info("GSOS stats: %s", _fmt(stats))

    def _send_grant(self, g: Grant, dp) -> None:
        dpid, port = grant_egress(self.topo, g.src_gsp, self.placement)
        if dp is None:
            with self._cond:
                self.unsent += 1
            LOG.warning("grant for GSP %d dropped: its leaf (dpid %016x) is not connected",
                        g.src_gsp, dpid)
            return
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [parser.OFPActionOutput(port, 0)]
        data = grant_frame(self.topo, g)
        if ofp.OFP_VERSION == ofproto_v1_5.OFP_VERSION:
            msg = parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                      match=parser.OFPMatch(in_port=ofp.OFPP_CONTROLLER),
                                      actions=actions, data=data)
        else:
            msg = parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                      in_port=ofp.OFPP_CONTROLLER, actions=actions, data=data)
        msg.set_xid(next(self._xid) & 0xFFFFFFFF)
        dp.send_msg(msg)

    # -- faults ------------------------------------------------------------------------------
    def set_links_down(self, links) -> None:
        """The switches routed around these transit links (GSOS link ids, every other link
        alive): no grant takes a path across them while another is left.  Called by the
        ECMP app's rerouter at each reroute."""
        with self._cond:
            self.gsos.links_down(links)
            self._cond.notify()
        LOG.info("GSOS: transit links down: %s",
                 ", ".join(sorted(f"{p.node}:{p.port}" for p in links)) or "none")

    def on_command(self, cmd: dict) -> None:
        """A command from the orchestrator (``run`` reads them from stdin):
        ``{"cmd": "link_degrade", "link": "l0-s1", "fraction": 0.5}``: the link now runs at
        that fraction of its rate, so GSOS reserves it longer per byte (1 restores it)."""
        if cmd.get("cmd") != "link_degrade":
            return
        link = self.topo.find_link(cmd.get("link"))
        if link is None:
            LOG.warning("link_degrade of unknown link %r", cmd.get("link"))
            return
        rate = max(1, round(link.rate_bps * float(cmd["fraction"]) * self.scale))
        with self._cond:
            for n, p in ((link.a, link.a_port), (link.b, link.b_port)):
                pid = PortId(n, p)
                if pid in self._transit:
                    self.gsos.link_rate(pid, rate)
        LOG.info("GSOS: link %s now at %d bit/s (emulated)", cmd["link"], rate)

    # -- stats -------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._cond:
            return {**self.gsos.stats(), "ignored": self.ignored, "rejected": self.rejected,
                    "receipts": self.receipts,
                    "unsent": self.unsent}

    def _write_stats(self, stats: dict, final: bool = False) -> None:
        if not self.stats_path:
            return
        with self._write_lock:
            if self._final_written:
                return
            self._final_written = final
            try:
                write_json_atomic(self.stats_path, {**stats, "time": time.time()}, fsync=True,
                                  sort_keys=True)
            except OSError as e:
                LOG.error("cannot write GSOS stats to %s: %s", self.stats_path, e)

    def on_exit(self) -> None:
        """Called by ``run`` on a clean stop: final stats to the file and the log."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        stats = self.stats()
        self._write_stats(stats, final=True)
        LOG.info("GSOS final stats: %s", _fmt(stats))


def _fmt(stats: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in stats.items())
