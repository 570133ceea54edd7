//! The packet corpora of the examples (tests/corpus/<example>.pcap): for each example, base
//! packets that reach every branch (positive and negative cases, IP options, VLAN tags,
//! other protocols), then every truncation of each base packet down to the Ethernet header,
//! then seeded random byte mutations. The corpus files are generated from here once and
//! checked in; tests/tests/differential.rs checks that they are up to date and that the
//! kernel and the reference agree on every packet.
//!
//! The map seeds the examples are run with (`--map` on the command line) come with them.

use std::path::PathBuf;

use crate::harness::{workspace_root, Rng};
use crate::packets::{
    client_hello, ethernet, http_frame, http_request, ipv4_packet, ipv6_frame, tcp_packet, udp_packet,
};

/// An example's packets and the map seeds to apply before the first one.
pub struct Corpus {
    pub packets: Vec<Vec<u8>>,
    /// (map, key bytes, value bytes), and the same as `luabpf run --map` text.
    pub seeds: Vec<(String, Vec<u8>, Vec<u8>)>,
    pub seed_args: Vec<String>,
}

/// A seed: map, key bytes, value bytes, and the same as `--map` text.
type SeedSpec = (&'static str, Vec<u8>, Vec<u8>, &'static str);

/// tests/corpus/<example>.pcap
pub fn corpus_path(example: &str) -> PathBuf {
    workspace_root()
        .join("tests")
        .join("corpus")
        .join(format!("{example}.pcap"))
}

/// The corpus of an example; `None` for an example without one (a test fails on that).
pub fn corpus(example: &str) -> Option<Corpus> {
    let (bases, seeds): (Vec<Vec<u8>>, Vec<SeedSpec>) = match example {
        "sni_filter" => (
            sni_bases(),
            vec![(
                "blocklist",
                cstr("evil.example", 64),
                0u64.to_le_bytes().to_vec(),
                "blocklist:evil.example=0",
            )],
        ),
        "ua_filter" => (
            ua_bases(),
            vec![(
                "blocked_agents",
                cstr("EvilBot/1.0", 64),
                0u64.to_le_bytes().to_vec(),
                "blocked_agents:EvilBot/1.0=0",
            )],
        ),
        "cookie_guard" => (
            cookie_bases(),
            vec![(
                "cookies",
                u32::from_le_bytes(CLIENT).to_le_bytes().to_vec(),
                cstr("s3cr3t", 32),
                "cookies:0x0100000a=s3cr3t",
            )],
        ),
        "counter" => (counter_bases(), Vec::new()),
        "tc_mark" => (
            tc_mark_bases(),
            vec![(
                "marks",
                443u16.to_le_bytes().to_vec(),
                42u32.to_le_bytes().to_vec(),
                "marks:443=42",
            )],
        ),
        _ => return None,
    };
    // A tc test run refuses IPv4 and IPv6 frames shorter than their network header (EINVAL
    // on 6.18): tc corpora are truncated down to the longest such header, not to Ethernet.
    let shortest = if example == "tc_mark" { TC_SHORTEST } else { ETH_HLEN };
    let mut rng = Rng::new(0xc0_4b05 ^ example.len() as u64 ^ (example.as_bytes()[0] as u64) << 8);
    let mut packets = bases.clone();
    for base in &bases {
        packets.extend((shortest..base.len()).map(|n| base[..n].to_vec()));
    }
    for base in &bases {
        for _ in 0..MUTANTS_PER_BASE {
            packets.push(mutate(&mut rng, base));
        }
    }
    Some(Corpus {
        packets,
        seeds: seeds
            .iter()
            .map(|(m, k, v, _)| (m.to_string(), k.clone(), v.clone()))
            .collect(),
        seed_args: seeds.iter().map(|s| s.3.to_string()).collect(),
    })
}

/// The corpus as a classic pcap file (timestamps one millisecond apart).
pub fn pcap_bytes(packets: &[Vec<u8>]) -> Vec<u8> {
    luabpf_loader::pcap::write(
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), i as u64 * 1_000_000)),
    )
}

/// A test run needs at least the Ethernet header.
const ETH_HLEN: usize = 14;
const MUTANTS_PER_BASE: usize = 24;
/// Ethernet and an IPv6 header: the shortest frame a tc test run takes whatever its EtherType.
const TC_SHORTEST: usize = 54;
/// 10.0.0.1, the client the cookie_guard seed knows.
const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];
/// NOP, NOP, NOP, NOP, then a router alert (RFC 2113): 8 bytes of IPv4 options.
const IP_OPTIONS: [u8; 8] = [1, 1, 1, 1, 0x94, 4, 0, 0];

fn cstr(s: &str, n: usize) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(n, 0);
    v
}

/// The frame with an 802.1Q tag (VLAN 42) after the MAC addresses.
fn vlan(frame: &[u8]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00, 0x00, 42]);
    v.extend_from_slice(&frame[12..]);
    v
}

fn icmp_echo(src: [u8; 4]) -> Vec<u8> {
    ipv4_packet(
        src,
        SERVER,
        1,
        &[],
        &[8, 0, 0xf7, 0xfd, 0, 1, 0, 1, b'p', b'i', b'n', b'g'],
    )
}

fn arp() -> Vec<u8> {
    let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1];
    body.extend_from_slice(&CLIENT);
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&SERVER);
    ethernet(0x0806, &body)
}

fn tls(src: [u8; 4], options: &[u8], sni: &str, n_ext: usize, at: usize) -> Vec<u8> {
    tcp_packet(src, SERVER, 40000, 443, options, &client_hello(sni, n_ext, at))
}

fn sni_bases() -> Vec<Vec<u8>> {
    vec![
        tls(CLIENT, &[], "evil.example", 4, 1),
        tls(CLIENT, &[], "good.example", 4, 1),
        tls(CLIENT, &IP_OPTIONS, "evil.example", 3, 0),
        vlan(&tls(CLIENT, &[], "evil.example", 3, 2)),
        tls(CLIENT, &[], &"a".repeat(70), 2, 1),
        tls(CLIENT, &[], "evil.example", 36, 34),
        tls(CLIENT, &[], "evil.example\0", 2, 0),
        tls(CLIENT, &[], "evil.example", 12, 5),
        udp_packet(CLIENT, SERVER, 5353, 53, b"\x12\x34\x01\x00\x00\x01"),
        ipv6_frame(),
        http_frame(CLIENT, "EvilBot/1.0", None),
    ]
}

fn http(src: [u8; 4], options: &[u8], request: &[u8]) -> Vec<u8> {
    tcp_packet(src, SERVER, 40000, 80, options, request)
}

fn ua_bases() -> Vec<Vec<u8>> {
    let bare = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: EvilBot/1.0".to_vec();
    vec![
        http_frame(CLIENT, "EvilBot/1.0", None),
        http_frame(CLIENT, "Mozilla/5.0 (X11; Linux x86_64)", None),
        http(CLIENT, &IP_OPTIONS, &http_request("EvilBot/1.0", None)),
        vlan(&http_frame(CLIENT, "EvilBot/1.0", None)),
        http_frame(CLIENT, &"Z".repeat(100), None),
        http(CLIENT, &[], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        http(CLIENT, &[], &bare),
        tls(CLIENT, &[], "evil.example", 3, 1),
        icmp_echo(CLIENT),
    ]
}

fn cookie_bases() -> Vec<Vec<u8>> {
    let other = [10, 0, 0, 3];
    vec![
        http_frame(CLIENT, "Mozilla/5.0", Some("s3cr3t")),
        http(
            CLIENT,
            &IP_OPTIONS,
            &http_request("Mozilla/5.0", Some("s3cr3t; theme=dark")),
        ),
        vlan(&http_frame(other, "Mozilla/5.0", Some("s3cr3t"))),
        tcp_packet(other, SERVER, 40000, 80, &[], b""),
        tls(other, &[], "www.example", 3, 1),
        http_frame(other, "Mozilla/5.0", Some("s3cr3t")),
        http_frame(other, "Mozilla/5.0", None),
        http_frame([10, 0, 0, 4], "curl/8.0", Some(&"x".repeat(40))),
        udp_packet(CLIENT, SERVER, 5353, 80, b"hello"),
        ipv6_frame(),
        http_frame(CLIENT, "Mozilla/5.0", Some("wrong")),
        http_frame(CLIENT, "Mozilla/5.0", Some("s3cr3t")),
    ]
}

fn counter_bases() -> Vec<Vec<u8>> {
    vec![
        http_frame(CLIENT, "Mozilla/5.0", None),
        udp_packet(CLIENT, SERVER, 5353, 53, b"\x12\x34\x01\x00"),
        icmp_echo(CLIENT),
        ipv4_packet(CLIENT, SERVER, 47, &IP_OPTIONS, &[0; 8]),
        ipv6_frame(),
        arp(),
        vlan(&icmp_echo(CLIENT)),
    ]
}

/// Marked (port 443, with and without IP options, TCP and UDP) and unmarked packets; every
/// base is at least [`TC_SHORTEST`] bytes, so that mutated EtherTypes stay runnable.
fn tc_mark_bases() -> Vec<Vec<u8>> {
    vec![
        udp_packet(CLIENT, SERVER, 5555, 443, &[7; 16]),
        tcp_packet(CLIENT, SERVER, 40000, 443, &IP_OPTIONS, b"GET / HTTP/1.1\r\n"),
        udp_packet(CLIENT, SERVER, 5353, 53, &[1; 16]),
        http_frame(CLIENT, "Mozilla/5.0", None),
        ipv4_packet(CLIENT, SERVER, 1, &[], &[8; 40]),
        ipv6_frame(),
        vlan(&udp_packet(CLIENT, SERVER, 5555, 443, &[7; 16])),
    ]
}

/// One to four random bytes changed, mostly in the headers.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if rng.chance(70) {
            rng.below(p.len().min(80))
        } else {
            rng.below(p.len())
        };
        p[at] = rng.next() as u8;
    }
    p
}
