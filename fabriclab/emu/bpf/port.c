// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * fabriclab switch-port program: ECN marking (RED) on a phantom queue.
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
 * The program never drops: it always returns TC_ACT_OK.  Dropping is HTB/bfifo's job.
 *
 * Maps are plain ARRAYs of one entry.  tc loads a fresh instance of each map for every
 * interface it attaches the object to, which gives per-port state that disappears with
 * the interface.  Userspace finds them from the program id (no pinning needed).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define NSEC_PER_SEC 1000000000ULL
#define ECN_MASK 0x03 /* low two bits of the IPv4 TOS byte */
#define ECN_CE 0x03

/* Written by userspace (bpfport.PortProgram._write_cfg); layout mirrored there. */
struct port_cfg {
	__u64 rate_bps;    /* shaped rate of the port, bit/s */
	__u32 kmin_bytes;  /* RED: no mark at or below */
	__u32 kmax_bytes;  /* RED: always mark at or above */
	__u32 pmax_u32;    /* RED: mark probability at kmax, x 2^32 (saturated) */
	__u32 ecn_enabled; /* 0: count only, never mark */
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
};

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

SEC("tc")
int port_egress(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct port_cfg *c = bpf_map_lookup_elem(&cfg, &key);
	struct port_state *s = bpf_map_lookup_elem(&st, &key);

	if (!c || !s)
		return TC_ACT_OK;

	__u8 tos = 0;
	int l3 = ect_ipv4(skb, &tos);
	/*
	 * Helpers may not be called under bpf_spin_lock, so the clock and the random number
	 * are taken before it.  A packet on another CPU may then update the queue with a
	 * slightly later clock first; the drain below treats "now < last" as no time passed.
	 */
	__u64 now = bpf_ktime_get_ns();
	__u32 rnd = bpf_get_prandom_u32();
	__u64 len = skb->len;
	__u64 bytes_per_s = c->rate_bps / 8;
	__u32 kmin = c->kmin_bytes, kmax = c->kmax_bytes, pmax = c->pmax_u32;
	int mark = 0;

	/*
	 * Several CPUs can transmit on one port at once, and the queue update is a
	 * read-modify-write of several fields; the lock keeps them consistent (userspace
	 * reads with BPF_F_LOCK for the same reason).
	 */
	bpf_spin_lock(&s->lock);
	__u64 q = s->queue_bytes;
	if (bytes_per_s == 0) {
		q = 0; /* not configured yet: no rate, no queue */
		s->last_ns = now;
	} else if (now > s->last_ns) {
		__u64 delta = now - s->last_ns;
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
			s->last_ns = now;
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
	q += len;
	s->queue_bytes = q;
	if (q > s->max_queue_bytes)
		s->max_queue_bytes = q;
	s->tx_bytes += len;
	s->tx_pkts += 1;
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
