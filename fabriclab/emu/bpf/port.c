// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * fabriclab switch-port program: ECN marking (RED) on a phantom queue, and HPCC's
 * in-band telemetry (INT).
 *
 * Attached on clsact egress of every switch port (the switch-side veth in the root
 * namespace).  The same interface is shaped by HTB; clsact egress runs in
 * __dev_queue_xmit() just before the packet is handed to the root qdisc, so this program
 * sees every packet as it *enters* the port's queue.
 *
 * Userspace cannot read the HTB backlog cheaply per packet, so the program keeps its own
 * estimate: a phantom queue that gains skb->len per packet and drains at exactly the
 * shaped rate.  It equals the real FIFO backlog while HTB sends at that rate and the
 * bfifo drops nothing (see fabriclab/emu/bpfport.py for the full argument).  RED runs on
 * that estimate when the packet is enqueued (the simulator marks at dequeue).
 *
 * INT (HPCC): a RoCEv2 data frame (IPv4/UDP to port 4791, BTH opcode 0x04) with INT_FLAG
 * in BTH byte 8 carries an INT area right after the BTH (wire format: "HPCC: INT" in
 * fabriclab/wire/roce.py).  While it has room, every port appends one record
 *   u64 ts_ns | u32 tx_bytes | u32 qlen_bytes | u32 rate_kbps   (big-endian)
 * and increments the hop count.  The frames are sent with UDP checksum 0, so nothing
 * needs fixing; a frame with a non-zero UDP checksum is left alone (int_skipped).
 *
 * The program never drops: it always returns TC_ACT_OK.  Dropping is HTB/bfifo's job.
 *
 * Maps are plain ARRAYs of one entry.  tc loads a fresh instance of each map for every
 * interface it attaches the object to, which gives per-port state that disappears with
 * the interface.  Userspace finds them from the program id (no pinning needed).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define NSEC_PER_SEC 1000000000ULL
#define ECN_MASK 0x03 /* low two bits of the IPv4 TOS byte */
#define ECN_CE 0x03

/* HPCC INT, mirrored from fabriclab/wire/roce.py ("HPCC: INT"). */
#define ROCE_PORT 4791
#define OP_SEND_ONLY 0x04 /* BTH opcode of a data frame */
#define BTH_LEN 12
#define BTH_FLAGS_BYTE 8  /* the byte of the BTH that holds INT_FLAG */
#define INT_FLAG 0x01
#define INT_HDR_LEN 4     /* u8 hops | u8 max_hops | u16 reserved */
#define INT_REC_LEN 20
#define INT_MAX_HOPS 5    /* the largest INT area this program writes into */
#define IP_FRAG_BITS 0x3fff /* MF flag and fragment offset */

/* What int_locate() found. */
#define INT_NONE 0  /* not an INT frame: untouched, not counted */
#define INT_STAMP 1 /* append a record */
#define INT_SKIP 2  /* an INT frame this port must not (or cannot) stamp */

/* PFC (see fabriclab/emu/pfcd.py): the ingress ports a switch tells apart. */
#define MAX_ING 16
#define PAUSED_BIT (1ULL << 63)
#define ETH_P_KICK 0x88B5 /* IEEE local experimental EtherType: pfcd's kick frames */

/* Written by userspace (bpfport.PortProgram._write_cfg); layout mirrored there. */
struct port_cfg {
	__u64 rate_bps;    /* shaped rate of the port, bit/s */
	__u32 kmin_bytes;  /* RED: no mark at or below */
	__u32 kmax_bytes;  /* RED: always mark at or above */
	__u32 pmax_u32;    /* RED: mark probability at kmax, x 2^32 (saturated) */
	__u32 ecn_enabled; /* 0: count only, never mark */
	/*
	 * PFC mode (pfc = 1; all zero otherwise, and the program behaves as without PFC):
	 * the queue counts data frames only and drains only while the data class is not
	 * paused (the "active clock", map pause); data bytes are counted per ingress port,
	 * told apart by the source MAC the frame arrived with; every frame leaving gets this
	 * port's MAC as its source (as a routed switch rewrites it), so the next switch can
	 * tell which of its ports a frame came in on; IPv4 frames are classified into the
	 * port's HTB classes: data (prio_data) or control (prio_ctrl, never paused).
	 */
	__u32 pfc;
	__u32 prio_data;
	__u32 prio_ctrl;
	__u32 n_ing;
	__u64 tag_mac;           /* this port's MAC, in the first 6 bytes (memory order) */
	__u64 ing_mac[MAX_ING];  /* the source MAC of frames from ingress port i */
};

/* Read by userspace (bpfport.PortProgram.read); layout mirrored there. */
struct port_state {
	struct bpf_spin_lock lock;
	__u64 queue_bytes;     /* phantom queue at last_ns */
	__u64 last_ns;         /* bpf_ktime_get_ns() the queue was drained to */
	__u64 tx_bytes;        /* bytes entering the port (L2, as HTB counts them) */
	__u64 tx_pkts;
	__u64 ce_marks;        /* packets this program set to CE */
	__u64 ect_pkts;        /* IPv4 packets that arrived ECT(0) or ECT(1) */
	__u64 max_queue_bytes; /* high-water mark of the phantom queue */
	__u64 int_stamped;     /* INT frames this port appended a record to */
	__u64 int_skipped;     /* INT frames left unstamped (see int_locate) */
	/* PFC mode only */
	__u64 data_bytes;          /* data bytes entering (the queue counts only these) */
	__u64 unknown_bytes;       /* ... of them from a source MAC of no ingress port */
	__u64 ing_bytes[MAX_ING];  /* ... of them from ingress port i */
	__u64 ctrl_queue;          /* the control class's own phantom queue (never paused) */
	__u64 ctrl_last_ns;
};

/*
 * The active clock of PFC mode: time that passes only while the data class is not
 * paused.  One word, written by pfcd: bit 63 clear -> active = now - word (the word is
 * the paused time so far); bit 63 set -> paused, active = the low 63 bits (frozen).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pause SEC(".maps");

/* One INT record as it goes on the wire (20 bytes, all fields big-endian). */
struct int_record {
	__be64 ts_ns;
	__be32 tx_bytes;
	__be32 qlen_bytes;
	__be32 rate_kbps;
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_state);
} st SEC(".maps");

/*
 * Offset of the IPv4 header if this is an untagged Ethernet frame carrying IPv4 whose
 * ECN field is ECT(0) or ECT(1); -1 otherwise.  *tos receives the TOS byte.
 * Mininet uses no VLANs, so a tagged frame is simply "not IPv4" and is never touched.
 */
static __always_inline int ect_ipv4(struct __sk_buff *skb, __u8 *tos)
{
	const __u32 need = sizeof(struct ethhdr) + sizeof(struct iphdr);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (data + need > data_end) {
		/* Headers not in the linear area (rare on egress): pull them in once. */
		if (bpf_skb_pull_data(skb, need))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + need > data_end)
			return -1;
	}
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);

	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->version != 4 || iph->ihl < 5)
		return -1;
	if ((iph->tos & ECN_MASK) == 0 || (iph->tos & ECN_MASK) == ECN_CE)
		return -1; /* Not-ECT, or already CE: nothing to decide */
	*tos = iph->tos;
	return sizeof(*eth);
}

/*
 * Is this an INT frame, and may a record be appended?  Returns INT_NONE, INT_STAMP or
 * INT_SKIP; for INT_STAMP, *rec_off is where the record goes and *hops_off the offset of
 * the hop count, *hops its present value (all relative to the start of the frame).
 *
 * The headers are read with bpf_skb_load_bytes, which copies from non-linear skbs as
 * well, so nothing needs pulling here and no packet pointer is kept across helpers.
 * An INT frame is skipped (INT_SKIP, counted in int_skipped) when
 *   - its UDP checksum is non-zero: the record would invalidate it (agents send INT
 *     frames with SO_NO_CHECK, checksum 0);
 *   - it is a GSO super-packet (several datagrams in one skb; only one would be stamped);
 *   - its INT area is full (hops >= max_hops), larger than INT_MAX_HOPS, or does not fit
 *     in the UDP datagram.
 * IPv4 options are skipped over (ihl); IPv4 fragments are never INT frames.
 */
static __always_inline int int_locate(struct __sk_buff *skb, __u32 *rec_off,
				      __u32 *hops_off, __u8 *hops, int *is_data)
{
	struct iphdr iph;
	struct udphdr uh;
	__u8 bth[BTH_LEN];
	__u8 ih[INT_HDR_LEN];
	__be16 proto;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return INT_NONE;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) ||
	    proto != bpf_htons(ETH_P_IP))
		return INT_NONE;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &iph, sizeof(iph)))
		return INT_NONE;
	if (iph.version != 4 || iph.ihl < 5 || iph.protocol != IPPROTO_UDP ||
	    (iph.frag_off & bpf_htons(IP_FRAG_BITS)))
		return INT_NONE;
	__u32 l4 = sizeof(struct ethhdr) + iph.ihl * 4; /* ihl <= 15: l4 <= 74 */
	if (bpf_skb_load_bytes(skb, l4, &uh, sizeof(uh)) || uh.dest != bpf_htons(ROCE_PORT))
		return INT_NONE;
	__u32 bth_off = l4 + sizeof(uh);
	if (bpf_skb_load_bytes(skb, bth_off, bth, sizeof(bth)))
		return INT_NONE;
	if (bth[0] != OP_SEND_ONLY)
		return INT_NONE;
	*is_data = 1; /* a RoCE data frame (PFC's lossless class) */
	if (!(bth[BTH_FLAGS_BYTE] & INT_FLAG))
		return INT_NONE;

	/* An INT frame from here on: whatever stops the stamp is counted. */
	if (uh.check != 0 || skb->gso_segs > 1)
		return INT_SKIP;
	__u32 int_off = bth_off + BTH_LEN;
	if (bpf_skb_load_bytes(skb, int_off, ih, sizeof(ih)))
		return INT_SKIP;
	__u8 h = ih[0], max_h = ih[1];
	if (max_h > INT_MAX_HOPS || h >= max_h)
		return INT_SKIP;
	/* The whole area must lie inside the datagram as the headers describe it. */
	__u32 area_end = int_off + INT_HDR_LEN + (__u32)max_h * INT_REC_LEN;
	__u32 udp_end = l4 + bpf_ntohs(uh.len);
	__u32 ip_end = sizeof(struct ethhdr) + bpf_ntohs(iph.tot_len);
	if (area_end > udp_end || udp_end > ip_end || ip_end > skb->len)
		return INT_SKIP;
	*hops_off = int_off;
	*hops = h;
	*rec_off = int_off + INT_HDR_LEN + (__u32)h * INT_REC_LEN;
	return INT_STAMP;
}

SEC("tc")
int port_egress(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct port_cfg *c = bpf_map_lookup_elem(&cfg, &key);
	struct port_state *s = bpf_map_lookup_elem(&st, &key);

	if (!c || !s)
		return TC_ACT_OK;
	/* pfcd's kick (it only wakes the qdisc up; the kick class drops it): not counted */
	if (c->pfc && skb->protocol == bpf_htons(ETH_P_KICK))
		return TC_ACT_OK;

	__u8 tos = 0;
	int l3 = ect_ipv4(skb, &tos);
	__u32 rec_off = 0, hops_off = 0;
	__u8 hops = 0;
	int is_data = 0;
	int intr = int_locate(skb, &rec_off, &hops_off, &hops, &is_data);
	__u32 pfc = c->pfc;
	__u32 ing = MAX_ING; /* none */
	__u64 tag = 0;
	if (pfc) {
		__u64 src = 0;
		__u32 n = c->n_ing;
		tag = c->tag_mac;
		if (is_data && !bpf_skb_load_bytes(skb, 6, &src, 6)) {
			for (int i = 0; i < MAX_ING; i++) {
				if (i < n && c->ing_mac[i] == src) {
					ing = i;
					break;
				}
			}
		}
	}
	/*
	 * Helpers may not be called under bpf_spin_lock, so the clock and the random number
	 * are taken before it.  A packet on another CPU may then update the queue with a
	 * slightly later clock first; the drain below treats "now < last" as no time passed.
	 */
	__u64 now = bpf_ktime_get_ns();
	__u32 rnd = bpf_get_prandom_u32();
	/* The clock the queue drains by: real time, or in PFC mode the active clock. */
	__u64 clk = now;
	if (pfc) {
		__u64 *pw = bpf_map_lookup_elem(&pause, &key);
		__u64 w = pw ? *pw : 0;
		clk = (w & PAUSED_BIT) ? (w & ~PAUSED_BIT) : now - w;
	}
	int queued = !pfc || is_data; /* what the queue counts */
	__u64 len = skb->len;
	__u64 rate_bps = c->rate_bps; /* read once: drain and INT rate agree */
	__u64 bytes_per_s = rate_bps / 8;
	__u32 kmin = c->kmin_bytes, kmax = c->kmax_bytes, pmax = c->pmax_u32;
	int mark = 0;
	__u64 int_tx = 0, int_q = 0;

	/*
	 * Several CPUs can transmit on one port at once, and the queue update is a
	 * read-modify-write of several fields; the lock keeps them consistent (userspace
	 * reads with BPF_F_LOCK for the same reason).
	 */
	bpf_spin_lock(&s->lock);
	__u64 q = s->queue_bytes;
	if (bytes_per_s == 0) {
		q = 0; /* not configured yet: no rate, no queue */
		s->last_ns = clk;
	} else if (clk > s->last_ns) {
		__u64 delta = clk - s->last_ns;
		/*
		 * delta * bytes_per_s must not overflow 64 bits: one second of it fits for
		 * any rate userspace accepts (bpfport.MAX_RATE_BPS, ~147 Gbit/s), and one
		 * second of draining empties any real queue anyway.
		 */
		if (delta > NSEC_PER_SEC)
			delta = NSEC_PER_SEC;
		__u64 drained = delta * bytes_per_s / NSEC_PER_SEC;
		if (drained >= q) {
			q = 0;
			s->last_ns = clk;
		} else {
			q -= drained;
			/*
			 * Advance the clock only by the time those whole bytes took, so the
			 * sub-byte remainder carries over instead of being lost on every packet
			 * (otherwise the queue would creep upwards by up to a byte per packet).
			 */
			s->last_ns += drained * NSEC_PER_SEC / bytes_per_s;
		}
	}
	/*
	 * INT's qlen is the queue this packet finds ahead of it (drained, before its own
	 * length is added): the backlog the port reports to a packet dequeued now, i.e. the
	 * queue a dequeue leaves behind, which is what HPCC's switches put in the record.
	 * (RED below marks on the queue including the packet, as before.)
	 */
	int_q = q;
	if (queued)
		q += len;
	s->queue_bytes = q;
	if (q > s->max_queue_bytes)
		s->max_queue_bytes = q;
	s->tx_bytes += len;
	s->tx_pkts += 1;
	if (intr == INT_STAMP) {
		int_tx = s->tx_bytes; /* includes this packet */
		s->int_stamped += 1;
	} else if (intr == INT_SKIP) {
		s->int_skipped += 1;
	}
	if (pfc && !is_data) {
		/*
		 * The control class: its own phantom queue, drained at the port's rate in real
		 * time (it is served first and never paused).  The peak counts it as the
		 * simulator's does its per-priority queues: the larger of the two.
		 */
		__u64 cq = s->ctrl_queue;
		if (bytes_per_s && now > s->ctrl_last_ns) {
			__u64 d = now - s->ctrl_last_ns;
			if (d > NSEC_PER_SEC)
				d = NSEC_PER_SEC;
			__u64 dr = d * bytes_per_s / NSEC_PER_SEC;
			cq = dr >= cq ? 0 : cq - dr;
		}
		s->ctrl_last_ns = now;
		cq += len;
		s->ctrl_queue = cq;
		if (cq > s->max_queue_bytes)
			s->max_queue_bytes = cq;
	}
	if (pfc && is_data) {
		s->data_bytes += len;
		if (ing < MAX_ING)
			s->ing_bytes[ing & (MAX_ING - 1)] += len; /* the mask bounds it for the verifier */
		else
			s->unknown_bytes += len;
	}
	if (l3 >= 0) {
		s->ect_pkts += 1;
		if (c->ecn_enabled && bytes_per_s && q > kmin) {
			if (q >= kmax || kmax <= kmin)
				mark = 1;
			else /* (q-kmin) < 2^32 and pmax < 2^32: the product fits */
				mark = rnd < (__u64)pmax * (q - kmin) / (kmax - kmin);
		}
		if (mark)
			s->ce_marks += 1;
	}
	bpf_spin_unlock(&s->lock);

	if (pfc) {
		/*
		 * Data or control class (IPv4 only: anything else keeps the priority its sender
		 * gave it, e.g. pfcd's kick), then this port's MAC as the source.
		 */
		if (skb->protocol == bpf_htons(ETH_P_IP) && c->prio_data)
			skb->priority = is_data ? c->prio_data : c->prio_ctrl;
		if (tag)
			bpf_skb_store_bytes(skb, 6, &tag, 6, 0);
	}

	if (intr == INT_STAMP) {
		/*
		 * Append the record, then bump the hop count, so a failed write (the skb
		 * cannot be made writable: allocation failure) leaves a consistent area;
		 * int_stamped is then one too high, which is accepted.  No checksum to fix:
		 * the UDP checksum is 0 (checked), and the IPv4 header is not touched here.
		 */
		struct int_record rec = {
			.ts_ns = bpf_cpu_to_be64(now),
			.tx_bytes = bpf_htonl((__u32)int_tx),
			.qlen_bytes = bpf_htonl(int_q > 0xffffffffULL ? 0xffffffffU : (__u32)int_q),
			.rate_kbps = bpf_htonl((__u32)(rate_bps / 1000)),
		};
		__u8 new_hops = hops + 1;

		if (!bpf_skb_store_bytes(skb, rec_off, &rec, sizeof(rec), 0))
			bpf_skb_store_bytes(skb, hops_off, &new_hops, 1, 0);
	}

	if (mark) {
		/*
		 * Set CE and patch the IPv4 header checksum incrementally.  The TOS byte is
		 * the low byte of the header's first 16-bit word, so a 2-byte replace of
		 * htons(old) by htons(new) gives the right one's-complement difference.
		 */
		__u8 new_tos = tos | ECN_CE;
		__u32 csum_off = l3 + offsetof(struct iphdr, check);
		__u32 tos_off = l3 + offsetof(struct iphdr, tos);

		/*
		 * Both helpers only fail if the skb cannot be made writable (allocation
		 * failure).  Undo the TOS write then, so a packet never leaves with a bad
		 * checksum; ce_marks is then one too high, which is accepted.
		 */
		if (bpf_skb_store_bytes(skb, tos_off, &new_tos, 1, 0))
			return TC_ACT_OK;
		if (bpf_l3_csum_replace(skb, csum_off, bpf_htons(tos), bpf_htons(new_tos), 2))
			bpf_skb_store_bytes(skb, tos_off, &tos, 1, 0);
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
