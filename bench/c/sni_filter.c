// SPDX-License-Identifier: GPL-2.0
/* sni_filter.c: the hand-written C baseline of examples/sni_filter.lua.
 *
 * Drops an IPv4/TCP packet (up to two VLAN tags, IP options) carrying a TLS ClientHello whose
 * server_name (SNI, of type host_name) is in `blocklist` (host name, zero-padded to 64 bytes ->
 * packets dropped for it), counting the hit. The same filter as the example: every path that
 * is not a hit, every out-of-bounds read included, passes the packet, and a packet is dropped
 * exactly when the example drops it (the bench's behaviour check runs both on the example's
 * test corpus). */
#include "common.h"

#define TLS_HANDSHAKE 22
#define TLS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define SNI_HOST_NAME 0
#define MAX_EXTENSIONS 32
#define MAX_NAME 64

struct sni_key {
	char name[MAX_NAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sni_key);
	__type(value, __u64);
} blocklist SEC(".maps");

static __always_inline __u16 load_be16(const __u8 *p)
{
	return bpf_ntohs(*(const __u16 *)p);
}

SEC("xdp")
int sni_filter(struct xdp_md *ctx)
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
	long tls = tcp_payload(p, end, tcp);
	if (tls < 0)
		return XDP_PASS;

	/* Record header (5), handshake header (4), version (2), random (32), session id length. */
	const __u8 *rec = p + tls;
	if (rec + 44 > end)
		return XDP_PASS;
	if (rec[0] != TLS_HANDSHAKE || rec[5] != TLS_CLIENT_HELLO)
		return XDP_PASS;
	__u64 off = tls + 43;
	off += 1 + rec[43];                     /* session id */
	const __u8 *q = p + off;
	if (q + 2 > end)
		return XDP_PASS;
	off += 2 + load_be16(q);                /* cipher suites */
	if (off > MAX_PKT_OFF)
		return XDP_PASS;
	q = p + off;
	if (q + 1 > end)
		return XDP_PASS;
	off += 1 + q[0];                        /* compression methods */
	q = p + off;
	if (q + 2 > end)
		return XDP_PASS;
	__u64 ext_end = off + 2 + load_be16(q);
	off += 2;

	for (int i = 0; i < MAX_EXTENSIONS; i++) {
		if (off + 4 > ext_end)
			break;
		if (off > MAX_PKT_OFF)
			return XDP_PASS;
		q = p + off;
		if (q + 4 > end)
			return XDP_PASS;
		__u16 ext_type = load_be16(q);
		__u16 ext_len = load_be16(q + 2);
		if (ext_type == EXT_SERVER_NAME) {
			/* list length (2), name type (1), name length (2), name */
			if (q + 9 > end || q[6] != SNI_HOST_NAME)
				return XDP_PASS;
			__u32 name_len = load_be16(q + 7);
			/* The name must fit its extension; a longer one than a key can never be found. */
			if (name_len + 5 > ext_len || name_len > MAX_NAME)
				return XDP_PASS;
			const __u8 *name = q + 9;
			struct sni_key key = {};
			for (__u32 n = 0; n < MAX_NAME; n++) {
				if (n >= name_len)
					break;
				if (name + n + 1 > end)
					return XDP_PASS;
				key.name[n] = name[n];
			}
			__u64 *hits = bpf_map_lookup_elem(&blocklist, &key);
			if (!hits)
				return XDP_PASS;
			__sync_fetch_and_add(hits, 1);
			return XDP_DROP;
		}
		off += 4 + ext_len;
	}
	return XDP_PASS;
}
