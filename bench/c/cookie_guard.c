// SPDX-License-Identifier: GPL-2.0
/* cookie_guard.c: the hand-written C baseline of examples/cookie_guard.lua.
 *
 * An IPv4 packet (up to two VLAN tags) from a source in `blocked` is dropped. Otherwise an
 * IPv4/TCP packet (IP options; version, IHL, later fragments and the TCP data offset checked
 * as the stdlib does) to port 80 with a payload must carry "\r\nCookie: bot=<value>" in its
 * first 512 bytes, where <value> (up to ";" or "\r"; longer than 32 bytes never matches) is
 * exactly the string in `cookies` for its source (the 32-byte value without its trailing zero
 * bytes); if not, the source is put in `blocked` (with the time)
 * and the packet dropped. */
#include "common.h"

#define WEB_PORT 80
#define SCAN 512
#define MAX_COOKIE 32
#define PREFIX_LEN 14                          /* "\r\nCookie: bot=" */
/* "\r\nCookie", ": bo", "t=" as little-endian loads. */
#define P1 0x65696b6f6f430a0dULL
#define P2 0x6f62203aU
#define P3 0x3d74U

struct cookie {
	char value[MAX_COOKIE];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct cookie);
} cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} blocked SEC(".maps");

/* Whether the cookie value at `value_off` (up to ";" or "\r", stopping at the end of the
 * packet) is exactly the string `cookies` holds for `saddr` (its 32 bytes without the trailing
 * zeros). A global function: the verifier checks it once, with `value_off` unknown, instead of
 * once per scan position that could reach it. */
__attribute__((noinline)) int cookie_ok(struct xdp_md *ctx, __u32 saddr, __u64 value_off)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct cookie *expected = bpf_map_lookup_elem(&cookies, &saddr);
	if (!expected || value_off > MAX_PKT_OFF)
		return 0;
	const __u8 *value = (const __u8 *)data + value_off, *end = data_end;
	struct cookie got = {};
	__u32 n = 0;
	for (; n < MAX_COOKIE; n++) {
		if (value + n + 1 > end || value[n] == '\r' || value[n] == ';')
			break;
		got.value[n] = value[n];
	}
	/* A 33rd byte: longer than any cookie. */
	if (n == MAX_COOKIE && value + MAX_COOKIE + 1 <= end && value[MAX_COOKIE] != '\r' &&
	    value[MAX_COOKIE] != ';')
		return 0;
	/* A value ending in a zero byte would compare equal once padded, but not as a string. */
	if (n > 0 && got.value[(n - 1) & (MAX_COOKIE - 1)] == 0)
		return 0;
	const __u64 *a = (const __u64 *)expected->value, *b = (const __u64 *)got.value;
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

SEC("xdp")
int cookie_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const __u8 *p = data, *end = data_end;

	long ip = eth_ipv4(p, end);
	if (ip < 0)
		return XDP_PASS;
	/* The source alone decides for a blocked client: only its bytes need be there. */
	const struct iphdr *iph = (const void *)(p + ip);
	if ((const __u8 *)&iph->daddr > end)
		return XDP_PASS;
	__u32 saddr = iph->saddr;
	if (bpf_map_lookup_elem(&blocked, &saddr))
		return XDP_DROP;
	long tcp = ipv4_tcp(p, end, ip);
	if (tcp < 0)
		return XDP_PASS;
	long payload = tcp_payload(p, end, tcp);
	if (payload < 0 || ((const struct tcphdr *)(p + tcp))->dest != bpf_htons(WEB_PORT))
		return XDP_PASS;
	if (payload >= end - p)
		return XDP_PASS;                /* handshake and pure ACKs pass */

	for (__u64 i = 0; i < SCAN; i++) {
		const __u8 *q = p + payload + i;
		if (q + PREFIX_LEN > end)
			break;
		if (*(const __u64 *)q == P1 && *(const __u32 *)(q + 8) == P2 && *(const __u16 *)(q + 12) == P3) {
			if (cookie_ok(ctx, saddr, payload + i + PREFIX_LEN))
				return XDP_PASS;
			break;
		}
	}
	/* No valid cookie: remember the source, with the time. */
	__u64 now = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&blocked, &saddr, &now, BPF_ANY))
		return XDP_PASS;                /* Lua: a refused update takes the default verdict */
	return XDP_DROP;
}
