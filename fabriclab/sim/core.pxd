cimport cython

cdef class EventLoop:
    cdef public long long now
    cdef public list heap
    cdef public object seq
    cdef public long long events
    cdef public bint _stopped
    cdef public long long _discarded

    @cython.locals(heap=list, t="long long", limit="long long", budget="long long")
    cpdef run(self, until_ns=*, progress=*, progress_every=*)
