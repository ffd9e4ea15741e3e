# Cython declarations for gse.py (see fabriclab/native.py).
cimport cython

cdef class TransitTracker:
    cdef public dict next_free, rate
    cdef public object down

    @cython.locals(best=Py_ssize_t, i=Py_ssize_t, when=double, least_ahead=double,
                   least_total=double, t=double, ahead=double, total=double, f=double,
                   nf=dict, inf=double)
    cpdef earliest(self, paths, at_ns=*)

cdef class Container:
    cdef public long long seq, bytes, packets
    cdef public Py_ssize_t path
    cdef public object grant

cdef class Voq:
    cdef dict __dict__
    cdef public object params, asked, grant_paths, avoid, drained_at
    cdef public Py_ssize_t n_paths, rr_path
    cdef public long long requested_bytes, credit, next_seq, requests_sent
    cdef public long long grants_received, unscheduled, unscheduled_containers
    cdef public Container container
    cdef public list sent_on_path
    cdef public bint lease

    @cython.locals(c=Container, index="long long", path=Py_ssize_t, last=bint)
    cpdef tag(self, long long payload, bint last_data, now=*)

cdef class ReorderBuffer:
    cdef public long long expected, expected_got, held_bytes, max_held_bytes, skipped
    cdef public object expected_n, delays
    cdef public dict held, held_n

    @cython.locals(out=list)
    cpdef list accept(self, now_ns, seq, index, last, item, nbytes)
