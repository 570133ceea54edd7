// SPDX-License-Identifier: GPL-2.0
/* ua_filter.c: the hand-written C baseline of examples/ua_filter.lua.
 *
 * Scans the first 512 bytes of a TCP payload for "\r\nUser-Agent: ", takes the value up to
 * the next "\r" (at most 64 bytes, stopping at the end of the packet), and drops the packet
 * when the value is in `blocked_agents` (zero-padded to 64 bytes -> hits), counting the hit. */
#include "common.h"

#define SCAN 512
#define MAX_UA 64
#define HEADER_LEN 14                          /* "\r\nUser-Agent: " */
/* "\r\n", "User-Age", "nt: " as little-endian loads. */
#define CRLF 0x0a0dU
#define WORD1 0x6567412d72657355ULL
#define WORD2 0x203a746eU

struct ua_key {
	char value[MAX_UA];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ua_key);
	__type(value, __u64);
} blocked_agents SEC(".maps");

/* The value at `value_off` looked up in `blocked_agents`: DROP (counting the hit) or PASS.
 * A global function: the verifier checks it once, with `value_off` unknown, instead of once
 * per scan position that could reach it (a static function or inlined code is re-verified
 * for each of the 512 positions). */
__attribute__((noinline)) int ua_lookup(struct xdp_md *ctx, __u64 value_off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (value_off > MAX_PKT_OFF)
		return XDP_PASS;
	__u8 *value = (__u8 *)data + value_off;
	struct ua_key key = {};
	for (__u32 n = 0; n < MAX_UA; n++) {
		if (value + n + 1 > (__u8 *)data_end || value[n] == '\r')
			break;
		key.value[n] = value[n];
	}
	__u64 *hits = bpf_map_lookup_elem(&blocked_agents, &key);
	if (!hits)
		return XDP_PASS;
	__sync_fetch_and_add(hits, 1);
	return XDP_DROP;
}

SEC("xdp")
int ua_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;

	if (p + 24 > (__u8 *)data_end)
		return XDP_PASS;
	if (*(__u16 *)(p + 12) != bpf_htons(ETH_P_IP) || p[23] != IPPROTO_TCP)
		return XDP_PASS;
	__u64 tcp = ETH_HLEN + (__u64)(p[14] & 0x0f) * 4;
	__u8 *th = p + tcp;
	if (th + 13 > (__u8 *)data_end)
		return XDP_PASS;
	__u64 start = tcp + (__u64)(th[12] >> 4) * 4;

	for (__u64 i = 0; i < SCAN; i++) {
		__u8 *q = p + start + i;
		if (q + HEADER_LEN > (__u8 *)data_end)
			break;
		if (*(__u16 *)q == CRLF && *(__u64 *)(q + 2) == WORD1 && *(__u32 *)(q + 10) == WORD2)
			return ua_lookup(ctx, start + i + HEADER_LEN);
	}
	return XDP_PASS;
}
