"""What an emulation run created, recorded as it goes, so that it can be removed exactly.

A run holds an exclusive lock (``/run/fabriclab/lock``; one emulation at a time on a
machine) and keeps ``/run/fabriclab/state.json`` up to date with every process it started
(PID and the command line it expects there), every Open vSwitch bridge and every
interface.  Normal teardown removes them and the state file; ``fabriclab clean`` removes
what a crashed run left behind, from that file and from the naming prefix
(:data:`PREFIX`), never by killing processes by name and never with Mininet's global
clean-up.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_json_atomic

log = logging.getLogger(__name__)

PREFIX = "flb"  # every bridge, interface and Mininet node of fabriclab starts with this
#: names fabriclab gives Mininet nodes: flb + (h|l|s|e|a|c) + index
NAME_RE = re.compile(rf"^{PREFIX}[hlseac][0-9]+(_[0-9]+)?(-eth[0-9]+|-gspd?)?$")
RUN_DIR = Path(os.environ.get("FABRICLAB_RUN_DIR", "/run/fabriclab"))


class EmuError(RuntimeError):
    """The Mininet engine cannot run: one message naming the problem and the fix."""


@dataclass
class RunState:
    owner_pid: int
    started: float
    workdir: str
    processes: dict[str, dict] = field(default_factory=dict)  # label -> {pid, expect}
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)

    def save(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        write_json_atomic(RUN_DIR / "state.json", asdict(self), indent=1)

    def add_process(self, label: str, pid: int, expect: str) -> None:
        self.processes[label] = {"pid": pid, "expect": expect}
        self.save()

    def drop_process(self, label: str) -> None:
        if self.processes.pop(label, None) is not None:
            self.save()

    @staticmethod
    def load() -> "RunState | None":
        p = RUN_DIR / "state.json"
        if not p.is_file():
            return None
        try:
            return RunState(**json.loads(p.read_text()))
        except (ValueError, TypeError):
            log.warning("ignoring unreadable %s", p)
            return None

    @staticmethod
    def remove() -> None:
        (RUN_DIR / "state.json").unlink(missing_ok=True)


class RunLock:
    """Exclusive lock for one emulation at a time; fails at once with the holder's PID."""

    def __init__(self):
        self.fh = None

    def __enter__(self):
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.fh = open(RUN_DIR / "lock", "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "?"
            self.fh.close()
            raise EmuError(f"another emulation run holds {RUN_DIR}/lock (pid {holder}); wait "
                           f"for it, or if it crashed run `fabriclab clean`") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def lock_holder() -> int | None:
    """PID of a live run holding the lock, else None."""
    p = RUN_DIR / "lock"
    if not p.exists():
        return None
    with open(p, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            txt = fh.read().strip()
            return int(txt) if txt.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def kill_pid(pid: int, expect: str, timeout: float = 3.0) -> bool:
    """Terminate ``pid`` if it is still the process we started (its command line contains
    ``expect``): SIGTERM, then SIGKILL after ``timeout``.  True if it was ours and is gone."""
    if not expect or expect not in cmdline(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def our_bridges() -> list[str]:
    try:
        out = _run(["ovs-vsctl", "--timeout=5", "list-br"]).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return []
    return [b for b in out if NAME_RE.match(b)]


def our_interfaces() -> list[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if NAME_RE.match(n)]


def clean(state: RunState | None = None) -> list[str]:
    """Remove a crashed run's leftovers; returns what was removed (one line each)."""
    holder = lock_holder()
    if holder is not None:
        raise EmuError(f"an emulation run is in progress (pid {holder}); `fabriclab clean` "
                       f"only removes the leftovers of runs that have ended")
    return remove_leftovers(state or RunState.load())


def remove_leftovers(state: RunState | None) -> list[str]:
    """Remove what an ended run left: its recorded processes (by PID, if still what it
    started), every bridge and interface named like fabriclab's, then its state file.
    The caller makes sure no run is in progress (it holds the lock, or nobody does)."""
    done = []
    if state is not None:
        for label, p in state.processes.items():
            if kill_pid(p["pid"], p["expect"]):
                done.append(f"process {label} (pid {p['pid']})")
    done += remove_links_and_bridges()
    RunState.remove()
    return done


def remove_links_and_bridges() -> list[str]:
    """Delete every Open vSwitch bridge and root-namespace interface that exists and is
    named like fabriclab's (:data:`NAME_RE`); returns what was removed."""
    done = []
    for br in sorted(our_bridges()):
        if _run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br]).returncode == 0:
            done.append(f"bridge {br}")
    for intf in sorted(our_interfaces()):
        # deleting one end of a veth removes its peer, which then fails: not an error
        if _run(["ip", "link", "del", intf]).returncode == 0:
            done.append(f"interface {intf}")
    return done
