"""The interface every congestion-control algorithm implements (sans-IO).

One instance per flow.  The engine (simulator or Mininet host agent) feeds it events, each
with the current time in integer nanoseconds, and reads its decisions back:

* ``rate_bps``      -- the pacing rate the sender must not exceed;
* ``window_bytes``  -- bytes the sender may have in flight (``None``: no window);
* ``next_timer_ns`` -- when the engine must call :meth:`on_timer` next (``None``: never).

The event methods return nothing; they update those three attributes.  An algorithm never
reads a clock, a socket or a random generator it was not given.  Optional hooks default to
doing nothing, so an algorithm implements only the events it reacts to (ns-3's
``TcpCongestionOps`` pattern).
"""

from __future__ import annotations


class CongestionControl:
    """Base class: a sender at line rate with no window (what 'no congestion control' does)."""

    name = "none"
    #: the engine calls on_ack only when this is true (saves a call per ACK otherwise)
    wants_acks = False
    #: the engine calls on_send only when this is true
    wants_sends = False

    def __init__(self, line_rate_bps: int):
        self.line_rate_bps = line_rate_bps
        self.rate_bps = line_rate_bps
        self.window_bytes: int | None = None
        self.next_timer_ns: int | None = None

    def on_start(self, now_ns: int) -> None:
        """The flow starts sending."""

    def on_send(self, now_ns: int, nbytes: int) -> None:
        """``nbytes`` of payload left the NIC."""

    def on_ack(self, now_ns: int, acked_bytes: int, **info) -> None:
        """An ACK advanced the cumulative acknowledgement by ``acked_bytes``."""

    def on_cnp(self, now_ns: int) -> None:
        """A congestion notification packet arrived for this flow."""

    def on_timer(self, now_ns: int) -> None:
        """``next_timer_ns`` has been reached."""

    def state(self) -> dict:
        """A snapshot of the algorithm's variables, for traces and tests."""
        return {"rate_bps": self.rate_bps, "window_bytes": self.window_bytes}
