"""Agreement between the two engines on one spec: the normalised results side by side, a
verdict per metric, and the ranking of the schemes on each engine.

Normalised so that the engines can be compared although one runs at 100 Gb/s and the other
at 10 Mb/s with time dilation:

* each collective's completion / physical bound  -- agree within ``COMPLETION_TOL`` (relative);
* each collective's bus bandwidth / host line rate -- within ``BUSBW_TOL`` (absolute);
* the peak queue at the busiest switch port, within a factor ``QUEUE_FACTOR`` (or both
  below ``QUEUE_FLOOR``): queue depths are the noisiest of these numbers.  The floor is one
  burst of Open vSwitch's userspace datapath, which forwards up to 32 packets at once
  (``NETDEV_MAX_BURST``): 32 default-size emulated frames (1000 B + 58 B);
* PFC, when the emulation ran it (``fabriclab.emu.pfcd``): a lossless run on the simulator
  must be lossless on the emulator (``drops``: 0 on both); the PAUSE frames the switches
  sent agree within a factor ``PAUSE_FACTOR`` (or both at most ``PAUSE_FLOOR``), the total
  paused time over all ports within ``PAUSED_TOL`` (relative; or both below
  ``PAUSED_FLOOR_NS``).  Pause counts are the looser: where the emulator's ECMP hash puts a
  flow decides which spine pauses, and the emulator sees a crossing only at its poll, so it
  sends fewer, longer pauses; the paused time is what the hosts feel.  An emulation without
  PFC (netem on the links) has its PFC numbers shown, not judged;
* each open-ended flow's goodput in its second phase over its first (e.g. the victim flow
  during a burst over before it: what head-of-line blocking took from it), within
  ``GOODPUT_RATIO_TOL`` (absolute);
* the ranking of the schemes by their worst completion / bound, which must be the same on
  both engines (schemes within ``TIE`` of each other count as tied).

An emulation that judged itself unfaithful (``fabriclab.metrics.fidelity``: links slower
than configured, late agents, frames lost inside Open vSwitch) is not compared: its rows
are shown, not judged, it takes no part in the ranking, and ``unfaithful`` names it.  A
disagreement is then a statement about the models, never about an overloaded machine.
"""

from __future__ import annotations

from .fidelity import verdict_of

COMPLETION_TOL = 0.15
BUSBW_TOL = 0.10
QUEUE_FACTOR = 2.0
QUEUE_FLOOR = 32 * 1058
TIE = 0.03
PAUSE_FACTOR = 1.5
PAUSE_FLOOR = 10
PAUSED_TOL = 0.30
PAUSED_FLOOR_NS = 10_000
GOODPUT_RATIO_TOL = 0.10


def align_sim_to_emulation(spec) -> list[str]:
    """``--set`` overrides that give the simulator what the emulation represents: its packet
    sizes and frame overheads, and HPCC's T computed from them.  Link delays stay: the
    emulation has them too (netem on the links, or lumped into the receiving agents)."""
    from ..wire import roce as P
    header = P.DATA_OVERHEAD + (P.GSE_TAG.size if spec.scheme == "gse" else 0)
    out = [f"switch.mtu_bytes={spec.emu.mtu_bytes}", f"switch.header_bytes={header}",
           f"hpcc.int_header_bytes={P.INT_AREA_LEN}"]
    if spec.scheme == "hpcc" and spec.hpcc.base_rtt_ns == "auto":
        from ..cc_algorithms.hpcc import base_rtt_ns
        from ..topologies import from_spec
        t = base_rtt_ns(spec, from_spec(spec.topology), P.INT_AREA_LEN, emulated=True)
        out.append(f"hpcc.base_rtt_ns={t}")
    return out


def _norm(summary: dict, peak_queue: int, line_gbps: float) -> dict:
    out = {"peak_queue_bytes": peak_queue, "drops": summary.get("drops"),
           "pfc_pause_frames": summary.get("pfc_pause_frames"),
           "pfc_paused_ns_total": summary.get("pfc_paused_ns_total")}
    for f in summary.get("open_flows") or []:
        ph = f.get("phases") or []
        if len(ph) >= 2 and ph[0].get("goodput_gbps"):
            out[f"{f['group']} f{f['flow_id']}: goodput {ph[1]['label']} / {ph[0]['label']}"] \
                = (ph[1].get("goodput_gbps") or 0) / ph[0]["goodput_gbps"]
    for c in summary.get("collectives") or []:
        out[f"{c['name']}: completion / bound"] = c.get("completion_over_bound")
        if c.get("busbw_gbps") is not None:
            out[f"{c['name']}: bus bandwidth / line rate"] = c["busbw_gbps"] / line_gbps
    return out


def _agree(key: str, a, b, pfc: bool = True) -> bool | None:
    """Do the simulator's ``a`` and the emulation's ``b`` agree on ``key``?  None: not
    judged.  ``pfc``: the emulation ran PFC."""
    if a is None or b is None:
        return None
    if key == "drops":  # the lossless promise: kept on the simulator, kept on the emulator
        return (b == 0) if (a == 0 and pfc) else None
    if key == "pfc_pause_frames":
        if not pfc:
            return None
        if a <= PAUSE_FLOOR and b <= PAUSE_FLOOR:
            return True
        lo, hi = sorted((max(a, 1), max(b, 1)))
        return hi / lo <= PAUSE_FACTOR
    if key == "pfc_paused_ns_total":
        if not pfc:
            return None
        if a <= PAUSED_FLOOR_NS and b <= PAUSED_FLOOR_NS:
            return True
        return abs(a - b) <= PAUSED_TOL * max(a, b)
    if key == "peak_queue_bytes":
        if a <= QUEUE_FLOOR and b <= QUEUE_FLOOR:
            return True
        lo, hi = sorted((max(a, 1), max(b, 1)))
        return hi / lo <= QUEUE_FACTOR
    if key.endswith("completion / bound"):
        return abs(a - b) <= COMPLETION_TOL * max(a, b)
    if key.endswith("bus bandwidth / line rate"):
        return abs(a - b) <= BUSBW_TOL
    if ": goodput " in key:  # an open-ended flow's second phase against its first
        return abs(a - b) <= GOODPUT_RATIO_TOL
    return None


def ranking(scores: dict[str, float]) -> list[list[str]]:
    """Schemes best first, grouped into ties (within TIE relative of the group's first)."""
    order = sorted(scores, key=lambda s: scores[s])
    groups: list[list[str]] = []
    for s in order:
        if groups and scores[s] <= scores[groups[-1][0]] * (1 + TIE):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _same_ranking(a: list[list[str]], b: list[list[str]]) -> bool:
    """Equal up to ties: no scheme strictly ahead of another in one and behind in the other."""
    pos_a = {s: i for i, g in enumerate(a) for s in g}
    pos_b = {s: i for i, g in enumerate(b) for s in g}
    names = list(pos_a)
    return all(not ((pos_a[x] < pos_a[y] and pos_b[x] > pos_b[y])
                    or (pos_a[x] > pos_a[y] and pos_b[x] < pos_b[y]))
               for x in names for y in names if x in pos_b and y in pos_b)


def compare_engines(runs: dict[tuple[str, str], dict], line_gbps: float) -> dict:
    """``runs`` maps (scheme, engine) to {"summary": ..., "peak_queue": ...}.  Returns the
    rows (metric, scheme, sim value, mininet value, agree?), the rankings and a verdict."""
    schemes = sorted({s for s, _ in runs}, key=lambda s: [k[0] for k in runs].index(s))
    rows, scores = [], {"sim": {}, "mininet": {}}
    unfaithful: list[str] = []
    for scheme in schemes:
        sim, emu = runs.get((scheme, "sim")), runs.get((scheme, "mininet"))
        if sim is None or emu is None:
            continue
        ns = _norm(sim["summary"], sim["peak_queue"], line_gbps)
        ne = _norm(emu["summary"], emu["peak_queue"], line_gbps)
        pfc = "poll_ns" in ((emu["summary"].get("emulation") or {}).get("pfc") or {})
        faithful = verdict_of(emu["summary"]) != "unfaithful"
        if not faithful:
            unfaithful.append(scheme)
        for key in ns:
            rows.append((key, scheme, ns.get(key), ne.get(key),
                         _agree(key, ns.get(key), ne.get(key), pfc) if faithful else None))
        for eng, n in (("sim", ns), ("mininet", ne)):
            if eng == "mininet" and not faithful:
                continue
            worst = [v for k, v in n.items() if k.endswith("completion / bound") and v]
            if worst:
                scores[eng][scheme] = max(worst)
    rank = {e: ranking(s) for e, s in scores.items() if s}
    same = _same_ranking(rank.get("sim", []), rank.get("mininet", []))
    judged = [r[4] for r in rows if r[4] is not None]
    return {"rows": rows, "ranking": rank, "same_ranking": same,
            "all_agree": all(judged) and same, "unfaithful": unfaithful,
            "tolerances": {"completion_over_bound_rel": COMPLETION_TOL,
                           "busbw_over_line_abs": BUSBW_TOL, "peak_queue_factor": QUEUE_FACTOR,
                           "queue_floor_bytes": QUEUE_FLOOR, "tie": TIE,
                           "pfc_pause_factor": PAUSE_FACTOR, "pfc_pause_floor": PAUSE_FLOOR,
                           "pfc_paused_rel": PAUSED_TOL,
                           "pfc_paused_floor_ns": PAUSED_FLOOR_NS,
                           "goodput_ratio_abs": GOODPUT_RATIO_TOL}}
