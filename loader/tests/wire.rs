//! `luabpf attach`, `detach` and `map` with real traffic through the kernel: the examples
//! attached with the command a user types, packets sent over a veth pair between two network
//! namespaces (real TCP connections from threads that entered the namespaces with setns(2),
//! or whole frames from AF_PACKET sockets), and what arrives checked on the receiving side.
//!
//! Needs root: skips loudly without bpf(), unless LUABPF_REQUIRE_KERNEL=1. Each test builds
//! its own [`Lab`] (common/lab.rs), whose guard removes namespaces, pins and state even when
//! the test fails; the tests also check that luabpf itself leaves nothing behind. Waiting for
//! the kernel is bounded ([`wait_until`], socket timeouts) but never measured.

mod common;
#[allow(dead_code)]
#[path = "../../tests/packets.rs"]
mod packets;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::lab::*;
use common::sockets::*;
use common::web::{read_response, WebServer};
use common::{map, object, program, u32_le, write_object};
use luabpf_loader::require_kernel_or_skip;
use packets::{client_hello, http_request, tcp_packet, udp_packet};
use runtime_bpf::isa::*;
use runtime_bpf::object::{MapKind, SourceFile, SourceLoc};

fn is_json_entry(dump: &str, key: &str) -> bool {
    dump.contains(&format!("{{\"key\":{key},"))
}

/// The value `luabpf map get --json` prints for a plain map's key, `None` if absent.
fn json_value(lab: &Lab, program: &str, map: &str, key: &str) -> Option<String> {
    let out = lab.luabpf(&["map", "get", program, map, key, "--json"]);
    if out.status.code() == Some(1) {
        return None;
    }
    let text = ok(&out);
    let v = text
        .trim()
        .rsplit_once("\"value\":")
        .unwrap_or_else(|| panic!("no value in {text}"))
        .1;
    Some(v.trim_end_matches('}').to_string())
}

fn hits(lab: &Lab, program: &str, name: &str) -> u64 {
    json_value(lab, program, "blocklist", name).map_or(0, |v| v.parse().unwrap())
}

/// Attaches a copy of examples/sni_filter.lua named `sni_<lab>` at XDP in `mode`; returns the
/// name and the command's output.
fn attach_sni(lab: &mut Lab, mode: &str) -> (String, String) {
    let name = lab.unique("sni");
    let file = lab.example_copy("sni_filter", "sni_filter", &name);
    let out = ok(&lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap(), "--mode", mode]));
    (name, out)
}

// ---------------------------------------------------------------------------------------------
// 1. The SNI filter at native XDP, over real TCP connections.

#[test]
fn sni_filter_at_native_xdp_drops_blocked_client_hellos_over_tcp() {
    if !require_kernel_or_skip("sni_filter_at_native_xdp_drops_blocked_client_hellos_over_tcp") {
        return;
    }
    let mut lab = Lab::new();
    let (name, out) = attach_sni(&mut lab, "native");
    assert!(
        out.contains(&format!("attached `{name}` at xdp (native) on {}", lab.inner)),
        "{out}"
    );
    // Driver mode, as iproute2 sees it (generic mode shows `xdpgeneric`).
    let link = lab.inner_link();
    assert!(link.contains(" xdp ") && !link.contains("xdpgeneric"), "{link}");
    let list = ok(&lab.luabpf(&["list", "--json"]));
    assert!(list.contains("\"mode\":\"native\""), "{list}");
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "0"]));

    // The same name on another interface: refused; the attachment below keeps filtering.
    let other = lab.unique("x");
    lab.ip(&["link", "add", &other, "type", "veth", "peer", "name", &lab.unique("y")]);
    lab.ip(&["link", "set", &other, "up"]);
    let file = lab.dir.join(format!("{name}.lua"));
    let out = lab.luabpf(&["attach", &other, file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "program `{name}` is already attached at xdp on {}: detach it first",
            lab.inner
        )),
        "{}",
        stderr(&out)
    );
    assert!(!lab.ip(&["link", "show", &other]).contains("xdp"));

    let server = SocketAddrV4::new(lab.inner_ip, 443);
    let listener = run_in(&lab.ns, move || TcpListener::bind(server).expect("bind 443"));
    let connect = |lab: &Lab| {
        let from = lab.outer_ip;
        let client = run_in(&lab.peer, move || {
            tcp_connect_from(from, server, PATIENCE).expect("connect")
        });
        let (accepted, _) = listener.accept().expect("accept");
        (client, accepted)
    };

    // A ClientHello for the blocked name: the handshake went through (no payload), the
    // hello is dropped at XDP, counted, and never reaches the server.
    let (mut blocked_client, mut blocked_server) = connect(&lab);
    let evil = client_hello("evil.example", 12, 5);
    blocked_client.write_all(&evil).unwrap();
    wait_until("the filter to count the blocked hello", PATIENCE, || {
        hits(&lab, &name, "evil.example") >= 1
    });
    blocked_server.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 4096];
    match blocked_server.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server received something of a blocked hello: {other:?}"),
    }

    // Another name on a new connection passes, byte for byte.
    let (mut good_client, mut good_server) = connect(&lab);
    let good = client_hello("good.example", 12, 5);
    good_client.write_all(&good).unwrap();
    good_server.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = vec![0u8; good.len()];
    good_server
        .read_exact(&mut got)
        .expect("the server receives the allowed hello");
    assert_eq!(got, good);

    // Unblocking the name lets the held connection's retransmission through.
    ok(&lab.luabpf(&["map", "del", &name, "blocklist", "evil.example"]));
    blocked_server.set_nonblocking(false).unwrap();
    blocked_server.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = vec![0u8; evil.len()];
    blocked_server
        .read_exact(&mut got)
        .expect("the retransmitted hello arrives once its name is unblocked");
    assert_eq!(got, evil);

    ok(&lab.luabpf(&["detach", &name]));
    assert!(!lab.xdp_attached() && !pins_of(&name));
}

// ---------------------------------------------------------------------------------------------
// 2. tc: examples/tc_mark.lua at tcx egress and ingress, the mark seen by a socket.

/// The per-CPU sum for `key` in `luabpf map get --json` of a per-CPU map.
fn percpu_sum(lab: &Lab, program: &str, map: &str, key: &str) -> u64 {
    let text = ok(&lab.luabpf(&["map", "get", program, map, key, "--json"]));
    let sum = text
        .rsplit_once("\"sum\":")
        .unwrap_or_else(|| panic!("no sum in {text}"))
        .1;
    sum.trim().trim_end_matches('}').parse().unwrap()
}

#[test]
fn tc_mark_marks_matching_packets_at_tcx_egress_and_ingress() {
    if !require_kernel_or_skip("tc_mark_marks_matching_packets_at_tcx_egress_and_ingress") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("tcm");
    let file = lab.example_copy("tc_mark", "tc_mark", &name);
    let file = file.to_str().unwrap().to_string();
    // A second veth pair with both ends in the lab's namespace: a mark survives the crossing
    // (only a crossing between namespaces scrubs it), so a socket behind `tb` sees the mark
    // that the egress program on `ta` set. `tb` takes the MAC the test frames are sent to.
    let (ta, tb) = (lab.unique("ta"), lab.unique("tb"));
    let (ta, tb) = (&ta[..ta.len().min(15)], &tb[..tb.len().min(15)]);
    lab.ip(&["link", "add", ta, "type", "veth", "peer", "name", tb]);
    lab.ip(&["link", "set", tb, "address", "02:00:00:00:00:02"]);
    lab.ip(&["addr", "add", "10.77.0.2/24", "dev", tb]);
    lab.ip(&["link", "set", ta, "up"]);
    lab.ip(&["link", "set", tb, "up"]);

    let (marked_sock, plain_sock) = run_in(&lab.ns, || (mark_socket(7001), mark_socket(7002)));
    // 10 datagrams to each port, interleaved, out of `ta`; returns each socket's marks.
    let exchange = |lab: &Lab| -> (Vec<u32>, Vec<u32>) {
        let ta = ta.to_string();
        run_in(&lab.ns, move || {
            let tx = PacketSocket::new(&ta);
            for i in 0..10u8 {
                for port in [7001, 7002] {
                    let frame = udp_packet([10, 77, 0, 9], [10, 77, 0, 2], 5555, port, &[i; 8]);
                    tx.send(&frame).unwrap();
                }
            }
        });
        let marks = |s: &UdpSocket| (0..10).map(|_| recv_marked(s).1).collect::<Vec<u32>>();
        (marks(&marked_sock), marks(&plain_sock))
    };

    for (dir, dev) in [("egress", ta), ("ingress", tb)] {
        let out = ok(&lab.luabpf(&["attach", dev, &file, "--tc", dir]));
        assert!(
            out.contains(&format!("attached `{name}` at tc-{dir} (tcx) on {dev}")),
            "{out}"
        );
        ok(&lab.luabpf(&["map", "set", &name, "marks", "7001", "0x2a"]));
        let (marked, plain) = exchange(&lab);
        assert_eq!(marked, [42; 10], "tc {dir}: datagrams to the marked port carry mark 42");
        assert_eq!(plain, [0; 10], "tc {dir}: other datagrams are not marked");
        assert_eq!(percpu_sum(&lab, &name, "marked", "7001"), 10, "tc {dir}");
        // Replaced at the same hook (a tcx link update): the maps and the marking stay.
        let out = ok(&lab.luabpf(&["attach", dev, &file, "--tc", dir]));
        assert!(
            out.contains("replaced") && out.contains("maps kept: marks, marked"),
            "{out}"
        );
        let (marked, _) = exchange(&lab);
        assert_eq!(marked, [42; 10], "tc {dir}, replaced");
        assert_eq!(percpu_sum(&lab, &name, "marked", "7001"), 20, "tc {dir}, replaced");
        let list = ok(&lab.luabpf(&["list"]));
        assert!(
            list.lines()
                .any(|l| l.starts_with(&name) && l.contains(&format!("tc-{dir} (tcx)\t{dev}"))),
            "{list}"
        );
        ok(&lab.luabpf(&["detach", &name]));
        assert!(!pins_of(&name));
        // Detached: nothing marks any more.
        let (marked, _) = exchange(&lab);
        assert_eq!(marked, [0; 10], "after detaching from tc {dir}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. examples/cookie_guard.lua end to end.

#[test]
fn cookie_guard_serves_clients_with_their_cookie_and_blocks_the_others() {
    if !require_kernel_or_skip("cookie_guard_serves_clients_with_their_cookie_and_blocks_the_others") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("ckg");
    let file = lab.example_copy("cookie_guard", "cookie_guard", &name);
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap()]));
    // A second client address on the peer side: the guard keys clients by address.
    let bot = Ipv4Addr::from(u32::from(lab.outer_ip) + 2);
    ok(&ip(&[
        "-n",
        &lab.peer,
        "addr",
        "add",
        &format!("{bot}/24"),
        "dev",
        &lab.outer,
    ]));
    let web = WebServer::start(&lab, &name);
    let (user, server) = (lab.outer_ip, lab.inner_ip);

    // The user fetches a cookie (port 8080 is not guarded), then presents it on port 80.
    let page = run_in(&lab.peer, move || {
        let mut c = tcp_connect_from(user, SocketAddrV4::new(server, 8080), PATIENCE).expect("connect 8080");
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        c.write_all(b"GET /cookie HTTP/1.1\r\nHost: guarded.example\r\n\r\n")
            .unwrap();
        let issued = read_response(&mut c).expect("a cookie");
        let cookie = issued
            .lines()
            .find_map(|l| l.strip_prefix("Set-Cookie: bot="))
            .expect("Set-Cookie")
            .to_string();
        let mut c = tcp_connect_from(user, SocketAddrV4::new(server, 80), PATIENCE).expect("connect 80");
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        c.write_all(&http_request("Mozilla/5.0", Some(&cookie))).unwrap();
        read_response(&mut c)
    });
    let page = page.expect("the client with its cookie gets a response");
    assert!(
        page.starts_with("HTTP/1.1 200 OK") && page.ends_with("welcome\n"),
        "{page}"
    );
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "cookies", "--json"]));
    assert!(
        dump.contains(&format!("\"key\":{},", u32::from_ne_bytes(user.octets()))),
        "{dump}"
    );

    // The bot connects (the handshake carries no payload and passes) and asks without a
    // cookie: dropped at XDP, its address lands in `blocked`, the server never sees it.
    let mut conn = run_in(&lab.peer, move || {
        let mut c = tcp_connect_from(bot, SocketAddrV4::new(server, 80), PATIENCE).expect("connect 80");
        c.write_all(&http_request("EvilBot/1.0", None)).unwrap();
        c
    });
    let bot_key = u32::from_ne_bytes(bot.octets()).to_string();
    wait_until("the bot in `blocked`", PATIENCE, || {
        is_json_entry(&ok(&lab.luabpf(&["map", "dump", &name, "blocked", "--json"])), &bot_key)
    });
    conn.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the bot got an answer: {other:?}"),
    }
    assert_eq!(web.requests_from(bot, 80), 0);
    // Blocked means blocked everywhere: not even a handshake on the cookie port now.
    let retry = run_in(&lab.peer, move || {
        tcp_connect_from(bot, SocketAddrV4::new(server, 8080), Duration::from_secs(2)).map(|_| ())
    });
    assert!(retry.is_err(), "a blocked client connected");
    assert_eq!(web.requests_from(user, 80), 1);
    let blocked = ok(&lab.luabpf(&["map", "dump", &name, "blocked", "--json"]));
    assert!(
        !is_json_entry(&blocked, &u32::from_ne_bytes(user.octets()).to_string()),
        "{blocked}"
    );
    drop(web);
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}

// ---------------------------------------------------------------------------------------------
// 4. `luabpf map`: every key and value format, bad input, concurrent writers.

/// A program whose maps use every format `luabpf map` parses.
const FORMATS: &str = r#"
local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"

local u1 = map.hash("u1", { key = "I1", value = "I1", entries = 8 })
local u2 = map.hash("u2", { key = "I2", value = "I2", entries = 8 })
local u4 = map.hash("u4", { key = "I4", value = "I4", entries = 8 })
local u8 = map.hash("u8", { key = "I8", value = "I8", entries = 8 })
local s1 = map.hash("s1", { key = "i1", value = "i1", entries = 8 })
local s2 = map.hash("s2", { key = "i2", value = "i2", entries = 8 })
local s4 = map.hash("s4", { key = "i4", value = "i4", entries = 8 })
local s8 = map.hash("s8", { key = "i8", value = "i8", entries = 8 })
local names = map.hash("names", { key = "c16", value = "c8", entries = 8 })
local recs = map.hash("recs", { key = "I4", value = { hits = "I8", port = "I2", tag = "c6", delta = "i4" }, entries = 8 })
local rkeys = map.hash("rkeys", { key = { addr = "I4", port = "I2" }, value = "I8", entries = 8 })
local pc = map.percpu_array("pc", { key = "I4", value = "I8", entries = 4 })

local function f(ctx)
  local k = ctx:packet():getbyte(0)
  if u1[k] or u2[k] or u4[k] or u8[k] or s1[k] or s2[k] or s4[k] or s8[k] or recs[k] or pc[k] then
    return action.DROP
  end
  if names["x"] then return action.DROP end
  return action.PASS
end

return xdp.program(f, { name = "NAME" })
"#;

#[test]
fn map_command_round_trips_every_format_and_refuses_bad_input() {
    if !require_kernel_or_skip("map_command_round_trips_every_format_and_refuses_bad_input") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("fmt");
    let file = lab.write_program(&name, &FORMATS.replace("NAME", &name));
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap()]));

    // (map, key as typed, value as typed, `get` text, `get --json`)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("u1", "0xff", "255", "255: 255", r#"{"key":255,"value":255}"#),
        ("u1", "0", "0x7F", "0: 127", r#"{"key":0,"value":127}"#),
        (
            "u2",
            "65535",
            "0xffff",
            "65535: 65535",
            r#"{"key":65535,"value":65535}"#,
        ),
        (
            "u4",
            "4294967295",
            "0xdeadbeef",
            "4294967295: 3735928559",
            r#"{"key":4294967295,"value":3735928559}"#,
        ),
        (
            "u8",
            "18446744073709551615",
            "0xffffffffffffffff",
            "18446744073709551615: 18446744073709551615",
            r#"{"key":18446744073709551615,"value":18446744073709551615}"#,
        ),
        ("s1", "-128", "127", "-128: 127", r#"{"key":-128,"value":127}"#),
        ("s2", "-32768", "-0x10", "-32768: -16", r#"{"key":-32768,"value":-16}"#),
        (
            "s4",
            "-2147483648",
            "2147483647",
            "-2147483648: 2147483647",
            r#"{"key":-2147483648,"value":2147483647}"#,
        ),
        (
            "s8",
            "-9223372036854775808",
            "9223372036854775807",
            "-9223372036854775808: 9223372036854775807",
            r#"{"key":-9223372036854775808,"value":9223372036854775807}"#,
        ),
        (
            "names",
            "example.org",
            "v1",
            "example.org: v1",
            r#"{"key":"example.org","value":"v1"}"#,
        ),
        (
            "names",
            "0123456789abcdef",
            "8bytes!!",
            "0123456789abcdef: 8bytes!!",
            r#"{"key":"0123456789abcdef","value":"8bytes!!"}"#,
        ),
        (
            "recs",
            "7",
            "hits=5,port=0x1bb,tag=abc,delta=-3",
            "7: hits=5,port=443,tag=abc,delta=-3",
            r#"{"key":7,"value":{"hits":5,"port":443,"tag":"abc","delta":-3}}"#,
        ),
        // Fields left out are zero.
        (
            "recs",
            "8",
            "port=22",
            "8: hits=0,port=22,tag=,delta=0",
            r#"{"key":8,"value":{"hits":0,"port":22,"tag":"","delta":0}}"#,
        ),
        (
            "rkeys",
            "addr=0x0100000a,port=80",
            "12",
            "addr=16777226,port=80: 12",
            r#"{"key":{"addr":16777226,"port":80},"value":12}"#,
        ),
        ("pc", "3", "9", "3: ", r#"{"key":3,"values":[9"#),
    ];
    for (m, key, value, text, json) in cases {
        ok(&lab.luabpf(&["map", "set", &name, m, key, value]));
        let got = ok(&lab.luabpf(&["map", "get", &name, m, key]));
        assert!(got.trim().starts_with(text), "map {m} key {key}: {got}");
        let got = ok(&lab.luabpf(&["map", "get", &name, m, key, "--json"]));
        assert!(got.trim().starts_with(json), "map {m} key {key}: {got}");
        let dump = ok(&lab.luabpf(&["map", "dump", &name, m, "--json"]));
        assert!(dump.contains(json), "map {m}: {dump}");
    }
    // The per-CPU value was written on every CPU: the sum is 9 per CPU.
    let cpus = luabpf_loader::possible_cpus().unwrap() as u64;
    assert_eq!(percpu_sum(&lab, &name, "pc", "3"), 9 * cpus);

    // Bad keys and values: usage errors (exit 2) naming the format; nothing written.
    let before: Vec<String> = ["u1", "u2", "s1", "u8", "names", "recs", "rkeys"]
        .iter()
        .map(|m| ok(&lab.luabpf(&["map", "dump", &name, m, "--json"])))
        .collect();
    let bad: &[(&str, &str, &str, &str)] = &[
        ("u1", "256", "1", "format I1"),
        ("u1", "-1", "1", "format I1"),
        ("u1", "1", "0x100", "format I1"),
        ("s1", "128", "1", "format i1"),
        ("s1", "1", "-129", "format i1"),
        ("u2", "12abc", "1", "format I2"),
        ("u2", "", "1", "format I2"),
        ("u8", "0x1ffffffffffffffff", "1", "format I8"),
        ("names", "seventeen-bytes-x", "v", "format c16"),
        ("names", "k", "ninebytes", "format c8"),
        (
            "recs",
            "1",
            "hits=1,nope=2",
            "format {hits: I8, port: I2, tag: c6, delta: i4}",
        ),
        ("recs", "1", "hits", "format {hits: I8, port: I2, tag: c6, delta: i4}"),
        (
            "recs",
            "1",
            "port=70000",
            "field `port`: `70000` is out of range (0 to 65535) (format I2)",
        ),
        ("rkeys", "addr=1,port=2,x=3", "1", "format {addr: I4, port: I2}"),
        ("rkeys", "5", "1", "format {addr: I4, port: I2}"),
    ];
    for (m, key, value, why) in bad {
        let out = lab.luabpf(&["map", "set", &name, m, key, value]);
        assert_eq!(out.status.code(), Some(2), "map {m} {key} {value}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "map {m} {key} {value}: {}", stderr(&out));
    }
    for (i, m) in ["u1", "u2", "s1", "u8", "names", "recs", "rkeys"].iter().enumerate() {
        assert_eq!(
            ok(&lab.luabpf(&["map", "dump", &name, m, "--json"])),
            before[i],
            "{m} changed"
        );
    }
    // A full hash map and an index past an array's end: refused, saying which.
    for k in 0..7 {
        ok(&lab.luabpf(&["map", "set", &name, "u4", &k.to_string(), "1"]));
    }
    let full = lab.luabpf(&["map", "set", &name, "u4", "100", "1"]);
    assert_eq!(full.status.code(), Some(1));
    assert!(
        stderr(&full).contains("map `u4` is full (8 entries)"),
        "{}",
        stderr(&full)
    );
    let past = lab.luabpf(&["map", "set", &name, "pc", "4", "1"]);
    assert_eq!(past.status.code(), Some(1));
    assert!(
        stderr(&past).contains("key `4` is past the end of the percpu_array (keys 0 to 3)"),
        "{}",
        stderr(&past)
    );
    let out = lab.luabpf(&["map", "get", &name, "u4", "notanumber"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("format I4"), "{}", stderr(&out));

    // del, then get: gone (exit 1).
    ok(&lab.luabpf(&["map", "del", &name, "recs", "7"]));
    assert_eq!(lab.luabpf(&["map", "get", &name, "recs", "7"]).status.code(), Some(1));
    let list = ok(&lab.luabpf(&["map", "list", &name, "--json"]));
    assert!(
        list.contains(
            r#"{"name":"recs","kind":"hash","key":"I4","value":"{hits: I8, port: I2, tag: c6, delta: i4}","entries":8}"#
        ),
        "{list}"
    );
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}

/// Sends frames from the peer namespace out of `outer` until `stop`; returns how many.
fn sender(lab: &Lab, frames: Vec<Vec<u8>>, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let outer = lab.outer.clone();
    spawn_in(&lab.peer, move || {
        let tx = PacketSocket::new(&outer);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for f in &frames {
                if tx.send(f).is_ok() {
                    sent += 1;
                }
            }
            // Paced: the receiving side should see a stream, not a flood it sheds.
            std::thread::sleep(Duration::from_micros(200));
        }
        sent
    })
}

fn hello_frame(lab: &Lab, sni: &str) -> Vec<u8> {
    tcp_packet(
        lab.outer_ip.octets(),
        lab.inner_ip.octets(),
        40000,
        443,
        &[],
        &client_hello(sni, 12, 5),
    )
}

#[test]
fn concurrent_map_set_while_traffic_flows_loses_nothing() {
    if !require_kernel_or_skip("concurrent_map_set_while_traffic_flows_loses_nothing") {
        return;
    }
    let mut lab = Lab::new();
    let (name, _) = attach_sni(&mut lab, "auto");
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "0"]));
    // The program updates `evil.example`'s counter on every packet while 32 processes write
    // other keys of the same map at once.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = sender(&lab, vec![hello_frame(&lab, "evil.example")], stop.clone());
    wait_until("traffic", PATIENCE, || hits(&lab, &name, "evil.example") > 0);
    let writers: Vec<_> = (0..32)
        .map(|i| {
            lab.luabpf_cmd(&[
                "map",
                "set",
                &name,
                "blocklist",
                &format!("n{i}.example"),
                &format!("{}", i * 1000 + 7),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn luabpf map set")
        })
        .collect();
    for w in writers {
        ok(&w.wait_with_output().unwrap());
    }
    let during = hits(&lab, &name, "evil.example");
    stop.store(true, Ordering::Relaxed);
    assert!(traffic.join().unwrap() > 0);
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "blocklist", "--json"]));
    for i in 0..32 {
        let entry = format!("{{\"key\":\"n{i}.example\",\"value\":{}}}", i * 1000 + 7);
        assert!(dump.contains(&entry), "{entry} missing from {dump}");
    }
    assert_eq!(dump.matches("\"key\":").count(), 33, "{dump}");
    assert!(hits(&lab, &name, "evil.example") >= during && during > 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Replacing the program 20 times under a continuous stream of blocked ClientHellos.

#[test]
fn replacing_under_traffic_never_lets_a_blocked_hello_through() {
    if !require_kernel_or_skip("replacing_under_traffic_never_lets_a_blocked_hello_through") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("rpl");
    let src = lab.example_copy("sni_filter", "sni_filter", &name);
    // Attach the compiled object: each replacement then costs a load, not a compile.
    let obj = lab.dir.join(format!("{name}.o"));
    ok(&lab.luabpf(&["compile", src.to_str().unwrap(), "-o", obj.to_str().unwrap()]));
    let obj = obj.to_str().unwrap().to_string();
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), &obj]));
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "0"]));
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "kept.example", "77"]));

    // The receiver counts, behind XDP, the blocked hellos (must stay 0) and the allowed ones
    // (proof that the stream flows), until the end marker arrives.
    let receiver = hello_counter(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let frames = vec![hello_frame(&lab, "evil.example"), hello_frame(&lab, "good.example")];
    let traffic = sender(&lab, frames, stop.clone());
    wait_until("the stream", PATIENCE, || hits(&lab, &name, "evil.example") > 0);

    let mut last = hits(&lab, &name, "evil.example");
    let first_id = prog_id(&lab);
    for i in 0..20 {
        let out = ok(&lab.luabpf(&["attach", &lab.inner.clone(), &obj]));
        assert!(
            out.contains("replaced") && out.contains("maps kept: blocklist"),
            "{i}: {out}"
        );
        let now = hits(&lab, &name, "evil.example");
        assert!(now >= last, "replacement {i}: hits went from {last} to {now}");
        last = now;
    }
    assert_ne!(prog_id(&lab), first_id, "the link runs a new program");
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    send_frames(&lab, vec![end_of_stream(&lab)]);
    let (evil, good) = receiver.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!("replace under traffic: {sent} frames sent, {good} allowed received, {evil} blocked received");
    assert_eq!(evil, 0, "blocked hellos got through during the replacements");
    assert!(good > 0);
    assert!(hits(&lab, &name, "evil.example") > 0);
    assert_eq!(
        json_value(&lab, &name, "blocklist", "kept.example").as_deref(),
        Some("77")
    );
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));

    // The control: with the filter gone, the receiver does see blocked hellos.
    let receiver = hello_counter(&lab);
    send_frames(&lab, vec![hello_frame(&lab, "evil.example"), end_of_stream(&lab)]);
    assert_eq!(receiver.join().unwrap(), (1, 0));
}

/// Counts, on the inner end behind XDP, the frames carrying a hello for `evil.example` and
/// for `good.example`, until the end-of-stream frame arrives: `(evil, good)`.
fn hello_counter(lab: &Lab) -> JoinHandle<(u64, u64)> {
    let inner = lab.inner.clone();
    let rx = run_in(&lab.ns, move || PacketSocket::new(&inner));
    rx.set_timeout(PATIENCE);
    std::thread::spawn(move || {
        let (mut evil, mut good) = (0u64, 0u64);
        while let Some(frame) = rx.recv() {
            if contains(&frame, b"evil.example") {
                evil += 1;
            } else if contains(&frame, b"good.example") {
                good += 1;
            } else if contains(&frame, b"end-of-stream") {
                return (evil, good);
            }
        }
        panic!("no end marker within {PATIENCE:?} (evil {evil}, good {good})");
    })
}

fn end_of_stream(lab: &Lab) -> Vec<u8> {
    udp_packet(lab.outer_ip.octets(), lab.inner_ip.octets(), 9, 9, b"end-of-stream")
}

/// Sends `frames`, in order, from the peer namespace out of `outer`.
fn send_frames(lab: &Lab, frames: Vec<Vec<u8>>) {
    let outer = lab.outer.clone();
    run_in(&lab.peer, move || {
        let tx = PacketSocket::new(&outer);
        for f in &frames {
            tx.send(f).unwrap();
        }
    });
}

/// A tc filter dropping UDP to the ports in `blocked`, counting the drops per port.
const TC_PORT_FILTER: &str = r#"
local tc     = require "bpf.tc"
local map    = require "bpf.map"
local action = require "linux.tc"
local bo     = require "linux.byteorder"

local blocked = map.hash("blocked", { key = "I2", value = "I8", entries = 64 })

local function filter(ctx)
  local p = ctx:packet()
  if bo.ntoh16(p:getuint16(12)) ~= 0x0800 or p:getbyte(23) ~= 17 then return action.ACT_OK end
  local l4 = 14 + (p:getbyte(14) & 0x0f) * 4
  local port = bo.ntoh16(p:getuint16(l4 + 2))
  local drops = blocked[port]
  if drops then
    blocked[port] = drops + 1
    return action.ACT_SHOT
  end
  return action.ACT_OK
end

return tc.program(filter, { name = "NAME" })
"#;

#[test]
fn replacing_at_tc_under_traffic_never_lets_a_blocked_datagram_through() {
    if !require_kernel_or_skip("replacing_at_tc_under_traffic_never_lets_a_blocked_datagram_through") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("tcr");
    let src = lab.write_program(&name, &TC_PORT_FILTER.replace("NAME", &name));
    let obj = lab.dir.join(format!("{name}.o"));
    ok(&lab.luabpf(&["compile", src.to_str().unwrap(), "-o", obj.to_str().unwrap()]));
    let obj = obj.to_str().unwrap().to_string();
    let inner = lab.inner.clone();
    ok(&lab.luabpf(&["attach", &inner, &obj, "--tc", "ingress"]));
    ok(&lab.luabpf(&["map", "set", &name, "blocked", "7001", "0"]));
    let drops = |lab: &Lab| -> u64 { json_value(lab, &name, "blocked", "7001").unwrap().parse().unwrap() };

    // Datagrams to 7001 (blocked) and 7002 (allowed), paced, until `stop`; then one to 7003,
    // which arrives after everything sent before it has been delivered or dropped.
    let server = lab.inner_ip;
    let [blocked_sock, allowed_sock, end_sock] = run_in(&lab.ns, move || {
        [7001, 7002, 7003].map(|p| UdpSocket::bind((server, p)).unwrap())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (from, stop2) = (lab.outer_ip, stop.clone());
    let traffic = spawn_in(&lab.peer, move || {
        let s = UdpSocket::bind((from, 0)).unwrap();
        let mut sent = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            for port in [7001, 7002] {
                s.send_to(b"datagram", (server, port)).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        s.send_to(b"end", (server, 7003)).unwrap();
        sent
    });
    wait_until("the stream", PATIENCE, || drops(&lab) > 0);
    let mut last = drops(&lab);
    for i in 0..20 {
        let out = ok(&lab.luabpf(&["attach", &inner, &obj, "--tc", "ingress"]));
        assert!(
            out.contains("replaced") && out.contains("maps kept: blocked"),
            "{i}: {out}"
        );
        let now = drops(&lab);
        assert!(now >= last, "replacement {i}: drops went from {last} to {now}");
        last = now;
    }
    assert_eq!(tcx_programs(&lab, false), 1, "one program at tcx ingress");
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    end_sock.set_read_timeout(Some(PATIENCE)).unwrap();
    end_sock.recv(&mut [0u8; 8]).expect("the end marker arrives");
    blocked_sock.set_nonblocking(true).unwrap();
    allowed_sock.set_nonblocking(true).unwrap();
    assert!(
        blocked_sock.recv(&mut [0u8; 16]).is_err(),
        "a blocked datagram got through during the replacements"
    );
    assert!(allowed_sock.recv(&mut [0u8; 16]).is_ok(), "allowed datagrams arrive");
    assert!(drops(&lab) > 0 && sent > 0);
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));

    // The control: with the filter gone, a datagram to the blocked port arrives.
    run_in(&lab.peer, move || {
        UdpSocket::bind((from, 0))
            .unwrap()
            .send_to(b"after", (server, 7001))
            .unwrap()
    });
    blocked_sock.set_nonblocking(false).unwrap();
    blocked_sock.set_read_timeout(Some(PATIENCE)).unwrap();
    blocked_sock
        .recv(&mut [0u8; 16])
        .expect("a datagram to 7001 arrives once detached");
}

/// The id of the XDP program on the lab's inner interface.
fn prog_id(lab: &Lab) -> u32 {
    let link = lab.inner_link();
    let at = link
        .find("prog/xdp id ")
        .unwrap_or_else(|| panic!("no XDP program: {link}"));
    link[at + 12..].split_whitespace().next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 6. Error paths: a clear message, a non-zero exit, nothing left behind.

#[test]
fn without_privileges_every_command_is_refused_and_changes_nothing() {
    if !require_kernel_or_skip("without_privileges_every_command_is_refused_and_changes_nothing") {
        return;
    }
    let mut lab = Lab::new();
    let (name, _) = attach_sni(&mut lab, "auto");
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "5"]));
    let other = lab.unique("np");
    let file = lab.example_copy("counter", "counter", &other);
    let nobody = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.ns))
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                BIN,
            ])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run setpriv")
    };
    let out = nobody(&["attach", &lab.inner.clone(), file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs root, or CAP_BPF with CAP_NET_ADMIN"),
        "{}",
        stderr(&out)
    );
    assert!(!pins_of(&other));
    for args in [
        vec!["detach", name.as_str()],
        vec!["map", "set", &name, "blocklist", "evil.example", "0"],
        vec!["map", "del", &name, "blocklist", "evil.example"],
        vec!["map", "dump", &name, "blocklist"],
    ] {
        let out = nobody(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("cannot use bpf() here") && err.contains("needs root"),
            "{args:?}: {err}"
        );
    }
    assert!(lab.xdp_attached());
    assert_eq!(hits(&lab, &name, "evil.example"), 5);
}

/// An XDP program that reads the first packet byte without a bounds check, with line info
/// pointing into a Lua file, and one map (so that a map is pinned before the verifier refuses
/// the program).
fn unchecked_read_object(name: &str) -> Vec<u8> {
    let insns = vec![
        Insn::load(Size::W, R2, R1, 0), // r2 = ctx->data
        Insn::load(Size::B, R0, R2, 0), // no `data + 1 <= data_end` check
        Insn::exit(),
    ];
    let mut code = program(name, "xdp", insns, vec![]);
    for (loc, line) in code.locs.iter_mut().zip([2, 3, 4]) {
        *loc = SourceLoc { file: 0, line, col: 3 };
    }
    let mut obj = object(vec![code], vec![map("seen", MapKind::Hash, u32_le(), u32_le(), 16)]);
    obj.sources.push(SourceFile {
        name: "unchecked.lua".into(),
        text: "local function f(ctx)\n  local p = ctx:packet()\n  return p:getbyte(0)\nend\n".into(),
    });
    write_object(&obj)
}

#[test]
fn a_verifier_rejection_is_explained_and_leaves_nothing() {
    if !require_kernel_or_skip("a_verifier_rejection_is_explained_and_leaves_nothing") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("oob");
    lab.own(&name);
    let obj = lab.dir.join(format!("{name}.o"));
    std::fs::write(&obj, unchecked_read_object(&name)).unwrap();
    let out = lab.luabpf(&["attach", &lab.inner.clone(), obj.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("`{name}`")), "names the program: {err}");
    // The kernel's words for it: its log line or its summary, however they are rendered.
    assert!(
        err.contains("invalid access to packet") || err.contains("outside of the packet"),
        "gives the verifier's reason: {err}"
    );
    assert!(err.contains("unchecked.lua:3"), "points at the Lua line: {err}");
    assert!(!pins_of(&name), "the map pinned before the refusal is removed");
    assert!(!lab.xdp_attached());
}

#[test]
fn a_failed_attach_undoes_the_steps_before_it() {
    if !require_kernel_or_skip("a_failed_attach_undoes_the_steps_before_it") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("undo");
    let file = lab.example_copy("sni_filter", "sni_filter", &name);
    let file = file.to_str().unwrap().to_string();

    // The maps are created and pinned, then the link fails: native XDP on `lo`, which has
    // no driver support.
    let out = lab.luabpf(&["attach", "lo", &file, "--mode", "native"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot attach `{name}` at XDP (native mode) on lo")),
        "{}",
        stderr(&out)
    );
    assert!(!pins_of(&name), "pins left after a failed link");
    // The default mode falls back to generic XDP there.
    let out = ok(&lab.luabpf(&["attach", "lo", &file]));
    assert!(out.contains(&format!("attached `{name}` at xdp (skb) on lo")), "{out}");
    ok(&lab.luabpf(&["detach", &name]));

    // Another program already holds the interface's XDP slot (attached with iproute2).
    let foreign = lab.dir.join("foreign.o");
    ok(&lab.luabpf(&[
        "compile",
        &workspace().join("examples/counter.lua").to_string_lossy(),
        "-o",
        &foreign.to_string_lossy(),
    ]));
    lab.ip(&[
        "link",
        "set",
        "dev",
        &lab.inner.clone(),
        "xdpgeneric",
        "obj",
        foreign.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let foreign_id = prog_id(&lab);
    let out = lab.luabpf(&["attach", &lab.inner.clone(), &file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another XDP program is attached"),
        "{}",
        stderr(&out)
    );
    assert!(!pins_of(&name));
    assert_eq!(prog_id(&lab), foreign_id, "the other program is left alone");
    lab.ip(&["link", "set", "dev", &lab.inner.clone(), "xdpgeneric", "off"]);

    // A replacement whose map does not match the attached one: refused, the attachment, its
    // map contents and its pins are as they were.
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), &file]));
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "3"]));
    let id = prog_id(&lab);
    let changed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("key = \"c64\"", "key = \"c32\"");
    let changed_file = lab.dir.join("changed.lua");
    std::fs::write(&changed_file, changed).unwrap();
    let out = lab.luabpf(&["attach", &lab.inner.clone(), changed_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("map `blocklist`") && stderr(&out).contains("does not match"),
        "{}",
        stderr(&out)
    );
    assert_eq!(prog_id(&lab), id);
    assert_eq!(hits(&lab, &name, "evil.example"), 3);
    let pins: Vec<String> = pin_files(&Path::new("/sys/fs/bpf/luabpf").join(&name));
    assert_eq!(pins, ["link", "maps", "maps/blocklist", "prog"]);
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}

/// The files and directories under `dir`, relative, sorted.
fn pin_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Static tables, concurrent attaches.

/// An XDP filter dropping UDP to the ports of a static table (a hash map filled at load).
const STATIC_PORTS: &str = r#"
local xdp    = require "bpf.xdp"
local action = require "linux.xdp"
local bo     = require "linux.byteorder"

local BLOCKED_PORTS = { [7001] = 1, [7003] = 1 }

local function filter(ctx)
  local p = ctx:packet()
  if bo.ntoh16(p:getuint16(12)) ~= 0x0800 or p:getbyte(23) ~= 17 then return action.PASS end
  local l4 = 14 + (p:getbyte(14) & 0x0f) * 4
  if BLOCKED_PORTS[bo.ntoh16(p:getuint16(l4 + 2))] then return action.DROP end
  return action.PASS
end

return xdp.program(filter, { name = "NAME" })
"#;

/// Which of `ports` a UDP datagram from the peer reaches. One datagram goes to each port,
/// then one to a probe port nothing blocks; once the probe has arrived, every datagram sent
/// before it has been either delivered or dropped (one veth queue keeps their order).
fn udp_reaches(lab: &Lab, ports: &[u16]) -> Vec<u16> {
    let server = lab.inner_ip;
    let ports = ports.to_vec();
    let socks = {
        let ports = ports.clone();
        run_in(&lab.ns, move || {
            let socks: Vec<UdpSocket> = ports.iter().map(|p| UdpSocket::bind((server, *p)).unwrap()).collect();
            (socks, UdpSocket::bind((server, 7999)).unwrap())
        })
    };
    let (from, targets) = (lab.outer_ip, ports.clone());
    run_in(&lab.peer, move || {
        let s = UdpSocket::bind((from, 0)).unwrap();
        for p in targets.iter().chain([7999].iter()) {
            s.send_to(b"probe", (server, *p)).unwrap();
        }
    });
    socks.1.set_read_timeout(Some(PATIENCE)).unwrap();
    socks.1.recv(&mut [0u8; 16]).expect("the probe datagram arrives");
    ports
        .iter()
        .zip(&socks.0)
        .filter(|(_, s)| {
            s.set_nonblocking(true).unwrap();
            s.recv(&mut [0u8; 16]).is_ok()
        })
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn static_tables_are_filled_on_first_attach_and_kept_on_replace() {
    if !require_kernel_or_skip("static_tables_are_filled_on_first_attach_and_kept_on_replace") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("stt");
    let file = lab.write_program(&name, &STATIC_PORTS.replace("NAME", &name));
    let file = file.to_str().unwrap().to_string();
    let table = |lab: &Lab| ok(&lab.luabpf(&["map", "dump", &name, "BLOCKED_PORTS", "--json"]));
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), &file]));
    assert_eq!(
        table(&lab).trim().len(),
        r#"[{"key":7001,"value":1},{"key":7003,"value":1}]"#.len()
    );
    assert!(is_json_entry(&table(&lab), "7001") && is_json_entry(&table(&lab), "7003"));
    assert_eq!(udp_reaches(&lab, &[7001, 7002, 7003]), [7002]);

    // Edited at run time, then replaced: the edits stay, the object's contents do not return.
    ok(&lab.luabpf(&["map", "del", &name, "BLOCKED_PORTS", "7001"]));
    ok(&lab.luabpf(&["map", "set", &name, "BLOCKED_PORTS", "7002", "1"]));
    let out = ok(&lab.luabpf(&["attach", &lab.inner.clone(), &file]));
    assert!(
        out.contains("replaced") && out.contains("maps kept: BLOCKED_PORTS"),
        "{out}"
    );
    let after = table(&lab);
    assert!(
        !is_json_entry(&after, "7001") && is_json_entry(&after, "7002"),
        "{after}"
    );
    assert_eq!(udp_reaches(&lab, &[7001, 7002, 7003]), [7001]);

    // A fresh attach starts from the object again.
    ok(&lab.luabpf(&["detach", &name]));
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), &file]));
    let fresh = table(&lab);
    assert!(
        is_json_entry(&fresh, "7001") && !is_json_entry(&fresh, "7002"),
        "{fresh}"
    );
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}

#[test]
fn concurrent_attaches_of_one_name_leave_one_consistent_attachment() {
    if !require_kernel_or_skip("concurrent_attaches_of_one_name_leave_one_consistent_attachment") {
        return;
    }
    let mut lab = Lab::new();
    // (example, attach options, the pins an attachment has)
    let cases: [(&str, &[&str], &[&str]); 2] = [
        ("counter", &[], &["link", "maps", "maps/counts", "prog"]),
        (
            "tc_mark",
            &["--tc", "egress"],
            &["link", "maps", "maps/marked", "maps/marks", "prog"],
        ),
    ];
    for (example, options, pins) in cases {
        let name = lab.unique(&example[..3]);
        let src = lab.example_copy(example, example, &name);
        let obj = lab.dir.join(format!("{name}.o"));
        let obj = obj.to_str().unwrap();
        ok(&lab.luabpf(&["compile", src.to_str().unwrap(), "-o", obj]));
        let inner = lab.inner.clone();
        let args: Vec<&str> = ["attach", &inner, obj].iter().chain(options).copied().collect();
        let runs: Vec<_> = (0..6)
            .map(|_| {
                lab.luabpf_cmd(&args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<String> = runs.into_iter().map(|c| ok(&c.wait_with_output().unwrap())).collect();
        // One attached, the others replaced it in turn.
        let first = outs.iter().filter(|o| o.starts_with("attached")).count();
        let replaced = outs.iter().filter(|o| o.starts_with("replaced")).count();
        assert_eq!((first, replaced), (1, 5), "{example}: {outs:?}");
        assert_eq!(
            pin_files(&Path::new("/sys/fs/bpf/luabpf").join(&name)),
            pins,
            "{example}"
        );
        if options.is_empty() {
            assert!(lab.xdp_attached());
        } else {
            // tcx allows several programs on one hook: there must be exactly one.
            assert_eq!(tcx_programs(&lab, true), 1, "{example}");
        }
        ok(&lab.luabpf(&["detach", &name]));
        assert!(!pins_of(&name));
    }
}

/// How many programs are attached at tcx egress (or ingress) of the lab's inner end
/// (BPF_PROG_QUERY).
fn tcx_programs(lab: &Lab, egress: bool) -> u32 {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    let inner = std::ffi::CString::new(lab.inner.clone()).unwrap();
    run_in(&lab.ns, move || {
        let mut attr = QueryAttr {
            // SAFETY: `inner` is NUL-terminated.
            target_ifindex: unsafe { libc::if_nametoindex(inner.as_ptr()) },
            attach_type: if egress { BPF_TCX_EGRESS } else { BPF_TCX_INGRESS },
            ..QueryAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix; no output arrays are given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut attr as *mut QueryAttr,
                std::mem::size_of::<QueryAttr>(),
            )
        };
        assert_eq!(rc, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
        attr.prog_cnt
    })
}

#[test]
fn a_failure_after_the_program_is_pinned_undoes_the_pins_and_the_link() {
    if !require_kernel_or_skip("a_failure_after_the_program_is_pinned_undoes_the_pins_and_the_link") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("late");
    let file = lab.example_copy("counter", "counter", &name);
    // The state directory cannot be created: a dangling symlink holds its name. attach gets
    // as far as the link and the program pin before writing the state, and fails there.
    let state = Path::new("/run/luabpf").join(&name);
    std::fs::create_dir_all("/run/luabpf").unwrap();
    std::os::unix::fs::symlink(lab.dir.join("nowhere"), &state).unwrap();
    let out = lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&state);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot write {}", state.display())),
        "{}",
        stderr(&out)
    );
    assert!(!pins_of(&name), "pins left behind");
    assert!(!lab.xdp_attached(), "the link outlived the failed attach");
    // Nothing is in the way of the next attempt.
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap()]));
    ok(&lab.luabpf(&["detach", &name]));
}

#[test]
fn an_attachment_whose_interface_is_gone_is_reported_and_detaches() {
    if !require_kernel_or_skip("an_attachment_whose_interface_is_gone_is_reported_and_detaches") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("gone");
    let file = lab.example_copy("counter", "counter", &name);
    let file = file.to_str().unwrap().to_string();
    let (dev, peer) = (lab.unique("g"), lab.unique("h"));
    let make = |lab: &Lab| {
        lab.ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
        lab.ip(&["link", "set", &dev, "up"]);
    };
    make(&lab);
    ok(&lab.luabpf(&["attach", &dev, &file]));
    ok(&lab.luabpf(&["map", "set", &name, "counts", "1", "5"]));
    lab.ip(&["link", "del", &dev]);
    make(&lab);
    // Same interface name, a new interface: not silently re-attached; the maps still answer.
    let out = lab.luabpf(&["attach", &dev, &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{dev} was re-created since `{name}` was attached")),
        "{}",
        stderr(&out)
    );
    assert!(!lab.ip(&["link", "show", &dev]).contains("xdp"));
    assert!(ok(&lab.luabpf(&["map", "get", &name, "counts", "1"])).contains("cpu0=5"));
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
    ok(&lab.luabpf(&["attach", &dev, &file]));
    ok(&lab.luabpf(&["detach", &name]));
}
