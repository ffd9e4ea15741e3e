"""Sweeps on a Dask cluster (issue 13, part 2; fabriclab.cluster): a scheduler and two
workers started here as separate processes on 127.0.0.1 (and stopped by PID), a sweep
through them that gives byte-identical flows.csv to a local sweep, and a sweep that
survives one worker being killed mid-way with nothing lost and no partial directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="Dask distributed: scripts/setup.sh")

from fabriclab import api  # noqa: E402
from fabriclab.cluster import ClusterError  # noqa: E402

SPEC = "experiments/incast.yaml"
ROOT = Path(__file__).resolve().parents[1]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (no nanny: the PID is the worker)."""
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        workers = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(2)]
        procs += workers
        c = distributed.Client(address, timeout="30s", set_as_default=False)
        try:
            c.wait_for_workers(2, timeout=60)
        finally:
            c.close()
        yield address, workers
    finally:
        for p in reversed(procs):
            _stop(p)


def _flows(d: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(d.glob("*/flows.csv"))}


def test_a_sweep_on_the_cluster_is_byte_identical_to_a_local_one(cluster, tmp_path):
    address, _ = cluster
    values = [100_000, 200_000, 300_000]
    kw = dict(reduced=True, report=False)
    api.sweep(ROOT / SPEC, "workload.0.bytes", values, out=tmp_path / "local", jobs=1, **kw)
    api.sweep(ROOT / SPEC, "workload.0.bytes", values, out=tmp_path / "dask",
              cluster=address, **kw)
    local, dask = _flows(tmp_path / "local"), _flows(tmp_path / "dask")
    assert len(local) == 3 and local == dask


def test_a_killed_worker_loses_nothing(cluster, tmp_path):
    address, workers = cluster
    values = [150_000, 250_000, 350_000, 450_000, 550_000, 650_000]
    killed = []

    def kill_one_when_busy():
        c = distributed.Client(address, timeout="30s", set_as_default=False)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # a worker is running a task: kill it
                busy = [w for w, n in c.processing().items() if n]
                if busy:
                    time.sleep(0.3)
                    workers[0].send_signal(signal.SIGKILL)
                    killed.append(True)
                    return
                time.sleep(0.05)
        finally:
            c.close()

    t = threading.Thread(target=kill_one_when_busy)
    t.start()
    out = tmp_path / "dask"
    s = api.sweep(ROOT / SPEC, "workload.0.bytes", values, out=out, reduced=True,
                  report=False, cluster=address)
    t.join()
    assert killed and workers[0].wait(10) == -signal.SIGKILL
    assert len(s.runs) == 6 and all(r.summary["flows_completed"] == 6 for r in s.runs)
    assert len(_flows(out)) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    local = tmp_path / "local"
    api.sweep(ROOT / SPEC, "workload.0.bytes", values[:2], out=local, reduced=True,
              report=False, jobs=1)
    for name, data in _flows(local).items():
        assert _flows(out)[name] == data


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        api.sweep(ROOT / SPEC, "workload.0.bytes", [100_000, 200_000], reduced=True,
                  report=False, cluster="tcp://127.0.0.1:9", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
