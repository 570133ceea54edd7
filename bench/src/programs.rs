//! The programs under test: each example, its C baseline, the packets it is timed on and the map
//! contents that make the interesting path run.

use std::path::{Path, PathBuf};

use luabpf_loader::{Loaded, UpdateMode};

use crate::packets;

/// XDP verdicts.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub fn verdict_name(v: u32) -> String {
    match v {
        0 => "ABORTED".into(),
        1 => "DROP".into(),
        2 => "PASS".into(),
        3 => "TX".into(),
        4 => "REDIRECT".into(),
        n => format!("{n}"),
    }
}

/// A browser's User-Agent: longer than the 64 bytes the filters keep, as real ones are.
pub const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
pub const BLOCKED_UA: &str = "EvilBot/1.0";
pub const BLOCKED_SNI: &str = "blocked.example";
pub const OTHER_SNI: &str = "www.example.org";
pub const CLIENT: [u8; 4] = [10, 0, 0, 1];
pub const ATTACKER: [u8; 4] = [10, 0, 0, 66];
pub const COOKIE: &str = "s3cr3t";
/// A client whose cookie fills its 32 bytes (behaviour check only): a 33rd byte must not match.
pub const LONG_CLIENT: [u8; 4] = [10, 0, 0, 7];
pub const LONG_COOKIE: &str = "0123456789abcdef0123456789abcdef";

/// Offsets in `packets::client_hello(name, n, 0)`'s record: the server_name extension's length
/// and its name type (record 5 + handshake 4 + version 2 + random 32 + session id 33 + suites
/// 18 + compression 2 + extensions length 2 = 98: type 2, length 2, list length 2, name type).
const SNI_EXT_LEN: usize = 98 + 2;
const SNI_NAME_TYPE: usize = 98 + 6;

/// The blocked name in a ClientHello changed by `change` (at offsets in the record), as a
/// frame: the cases where the example's `tls.sni` finds no name.
fn mangled_hello(change: fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut hello = packets::client_hello(BLOCKED_SNI, 4, 0);
    change(&mut hello);
    packets::tcp_packet(CLIENT, [10, 0, 0, 2], 40000, 443, &[], &hello)
}

/// One timed packet.
pub struct Packet {
    /// Short name for tables.
    pub name: &'static str,
    /// What it exercises.
    pub what: &'static str,
    pub bytes: Vec<u8>,
    /// The verdict both programs must give.
    pub expect: u32,
}

pub struct Example {
    /// The example's name (and its program's name, and the file stem).
    pub name: &'static str,
    pub lua: PathBuf,
    pub c: PathBuf,
    pub packets: Vec<Packet>,
    /// Extra packets for the behaviour check (with every truncation of every packet).
    pub extra: Vec<Vec<u8>>,
    /// Fills the maps so that the timed paths are the interesting ones.
    pub setup: fn(&Loaded) -> Result<(), String>,
    /// Undoes what a run may have changed that changes later verdicts (behaviour check).
    pub reset: fn(&Loaded) -> Result<(), String>,
    /// The maps whose changes the behaviour check compares, and whether it compares their
    /// values (not for time stamps) or only which keys are present.
    pub maps: &'static [(&'static str, bool)],
    /// Map entries put in both programs' maps for the behaviour check only: the ones the
    /// corpus (tests/corpus/NAME.pcap) was made for (tests/corpus.rs), and the ones the extra
    /// packets need. (map, key, value)
    pub check_seeds: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
}

/// `s` zero-padded to `n` bytes (a `cN` map key or value).
pub fn padded(s: &str, n: usize) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    assert!(v.len() <= n);
    v.resize(n, 0);
    v
}

fn update(l: &Loaded, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
    l.map(map)
        .and_then(|m| m.update(key, value, UpdateMode::Any))
        .map_err(|e| format!("map `{map}`: {e}"))
}

fn setup_sni(l: &Loaded) -> Result<(), String> {
    update(l, "blocklist", &padded(BLOCKED_SNI, 64), &0u64.to_le_bytes())
}

fn setup_ua(l: &Loaded) -> Result<(), String> {
    update(l, "blocked_agents", &padded(BLOCKED_UA, 64), &0u64.to_le_bytes())
}

fn setup_counter(_: &Loaded) -> Result<(), String> {
    Ok(())
}

fn setup_cookie(l: &Loaded) -> Result<(), String> {
    update(l, "cookies", &CLIENT, &padded(COOKIE, 32))?;
    update(l, "blocked", &ATTACKER, &0u64.to_le_bytes())
}

fn no_reset(_: &Loaded) -> Result<(), String> {
    Ok(())
}

/// Unblocks every source but the attacker: a refused request blocks its client for good.
fn reset_cookie(l: &Loaded) -> Result<(), String> {
    let map = l.map("blocked").map_err(|e| e.to_string())?;
    let keys: Vec<Vec<u8>> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        if k != ATTACKER {
            map.delete(&k).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

pub fn examples(root: &Path) -> Vec<Example> {
    let lua = |n: &str| root.join("examples").join(format!("{n}.lua"));
    let c = |n: &str| root.join("bench/c").join(format!("{n}.c"));
    let udp = packets::udp_packet(CLIENT, [10, 0, 0, 2], 5353, 53, &[0u8; 40]);
    let ipv6 = packets::ipv6_frame();
    vec![
        Example {
            name: "sni_filter",
            lua: lua("sni_filter"),
            c: c("sni_filter"),
            packets: vec![
                Packet {
                    name: "blocked SNI",
                    what: "Ethernet/IPv4/TCP to port 443, TLS 1.3 ClientHello record (12 extensions, SNI the 6th), name in `blocklist`",
                    bytes: packets::tls_frame(BLOCKED_SNI),
                    expect: XDP_DROP,
                },
                Packet {
                    name: "other SNI",
                    what: "the same ClientHello for a name not in `blocklist`",
                    bytes: packets::tls_frame(OTHER_SNI),
                    expect: XDP_PASS,
                },
            ],
            extra: vec![
                udp.clone(),
                ipv6.clone(),
                packets::tcp_packet(
                    CLIENT,
                    [10, 0, 0, 2],
                    40000,
                    443,
                    &[1, 1, 1, 0],
                    &packets::client_hello(BLOCKED_SNI, 30, 29),
                ),
                packets::tcp_packet(CLIENT, [10, 0, 0, 2], 40000, 443, &[], &packets::client_hello(BLOCKED_SNI, 40, 35)),
                packets::tcp_packet(CLIENT, [10, 0, 0, 2], 40000, 443, &[], &packets::client_hello(&"a".repeat(64), 4, 0)),
                packets::tcp_packet(CLIENT, [10, 0, 0, 2], 40000, 443, &[], &packets::client_hello(&"a".repeat(65), 4, 0)),
                // Name type 1 (not host_name); a name one byte longer than its extension.
                mangled_hello(|h| h[SNI_NAME_TYPE] = 1),
                mangled_hello(|h| h[SNI_EXT_LEN + 1] -= 1),
            ],
            setup: setup_sni,
            reset: no_reset,
            maps: &[("blocklist", true)],
            check_seeds: vec![("blocklist", padded("evil.example", 64), 0u64.to_le_bytes().to_vec())],
        },
        Example {
            name: "ua_filter",
            lua: lua("ua_filter"),
            c: c("ua_filter"),
            packets: vec![
                Packet {
                    name: "blocked UA",
                    what: "HTTP GET, 8 header lines, User-Agent 7th, value in `blocked_agents`",
                    bytes: packets::http_frame(CLIENT, BLOCKED_UA, None),
                    expect: XDP_DROP,
                },
                Packet {
                    name: "browser UA",
                    what: "the same GET with a 70-byte browser User-Agent (not in the map; its first 64 bytes are looked up)",
                    bytes: packets::http_frame(CLIENT, BROWSER_UA, None),
                    expect: XDP_PASS,
                },
            ],
            extra: vec![
                udp.clone(),
                ipv6.clone(),
                packets::http_frame(CLIENT, "", None),
                packets::tcp_packet(CLIENT, [10, 0, 0, 2], 40000, 80, &[], &[b'x'; 700]),
            ],
            setup: setup_ua,
            reset: no_reset,
            maps: &[("blocked_agents", true)],
            check_seeds: Vec::new(),
        },
        Example {
            name: "counter",
            lua: lua("counter"),
            c: c("counter"),
            packets: vec![Packet {
                name: "TCP",
                what: "the ClientHello frame above (IPv4/TCP)",
                bytes: packets::tls_frame(OTHER_SNI),
                expect: XDP_PASS,
            }],
            extra: vec![udp.clone(), ipv6.clone()],
            setup: setup_counter,
            reset: no_reset,
            maps: &[("counts", true)],
            check_seeds: Vec::new(),
        },
        Example {
            name: "cookie_guard",
            lua: lua("cookie_guard"),
            c: c("cookie_guard"),
            packets: vec![
                Packet {
                    name: "valid cookie",
                    what: "HTTP GET to port 80 from a client in `cookies`, `Cookie: bot=` 6th header line, right value",
                    bytes: packets::http_frame(CLIENT, BROWSER_UA, Some(COOKIE)),
                    expect: XDP_PASS,
                },
                Packet {
                    name: "blocked source",
                    what: "the same GET from a source in `blocked`",
                    bytes: packets::http_frame(ATTACKER, BROWSER_UA, Some("forged")),
                    expect: XDP_DROP,
                },
            ],
            extra: vec![
                udp,
                ipv6,
                packets::http_frame(CLIENT, BROWSER_UA, Some("s3cr3t;x=1")),
                packets::http_frame(CLIENT, BROWSER_UA, Some("s3cr3")),
                packets::http_frame([10, 0, 0, 9], BROWSER_UA, Some(COOKIE)),
                packets::http_frame(CLIENT, BROWSER_UA, Some("forged")),
                // A value ending in a zero byte; a 32-byte cookie, right, with a 33rd byte, cut by ";".
                packets::http_frame(CLIENT, BROWSER_UA, Some("s3cr3t\0")),
                packets::http_frame(LONG_CLIENT, BROWSER_UA, Some(LONG_COOKIE)),
                packets::http_frame(LONG_CLIENT, BROWSER_UA, Some(&format!("{LONG_COOKIE}x"))),
                packets::http_frame(LONG_CLIENT, BROWSER_UA, Some(&format!("{LONG_COOKIE};x"))),
            ],
            setup: setup_cookie,
            reset: reset_cookie,
            maps: &[("cookies", true), ("blocked", false)],
            check_seeds: vec![("cookies", LONG_CLIENT.to_vec(), LONG_COOKIE.as_bytes().to_vec())],
        },
    ]
}
