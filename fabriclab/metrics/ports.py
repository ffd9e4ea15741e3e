"""Which switch port was the bottleneck, and where the collectives met (either engine).

The bottleneck is the switch port with the largest time-averaged egress queue over the run:
the queue says where traffic waited, which a port's byte count alone does not (a port can
run at line rate with an empty queue).  Ties go to the larger maximum queue, then the higher
utilisation.  The *contended port* is the host-facing switch port where collectives meet:
the bottleneck when it faces a host, else the host-facing port that queued most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy_numpy import np

if TYPE_CHECKING:
    from .assemble import PortRecord


def _interval_weights(t: np.ndarray) -> np.ndarray:
    """The time each sample stands for (the first repeats the second's interval)."""
    if len(t) < 2:
        return np.ones(len(t))
    dt = np.diff(t).astype(float)
    return np.concatenate([[dt[0]], dt])


def _weighted_p99(values: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(w[order]) / w.sum()
    return float(values[order][min(np.searchsorted(cdf, 0.99), len(values) - 1)])


def bottleneck_ports(port_records: list[PortRecord], queue_times, queue_names: list[str],
                     queue_rows, run_ns: int, frame_bytes: int) -> tuple[dict | None,
                                                                     dict | None]:
    """(bottleneck_port, contended_port) for summary.json, or None where no port queued.

    ``port_records`` are the rows of ports.csv; ``queue_rows`` the sampled
    queue depth of the ports ``queue_names`` (one row per time in ``queue_times``).  A port
    whose queue never held more than two full frames (``frame_bytes``: the one on the wire
    and the next) did not queue: store and forward alone does that."""
    ports = {r.port: r for r in port_records}
    t = np.asarray(queue_times, dtype=float)
    if not len(t) or not queue_names:
        return None, None
    # filled row by row, in place: converting the list of rows at once took three times the
    # table's size (at 1,024 hosts 24 MB, the largest part of assembling the results)
    q = np.empty((len(t), len(queue_names)))
    for i, row in enumerate(queue_rows):
        q[i] = row
    np.nan_to_num(q, copy=False)
    w = _interval_weights(t)
    mean = q.T @ w / w.sum()
    cands = []
    for j, name in enumerate(queue_names):
        p = ports.get(name)
        if p is None:
            continue
        util = (p.tx_bytes * 8 / (p.rate_gbps * run_ns)) if run_ns > 0 else 0.0
        cands.append((float(mean[j]), int(p.max_queue_bytes or 0), util, j, p))
    cands = [c for c in cands if c[1] > 2 * frame_bytes]
    if not cands:
        return None, None

    def describe(c, why):
        m, mx, util, j, p = c
        return {"port": p.port, "node": p.node, "peer": p.peer.split(":")[0],
                "role": p.role, "mean_queue_bytes": m, "max_queue_bytes": mx,
                "p99_queue_bytes": _weighted_p99(q[:, j], w), "utilisation": util,
                "paused_frac": (p.paused_ns / run_ns) if run_ns > 0 else 0.0, "why": why}

    key = lambda c: (c[0], c[1], c[2])  # noqa: E731 - the ranking, spelled once
    best = max(cands, key=key)
    bottleneck = describe(best, "largest time-averaged queue")
    if best[4].role == "host":
        contended = {"port": best[4].port, "node": best[4].node,
                     "host": bottleneck["peer"],
                     "why": f"the bottleneck port faces host {bottleneck['peer']}"}
        return bottleneck, contended
    hosts = [c for c in cands if c[4].role == "host"]
    if not hosts:
        return bottleneck, None
    h = max(hosts, key=key)
    return bottleneck, {"port": h[4].port, "node": h[4].node,
                        "host": h[4].peer.split(":")[0],
                        "why": (f"the host-facing port with the largest time-averaged queue "
                                f"(the bottleneck {best[4].port} faces a switch)")}
