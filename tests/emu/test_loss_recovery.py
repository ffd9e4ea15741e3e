"""Selective repeat against go-back-N on real packets (issue 10): the NIC's loss recovery
is written once (fabriclab/nic) and the host agents run it.  A 3 -> 1 incast into 16 kB
drop-tail queues (Open vSwitch has no PFC) loses data frames at the receiver's leaf; both
modes must deliver every byte, and selective repeat must resend less than go-back-N, which
resends everything after each gap.

2 leaves x 2 spines x 2 hosts, 100G links emulated at 10 Mb/s.  These need root (CI runs
as root, so they run there).
"""

import os

import pytest

from fabriclab import spec as S

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the Mininet engine needs root"),
              pytest.mark.usefixtures("nothing_left_behind")]

SIZE = 500_000
SENDERS = ["h1", "h2", "h3"]


def _lossy(mode: str) -> dict:
    from fabriclab.emu.runner import emulate
    spec = S.validate({
        "name": f"lossy-{mode}", "engine": "mininet", "scheme": "ecmp_dcqcn",
        "topology": {"kind": "leaf_spine", "leaves": 2, "spines": 2, "hosts_per_leaf": 2},
        "switch": {"queue_limit_bytes": 16_000},
        "nic": {"loss_recovery": mode},
        "workload": [{"name": "incast", "kind": "incast", "receiver": "h0",
                      "senders": SENDERS, "bytes": SIZE}]}, "test")
    return emulate(spec, progress=False).summary


@pytest.fixture(scope="module")
def runs():
    return {m: _lossy(m) for m in ("go_back_n", "selective_repeat")}


def test_both_modes_deliver_every_byte_through_loss(runs):
    for mode, s in runs.items():
        assert s["flows_completed"] == len(SENDERS), mode
        assert s["payload_delivered_bytes"] == len(SENDERS) * SIZE, mode
        assert s["drops"] > 0, (mode, "no loss: the comparison would mean nothing")


def test_selective_repeat_resends_less_than_go_back_n(runs):
    gbn, sr = runs["go_back_n"], runs["selective_repeat"]
    assert 0 < sr["retransmitted_bytes"] < gbn["retransmitted_bytes"], \
        (sr["retransmitted_bytes"], gbn["retransmitted_bytes"])
