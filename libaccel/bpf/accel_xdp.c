// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * accel's XDP flow filter.
 *
 * Redirects to an AF_XDP socket of the receiving queue only the IPv4 TCP/UDP packets of flows
 * that an accelerated socket owns; everything else (ARP, IPv6 and neighbour discovery, VLAN,
 * ICMP, fragments, every other port) goes to the kernel untouched, so the host keeps working.
 *
 * Several processes share a queue: each has its own AF_XDP socket on it, registered in
 * accel_xsks at key queue * ACCEL_SLOTS + slot, where the slot (0..15) is the process's on this
 * interface. A flow's value says which slot(s) get its packets:
 *
 * - an exact 4-tuple entry (a connected socket, or a connection pinned at its SYN) has one
 *   slot, or the PASS flag (a connection handed to the kernel);
 * - a bound or listening entry (remote address and port zero; local address zero for a socket
 *   bound to any address) has a set of up to ACCEL_SET_MAX slots: the processes that accept on
 *   the listener, or share the UDP port.
 *
 * Lookup: the exact entry first, then the connection's pin, then the bound entry. A TCP SYN
 * (no ACK) that reaches a listening entry with a non-empty set picks one slot by a hash of its
 * source address and port and pins the connection to it (BPF_NOEXIST into accel_pins), so the
 * connection stays with that process when the set changes later. Any other TCP packet with
 * neither an exact entry nor a pin is the kernel's (a connection accepted while no process
 * accepted: every accelerated listener keeps a kernel listener). UDP spreads by the same hash.
 * An empty set, a missing socket, or an unknown flow: the kernel.
 *
 * Pins live in an LRU map of their own: the process that accepted a connection removes its pin
 * once the connection is closed; one that does not (or dies) never fills the table that holds
 * the processes' own flows, and when the pins fill theirs the least recently used one (a closed
 * connection's, unless a connection idles through a whole table of newer ones) makes room.
 *
 * The layout of struct flow_key / flow_value is mirrored in libaccel/src/xdp/flow.rs
 * (FlowKey::to_bytes, FlowValue); change both together.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Not in the uapi headers (they live in the kernel's net/ip.h). */
#define ACCEL_IP_MF 0x2000
#define ACCEL_IP_OFFSET 0x1fff

#define ACCEL_SLOTS 16
#define ACCEL_MAX_QUEUES 64
#define ACCEL_SET_MAX 8

/* flow_value.flags */
#define ACCEL_FLOW_PASS 1   /* a connection handed to the kernel */
#define ACCEL_FLOW_PINNED 2 /* inserted by this program at a SYN */
#define ACCEL_FLOW_DROP 4   /* a connection moving to the kernel: the peer retransmits */

#ifndef EEXIST
#define EEXIST 17
#endif

struct flow_key {
	__u32 local_ip;
	__u32 remote_ip;
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
	__u8 pad[3];
};

struct flow_value {
	__u32 flags;
	__u8 nslots;
	__u8 slots[ACCEL_SET_MAX];
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} accel_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} accel_pins SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, ACCEL_MAX_QUEUES * ACCEL_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} accel_xsks SEC(".maps");

/* One of the set's slots, by a hash of the source address and port (stable for a flow). */
static __always_inline __u32 pick(const struct flow_value *v, __u32 saddr, __u16 sport)
{
	__u32 h = (saddr ^ ((__u32)sport << 16 | sport)) * 0x9e3779b1u;
	__u32 n = v->nslots;
	__u32 i;

	h ^= h >> 15;
	if (n == 0 || n > ACCEL_SET_MAX)
		return ACCEL_SLOTS; /* no slot */
	i = h % n;
	/* The compiler knows i < n <= 8 and would drop the check the verifier needs. */
	barrier_var(i);
	if (i >= ACCEL_SET_MAX)
		return ACCEL_SLOTS;
	return v->slots[i];
}

static __always_inline int redirect(__u32 queue, __u32 slot)
{
	if (slot >= ACCEL_SLOTS || queue >= ACCEL_MAX_QUEUES)
		return XDP_PASS;
	/* No socket of that slot on this queue: the default action XDP_PASS gives it to the kernel. */
	return bpf_redirect_map(&accel_xsks, queue * ACCEL_SLOTS + slot, XDP_PASS);
}

SEC("xdp")
int accel_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key key = {};
	struct flow_value *flow;
	__u32 queue = ctx->rx_queue_index;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	int syn_only = 0;
	__u32 remote_ip;
	__u16 remote_port;
	__u32 l4_off;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	/* IPv4 only: ARP, IPv6 (and ND), VLAN-tagged frames go to the kernel. */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	if (ip->version != 4 || ip->ihl < 5)
		return XDP_PASS;
	/* Any fragment (non-first, or first with MF): the kernel reassembles. */
	if (ip->frag_off & bpf_htons(ACCEL_IP_MF | ACCEL_IP_OFFSET))
		return XDP_PASS;

	/*
	 * The transport header: right after a 20-byte IP header through a packet pointer at a
	 * constant offset; after IP options with a helper that copies it from a variable offset.
	 * Moving a packet pointer by a variable offset would need CAP_PERFMON (or CAP_SYS_ADMIN)
	 * to load the program, which containers rarely have: this way CAP_BPF and CAP_NET_ADMIN
	 * are enough.
	 */
	l4_off = sizeof(*eth) + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (ip->ihl == 5) {
			struct tcphdr *p = (void *)(ip + 1);

			if ((void *)(p + 1) > data_end)
				return XDP_PASS;
			tcp = *p;
		} else if (bpf_xdp_load_bytes(ctx, l4_off, &tcp, sizeof(tcp))) {
			return XDP_PASS;
		}
		key.local_port = tcp.dest;
		key.remote_port = tcp.source;
		syn_only = tcp.syn && !tcp.ack;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr udp;

		if (ip->ihl == 5) {
			struct udphdr *p = (void *)(ip + 1);

			if ((void *)(p + 1) > data_end)
				return XDP_PASS;
			udp = *p;
		} else if (bpf_xdp_load_bytes(ctx, l4_off, &udp, sizeof(udp))) {
			return XDP_PASS;
		}
		key.local_port = udp.dest;
		key.remote_port = udp.source;
	} else {
		return XDP_PASS; /* ICMP and everything else */
	}
	key.proto = ip->protocol;
	key.local_ip = ip->daddr;
	key.remote_ip = ip->saddr;
	remote_ip = key.remote_ip;
	remote_port = key.remote_port;

	flow = bpf_map_lookup_elem(&accel_flows, &key);
	if (!flow && key.proto == IPPROTO_TCP)
		flow = bpf_map_lookup_elem(&accel_pins, &key);
	if (flow) {
		if (flow->flags & ACCEL_FLOW_DROP)
			return XDP_DROP;
		if (flow->flags & ACCEL_FLOW_PASS || flow->nslots == 0)
			return XDP_PASS;
		return redirect(queue, flow->slots[0]);
	}

	key.remote_ip = 0;
	key.remote_port = 0;
	flow = bpf_map_lookup_elem(&accel_flows, &key);
	if (!flow) {
		/* A socket bound to 0.0.0.0 (any local address). */
		key.local_ip = 0;
		flow = bpf_map_lookup_elem(&accel_flows, &key);
		if (!flow)
			return XDP_PASS;
	}
	if (flow->flags & ACCEL_FLOW_PASS || flow->nslots == 0)
		return XDP_PASS;

	if (key.proto == IPPROTO_TCP) {
		struct flow_value pin = {};
		__u32 slot;
		long err;

		/* Not a new connection and no exact entry: a connection of the kernel's. */
		if (!syn_only)
			return XDP_PASS;
		slot = pick(flow, remote_ip, remote_port);
		if (slot >= ACCEL_SLOTS)
			return XDP_PASS;
		pin.flags = ACCEL_FLOW_PINNED;
		pin.nslots = 1;
		pin.slots[0] = slot;
		key.local_ip = ip->daddr;
		key.remote_ip = remote_ip;
		key.remote_port = remote_port;
		err = bpf_map_update_elem(&accel_pins, &key, &pin, BPF_NOEXIST);
		if (err == -EEXIST) {
			/* Pinned meanwhile (a SYN retransmitted on another queue): follow the pin. */
			flow = bpf_map_lookup_elem(&accel_pins, &key);
			if (!flow || flow->flags & ACCEL_FLOW_PASS || flow->nslots == 0)
				return XDP_PASS;
			slot = flow->slots[0];
		} else if (err) {
			/* No room (an LRU map makes room, so hardly ever): the kernel listener takes it. */
			return XDP_PASS;
		}
		return redirect(queue, slot);
	}
	return redirect(queue, pick(flow, remote_ip, remote_port));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
