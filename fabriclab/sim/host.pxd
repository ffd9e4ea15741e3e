# Cython declarations for host.py (see fabriclab/native.py).
cimport cython
from .core cimport EventLoop
from .fabric cimport FabricFrame, Port

cdef class SimFrame(FabricFrame):
    cdef public long long psn, payload
    cdef public bint ackreq
    cdef public int ecn
    cdef public object ints, tag, sack

cdef class SimGseFrame(FabricFrame):
    cdef public object src_gsp, dst_port, sizes, path
    cdef public long long nbytes
    cdef public bint idle

@cython.locals(f=SimFrame)
cpdef SimFrame _data(flow, psn, payload, size, prio, ackreq=*, ints=*, tag=*)

@cython.locals(f=SimFrame)
cpdef SimFrame _ack(flow, psn, size, prio, ints=*, sack=*)

cdef class NicPort(Port):
    cdef public object nic, wake_at

    @cython.locals(pkt=FabricFrame, now="long long", num="long long", ser="long long",
                   t="long long", loop=EventLoop)
    cpdef _send(self, _=*)

cdef class Host:
    cdef public object net, name, port, nic, on_frame
    cdef public EventLoop loop
    cdef dict __dict__

    cpdef receive(self, pkt)
