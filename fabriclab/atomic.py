"""Atomic file writes: a hidden temporary file next to the target, then ``os.replace``.

Readers (the orchestrator polling an agent's results, a browser on a report, a controller's
stats file read mid-run) see the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, fsync: bool = False) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, obj, fsync: bool = False, **dump_kw) -> Path:
    return write_text_atomic(path, json.dumps(obj, **dump_kw) + "\n", fsync=fsync)
