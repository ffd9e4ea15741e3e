"""Faults on the Mininet engine: the spec's ``faults`` carried out on veths, HTB classes and
the controller, timed by :class:`fabriclab.faults.FaultPlan` (the model both engines share).

What each kind does, at its fabric time (the orchestrator's loop wakes for it):

* ``link_down`` / ``link_up``: the link's switch-side interfaces are set down / up
  (``ip link set``, root namespace, where Open vSwitch's ports live).  A fabric link has two,
  both set; a host link has one, the switch's: its peer in the host's namespace then loses
  carrier, as a NIC does when its cable dies (setting the host's end down as well would take
  away its address's route, and the agent's sends would fail instead of being lost).
  Frames queued at a port that goes down are flushed by the kernel; frames Open vSwitch
  sends to it afterwards are refused.
* ``switch_down`` / ``switch_up``: every link of the switch, as above.
* ``link_degrade``: the HTB class of both ends is changed to ``fraction`` x the link's
  emulated rate (``tc class change``; the host's end inside its namespace), the eBPF port
  program's rate with it (its phantom queue drains at the new rate, INT reports it), and
  the controller is told (GSOS reserves the link longer per byte).  ECMP does not see it.
* ``controller_kill``: the controller process is killed (SIGKILL, by its PID).

Detection and rerouting are the controller's (:class:`fabriclab.controllers.ecmp_app.Rerouter`):
Open vSwitch reports the port down, the controller waits ``routing.detect_us`` (of fabric
time) and installs the routes :class:`fabriclab.faults.Routes` gives, then appends a line to
its events file.  This module reads those lines: the fault's ``detected_ns`` is when the new
forwarding was in place on every switch (barrier replies), ``reroute_ns`` the time from the
fault to then; and for GSE it passes on to the host agents the container paths their GSPs
must no longer spray over (``PATHS_DOWN`` on their control channel).

Losses on a dead link (:class:`DeadLinkWatch`): while a link is down, Open vSwitch's
datapath flows are dumped every :data:`POLL_S` of real time; the frames and bytes of the
flows whose actions send to a dead port are counted (from the dump before the fault on),
and the last time such a flow was used ("used:" in the dump, millisecond resolution) is the
fault's ``traffic_left_ns``.  Added to that, per dead port, what the kernel flushed from its
queue when it went down (offered to the port, as the eBPF program counts, minus what HTB
sent and the FIFO dropped).  What these numbers miss: frames of a flow in the poll interval
in which the controller moved it (at most :data:`POLL_S`, i.e. ``POLL_S / time dilation``
of fabric time), and on host links what the host sent into its dead cable (its agent does
not know; such frames never reach a switch).  The summary's ``drops`` count these frames as
``dead_link`` instead of ``inside_open_vswitch``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..faults import FaultPlan
from ..metrics.assemble import FaultRecord
from ..topologies import Topology
from ..wire.roce import DATA_OVERHEAD
from .network import htb_burst, intf_name

log = logging.getLogger(__name__)

POLL_S = 0.02  # real seconds between two dumps of the datapath flows while a link is dead
#: after the controller reported a reroute, the watch keeps polling this long (real s): the
#: last frames sent to the dead port show up in the next dump
WATCH_TAIL_S = 0.1
_FLOW_RE = re.compile(r"^(?P<key>.*?), packets:(?P<pkts>\d+), bytes:(?P<bytes>\d+), "
                      r"used:(?P<used>never|[0-9.]+s), (?:flags:\S+, )?actions:(?P<acts>.*)$")


def _outputs(actions: str) -> list[int]:
    """Datapath ports a flow's actions send to (top-level numbers of the action list)."""
    out, depth, tok = [], 0, ""
    for ch in actions + ",":
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            if tok.strip().isdigit():
                out.append(int(tok.strip()))
            tok = ""
        else:
            tok += ch
    return out


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        log.warning("%s failed: %s", what, (r.stderr or r.stdout).strip()[:300])


class DeadLinkWatch:
    """Counts what Open vSwitch sends to dead ports (see the module docstring)."""

    def __init__(self):
        self.dp = None  # datapath name, e.g. netdev@ovs-netdev
        self.odp: dict[str, int] = {}  # interface -> datapath port number
        self.dead: dict[int, str] = {}  # datapath port -> interface, while dead
        # (fault index, interface) -> {start, base, flows, last_used}: one window per
        # fault that took the interface down; the current one of each interface in `open`
        self.windows: dict[tuple[int, str], dict] = {}
        self.open: dict[str, dict] = {}
        self.until: dict[str, float] = {}  # interface -> monotonic s to stop watching
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def _datapath(self) -> None:
        out = subprocess.run(["ovs-appctl", "dpctl/show"], capture_output=True,
                             text=True).stdout
        dp = None
        for line in out.splitlines():
            m = re.match(r"^(\S+@\S+):$", line.strip())
            if m:
                dp = m.group(1)
            m = re.match(r"^port (\d+): (\S+)", line.strip())
            if m:
                self.odp[m.group(2)] = int(m.group(1))
                self.dp = self.dp or dp

    def _dump(self) -> dict[str, tuple[int, int, float | None, list[int]]]:
        cmd = ["ovs-appctl", "dpctl/dump-flows"] + ([self.dp] if self.dp else [])
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        now = time.monotonic_ns()
        flows = {}
        for line in out.splitlines():
            m = _FLOW_RE.match(line.strip())
            if not m:
                continue
            used = m.group("used")
            last = None if used == "never" else now - round(float(used[:-1]) * 1e9)
            flows[m.group("key")] = (int(m.group("pkts")), int(m.group("bytes")), last,
                                     _outputs(m.group("acts")))
        return flows

    def baseline(self) -> dict:
        """Where every datapath flow stands (taken just before ports go down)."""
        if not self.odp:
            self._datapath()
        return self._dump()

    def dump_seconds(self) -> float:
        """How long a dump of the datapath flows takes now (real seconds)."""
        t = time.monotonic()
        self.baseline()
        return time.monotonic() - t

    def down(self, devs: list[str], base: dict, fault: int) -> None:
        """``devs`` go down now (fault ``fault``); ``base``: :meth:`baseline` taken just
        before."""
        start = time.monotonic_ns()
        with self.lock:
            for dev in devs:
                n = self.odp.get(dev)
                if n is None:
                    log.warning("%s: not a datapath port; its losses are not counted", dev)
                    continue
                self.dead[n] = dev
                w = {"start": start, "flows": {}, "base": base, "last_used": None}
                self.windows[(fault, dev)] = self.open[dev] = w
                self.until.pop(dev, None)
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="dead-link-watch",
                                           daemon=True)
            self.thread.start()
        self.wake.set()

    def rerouted(self, devs: list[str]) -> None:
        """The controller moved traffic off these ports: watch a little longer, then stop."""
        with self.lock:
            for dev in devs:
                if self.odp.get(dev) in self.dead:
                    self.until[dev] = time.monotonic() + WATCH_TAIL_S

    def up(self, devs: list[str]) -> None:
        """``devs`` are about to come back: a last look, then they are alive."""
        self.poll()
        with self.lock:
            for dev in devs:
                self.dead.pop(self.odp.get(dev, -1), None)
                self.until.pop(dev, None)

    def poll(self) -> None:
        with self.lock:
            if not self.dead:
                return
        flows = self._dump()
        with self.lock:
            for key, (pkts, nbytes, last, outs) in flows.items():
                for n in outs:
                    dev = self.dead.get(n)
                    if dev is None:
                        continue
                    w = self.open[dev]
                    f = w["flows"].get(key)
                    if f is None:
                        b = w["base"].get(key)
                        # a flow that existed before the fault counts from there on
                        f = w["flows"][key] = [b[0], b[1], 0, 0] if b and b[0] <= pkts \
                            else [0, 0, 0, 0]
                    f[2], f[3] = pkts - f[0], nbytes - f[1]
                    if last is not None and last >= w["start"] and f[2] > 0:
                        w["last_used"] = max(w["last_used"] or 0, last)
            now = time.monotonic()
            for dev, t in list(self.until.items()):
                if now >= t:
                    self.dead.pop(self.odp.get(dev, -1), None)
                    del self.until[dev]

    def _loop(self) -> None:
        while not self.stopping:
            with self.lock:
                active = bool(self.dead)
            if not active:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            t = time.monotonic()
            try:
                self.poll()
            except Exception:  # noqa: BLE001  (a failed dump must not end the run)
                log.exception("dumping the datapath flows failed")
            time.sleep(max(0.0, POLL_S - (time.monotonic() - t)))

    def stop(self) -> None:
        try:
            self.poll()
        except Exception:  # noqa: BLE001
            log.exception("dumping the datapath flows failed")
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(5)

    def lost(self, fault: int, dev: str) -> tuple[int, int, int | None]:
        """(frames, bytes, last monotonic ns) Open vSwitch sent to ``dev`` while fault
        ``fault`` kept it down (what the datapath flows counted)."""
        w = self.windows.get((fault, dev))
        if w is None:
            return 0, 0, None
        return (sum(f[2] for f in w["flows"].values()), sum(f[3] for f in w["flows"].values()),
                w["last_used"])


class EmuFaults:
    """The faults of one emulation run: applies the plan's events when the orchestrator's
    clock reaches them, follows the controller's reroutes, and makes the results' records."""

    def __init__(self, emu):
        self.emu = emu
        self.topo: Topology = emu.topo
        self.plan = FaultPlan(emu.spec, self.topo)
        self.todo = [e for e in self.plan.events if e.kind not in ("detect", "detect_up")]
        self.todo_kind = {e.index: e.kind for e in self.todo}
        self.records = [FaultRecord(i, f.kind, f.target, round(f.at_us * 1000))
                        for i, f in enumerate(emu.spec.faults)]
        self.applied: dict[int, int] = {}  # fault index -> fabric ns it was applied at
        self.waiting: dict[int, set] = {}  # fault index -> link names not yet rerouted
        self.reroutes: list[dict] = []  # the controller's records, in fabric ns
        self.watch = DeadLinkWatch()
        self.events_path: Path = emu.workdir / "controller-events.jsonl"
        self._events_pos = 0
        self._events_buf = b""
        self.degraded: dict[str, float] = {}
        self.down_devs: set[str] = set()
        self.lead_ns = 0  # the baseline dump before a link goes down starts this early

    def prepare(self) -> None:
        """Before the run: how early the baseline dump must start (fabric ns)."""
        if any(e.kind in ("link_down", "switch_down") for e in self.todo):
            real = max(self.watch.dump_seconds() for _ in range(3))
            self.lead_ns = round(1.5 * real * 1e9 / self.emu.tdf)

    # -- names ---------------------------------------------------------------------------
    def switch_devs(self, link) -> list[str]:
        topo = self.topo
        return [intf_name(topo, n, p) for n, p in ((link.a, link.a_port), (link.b, link.b_port))
                if not topo.nodes[n].is_host]

    def controller_env(self) -> dict[str, str]:
        """What the controller needs to reroute as the spec says (routing.*)."""
        r = self.emu.spec.routing
        return {"FABRICLAB_DETECT_S": repr(r.detect_us * 1e-6 * self.emu.tdf),
                "FABRICLAB_RECONVERGE": r.reconverge, "FABRICLAB_ON_NO_PATH": r.on_no_path,
                "FABRICLAB_EVENTS_FILE": str(self.events_path)}

    # -- the run -------------------------------------------------------------------------
    def _start_ns(self, e) -> int:
        return e.t_ns - (self.lead_ns if e.kind in ("link_down", "switch_down") else 0)

    def next_ns(self) -> int | None:
        """Fabric time of the next thing to do (a fault, or the dump before one)."""
        return self._start_ns(self.todo[0]) if self.todo else None

    def apply_due(self, now_f: int) -> None:
        while self.todo and self._start_ns(self.todo[0]) <= now_f:
            e = self.todo.pop(0)
            try:
                self._apply(e)
            except Exception:  # noqa: BLE001  (a fault that cannot be applied is reported)
                log.exception("could not apply fault %d (%s)", e.index, e.label)

    def _apply(self, e) -> None:
        emu = self.emu
        kind = e.kind
        if kind in ("link_down", "switch_down"):
            devs = [d for k in e.links for d in self.switch_devs(k)]
            base = self.watch.baseline()
            while emu.fabric_now() < e.t_ns:  # the dump took less than its lead
                time.sleep(min(0.002, (e.t_ns - emu.fabric_now()) * emu.tdf / 1e9))
            self.watch.down(devs, base, e.index)
            at = emu.fabric_now()
            self._ip_links(devs, "down", e.label)
            self.down_devs.update(devs)
            self.waiting[e.index] = {Topology.link_name(k) for k in e.links}
        elif kind in ("link_up", "switch_up"):
            devs = [d for k in e.links for d in self.switch_devs(k)]
            self.watch.up(devs)
            at = emu.fabric_now()
            self._ip_links(devs, "up", e.label)
            self.down_devs.difference_update(devs)
            self.waiting[e.index] = {Topology.link_name(k) for k in e.links}
        elif kind == "link_degrade":
            at = emu.fabric_now()
            for k in e.links:
                self._degrade(k, e.fraction)
        elif kind == "controller_kill":
            at = emu.fabric_now()
            if emu.controller is not None and emu.controller.poll() is None:
                os.kill(emu.controller.pid, signal.SIGKILL)  # our own child, by PID
        else:
            return
        self.applied[e.index] = at
        self.records[e.index].at_ns = at
        log.warning("fault %d: %s at %d ns of fabric time", e.index, e.label, at)

    def _ip_links(self, devs: list[str], state: str, label: str) -> None:
        cmds = "".join(f"link set dev {d} {state}\n" for d in devs)
        r = subprocess.run(["ip", "-batch", "-"], input=cmds, capture_output=True, text=True)
        if r.returncode != 0:
            log.warning("%s: ip link set %s failed: %s", label, state, r.stderr.strip()[:300])

    def _degrade(self, link, fraction: float) -> None:
        emu, topo = self.emu, self.topo
        rate = emu.fabric.emulated_rate(round(link.rate_bps * fraction))
        burst = htb_burst(rate)
        change = (f"class change dev {{dev}} parent 1: classid 1:1 htb rate {rate}bit "
                  f"ceil {rate}bit burst {burst} cburst {burst} quantum 1514")
        progs = {dev: prog for (_, _, dev, _, _), prog in emu.ports}
        for n, p in ((link.a, link.a_port), (link.b, link.b_port)):
            dev = intf_name(topo, n, p)
            if topo.nodes[n].is_host:
                out = emu.fabric.host(n).cmd(f"tc {change.format(dev=dev)} && echo FLB_OK")
                if "FLB_OK" not in out:
                    log.warning("degrading %s on %s failed: %s", dev, n, out.strip()[:300])
            else:
                _run(["tc", *change.format(dev=dev).split()], f"degrading {dev}")
                if dev in progs:
                    progs[dev].set_rate(rate)
        name = Topology.link_name(link)
        self.degraded[name] = fraction
        emu.controller_command({"cmd": "link_degrade", "link": name, "fraction": fraction})

    def poll_controller(self) -> None:
        """Take in the controller's new reroute records (see the module docstring)."""
        try:
            with open(self.events_path, "rb") as fh:
                fh.seek(self._events_pos)
                chunk = fh.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self._events_pos += len(chunk)
        self._events_buf += chunk
        *lines, self._events_buf = self._events_buf.split(b"\n")
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self._reroute(rec)

    def _fabric(self, mono_ns: int | None) -> int | None:
        if mono_ns is None or self.emu.t0 is None:
            return None
        return int((mono_ns - self.emu.t0) / self.emu.tdf)

    def _reroute(self, rec: dict) -> None:
        if not rec.get("down") and not rec.get("up"):
            return  # a switch that reconnected brought up to date
        installed = self._fabric(rec.get("installed_ns"))
        self.reroutes.append({
            "down": rec.get("down", []), "up": rec.get("up", []),
            "port_status_ns": self._fabric(rec.get("port_status_ns")),
            "acted_ns": self._fabric(rec.get("start_ns")), "installed_ns": installed,
            "switches_changed": len(rec.get("switches", []))})
        gone = [d for name in rec.get("down", [])
                for d in self.switch_devs(self.topo.find_link(name))]
        self.watch.rerouted(gone)
        for i, left in self.waiting.items():
            went = self.todo_kind[i] in ("link_down", "switch_down")
            mine = set(rec.get("down" if went else "up", []))
            if not left or not left & mine:
                continue
            left -= mine
            if not left:
                r = self.records[i]
                r.detected_ns = installed
                if installed is not None and r.at_ns is not None:
                    r.reroute_ns = installed - r.at_ns
        if "gse_dead_paths" in rec:
            self.emu.tell_agents_paths_down(rec["gse_dead_paths"])

    def finish(self, stats: dict, final: dict, inside: dict[str, int]) -> list[FaultRecord]:
        """The records, once the run is over: ``stats`` the qdiscs' (``port_stats``),
        ``final`` the port programs' last readings by interface, ``inside`` the frames each
        switch lost inside Open vSwitch (``ovs_losses``), from which what went into dead
        ports is taken out (it is updated in place).

        A dead port's losses: the frames the datapath flows sent to it (per fault), what
        the kernel flushed from its queue (to the first fault that took it down), and
        what its switch lost otherwise while it had a dead port (Open vSwitch's slow path
        sends a flow's first frames itself, and those never show in the datapath flows'
        statistics; to the first fault with a dead port on that switch).  ``lost_by_dev``
        keeps the totals per interface for ports.csv."""
        self.watch.stop()
        self.lost_by_dev: dict[str, list[int]] = {}
        first: dict[str, tuple[int, str]] = {}  # switch -> (fault, dev) it is charged to
        dev_switch = {dev: sw for (sw, _, dev, _, _), _ in self.emu.ports}
        for i, f in enumerate(self.emu.spec.faults):
            r = self.records[i]
            if i not in self.applied or f.kind not in ("link_down", "switch_down"):
                continue
            links = ([self.topo.find_link(f.target)] if f.kind == "link_down"
                     else self.topo.nodes[f.target].ports)
            last = None
            for k in links:
                for dev in self.switch_devs(k):
                    n, b, used = self.watch.lost(i, dev)
                    if dev not in self.lost_by_dev:
                        fn, fb = self._flushed(dev, stats, final)
                        n, b = n + fn, b + fb
                        self.lost_by_dev[dev] = [0, 0]
                    tot = self.lost_by_dev[dev]
                    tot[0] += n
                    tot[1] += b
                    r.lost_pkts += n
                    r.lost_bytes += b
                    first.setdefault(dev_switch.get(dev), (i, dev))
                    if used is not None:
                        last = max(last or 0, used)
            r.traffic_left_ns = self._fabric(last)
        frame = self.emu.spec.emu.mtu_bytes + DATA_OVERHEAD
        for sw, (i, dev) in first.items():
            counted = sum(v[0] for d, v in self.lost_by_dev.items() if dev_switch.get(d) == sw)
            rest = max(0, inside.get(sw, 0) - counted)
            inside[sw] = max(0, inside.get(sw, 0) - counted - rest)
            if rest:
                log.info("%s: %d more frames lost while it had a dead port: counted as lost "
                         "on %s", sw, rest, dev)
                self.lost_by_dev[dev][0] += rest
                self.lost_by_dev[dev][1] += rest * frame
                self.records[i].lost_pkts += rest
                self.records[i].lost_bytes += rest * frame
        return self.records

    @staticmethod
    def _flushed(dev: str, stats: dict, final: dict) -> tuple[int, int]:
        """Frames (and bytes) the kernel flushed from ``dev``'s queue when it went down."""
        c = final.get(dev)
        st = stats.get(dev, {})
        if c is None or "pkts" not in st:
            return 0, 0
        n = c.tx_pkts - st["pkts"] - st.get("drops", 0)  # the queues have drained
        if n <= 0:
            return 0, 0
        per = c.tx_bytes / c.tx_pkts if c.tx_pkts else 0
        return n, round(n * per)

    def summary(self) -> dict:
        """The emulation's own account of the faults (summary["emulation"]["faults"])."""
        return {"mechanism": (
            "link_down/up: ip link set on the switch-side veths; rerouting: the os-ken "
            "controller on OpenFlow port-status, routing.detect_us after it, installs "
            "fabriclab.faults.Routes (group and flow changes); link_degrade: tc class change "
            "of the HTB class"),
            "detect_us": self.emu.spec.routing.detect_us,
            "reroutes": self.reroutes,
            "degraded": self.degraded,
            "lost_counted_from": "Open vSwitch datapath flows polled every "
                                 f"{POLL_S * 1000:g} ms real (and queues flushed at the "
                                 "down); frames a host sent into its own dead link are not "
                                 "counted"}
