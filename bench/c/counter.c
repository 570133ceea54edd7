// SPDX-License-Identifier: GPL-2.0
/* counter.c: the hand-written C baseline of examples/counter.lua.
 *
 * Counts packets per IP protocol number in the per-CPU array `counts` (index 0: not IPv4). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("xdp")
int counter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 proto = 0;

	if (p + ETH_HLEN > (__u8 *)data_end)
		return XDP_PASS;
	if (*(__u16 *)(p + 12) == bpf_htons(ETH_P_IP)) {
		if (p + 24 > (__u8 *)data_end)
			return XDP_PASS;
		proto = p[23];
	}
	__u64 *count = bpf_map_lookup_elem(&counts, &proto);
	if (count)
		*count += 1;          /* per-CPU: no other CPU writes this copy */
	return XDP_PASS;
}
