# Cython declarations for core.py (see fabriclab/native.py).
cimport cython

cdef class EventLoop:
    cdef public long long now
    cdef public list times
    cdef public dict buckets
    cdef public long long events
    cdef public list _cur
    cdef public Py_ssize_t _next

    @cython.locals(b=list)
    cpdef push(self, long long t_ns, fn, arg)
    @cython.locals(times=list, buckets=dict, b=list, t="long long", limit="long long",
                   n="long long", report="long long", i=Py_ssize_t)
    cpdef run(self, until_ns=*, progress=*, progress_every=*)
