"""Shared by the Mininet engine's tests."""

import time
from pathlib import Path

import pytest


def mininet_processes() -> list[str]:
    """Processes of a fabriclab run still alive: Mininet nodes, agents, the controller."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "mininet:flb" in cmd or "fabriclab.emu.agent" in cmd \
                    or "fabriclab.controllers.run" in cmd:
                out.append(f"{p.name}: {cmd[:80]}")
    return out


@pytest.fixture
def nothing_left_behind():
    """After the test: no bridge, interface, process or state file of a run remains."""
    from fabriclab.emu.state import RUN_DIR, our_bridges, our_interfaces
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and mininet_processes():
        time.sleep(0.1)
    assert our_bridges() == []
    assert our_interfaces() == []
    assert mininet_processes() == []
    assert not (RUN_DIR / "state.json").exists()
