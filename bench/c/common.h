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
#define IPPROTO_TCP 6

/* The largest offset into a linear XDP buffer (a 4 KiB page): bounding a variable offset by it
 * before `data + off` lets the verifier track the pointer, and rejects nothing that could be
 * read anyway. */
#define MAX_PKT_OFF 0xfff

char LICENSE[] SEC("license") = "GPL";

#endif
