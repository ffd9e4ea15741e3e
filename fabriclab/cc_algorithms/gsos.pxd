# Cython declarations for gsos.py (see fabriclab/native.py).
cimport cython
from .gse cimport TransitTracker

cdef class Gsos:
    cdef dict __dict__
    cdef public TransitTracker tracker
    cdef public dict sched, _paths
    cdef public list _heap
    cdef public set _armed
    cdef public long long request_messages, requests, requested_bytes, grants
    cdef public long long granted_bytes, transit_waits

    @cython.locals(out=list, heap=list, fired=Py_ssize_t)
    cpdef list due(self, now_ns, most=*)
    cpdef _fire(self, t, dst, list out)
