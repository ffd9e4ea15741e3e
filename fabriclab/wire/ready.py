"""The controller's ready file: the one file-format contract between the controller process
(which writes a line per switch whose tables are installed) and the orchestrator (which
waits for every switch in it).  Both import this module, not each other."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ReadyFile:
    """Appends one JSON line per ready switch; each line is one ``write`` on an O_APPEND fd,
    so a concurrent reader sees whole lines or (at worst) a partial last line it ignores."""

    def __init__(self, path: str):
        self.path = path
        # Truncate: a stale file from an earlier run must not make switches look ready.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def append(self, record: dict) -> None:
        os.write(self._fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_ready_file(path: str | Path) -> set[int]:
    """Datapath ids the controller has reported ready.

    A line still being written (no trailing newline yet, or not valid JSON) is ignored, so a
    reader polling the file never sees a switch before its record is complete.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return set()
    ready = set()
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            ready.add(int(json.loads(line)["dpid"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ready
