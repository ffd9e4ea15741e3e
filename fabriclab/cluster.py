"""Simulations as tasks on a Dask distributed cluster (``fabriclab sweep|compare --cluster
ADDRESS``, the API's ``cluster=``).

Each simulation of a sweep or comparison is one task: the worker runs the simulator on the
spec and returns its results (:class:`~fabriclab.metrics.results.RunResult`, plain data);
this process writes them into the staged output directory, exactly as a local run writes
them, so a run's ``flows.csv`` is byte-identical whichever machine simulated it (the
simulator is deterministic for a seed).  Workers need only fabriclab installed; they share
no file system with the client.

A worker that dies mid-task (killed, its machine lost) costs nothing but time: the
scheduler gives its tasks to the other workers (Dask's ``distributed.scheduler.
allowed-failures``, 3 by default, bounds how many worker deaths one task may see), and a
task that raises is retried ``RETRIES`` times.  Nothing is written before every task has
returned, so a sweep that fails leaves no partial results directory
(:func:`fabriclab.outdir.staged`).  Emulations never run on the cluster: they need this
machine's root and Open vSwitch.
"""

from __future__ import annotations

import logging
import uuid
from typing import Callable

log = logging.getLogger(__name__)

RETRIES = 2
CONNECT_TIMEOUT_S = 15


class ClusterError(RuntimeError):
    """The cluster cannot be used (the message names the problem and the fix)."""


def simulate_task(spec):
    """What a worker runs: one simulation, its results returned (nothing written)."""
    from .sim.runner import simulate
    return simulate(spec, progress=False)


def client(address: str):
    """A Dask client connected to the scheduler at ``address`` (``tcp://host:port``)."""
    try:
        from distributed import Client
    except ImportError as e:
        raise ClusterError(f"--cluster needs Dask distributed ({e}); install it with "
                           f"`bash scripts/setup.sh` or `pip install distributed`") from e
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({e}); start one "
                           f"(`dask scheduler`) and its workers, or run without --cluster"
                           ) from e


def run_all(address: str, specs: list, on_done: Callable[[int, object], None]) -> None:
    """Run every spec (simulations) on the cluster at ``address``; ``on_done(i, result)``
    is called here, in this process, as each finishes (in completion order)."""
    from distributed import as_completed
    c = client(address)
    try:
        n_workers = len(c.scheduler_info().get("workers", {}))
        if n_workers == 0:
            log.warning("the Dask scheduler at %s has no worker yet: the tasks wait for one",
                        address)
        log.info("running %d simulation(s) on the Dask cluster at %s (%d workers)",
                 len(specs), address, n_workers)
        tag = uuid.uuid4().hex[:8]
        futures = {c.submit(simulate_task, sp, key=f"fabriclab-{tag}-{i}", pure=False,
                            retries=RETRIES): i for i, sp in enumerate(specs)}
        for fut in as_completed(list(futures)):
            on_done(futures[fut], fut.result())
    finally:
        c.close()
