# Cython declarations for transport.py (see fabriclab/native.py).  Times, sizes and
# packet numbers are integers (ns, bytes, PSNs); what may be None stays an object.
cimport cython

cdef class SendFlow:
    cdef public object flow, id, cc, route, dependents, started_ns, sent_ns, done_ns
    cdef public object timer_at, sacked, lost, sent_at, gsp_dst
    cdef public long long size, n_pkts, deps_left, start_ns, nxt, una, max_sent
    cdef public long long last_progress, rtt_ns, bdp_pkts, retx_bytes, cnps_rx
    cdef public object next_avail
    cdef public bint active

cdef class RecvFlow:
    cdef public object flow, id, route, end_ns, dependents, ooo
    cdef public long long size, n_pkts, expected, delivered, unacked, last_cnp
    cdef public long long last_nack_psn, last_nack_ns, nack_gap_ns

cdef class Nic:
    cdef dict __dict__
    cdef public object name, p, make_cc, timers, line_rate_bps, Data, Ack, Nack, Cnp
    cdef public object frames, paused, ctrl, active, senders, receivers, gsp, pick_data
    cdef public object rx_data, tx_ready, tx_wake, observer, slack
    cdef public long long mtu, hdr, ctl, int_bytes, ack_every, rto, rto_low, cnp_interval
    cdef public int data_prio, ctrl_prio
    cdef public bint reliable, send_cnp, selective
    cdef public Py_ssize_t rr
    cdef public long long rx_bytes, goodput_bytes, cnps_sent, cnps_rx, nacks_sent
    cdef public long long timeouts, retx_bytes, ce_rx

    @cython.locals(act=list, n=Py_ssize_t, j=Py_ssize_t, mtu="long long", st=SendFlow)
    cpdef poll_transmit(self, now)
    @cython.locals(psn="long long", mtu="long long", remaining="long long",
                   payload="long long", size="long long", ack_every="long long")
    cpdef data_frame(self, SendFlow st, now, Py_ssize_t j)
    cpdef on_frame(self, now, frame)
    @cython.locals(r=RecvFlow, psn="long long")
    cpdef on_data(self, now, frame)
    @cython.locals(st=SendFlow, una="long long", mtu="long long", size="long long",
                   acked="long long")
    cpdef _on_ack(self, now, frame)
