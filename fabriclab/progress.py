"""Progress display for long runs: simulated time, wall time, events/s on a terminal;
silent when stderr is not a terminal (tqdm's ``disable=None``)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class SimProgress:
    def __init__(self, label: str, until_ns: int | None, enabled: bool | None = None):
        total = until_ns / 1000 if until_ns else None
        disable = None if enabled is None else not enabled
        self.bar = tqdm(total=total, desc=label, unit="us", unit_scale=False, disable=disable,
                        file=sys.stderr, leave=False, dynamic_ncols=True,
                        )
        self.last_us = 0.0

    def __call__(self, now_ns: int, events: int, wall_s: float) -> None:
        if self.bar.disable:
            return
        now_us = now_ns / 1000
        self.bar.update(now_us - self.last_us)
        self.last_us = now_us
        rate = events / wall_s if wall_s > 0 else 0
        self.bar.set_postfix_str(f"sim {now_us:,.1f} us, {events:,} events, "
                                 f"{rate / 1000:,.0f}k ev/s", refresh=False)

    def close(self) -> None:
        self.bar.close()
