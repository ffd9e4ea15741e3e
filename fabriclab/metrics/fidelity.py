"""Was an emulated run faithful?  The invariants Mininet-HiFi checks (Handigol et al.,
CoNEXT 2012, section 3: "verifying fidelity"), on what fabriclab's emulator measures:

* **links**: every *busy* switch port sent at its configured rate.  The port's eBPF
  program keeps a phantom queue that drains at exactly the configured rate (its data class
  only while PFC does not pause it; ``fabriclab.emu.bpfport``).  Over the sampling
  intervals that the phantom queue's backlog at their start outlasts (the link is busy
  throughout, whatever arrives) and in which PFC did not pause
  the port (the phantom link stops at the pause, the real one once ``tc`` has closed its
  gate: a pause would count the gate's latency as a slow link; a port whose FIFO dropped
  frames is not judged, its phantom queue counts the dropped bytes), what the interface
  really sent (its kernel counter) is compared with what the phantom link sent.  A port
  busy for at least ``BUSY`` of the run must reach ``LINK_RATIO``;
* **agents**: the host agents were not woken later than they asked, beyond what pacing
  absorbs (two frames), for more than ``LATE_FRACTION`` of the run: a late agent sends late,
  whatever its congestion control says;
* **buffer**: with PFC, a switch port's FIFO holds the switch's whole buffer, as the
  simulator's shared buffer lets it; Open vSwitch's one packet socket caps every FIFO
  (``fabriclab.emu.network``).  Where the cap is below the buffer and a FIFO overflowed,
  the emulation dropped what the spec's switch would have paused for;
* **open_vswitch**: no frame was lost inside the emulator: inside Open vSwitch's userspace
  datapath (received by the switch, neither sent nor dropped by a port's queue nor by a
  table-miss), in a host's receive path (a socket's full buffer, the interface), or where
  no counter sees (RoCE frames missing from a completed run beyond every counter).

The verdict is ``faithful`` when all hold.  When one does not, ``fix`` says what to change:
a lower ``emu.link_mbps`` (fewer frames per second of real time for the same fabric
time) or a smaller fabric (``--reduced``).  Pure functions of numbers the runner gathered:
no engine is imported.
"""

from __future__ import annotations

LINK_RATIO = 0.95
BUSY = 0.10
LATE_FRACTION = 0.05


def judge(*, window_ns: int | None, time_dilation: float, link_mbps: float,
          ports: list[dict], agents_late_ns: dict[str, int],
          lost_inside_ovs: int, capped_fifo_drops: dict[str, tuple[int, int]] | None = None
          ) -> dict:
    """The fidelity verdict of one emulated run.

    ``window_ns``: fabric time from the start (GO) to the stop.  ``ports``: one dict per
    switch port with ``port``, ``busy_ns`` (fabric time its phantom queue was busy),
    ``expected_bytes`` (what the phantom link sent meanwhile) and ``sent_bytes`` (what the
    interface sent meanwhile).
    ``agents_late_ns``: per host, the fabric ns its agent was woken later than planned
    beyond pacing's slack."""
    checks: dict[str, dict] = {}
    reasons: list[str] = []
    if not window_ns or window_ns <= 0:
        return {"verdict": "unknown", "reasons": ["the run has no time window (no GO/stop "
                                                   "snapshot)"], "checks": {}, "fix": None}
    busy = [(p["port"], p["sent_bytes"] / p["expected_bytes"]) for p in ports
            if p["busy_ns"] >= BUSY * window_ns and p["expected_bytes"] > 0]
    failing = sorted((r for r in busy if r[1] < LINK_RATIO), key=lambda r: r[1])
    worst = min(busy, key=lambda r: r[1]) if busy else None
    checks["links"] = {
        "busy_links": len(busy), "min_ratio": round(worst[1], 4) if worst else None,
        "worst_link": worst[0] if worst else None, "threshold": LINK_RATIO,
        "below": {p: round(r, 4) for p, r in failing[:10]}, "ok": not failing}
    if failing:
        reasons.append(f"{len(failing)} of {len(busy)} busy links sent less than "
                       f"{LINK_RATIO:.0%} of their configured rate (worst {failing[0][0]}: "
                       f"{failing[0][1]:.2f})")
    late = {h: ns / window_ns for h, ns in agents_late_ns.items()}
    worst_h = max(late, key=late.get) if late else None
    over = {h: round(f, 4) for h, f in sorted(late.items(), key=lambda x: -x[1])
            if f > LATE_FRACTION}
    checks["agents"] = {"max_late_fraction": round(late[worst_h], 4) if worst_h else None,
                        "worst_host": worst_h, "threshold": LATE_FRACTION, "over": over,
                        "ok": not over}
    if over:
        reasons.append(f"{len(over)} host agents woke late for more than "
                       f"{LATE_FRACTION:.0%} of the run (worst {worst_h}: "
                       f"{late[worst_h]:.0%})")
    capped = {sw: v for sw, v in (capped_fifo_drops or {}).items() if v[0]}
    checks["buffer"] = {"drops_in_capped_fifos": {sw: n for sw, (n, _) in capped.items()},
                        "ok": not capped}
    if capped:
        sw, (n, limit) = next(iter(capped.items()))
        reasons.append(f"with PFC on, {sum(v[0] for v in capped.values())} frames overflowed "
                       f"port FIFOs capped below the switch buffer (e.g. {sw}: {limit:,} "
                       f"bytes per port)")
    checks["open_vswitch"] = {"lost_frames": lost_inside_ovs, "ok": lost_inside_ovs == 0}
    if lost_inside_ovs:
        reasons.append(f"{lost_inside_ovs} frames lost inside the emulator (Open vSwitch, "
                       f"the hosts' receive path)")
    faithful = not reasons
    fix = None
    if not faithful:
        lower = max(0.5, round(link_mbps / 2, 1))
        fix = ""
        if capped:
            fix = (f"a switch.buffer_bytes of at most {min(v[1] for v in capped.values()):,} "
                   f"(what Open vSwitch can queue per port here), or fewer switch ports; ")
        fix += (f"emulate at a lower rate (--set emu.link_mbps={lower:g}, or "
               f"emu.link_mbps: auto) or a smaller fabric (--reduced); "
               f"benchmarks/emu_fidelity.py measures what this machine emulates faithfully")
    return {"verdict": "faithful" if faithful else "unfaithful", "reasons": reasons,
            "checks": checks, "fix": fix,
            "time_dilation": time_dilation, "link_mbps": link_mbps}


def verdict_of(summary: dict) -> str | None:
    """An emulated run's verdict from its summary (None: not an emulated run, or one from
    before fabriclab judged fidelity)."""
    f = (summary.get("emulation") or {}).get("fidelity")
    return f.get("verdict") if f else None


def line(summary: dict) -> str | None:
    """The verdict as the CLI's run line ends: ``faithful`` or ``NOT faithful: reasons``."""
    f = (summary.get("emulation") or {}).get("fidelity")
    if not f:
        return None
    if f["verdict"] == "faithful":
        return "emulation faithful"
    if f["verdict"] == "unknown":
        return "emulation fidelity unknown"
    return "emulation NOT faithful: " + "; ".join(f["reasons"])
