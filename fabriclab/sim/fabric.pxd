# Cython declarations for fabric.py (see fabriclab/native.py): C types of the fields of its
# classes and of the hot methods' locals.  The .py file is the code, run as is or compiled.
cimport cython
from .core cimport EventLoop

cdef class FabricFrame:
    cdef public object kind, flow, route
    cdef public Py_ssize_t hop
    cdef public Port in_port
    cdef public long long size
    cdef public int prio

cdef class Port:
    cdef public EventLoop loop
    cdef public object send_ev, net, node, name, role, peer_recv, lost
    cdef public Py_ssize_t index
    cdef public long long rate, delay, rem, busy_until, tx_bytes, tx_pkts
    cdef public Port peer
    cdef public bint tx_pending, down
    cdef public list paused, pause_start
    cdef public long long paused_ns, pfc_pause_rx, pfc_frame_ns, drops, drop_bytes
    cdef public double loss
    cdef public long long nominal_rate, wd_until

cdef class SwitchPort(Port):
    cdef public Switch sw
    cdef public list queues, qbytes
    cdef public object order
    cdef public long long npkts, kmin, kmax
    cdef public double pslope
    cdef public long long ing_bytes, hdrm_bytes, headroom
    cdef public bint pause_sent
    cdef public long long ecn_marks, max_qbytes, pfc_pause_tx, pfc_resume_tx

    @cython.locals(prio=int, size="long long", qb="long long", sw=Switch, inp=SwitchPort,
                   pkt=FabricFrame, from_hdrm="long long", rest="long long",
                   ing="long long", reserve="long long", shared="long long",
                   num="long long", ser="long long", t="long long", loop=EventLoop)
    cpdef _send(self, _=*)

cdef class Switch:
    cdef public object net, name, rand, on_dequeue, spray_rng, prio_order
    cdef dict __dict__
    cdef public list ports
    cdef public dict next_hops
    cdef public int data_prio
    cdef public long long buffer, qlimit, used, reserve, resume_offset
    cdef public long long shared_total, shared_used
    cdef public bint pfc
    cdef public double alpha

    @cython.locals(out=SwitchPort, prio=int, qb="long long")
    cpdef receive(self, FabricFrame pkt)
    @cython.locals(size="long long", inp=SwitchPort, new="long long", reserve="long long")
    cpdef bint admit(self, FabricFrame pkt, SwitchPort out)
