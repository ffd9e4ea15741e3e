"""The NIC's parameters: what the spec says, plus what the engine's frames look like."""

from __future__ import annotations

from dataclasses import dataclass

LOSS_RECOVERY = ("go_back_n", "selective_repeat")
#: IRN's N: selective repeat uses the short timeout while at most this many packets are in
#: flight (Mittal et al., SIGCOMM 2018, section 3.1)
RTO_LOW_PKTS = 3


@dataclass(frozen=True)
class NicParams:
    """One RoCE NIC's settings.  Spec values (``nic.*``, ``dcqcn.cnp_interval_us``, the
    scheme) and the frame sizes of the engine that moves the frames (the simulator's
    ``switch.header_bytes``; the emulator's real Ethernet/IP/UDP/BTH overheads)."""

    mtu_bytes: int  # payload per data packet
    data_header_bytes: int  # a data frame's bytes on the wire besides payload and INT
    control_bytes: int  # an ACK/NACK/CNP (and a GSE REQUEST/GRANT) on the wire
    int_bytes: int  # INT area every data frame carries and its ACK echoes (HPCC); 0: none
    data_prio: int
    ctrl_prio: int
    reliable: bool  # ACKs, NACKs, retransmission (the udp scheme: none)
    ack_every_pkts: int
    rto_ns: int
    #: selective repeat: the timeout when at most RTO_LOW_PKTS packets are in flight (IRN)
    rto_low_ns: int
    cnp_interval_ns: int
    send_cnp: bool  # the receiver answers CE marks with CNPs (DCQCN)
    loss_recovery: str = "go_back_n"
    #: pacing may catch up this many packets after a late wake-up (an engine whose timers
    #: fire late, e.g. the emulator's agents on a loaded machine; 0 in the simulator)
    pacing_slack_pkts: int = 0

    def __post_init__(self):
        if self.mtu_bytes <= 0 or self.ack_every_pkts < 1 or self.rto_ns <= 0:
            raise ValueError("mtu_bytes, ack_every_pkts and rto_ns must be positive")
        if not 0 < self.rto_low_ns <= self.rto_ns:
            raise ValueError("rto_low_ns must be positive and at most rto_ns")
        if self.loss_recovery not in LOSS_RECOVERY:
            raise ValueError(f"loss_recovery {self.loss_recovery!r}: one of "
                             f"{', '.join(LOSS_RECOVERY)}")
        if self.data_prio == self.ctrl_prio:
            raise ValueError("data_prio and ctrl_prio must differ")

    @classmethod
    def from_spec(cls, spec, scheme, data_header_bytes: int, control_bytes: int,
                  int_bytes: int, pacing_slack_pkts: int = 0,
                  mtu_bytes: int | None = None) -> "NicParams":
        from ..spec import ack_every_pkts
        nic = spec.nic
        return cls(mtu_bytes=mtu_bytes or spec.switch.mtu_bytes,
                   data_header_bytes=data_header_bytes, control_bytes=control_bytes,
                   int_bytes=int_bytes if scheme.int_telemetry else 0,
                   data_prio=nic.data_priority, ctrl_prio=nic.control_priority,
                   reliable=scheme.reliable, ack_every_pkts=ack_every_pkts(spec, mtu_bytes),
                   rto_ns=round(nic.rto_us * 1000), rto_low_ns=round(nic.rto_low_us * 1000),
                   cnp_interval_ns=round(spec.dcqcn.cnp_interval_us * 1000),
                   send_cnp=scheme.congestion_control == "dcqcn",
                   loss_recovery=nic.loss_recovery,
                   pacing_slack_pkts=pacing_slack_pkts)
