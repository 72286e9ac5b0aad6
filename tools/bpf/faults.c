// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * accel's fault injector for the test topology: a lossy, duplicating, reordering, corrupting
 * link made of BPF programs on the kernel peer's end of the veth (this kernel has no netem).
 *
 * Programs (all on B's interface unless said otherwise; `dir` 0 = arriving at B, 1 = leaving B):
 *   faults_xdp       XDP on B's veth: drops and corrupts what arrives (XDP can neither clone nor
 *                    hold a frame, so duplicates and delays of arriving frames are left to...)
 *   faults_tc_in     tcx ingress on B's veth: duplicates (bpf_clone_redirect back into ingress)
 *                    and delays what arrives.
 *   faults_tc_out    tcx egress on B's veth: drops, corrupts, duplicates (bpf_clone_redirect to
 *                    the same egress) and delays what leaves.
 *   faults_return    tcx ingress on the delay line's far end: puts delayed frames back where they
 *                    were going (ingress or egress of B's veth).
 *
 * Delays (reordering): BPF cannot hold a frame and release it later, and this kernel has no
 * qdisc that honours a departure time (no fq, etf or netem). A delayed frame is redirected to
 * the egress of a helper veth (`delay_ifindex`, in B); a userspace thread reading the helper's
 * other end holds it for the configured time and sends it back; faults_return on `delay_ifindex`
 * then redirects it to B's veth, marked so no program faults it again. Frames behind it overtake
 * it: real reordering, with a delay in userspace timer precision.
 *
 * Decisions are deterministic: the n-th matched frame of a direction at a given stage gets its
 * fate from a hash of (seed, direction, stage, n), where n counts matched frames. With the same
 * seed and the same frames in the same order, the same frames are faulted.
 *
 * Corruption flips one byte of the TCP/UDP segment and adds the same 16-bit change to the
 * segment's checksum field, so the receiver's checksum check fails whether the checksum was
 * complete (the sum is off by twice the change) or still a partial pseudo-header sum that the
 * kernel completes after this program (the completed sum is off by the change). A kernel
 * receiver never checks a frame its peer left CHECKSUM_PARTIAL on veth, so corruption of such
 * frames goes unnoticed there (turn TX checksum offload off on the sending veth).
 *
 * The layout of struct fault_cfg / fault_stats is mirrored in tools/src/faults.rs; change both
 * together.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ACCEL_IP_MF 0x2000
#define ACCEL_IP_OFFSET 0x1fff

/* skb->mark values that tell our own programs a frame was already handled. */
#define MARK_DUP 0xacce1d00
#define MARK_RETURN 0xacce1d01

#define DIR_IN 0
#define DIR_OUT 1

#define STAGE_XDP 0
#define STAGE_TC 1

struct fault_cfg {
	__u64 seed;
	/* Thresholds on a uniform u32: a frame is faulted when its draw is below. */
	__u32 drop;
	__u32 dup;
	__u32 corrupt;
	__u32 delay;
	/* 0: TCP and UDP; else IPPROTO_TCP or IPPROTO_UDP. */
	__u8 proto;
	__u8 enabled;
	/* Network byte order; 0: any. A frame matches when its source or destination port is it. */
	__u16 port;
	__u32 delay_ifindex;
	/* B's veth, where faults_return puts delayed frames back. */
	__u32 home_ifindex;
	/* B's veth's MAC: a delayed frame addressed to it was arriving, else it was leaving. */
	__u8 home_mac[6];
	__u8 pad[2];
};

struct fault_stats {
	/* Frames of the chosen flows seen by the first stage (XDP for arrivals, tc for departures). */
	__u64 matched;
	/* Other frames, passed untouched. */
	__u64 other;
	__u64 dropped;
	__u64 corrupted;
	/* Frames of the chosen flows seen by the second stage (tc ingress, arrivals only). */
	__u64 matched_tc;
	__u64 duplicated;
	__u64 delayed;
	/* Delayed frames put back by faults_return. */
	__u64 returned;
	/* Helper calls that failed (clone, redirect, byte access): nonzero means a broken setup. */
	__u64 errors;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fault_cfg);
} fault_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fault_stats);
} fault_stats SEC(".maps");

static __always_inline __u64 mix64(__u64 x)
{
	/* splitmix64's finaliser. */
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct fate {
	__u32 drop, dup, corrupt, delay;
	__u32 pos, flip;
};

static __always_inline void draw(const struct fault_cfg *cfg, __u32 dir, __u32 stage, __u64 n,
				 struct fate *f)
{
	__u64 a = mix64(cfg->seed ^ mix64(((__u64)dir << 40) ^ ((__u64)stage << 32) ^ n));
	__u64 b = mix64(a);
	__u64 c = mix64(b);

	f->drop = (__u32)a;
	f->dup = (__u32)(a >> 32);
	f->corrupt = (__u32)b;
	f->delay = (__u32)(b >> 32);
	f->pos = (__u32)c;
	/* A nonzero byte to xor in. */
	f->flip = ((__u32)(c >> 32) % 255) + 1;
}

/*
 * The L4 offset and length of an IPv4 TCP/UDP frame of the chosen flow, read with `load`
 * (bpf_xdp_load_bytes or bpf_skb_load_bytes). Returns 0 when the frame matches.
 */
struct l4 {
	__u32 off;
	__u32 len;
	__u8 proto;
};

#define MATCH(load, ctx, cfg, out)                                                          \
	({                                                                                     \
		int __r = -1;                                                                  \
		struct ethhdr __eth;                                                           \
		struct iphdr __ip;                                                             \
		__u16 __ports[2];                                                              \
		if (load(ctx, 0, &__eth, sizeof(__eth)) == 0 &&                                \
		    __eth.h_proto == bpf_htons(ETH_P_IP) &&                                    \
		    load(ctx, ETH_HLEN, &__ip, sizeof(__ip)) == 0 && __ip.version == 4 &&      \
		    __ip.ihl >= 5 &&                                                           \
		    !(__ip.frag_off & bpf_htons(ACCEL_IP_MF | ACCEL_IP_OFFSET)) &&             \
		    (__ip.protocol == IPPROTO_TCP || __ip.protocol == IPPROTO_UDP) &&          \
		    (!(cfg)->proto || (cfg)->proto == __ip.protocol)) {                        \
			__u32 __off = ETH_HLEN + __ip.ihl * 4;                                 \
			__u32 __tot = bpf_ntohs(__ip.tot_len);                                 \
			if (__tot > __ip.ihl * 4 &&                                            \
			    load(ctx, __off, __ports, sizeof(__ports)) == 0 &&                 \
			    (!(cfg)->port || __ports[0] == (cfg)->port ||                      \
			     __ports[1] == (cfg)->port)) {                                     \
				(out)->off = __off;                                            \
				(out)->len = __tot - __ip.ihl * 4;                             \
				(out)->proto = __ip.protocol;                                  \
				__r = 0;                                                       \
			}                                                                      \
		}                                                                              \
		__r;                                                                           \
	})

/*
 * Flips one byte of the segment (not the ports, so the frame stays in its flow for the later
 * stages and the counters; not the checksum field) and moves the checksum field by the same
 * 16-bit amount (see the top of the file). Returns 0 on success.
 */
#define CORRUPT(load, store, ctx, seg, fate)                                                 \
	({                                                                                     \
		int __r = -1;                                                                  \
		__u32 __csum_at = (seg)->proto == IPPROTO_TCP ? 16 : 6;                        \
		__u32 __len = (seg)->len & 0xffff;                                             \
		if (__len > __csum_at + 2) {                                                   \
			__u32 __p = 4 + (fate)->pos % (__len - 4);                             \
			__u8 __old, __new;                                                     \
			__u16 __sum;                                                           \
			if (__p == __csum_at || __p == __csum_at + 1)                          \
				__p = __csum_at + 2;                                           \
			if (load(ctx, (seg)->off + __p, &__old, 1) == 0 &&                     \
			    load(ctx, (seg)->off + __csum_at, &__sum, 2) == 0) {               \
				__u32 __d, __s;                                                \
				__new = __old ^ (__u8)(fate)->flip;                            \
				/* One's-complement change of the 16-bit word holding it. */   \
				__d = (__p & 1) ? ((__u32)__new + 0xffff - __old)              \
						: (((__u32)__new << 8) + 0xffff -              \
						   ((__u32)__old << 8));                       \
				__s = (__u32)bpf_ntohs(__sum) + __d;                           \
				__s = (__s & 0xffff) + (__s >> 16);                            \
				__s = (__s & 0xffff) + (__s >> 16);                            \
				__sum = bpf_htons((__u16)__s);                                 \
				if (store(ctx, (seg)->off + __p, &__new, 1, 0) == 0 &&         \
				    store(ctx, (seg)->off + __csum_at, &__sum, 2, 0) == 0)     \
					__r = 0;                                               \
			}                                                                      \
		}                                                                              \
		__r;                                                                           \
	})

static __always_inline long xdp_store(struct xdp_md *ctx, __u32 off, void *buf, __u32 len,
				      __u64 flags)
{
	return bpf_xdp_store_bytes(ctx, off, buf, len);
}

static __always_inline long count(__u64 *c)
{
	return __sync_fetch_and_add(c, 1);
}

SEC("xdp")
int faults_xdp(struct xdp_md *ctx)
{
	__u32 dir = DIR_IN;
	struct fault_cfg *cfg = bpf_map_lookup_elem(&fault_cfg, &dir);
	struct fault_stats *st = bpf_map_lookup_elem(&fault_stats, &dir);
	struct fate f;
	struct l4 seg;
	__u64 n;

	if (!cfg || !st || !cfg->enabled)
		return XDP_PASS;
	if (MATCH(bpf_xdp_load_bytes, ctx, cfg, &seg) != 0) {
		count(&st->other);
		return XDP_PASS;
	}
	n = count(&st->matched);
	draw(cfg, dir, STAGE_XDP, n, &f);
	if (f.drop < cfg->drop) {
		count(&st->dropped);
		return XDP_DROP;
	}
	if (f.corrupt < cfg->corrupt) {
		if (CORRUPT(bpf_xdp_load_bytes, xdp_store, ctx, &seg, &f) == 0)
			count(&st->corrupted);
		else
			count(&st->errors);
	}
	return XDP_PASS;
}

/* Duplicate and delay; shared by both tc programs. `ingress`: B's veth ingress, else egress. */
static __always_inline int tc_dup_delay(struct __sk_buff *skb, struct fault_cfg *cfg,
					struct fault_stats *st, struct fate *f, int ingress)
{
	if (f->dup < cfg->dup) {
		__u32 mark = skb->mark;

		skb->mark = MARK_DUP;
		if (bpf_clone_redirect(skb, cfg->home_ifindex, ingress ? BPF_F_INGRESS : 0) == 0)
			count(&st->duplicated);
		else
			count(&st->errors);
		skb->mark = mark;
	}
	if (f->delay < cfg->delay && cfg->delay_ifindex) {
		count(&st->delayed);
		return bpf_redirect(cfg->delay_ifindex, 0);
	}
	return TC_ACT_OK;
}

SEC("tc")
int faults_tc_in(struct __sk_buff *skb)
{
	__u32 dir = DIR_IN;
	struct fault_cfg *cfg = bpf_map_lookup_elem(&fault_cfg, &dir);
	struct fault_stats *st = bpf_map_lookup_elem(&fault_stats, &dir);
	struct fate f;
	struct l4 seg;
	__u64 n;

	if (skb->mark == MARK_DUP || skb->mark == MARK_RETURN) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	if (!cfg || !st || !cfg->enabled)
		return TC_ACT_OK;
	if (MATCH(bpf_skb_load_bytes, skb, cfg, &seg) != 0)
		return TC_ACT_OK;
	n = count(&st->matched_tc);
	draw(cfg, dir, STAGE_TC, n, &f);
	return tc_dup_delay(skb, cfg, st, &f, 1);
}

SEC("tc")
int faults_tc_out(struct __sk_buff *skb)
{
	__u32 dir = DIR_OUT;
	struct fault_cfg *cfg = bpf_map_lookup_elem(&fault_cfg, &dir);
	struct fault_stats *st = bpf_map_lookup_elem(&fault_stats, &dir);
	struct fate f;
	struct l4 seg;
	__u64 n;

	if (skb->mark == MARK_DUP || skb->mark == MARK_RETURN) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	if (!cfg || !st || !cfg->enabled)
		return TC_ACT_OK;
	if (MATCH(bpf_skb_load_bytes, skb, cfg, &seg) != 0) {
		count(&st->other);
		return TC_ACT_OK;
	}
	n = count(&st->matched);
	draw(cfg, dir, STAGE_TC, n, &f);
	if (f.drop < cfg->drop) {
		count(&st->dropped);
		return TC_ACT_SHOT;
	}
	if (f.corrupt < cfg->corrupt) {
		if (CORRUPT(bpf_skb_load_bytes, bpf_skb_store_bytes, skb, &seg, &f) == 0)
			count(&st->corrupted);
		else
			count(&st->errors);
	}
	return tc_dup_delay(skb, cfg, st, &f, 0);
}

SEC("tc")
int faults_return(struct __sk_buff *skb)
{
	__u32 dir = DIR_IN;
	struct fault_cfg *cfg = bpf_map_lookup_elem(&fault_cfg, &dir);
	struct fault_stats *st;
	struct ethhdr eth;
	int arriving = 1;

	if (!cfg || !cfg->home_ifindex)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) != 0)
		return TC_ACT_SHOT;
	for (int i = 0; i < 6; i++)
		if (eth.h_dest[i] != cfg->home_mac[i])
			arriving = 0;
	dir = arriving ? DIR_IN : DIR_OUT;
	st = bpf_map_lookup_elem(&fault_stats, &dir);
	if (st)
		count(&st->returned);
	skb->mark = MARK_RETURN;
	if (arriving) {
		/* It crossed the helper veth, whose MAC it does not carry. */
		bpf_skb_change_type(skb, PACKET_HOST);
		return bpf_redirect(cfg->home_ifindex, BPF_F_INGRESS);
	}
	return bpf_redirect(cfg->home_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
