"""The line protocol between the orchestrator and its helper processes (host agents, the
PFC daemon): ``GO <t0 ns>``, ``STOP`` and the like on their stdin, one command per line."""

from __future__ import annotations

import os
import subprocess


class ControlInput:
    """The orchestrator's lines on stdin, read unbuffered: select() and Python's line
    buffering do not mix."""

    def __init__(self, fd: int = 0):
        self.fd = fd
        self._buf = b""

    def read(self) -> list[list[str]] | None:
        """The whole lines that have arrived, each split into words (blank lines left
        out); None once stdin is closed (the orchestrator is gone)."""
        chunk = os.read(self.fd, 4096)
        if not chunk:
            return None
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [w for w in (line.decode().split() for line in lines) if w]


def tell(p: subprocess.Popen, line: str) -> bool:
    """Send one command line to a helper; False if it has already gone."""
    try:
        p.stdin.write(line + "\n")
        p.stdin.flush()
    except (BrokenPipeError, OSError):
        return False
    return True
