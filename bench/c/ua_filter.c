// SPDX-License-Identifier: GPL-2.0
/* ua_filter.c: the hand-written C baseline of examples/ua_filter.lua.
 *
 * In an IPv4/TCP packet (up to two VLAN tags, IP options), scans the first 512 bytes of the
 * payload for a line "User-Agent: " (the name in any case, as HTTP wants), takes the value up
 * to the next "\r" (at most 64 bytes, stopping at the end of the packet), and drops the
 * packet when the value is in `blocked_agents` (zero-padded to 64 bytes -> hits), counting the
 * hit. The same filter as the example (net.http's `header` finder). */
#include "common.h"

#define SCAN 512
#define MAX_UA 64
#define HEADER_LEN 14                          /* "\r\nUser-Agent: " */
/* "\r\nuser-agent: " read as two little-endian 8-byte words (at 0 and 6), and the masks that
 * set the case bit of its letters: (word | mask) == lower-case word matches the name in any
 * case and nothing else. */
#define WORD1 0x612d726573750a0dULL            /* "\r\nuser-a" */
#define MASK1 0x2000202020200000ULL
#define WORD2 0x203a746e6567612dULL            /* "-agent: " */
#define MASK2 0x0000202020202000ULL

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
	const __u8 *p = data, *end = data_end;

	long ip = eth_ipv4(p, end);
	if (ip < 0)
		return XDP_PASS;
	long tcp = ipv4_tcp(p, end, ip);
	if (tcp < 0)
		return XDP_PASS;
	long start = tcp_payload(p, end, tcp);
	if (start < 0)
		return XDP_PASS;

	for (__u64 i = 0; i < SCAN; i++) {
		const __u8 *q = p + start + i;
		if (q + HEADER_LEN > end)
			break;
		if ((*(const __u64 *)q | MASK1) == WORD1 && (*(const __u64 *)(q + 6) | MASK2) == WORD2)
			return ua_lookup(ctx, start + i + HEADER_LEN);
	}
	return XDP_PASS;
}
