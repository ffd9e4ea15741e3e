# Cython declarations for gsp.py (see fabriclab/native.py).
cimport cython
from .transport cimport Nic, SendFlow
from ..cc_algorithms.gse cimport Voq, ReorderBuffer

cdef class Gsp:
    cdef dict __dict__
    cdef public object id, params, frames, timers, paths
    cdef public dict voqs, reorder_bufs
    cdef public set stale_checks

    @cython.locals(rb=ReorderBuffer, out=list)
    cpdef list reorder_accept(self, now, frame, item, dst=*)

cdef class NicGsp(Gsp):
    cdef public Nic nic
    cdef public object voq_flows, flow_rr
    cdef public Py_ssize_t rr_voq
    cdef public dict routes

    @cython.locals(dsts=list, n=Py_ssize_t, k=Py_ssize_t, i=Py_ssize_t, nf=Py_ssize_t,
                   start=Py_ssize_t, st=SendFlow, flows=list, v=Voq)
    cpdef next_data(self, now)
    @cython.locals(nic=Nic, voq=Voq, routes=list)
    cpdef _container_frame(self, SendFlow st, dst, now)
    cpdef rx_data(self, now, frame)
