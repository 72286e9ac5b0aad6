// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * accel's XDP flow filter.
 *
 * Redirects to the AF_XDP socket of the receiving queue only the IPv4 TCP/UDP packets of flows
 * that an accelerated socket owns; everything else (ARP, IPv6 and neighbour discovery, VLAN,
 * ICMP, fragments, every other port) goes to the kernel untouched, so the host keeps working.
 *
 * Flow lookup: first the exact 4-tuple (connected sockets), then the same key with the remote
 * address and port zeroed (bound and listening sockets). All fields are in network byte order.
 *
 * The layout of struct flow_key / flow_value is mirrored in libaccel/src/xdp/ (FlowKey::to_bytes);
 * change both together.
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

struct flow_key {
	__u32 local_ip;
	__u32 remote_ip;
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
	__u8 pad[3];
};

struct flow_value {
	__u32 owner_pid;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} accel_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} accel_xsks SEC(".maps");

/*
 * rx queue -> pid of the process whose AF_XDP socket is registered on that queue. A flow is
 * redirected only when that process owns it: with several accel processes on one interface,
 * a packet of one process's flow that lands on a queue another process serves goes to the
 * kernel instead of to the wrong process.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} accel_qowner SEC(".maps");

/* pid -> process start time (clock ticks since boot, /proc/PID/stat field 22). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} accel_users SEC(".maps");

SEC("xdp")
int accel_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key key = {};
	struct flow_value *flow;
	__u32 queue = ctx->rx_queue_index;
	__u32 *owner;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 l4_off;

	/*
	 * Never true (queue indexes are small), but it makes the program reference accel_users, so
	 * the kernel lists that map among the program's maps: a process joining the program finds
	 * all three maps from the program's info alone (bpffs pins may be invisible to it).
	 */
	if (ctx->rx_queue_index == 0xffffffff) {
		__u32 pid = 0;

		bpf_map_lookup_elem(&accel_users, &pid);
	}

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

	flow = bpf_map_lookup_elem(&accel_flows, &key);
	if (!flow) {
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
	}
	owner = bpf_map_lookup_elem(&accel_qowner, &queue);
	if (!owner || *owner != flow->owner_pid)
		return XDP_PASS;
	/* No AF_XDP socket on this queue: the default action XDP_PASS gives it to the kernel. */
	return bpf_redirect_map(&accel_xsks, queue, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
