"""GSE's GSP in the leaf switch (``gse.placement: leaf``), sans-IO, written once.

The NICs stay plain RoCE NICs: they send at line rate, with no GSE code.  Their data waits
in the leaf's VOQs, one per destination port, until credit lets it go; then it leaves as
containers, each tagged and sent on one path.  Containers from other leaves go through a
reorder buffer per (source GSP, destination port) before the leaf hands them to the host.

:class:`LeafGsp` is that logic over opaque items (the simulator's packet objects, the
emulator's raw frames).  The owner (an adapter) supplies:

* ``forward(item, dst, tag, now)``: send ``item`` on as a container, ``tag`` being
  ``(src_gsp, seq, index, last, path)``;
* ``to_gsos`` (central mode) and :meth:`emit` (egress mode), as for any
  :class:`~fabriclab.nic.gsp.Gsp`.

It also keeps what each ingress port (``src``, the owner's name for the host port a frame
came in by) has in the VOQs, so the owner can apply PFC to the host when the VOQs fill
(the simulator's leaf charges its buffer instead; the emulator's GSP daemon uses
:attr:`ingress_bytes` with :class:`fabriclab.pfc.IngressPfc`).
"""

from __future__ import annotations

from collections import defaultdict, deque

from .gsp import Gsp


class LeafGsp(Gsp):
    """The GSP of a leaf: items, not flows, wait in its VOQs."""

    def __init__(self, forward, **kw):
        super().__init__(**kw)
        self.forward = forward
        self.voq_items: dict = defaultdict(deque)  # dst -> (item, payload, src, size), in order
        self.voq_bytes: dict = defaultdict(int)  # dst -> payload bytes waiting
        self.ingress_bytes: dict = defaultdict(int)  # src -> wire bytes it has waiting
        self.voq_max_bytes = 0  # the most payload held in all VOQs at once
        self._held = 0

    def enqueue(self, now: int, dst, item, payload: int, src=None, size: int = 0) -> None:
        """``item`` (``payload`` data bytes, ``size`` bytes on the wire, in by ingress port
        ``src``) for destination port ``dst`` waits in its VOQ; ask for credit and send what
        credit allows."""
        self.voq_items[dst].append((item, payload, src, size))
        self.voq_bytes[dst] += payload
        self.ingress_bytes[src] += size
        self._held += payload
        if self._held > self.voq_max_bytes:
            self.voq_max_bytes = self._held
        self.ask(dst, now)
        self.release(dst, now)

    def release(self, dst, now: int) -> None:
        """Send what the credit allows from ``dst``'s VOQ, as containers."""
        voq, q = self.voq(dst), self.voq_items[dst]
        while q and voq.credit > 0:
            item, payload, src, size = q.popleft()
            self.voq_bytes[dst] -= payload
            self.ingress_bytes[src] -= size
            self._held -= payload
            seq, path, index, last = voq.tag(payload, not q, now)
            self.forward(item, dst, (self.id, seq, index, last, path), now)
            if last:
                self.ask(dst, now)

    def _pending(self, dst) -> int:
        return self.voq_bytes[dst]

    def _granted(self, dst, now: int) -> None:
        self.release(dst, now)
        self.ask(dst, now)

    def _unscheduled(self, dst, now: int) -> None:
        pass  # enqueue() releases after asking

    def _released(self, now: int, frames: list) -> None:
        raise AssertionError("a leaf's reorder buffers are released by arrivals only")

    def summary(self) -> dict:
        return super().summary() | {"voq_max_bytes": self.voq_max_bytes}
