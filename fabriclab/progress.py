"""Progress display for long runs: simulated time, wall time, events/s on a terminal;
silent when stderr is not a terminal (tqdm's ``disable=None``)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class SimProgress:
    """A progress bar over simulated time; call it with (now_ns, events, wall_s)."""

    def __init__(self, label: str, until_ns: int | None, enabled: bool | None = None,
                 count: str = "events"):
        self.count = count
        self.total_us = until_ns // 1000 if until_ns else None
        self.label = label
        fmt = "{percentage:3.0f}%|{bar:20}| {desc}" if self.total_us else "{desc}"
        self.bar = tqdm(total=self.total_us, desc=label, disable=None if enabled is None
                        else not enabled, file=sys.stderr, leave=False, bar_format=fmt,
                        mininterval=0.25)
        self.last_us = 0

    @property
    def shown(self) -> bool:
        """False when the display is off (not a terminal, or -q): nothing to call."""
        return not self.bar.disable

    def __call__(self, now_ns: int, events: int, wall_s: float) -> None:
        if self.bar.disable:
            return
        now_us = now_ns // 1000
        rate = events / wall_s if wall_s > 0 else 0.0
        of = f" of {self.total_us:,}" if self.total_us else ""
        self.bar.set_description_str(
            f"{self.label}: sim {now_us:,}{of} us, wall {wall_s:,.1f} s, {events:,} "
            f"{self.count}, {rate / 1000:,.1f}k {self.count}/s", refresh=False)
        self.bar.update(now_us - self.last_us)
        self.last_us = now_us

    def close(self) -> None:
        self.bar.close()
