/* common.h: the few kernel definitions the baselines need, so that they build with a bare
 * `clang-19 -O2 -g -target bpf -c` (no libbpf headers, no multiarch asm/ include path).
 * Everything here mirrors include/uapi/linux/bpf.h and libbpf's bpf_helpers.h. */
#ifndef LUABPF_BENCH_COMMON_H
#define LUABPF_BENCH_COMMON_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed long long __s64;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
};

#define BPF_ANY 0

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;

/* The host is little-endian (x86-64): network-order constants are swapped at compile time. */
#define bpf_htons(x) ((__u16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define VLAN_HLEN 4
#define IPPROTO_TCP 6
#define IP_OFFSET 0x1fff

/* The IPv4 and TCP fields the baselines read, laid out as in linux/ip.h and linux/tcp.h
 * (little-endian bitfields). */
struct iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct tcphdr {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u16 res1 : 4, doff : 4, flags : 8;
	__u16 window;
	__u16 check;
	__u16 urg_ptr;
};

/* The largest offset into a linear XDP buffer (a 4 KiB page): bounding a variable offset by it
 * before `data + off` lets the verifier track the pointer, and rejects nothing that could be
 * read anyway. */
#define MAX_PKT_OFF 0xfff

char LICENSE[] SEC("license") = "GPL";

/* Header parsing shared by the baselines. Offsets are scalars from the start of the packet
 * (not pointers), so that they add up and can be bounded; each function returns -1 when the
 * packet is not what it parses or is too short for the header. The checks are those of the
 * examples' stdlib (stdlib/net/eth.lua, ipv4.lua, tcp.lua). */

/* 1 for an 802.1Q or 802.1ad tag type (as loaded, network order), else 0, without a branch:
 * the verifier then follows one path whatever the number of tags, where a branch per tag
 * would make it walk everything after the Ethernet header once per number of tags. */
static __always_inline __u64 is_vlan_tag(__u16 proto)
{
	__u64 q = proto ^ bpf_htons(ETH_P_8021Q), ad = proto ^ bpf_htons(ETH_P_8021AD);
	return ((q - 1) >> 63) | ((ad - 1) >> 63);
}

/* The offset of the IPv4 header after at most two VLAN tags, or -1 when the EtherType after
 * them is not IPv4 (a third tag included). */
static __always_inline long eth_ipv4(const __u8 *p, const __u8 *end)
{
	if (p + ETH_HLEN > end)
		return -1;
	__u64 tags = is_vlan_tag(*(const __u16 *)(p + 12));
	const __u8 *inner = p + 12 + tags * VLAN_HLEN;   /* untagged: the same type again */
	if (inner + 2 > end)
		return -1;
	tags += is_vlan_tag(*(const __u16 *)inner);
	const __u8 *type = p + 12 + tags * VLAN_HLEN;
	if (type + 2 > end || *(const __u16 *)type != bpf_htons(ETH_P_IP))
		return -1;
	return ETH_HLEN + tags * VLAN_HLEN;
}

/* The offset of the TCP header of the IPv4 packet at `ip` (after its options), or -1 unless
 * it is version 4 with an IHL of at least 5, not a later fragment, and carries TCP. */
static __always_inline long ipv4_tcp(const __u8 *p, const __u8 *end, __u64 ip)
{
	const struct iphdr *iph = (const void *)(p + ip);
	if ((const __u8 *)(iph + 1) > end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5 || (iph->frag_off & bpf_htons(IP_OFFSET)) ||
	    iph->protocol != IPPROTO_TCP)
		return -1;
	return ip + iph->ihl * 4;
}

/* The offset of the TCP payload (after the options), or -1 when the data offset is below 5.
 * The whole 20-byte header must be in the packet: a shorter one has no payload either. */
static __always_inline long tcp_payload(const __u8 *p, const __u8 *end, __u64 tcp)
{
	const struct tcphdr *th = (const void *)(p + tcp);
	if ((const __u8 *)(th + 1) > end || th->doff < 5)
		return -1;
	return tcp + th->doff * 4;
}

#endif
