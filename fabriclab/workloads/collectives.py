"""Collective communication patterns as flows with dependencies.

Each generator yields ``(src, dst, bytes, deps)`` where ``deps`` are indices into the
collective's own flow list.  Definitions follow nccl-tests (PERFORMANCE.md): for a message
of S bytes on n ranks, algorithm bandwidth = S / time and bus bandwidth = algbw x 2(n-1)/n
for all-reduce, algbw x (n-1)/n for all-to-all.
"""

from __future__ import annotations


def ring_allreduce(hosts: list[str], nbytes: int):
    """Ring all-reduce: reduce-scatter then all-gather, 2(n-1) steps of S/n bytes each.

    At step k, rank i sends one chunk to rank i+1.  Its step-k send needs the chunk it
    received at step k-1 (from rank i-1), and follows its own step k-1 send on the same
    connection (queue pair), so both are dependencies.
    """
    n = len(hosts)
    chunk = -(-nbytes // n)
    index = {}
    for step in range(2 * (n - 1)):
        for i in range(n):
            deps = []
            if step > 0:
                deps.append(index[(step - 1, (i - 1) % n)])  # what i received at step-1
                deps.append(index[(step - 1, i)])  # i's own previous send
            index[(step, i)] = len(index)
            yield hosts[i], hosts[(i + 1) % n], chunk, deps


def all_to_all(hosts: list[str], nbytes: int):
    """All-to-all: every rank sends ``nbytes`` to every other rank at once."""
    for src in hosts:
        for dst in hosts:
            if src != dst:
                yield src, dst, nbytes, []


def bus_bandwidth_factor(kind: str, n: int) -> float:
    """busbw / algbw for a collective of ``kind`` over n ranks (nccl-tests)."""
    if kind == "ring_allreduce":
        return 2 * (n - 1) / n
    if kind == "all_to_all":
        return (n - 1) / n
    return 1.0
