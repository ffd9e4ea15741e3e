"""The host agent's PFC: a PAUSE for the NIC's data priority stops its data for the frame's
quanta at the host's line rate (fabric time), a later PAUSE reloads the deadline, quanta 0
resumes, the deadline passing resumes, other priorities are counted and ignored, and
``paused_ns`` adds up the time paused.  No Mininet: the agent runs with a fake clock, its
sockets on loopback."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest
import yaml

from fabriclab.emu import agent as A
from fabriclab.wire import pfc
from fabriclab.wire import roce as P

RATE = 100 * 10**9
Q_MAX_NS = 335_540  # 0xFFFF quanta at 100 Gb/s, rounded up
DATA_PRIO = 5  # not the default (3): the agent must take it from the spec
SRC_MAC = bytes.fromhex("02000000000b")
ROOT = Path(__file__).resolve().parents[1]


def make_plan(tmp_path, flows=(), **extra) -> dict:
    raw = yaml.safe_load((ROOT / "experiments" / "incast.yaml").read_text())
    raw.setdefault("nic", {})["data_priority"] = DATA_PRIO
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    plan = {
        "host": "h1", "ip": "127.0.0.1", "tdf": 10, "spec_path": str(spec_path),
        "congestion_control": None, "reliable": True, "send_cnp": False,
        "line_rate_bps": RATE, "base_rtt_ns": 10_000, "mtu": 1000, "ack_every": 1,
        "cnp_interval_ns": 50_000, "rto_ns": 10**9, "nack_gap_ns": 100_000, "stop_ns": None,
        "sample_interval_ns": 1_000_000, "sport_base": 0, "track_flows": [],
        "flows": list(flows), "out": str(tmp_path / "out.json"), "int_telemetry": False,
        "path_delay_ns": {}, "gse": None, "pfc": False, "intf": "flbh1-eth0"}
    plan.update(extra)
    return plan


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def make_agent(tmp_path, monkeypatch):
    """An agent (no sockets, unless ``sockets``: then the real set-up) on a fake fabric
    clock."""
    made = []

    def make(flows=(), sockets=False, **extra):
        if sockets:  # the real set-up, on loopback, on ports nothing else uses
            monkeypatch.setattr(P, "ROCE_PORT", 0)
        else:
            monkeypatch.setattr(A.Agent, "_open_sockets", lambda self: None)
        agent = A.Agent(make_plan(tmp_path, flows, **extra))
        agent.t0 = 0
        agent.now = clock = Clock()
        made.append(agent)
        return agent, clock

    yield make
    for agent in made:
        for s in [getattr(agent, "rx", None), agent.pfc_sock]:
            if s is not None:
                s.close()


def data_paused(agent) -> bool:
    return agent.nic.paused[DATA_PRIO]


def test_plan_fields_and_defaults(make_agent):
    agent, _ = make_agent()
    assert agent.data_prio == DATA_PRIO and agent.line == RATE
    assert not agent.pfc_on and agent.pfc_sock is None and agent.intf == "flbh1-eth0"
    agent2, _ = make_agent(intf=None)
    assert agent2.intf == "flbh1-eth0"  # derived as Mininet names it
    c = agent.results()["counters"]
    assert (c["pfc_pause_rx"], c["pfc_resume_rx"], c["pfc_other_rx"], c["paused_ns"]) == (
        0, 0, 0, 0)


def test_pause_then_expiry(make_agent):
    agent, clock = make_agent()
    agent.on_pfc(1000, {DATA_PRIO: 0xFFFF})
    assert data_paused(agent) and agent.pause_until == 1000 + Q_MAX_NS
    agent.pfc_expire(1000 + Q_MAX_NS - 1)
    assert data_paused(agent)
    agent.pfc_expire(1000 + Q_MAX_NS + 500)  # noticed late: counted to the deadline
    assert not data_paused(agent) and agent.pause_until is None
    clock.t = 10**6
    c = agent.results()["counters"]
    assert (c["pfc_pause_rx"], c["pfc_resume_rx"], c["paused_ns"]) == (1, 0, Q_MAX_NS)


def test_later_pause_reloads_the_deadline(make_agent):
    agent, clock = make_agent()
    agent.on_pfc(0, {DATA_PRIO: 1000})  # 1000 x 5.12 ns
    assert agent.pause_until == 5120
    agent.on_pfc(4000, {DATA_PRIO: 1000})  # extends
    assert agent.pause_until == 9120
    agent.on_pfc(5000, {DATA_PRIO: 1})  # a short PAUSE shortens it (the timer is reloaded)
    assert agent.pause_until == 5006 and data_paused(agent)
    agent.pfc_expire(6000)
    assert not data_paused(agent)
    clock.t = 7000
    c = agent.results()["counters"]
    assert c["pfc_pause_rx"] == 3 and c["paused_ns"] == 5006


def test_zero_quanta_resumes_now(make_agent):
    agent, clock = make_agent()
    agent.on_pfc(100, {DATA_PRIO: 0xFFFF})
    agent.on_pfc(2100, {DATA_PRIO: 0, 0: 7})
    assert not data_paused(agent) and agent.pause_until is None
    agent.on_pfc(3000, {DATA_PRIO: 0})  # a RESUME when not paused: counted, nothing else
    assert not data_paused(agent)
    clock.t = 10**7
    c = agent.results()["counters"]
    assert (c["pfc_pause_rx"], c["pfc_resume_rx"], c["pfc_other_rx"], c["paused_ns"]) == (
        1, 2, 0, 2000)


def test_other_priorities_are_counted_and_ignored(make_agent):
    agent, _ = make_agent()
    ctrl = agent.nic.ctrl_prio
    agent.on_pfc(0, {0: 0xFFFF, ctrl: 0xFFFF})
    agent.on_pfc(10, {})
    assert not any(agent.nic.paused) and agent.pause_until is None
    agent.on_pfc(20, {DATA_PRIO: 10})
    agent.on_pfc(30, {1: 0})  # does not resume the data priority
    assert data_paused(agent)
    c = agent.results()["counters"]
    assert (c["pfc_other_rx"], c["pfc_pause_rx"], c["pfc_resume_rx"]) == (3, 1, 0)


def test_pause_in_force_at_the_end_counts(make_agent):
    agent, clock = make_agent()
    agent.on_pfc(0, {DATA_PRIO: 100})  # 512 ns, over
    agent.pfc_expire(600)
    agent.on_pfc(1000, {DATA_PRIO: 0xFFFF})
    clock.t = 1000 + 40_000  # still paused when the run ends
    assert agent.results()["counters"]["paused_ns"] == 512 + 40_000
    clock.t = 10**9  # past its deadline, not yet noticed: counted to the deadline
    assert agent.results()["counters"]["paused_ns"] == 512 + Q_MAX_NS
    assert data_paused(agent)


def test_frame_after_a_missed_expiry_closes_it_first(make_agent):
    """A PAUSE arriving after the deadline passed (the loop had not noticed) starts a new
    pause: the gap between them is not counted as paused."""
    agent, _ = make_agent()
    agent.on_pfc(0, {DATA_PRIO: 100})  # until 512
    agent.on_pfc(2000, {DATA_PRIO: 100})  # until 2512
    assert agent.paused_total_ns(2512) == 512 + 512
    agent.on_pfc(3000, {DATA_PRIO: 0})
    assert agent.paused_ns == 1024 and agent.counters["pfc_resume_rx"] == 1


def test_pause_holds_data_back_not_control(make_agent):
    """The NIC sends no data while PFC pauses it, and sends again after the pause."""
    flow = {"id": 0, "src": "h1", "dst": "h2", "src_ip": "127.0.0.1", "dst_ip": "127.0.0.2",
            "size": 100_000, "start_ns": 0, "deps": [], "dst_gsp": 1}
    agent, _ = make_agent(flows=[flow])
    nic = agent.nic
    nic.schedule_start(agent.flows[0].send)
    agent.timers.run_due(0)
    agent.on_pfc(0, {DATA_PRIO: 1000})
    assert nic.poll_transmit(100) is None
    agent.pfc_expire(5120)
    frame = nic.poll_transmit(5120)
    assert frame is not None and frame.kind == "data" and frame.prio == DATA_PRIO


def _send_on_lo(frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind(("lo", 0))
        for f in frames:
            s.send(f)
    finally:
        s.close()


def test_packet_socket_on_loopback(make_agent):
    """The real set-up with ``pfc`` on, on loopback: a PFC frame sent on the interface is
    read once; an 802.3x PAUSE (MAC Control, another opcode) is not PFC."""
    try:
        agent, _ = make_agent(sockets=True, pfc=True, intf="lo")
    except PermissionError:
        pytest.skip("AF_PACKET needs CAP_NET_RAW")
    name, proto = agent.pfc_sock.getsockname()[:2]
    assert (name, proto) == ("lo", pfc.ETHERTYPE)
    pause_8023x = (pfc.PFC_DST + SRC_MAC + b"\x88\x08\x00\x01\x00\x10").ljust(60, b"\0")
    _send_on_lo([pause_8023x, pfc.encode(SRC_MAC, {DATA_PRIO: 0xFFFF}),
                 pfc.encode(SRC_MAC, {1: 3})])
    deadline = time.monotonic() + 2
    c = agent.counters
    while c["pfc_pause_rx"] + c["pfc_other_rx"] < 2 and time.monotonic() < deadline:
        select.select([agent.pfc_sock], [], [], 0.1)
        agent._receive_pfc(50)
    time.sleep(0.05)
    agent._receive_pfc(50)  # nothing more: no duplicates
    assert (c["pfc_pause_rx"], c["pfc_other_rx"], c["pfc_resume_rx"]) == (1, 1, 0)
    assert data_paused(agent) and agent.pause_until == 50 + Q_MAX_NS
