"""The RoCE NIC, sans-IO and written once: transport (pacing, ACK/NACK/CNP, timeouts,
go-back-N and selective repeat, PFC at the host) in :mod:`.transport`, GSE's GSP in
:mod:`.gsp`.  The simulator's host (``fabriclab.sim.host``) and the emulator's agent
(``fabriclab.emu.agent``) drive the same objects; this package imports no engine."""

from .gsp import Gsp, NicGsp
from .params import LOSS_RECOVERY, NicParams
from .timers import ManualTimers
from .transport import Nic, RecvFlow, SendFlow

__all__ = ["Nic", "NicParams", "NicGsp", "Gsp", "ManualTimers", "SendFlow", "RecvFlow",
           "LOSS_RECOVERY"]
