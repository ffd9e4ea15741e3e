"""The simulator's frames (one class for data, ACK, NACK and CNP frames, one for GSE's
control frames, see fabriclab/sim/host.py) carry
exactly what the wire's typed frames carry: each SimFrames constructor sets the same fields
to the same values as the typed frame class of its kind."""

import pytest

from fabriclab import native
from fabriclab.sim.host import SimFrame, SimFrames, SimGseFrame
from fabriclab.wire import frames as W

FLOW = object()
CASES = [
    ("Data", (FLOW, 7, 1000, 1048, 3)), ("Data", (FLOW, 7, 1000, 1048, 3, True, [], None)),
    ("Data", (FLOW, 0, 10, 58, 3, False, None, W.ContainerTag("h1", 4, 2, True, 1))),
    ("Ack", (FLOW, 8, 48, 7)), ("Ack", (FLOW, 8, 152, 7, [(1, 2, 3, 4)], 11)),
    ("Nack", (FLOW, 8, 48, 7)), ("Nack", (FLOW, 8, 48, 7, 12)), ("Cnp", (FLOW, 48, 7)),
    ("GseRequest", ("h0", "h3", [65536, 100], 48, 7)),
    ("GseGrant", ("h0", "h3", 65536, 1, 48, 7)),
]


def _fields(frame) -> dict:
    out = {}
    for cls in type(frame).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(frame, slot):
                out[slot] = getattr(frame, slot)
    return out


@pytest.mark.parametrize("name,args", CASES)
def test_sim_frame_sets_what_the_typed_frame_sets(name, args):
    typed = getattr(W, name)(*args)
    sim = getattr(SimFrames, name)(*args)
    assert isinstance(sim, SimGseFrame if name.startswith("Gse") else SimFrame)
    assert sim.kind == typed.kind
    want = _fields(typed)
    assert {k: getattr(sim, k) for k in want} == want
    if native.status() == "python":  # compiled frames have every field, unset ones None/0
        got = {k: v for k, v in _fields(sim).items() if k not in ("kind", "hop", "in_port")}
        assert got == want
