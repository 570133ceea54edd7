//! Every example in examples/ as a user runs it: through the real kernel verifier, with the
//! right verdicts under BPF_PROG_TEST_RUN on realistic, truncated and mutated packets; loaded
//! by `bpftool prog load`; attached with `ip link set ... xdpgeneric obj` in a network namespace
//! this test creates (and always deletes); and its annotated assembly pinned by an insta
//! snapshot in snapshots/.
//!
//! Kernel tests skip loudly when bpf() is unavailable, unless LUABPF_REQUIRE_KERNEL=1.
//!
//! The verifier's processed-instruction count of each example is printed (run with
//! `--nocapture` to see it) and pinned in tests/verifier_counts.txt: a compiler change that
//! makes an example more than 10% more expensive to verify fails here until the pin is
//! updated on purpose (`LUABPF_UPDATE_VERIFIER_COUNTS=1`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use luabpf_tests::harness::*;
use luabpf_tests::packets::*;

/// The examples this file tests; `every_example_is_tested` keeps it complete.
const EXAMPLES: [&str; 5] = ["cookie_guard", "counter", "sni_filter", "tc_mark", "ua_filter"];

#[test]
fn every_example_is_tested() {
    assert_eq!(
        example_names(),
        EXAMPLES,
        "examples/ changed: give each example behaviour tests, a snapshot and tool tests here"
    );
}

// ---------------------------------------------------------------------------------------------
// Per-example: verifier cost, snapshot, bpftool, iproute2.

/// The pinned verifier costs: `tests/verifier_counts.txt`, one `example processed` line each.
const VERIFIER_COUNTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/verifier_counts.txt");

/// How far a count may grow above its pin before the test fails: 10%.
const VERIFIER_SLACK_PERCENT: u64 = 10;

/// Serialises `LUABPF_UPDATE_VERIFIER_COUNTS=1` rewrites of the pin file (tests run as threads).
static PIN_FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pinned_counts(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, n) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("{VERIFIER_COUNTS}: bad line `{l}`"));
            let n = n
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{VERIFIER_COUNTS}: bad count in `{l}`"));
            (name.to_string(), n)
        })
        .collect()
}

/// Checks `processed` against the pinned count of `example`, or (with
/// `LUABPF_UPDATE_VERIFIER_COUNTS=1`) pins it.
fn check_verifier_count(example: &str, processed: u32) {
    let _guard = PIN_FILE.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(VERIFIER_COUNTS).unwrap_or_default();
    let mut pins = pinned_counts(&text);
    if std::env::var("LUABPF_UPDATE_VERIFIER_COUNTS").is_ok_and(|v| v == "1") {
        pins.retain(|(n, _)| n != example);
        pins.push((example.to_string(), processed));
        pins.sort();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let body: String = pins.iter().map(|(n, c)| format!("{n} {c}\n")).collect();
        std::fs::write(VERIFIER_COUNTS, header + &body).expect("write the verifier counts");
        eprintln!("{example}: pinned verifier processed count {processed}");
        return;
    }
    let pinned = pins
        .iter()
        .find(|(n, _)| n == example)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("{example} has no pinned verifier count in {VERIFIER_COUNTS}; run this test with LUABPF_UPDATE_VERIFIER_COUNTS=1 to pin it"));
    let limit = u64::from(pinned) * (100 + VERIFIER_SLACK_PERCENT) / 100;
    assert!(
        u64::from(processed) <= limit,
        "{example}: the verifier processed {processed} instructions, more than {VERIFIER_SLACK_PERCENT}% above \
         the pinned {pinned} (tests/verifier_counts.txt). If the growth is intended, re-pin with \
         `LUABPF_UPDATE_VERIFIER_COUNTS=1 cargo test --release -p luabpf-tests --test examples verifies` \
         and commit the file with the reason."
    );
    if u64::from(processed) * 100 < u64::from(pinned) * (100 - VERIFIER_SLACK_PERCENT) {
        eprintln!("{example}: processed {processed}, well below the pinned {pinned}: consider re-pinning");
    }
}

#[test]
fn verifier_count_pins_parse() {
    let pins = pinned_counts(&std::fs::read_to_string(VERIFIER_COUNTS).expect("tests/verifier_counts.txt"));
    let names: Vec<&str> = pins.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, EXAMPLES, "one pinned count per example, sorted");
}

/// The program each example defines.
fn program_of(example: &str) -> &'static str {
    match example {
        "counter" => "counter",
        "tc_mark" => "tc_mark",
        "sni_filter" => "sni_filter",
        "ua_filter" => "ua_filter",
        "cookie_guard" => "cookie_guard",
        other => panic!("unknown example {other}"),
    }
}

fn verifies_within_pinned_cost(example: &str) {
    let Some(h) = Harness::example(example) else {
        return;
    };
    assert_eq!(h.program, program_of(example));
    assert_eq!(h.loaded.program_names(), [program_of(example)]);
    let processed = h.verified_insns().expect("the kernel reports verified_insns (5.16+)");
    eprintln!(
        "{example}: {} instructions, verifier processed {processed}",
        h.object_insns()
    );
    check_verifier_count(example, processed);
}

fn asm_snapshot(example: &str) {
    let asm = example_asm(example);
    assert!(
        asm.contains(&format!("; examples/{example}.lua:")),
        "annotations name the source file:\n{asm}"
    );
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        description => format!("luabpf compile examples/{example}.lua --emit asm"),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("{example}.asm"), asm);
    });
}

/// `true` if `tool` runs; otherwise skips loudly (a failure under LUABPF_REQUIRE_KERNEL=1,
/// where the test command installs the tools).
fn tool_or_skip(tool: &str) -> bool {
    if have_tool(tool) {
        return true;
    }
    let msg = format!("{}: `{tool}` is not installed", test_name());
    if std::env::var("LUABPF_REQUIRE_KERNEL").is_ok_and(|v| v == "1") {
        panic!("{msg} (LUABPF_REQUIRE_KERNEL=1 forbids skipping)");
    }
    eprintln!("\nSKIPPED: {msg}");
    false
}

/// Writes an example's object into a temporary directory.
fn object_file(example: &str, dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join(&format!("{example}.o"));
    std::fs::write(&path, compile_example(example).elf).expect("write the object");
    path
}

/// The program type bpftool loads an example as, and the type `bpftool prog show` names.
fn bpftool_types(example: &str) -> (&'static str, &'static str) {
    match example {
        "tc_mark" => ("classifier", "sched_cls"),
        _ => ("xdp", "xdp"),
    }
}

fn loads_with_bpftool(example: &str) {
    if !kernel_or_skip() || !tool_or_skip("bpftool") {
        return;
    }
    let dir = TempDir::new(example);
    let obj = object_file(example, &dir);
    let pin = BpfPin::new(example);
    run_cmd(
        "bpftool",
        &[
            "prog",
            "load",
            obj.to_str().unwrap(),
            pin.as_str(),
            "type",
            bpftool_types(example).0,
        ],
    );
    let show = run_cmd("bpftool", &["prog", "show", "pinned", pin.as_str()]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!(" {} ", bpftool_types(example).1))
            && show.contains(&format!("name {}", program_of(example))),
        "bpftool prog show: {show}"
    );
    let path = pin.path.clone();
    drop(pin);
    assert!(!path.exists(), "the pin {} was removed", path.display());
}

/// The id of the XDP program attached to `lo` in `ns`, from `ip -d link show`.
fn attached_prog_id(ns: &NetNs) -> Option<u32> {
    let out = ns.ip(&["-d", "link", "show", "dev", "lo"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Attaches an example's object to `lo` in a fresh namespace with iproute2.
fn attach_with_ip(example: &str, ns: &NetNs, dir: &TempDir) -> u32 {
    let obj = object_file(example, dir);
    ns.ip(&[
        "link",
        "set",
        "dev",
        "lo",
        "xdpgeneric",
        "obj",
        obj.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    let out = ns.ip(&["-d", "link", "show", "dev", "lo"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("xdpgeneric") && text.contains(&format!("name {}", program_of(example))),
        "ip link show: {text}"
    );
    attached_prog_id(ns).unwrap_or_else(|| panic!("no prog/xdp id in: {text}"))
}

fn attaches_with_ip(example: &str) {
    if !kernel_or_skip() || !tool_or_skip("ip") {
        return;
    }
    let dir = TempDir::new(example);
    let ns = NetNs::new(example);
    attach_with_ip(example, &ns, &dir);
    ns.ip(&["link", "set", "dev", "lo", "xdpgeneric", "off"]);
    assert_eq!(attached_prog_id(&ns), None, "detached");
    let path = ns.path();
    drop(ns);
    assert!(!path.exists(), "the namespace {} was deleted", path.display());
}

macro_rules! per_example {
    ($($example:ident),* $(,)?) => {$(
        mod $example {
            #[test]
            fn verifies_within_pinned_cost() {
                super::verifies_within_pinned_cost(stringify!($example));
            }
            #[test]
            fn asm_snapshot() {
                super::asm_snapshot(stringify!($example));
            }
            #[test]
            fn loads_with_bpftool() {
                super::loads_with_bpftool(stringify!($example));
            }
            #[test]
            fn attaches_with_ip_in_a_namespace() {
                super::attaches_with_ip(stringify!($example));
            }
        }
    )*};
}

per_example!(cookie_guard, counter, sni_filter, ua_filter);

/// The tc example: the same checks, attached with `tc` (clsact) instead of `ip link`.
mod tc_mark {
    #[test]
    fn verifies_within_pinned_cost() {
        super::verifies_within_pinned_cost("tc_mark");
    }
    #[test]
    fn asm_snapshot() {
        super::asm_snapshot("tc_mark");
    }
    #[test]
    fn loads_with_bpftool() {
        super::loads_with_bpftool("tc_mark");
    }
    #[test]
    fn attaches_with_tc_in_a_namespace() {
        super::attaches_with_tc("tc_mark");
    }
}

/// Attaches an example's tc program at `lo` egress (clsact, direct action) in a fresh
/// namespace with iproute2's `tc`, then removes it.
fn attaches_with_tc(example: &str) {
    if !kernel_or_skip() || !tool_or_skip("tc") {
        return;
    }
    let dir = TempDir::new(example);
    let obj = object_file(example, &dir);
    let ns = NetNs::new(example);
    let tc = |args: &[&str]| {
        let mut all = vec!["-n", ns.name.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run_cmd("tc", &all).stdout).into_owned()
    };
    tc(&["qdisc", "add", "dev", "lo", "clsact"]);
    tc(&[
        "filter",
        "add",
        "dev",
        "lo",
        "egress",
        "bpf",
        "da",
        "obj",
        obj.to_str().unwrap(),
        "sec",
        "classifier",
    ]);
    let shown = tc(&["filter", "show", "dev", "lo", "egress"]);
    assert!(
        shown.contains(&format!("{}", program_of(example))) && shown.contains("direct-action"),
        "tc filter show: {shown}"
    );
    tc(&["qdisc", "del", "dev", "lo", "clsact"]);
    assert_eq!(tc(&["filter", "show", "dev", "lo", "egress"]).trim(), "", "detached");
}

// ---------------------------------------------------------------------------------------------
// Shared checks.

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];

/// Runs every prefix of `packet` from 14 bytes (an Ethernet header: the kernel's minimum) to
/// the whole packet; each must run (no kernel error) and return what `expect(len)` says.
/// `before` runs before each packet (to reset state the previous one changed).
fn check_truncations(
    h: &Harness,
    packet: &[u8],
    mut before: impl FnMut(&Harness),
    mut expect: impl FnMut(usize) -> u32,
) {
    for len in ETH_HLEN..=packet.len() {
        before(h);
        let prefix = &packet[..len];
        let r = h
            .try_run(prefix)
            .unwrap_or_else(|e| panic!("{}: the {len}-byte prefix: test run failed: {e}", h.program));
        assert_eq!(
            r.retval,
            expect(len),
            "{}: verdict for the {len}-byte prefix of a {}-byte packet",
            h.program,
            packet.len()
        );
    }
}

const ETH_HLEN: usize = 14;

/// `n` seeded random mutations of `packet` (1 to 4 bytes changed, half of them also
/// truncated); every one must run and give PASS or DROP. Returns the verdicts.
fn check_mutations(h: &Harness, packet: &[u8], seed: u64, n: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut verdicts = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = packet.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(p.len());
            p[at] = rng.next() as u8;
        }
        if rng.below(2) == 0 {
            p.truncate(ETH_HLEN + rng.below(packet.len() - ETH_HLEN + 1));
        }
        let r = h.try_run(&p).unwrap_or_else(|e| {
            panic!(
                "{}: mutation #{i} (seed {seed}): test run failed: {e}\n{}",
                h.program,
                hex(&p)
            )
        });
        assert!(
            r.retval == XDP_PASS || r.retval == XDP_DROP,
            "{}: mutation #{i} (seed {seed}): verdict {}\n{}",
            h.program,
            r.retval,
            hex(&p)
        );
        verdicts.push(r.retval);
    }
    verdicts
}

/// Where `needle` ends in `haystack` (the first occurrence).
fn end_of(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in the packet", String::from_utf8_lossy(needle)))
        + needle.len()
}

fn arp_frame() -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    ethernet(0x0806, &arp)
}

/// The key of a `u32` map keyed by an IPv4 address read from the packet with `getuint32`:
/// the address's 4 network-order bytes (a little-endian u32 of them, as the program sees it).
fn ip_key(ip: [u8; 4]) -> Vec<u8> {
    u32::from_le_bytes(ip).to_le_bytes().to_vec()
}

// ---------------------------------------------------------------------------------------------
// sni_filter: TLS ClientHello SNI blocklist.

const EVIL: &str = "evil.example";

/// sni_filter loaded, with `evil.example` in its blocklist (count 0).
fn sni_filter() -> Option<Harness> {
    let h = Harness::example("sni_filter")?;
    h.set("blocklist", &cstr(EVIL, 64), &0u64.to_le_bytes());
    Some(h)
}

fn hits(h: &Harness, name: &str) -> Option<u64> {
    h.get_u64("blocklist", &cstr(name, 64))
}

#[test]
fn sni_filter_drops_a_blocked_name_and_counts_it() {
    let Some(h) = sni_filter() else { return };
    assert_eq!(h.run(&tls_frame(EVIL)), XDP_DROP);
    assert_eq!(hits(&h, EVIL), Some(1));
    assert_eq!(h.run_repeat(&tls_frame(EVIL), 5), XDP_DROP);
    assert_eq!(hits(&h, EVIL), Some(6), "each run counts");
    assert_eq!(h.run(&tls_frame("good.example")), XDP_PASS);
    assert_eq!(h.keys("blocklist").len(), 1, "the program never adds names");
    assert_eq!(hits(&h, EVIL), Some(6));
    // Removing the name from user space unblocks it.
    assert!(h.delete("blocklist", &cstr(EVIL, 64)));
    assert_eq!(h.run(&tls_frame(EVIL)), XDP_PASS);
}

#[test]
fn sni_filter_matches_whole_names_only() {
    let Some(h) = sni_filter() else { return };
    for name in [
        "good.example",
        "evil.example.com",
        "vil.example",
        "evil.exampl",
        "EVIL.example",
        "xevil.example",
    ] {
        assert_eq!(h.run(&tls_frame(name)), XDP_PASS, "{name}");
    }
    // A 64-byte name fills the c64 key exactly and is found.
    let long = "a".repeat(51) + ".long.example"; // 64 bytes
    assert_eq!(long.len(), 64);
    h.set("blocklist", &cstr(&long, 64), &0u64.to_le_bytes());
    assert_eq!(h.run(&tls_frame(&long)), XDP_DROP);
    // A 65-byte name is never found, not even under its first 64 bytes.
    let longer = format!("{long}x");
    assert_eq!(h.run(&tls_frame(&longer)), XDP_PASS);
    assert_eq!(hits(&h, &long), Some(1));
}

#[test]
fn sni_filter_walks_up_to_32_extensions() {
    let Some(h) = sni_filter() else { return };
    let frame = |n_ext, pos| tcp_packet(CLIENT, SERVER, 40000, 443, &[], &client_hello(EVIL, n_ext, pos));
    assert_eq!(h.run(&frame(12, 0)), XDP_DROP, "first extension");
    assert_eq!(h.run(&frame(12, 11)), XDP_DROP, "last of 12");
    assert_eq!(h.run(&frame(32, 31)), XDP_DROP, "32nd extension");
    assert_eq!(h.run(&frame(33, 32)), XDP_PASS, "33rd extension: beyond MAX_EXTENSIONS");
    assert_eq!(h.run(&frame(12, 12)), XDP_PASS, "no SNI extension");
    assert_eq!(hits(&h, EVIL), Some(3));
}

#[test]
fn sni_filter_passes_what_is_not_a_client_hello() {
    let Some(h) = sni_filter() else { return };
    let hello = client_hello(EVIL, 12, 5);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP over TCP", http_frame(CLIENT, "curl/8.0", None)),
        ("TCP without payload", tcp_packet(CLIENT, SERVER, 40000, 443, &[], &[])),
        ("a ClientHello over UDP", udp_packet(CLIENT, SERVER, 40000, 443, &hello)),
        ("IPv6", ipv6_frame()),
        ("ARP", arp_frame()),
        ("an Ethernet header alone", ethernet(0x0800, &[])),
        ("ICMP", ipv4_packet(CLIENT, SERVER, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1])),
        ("TLS application data", {
            let mut rec = hello.clone();
            rec[0] = 23;
            tcp_packet(CLIENT, SERVER, 40000, 443, &[], &rec)
        }),
        ("a ServerHello", {
            let mut rec = hello.clone();
            rec[5] = 2;
            tcp_packet(CLIENT, SERVER, 40000, 443, &[], &rec)
        }),
    ];
    for (what, packet) in &cases {
        assert_eq!(h.run(packet), XDP_PASS, "{what}");
    }
    assert_eq!(hits(&h, EVIL), Some(0));
}

#[test]
fn sni_filter_finds_the_name_behind_ip_options() {
    let Some(h) = sni_filter() else { return };
    let hello = client_hello(EVIL, 12, 5);
    for options in [vec![1, 1, 1, 0], vec![1; 8], {
        let mut o = vec![1u8; 39];
        o.push(0);
        o
    }] {
        let p = tcp_packet(CLIENT, SERVER, 40000, 443, &options, &hello);
        assert_eq!(h.run(&p), XDP_DROP, "{} bytes of IP options", options.len());
        let good = tcp_packet(
            CLIENT,
            SERVER,
            40000,
            443,
            &options,
            &client_hello("good.example", 12, 5),
        );
        assert_eq!(h.run(&good), XDP_PASS, "{} bytes of IP options", options.len());
    }
    assert_eq!(hits(&h, EVIL), Some(3));
}

#[test]
fn sni_filter_every_truncation_passes_or_drops() {
    let Some(h) = sni_filter() else { return };
    let packet = tls_frame(EVIL);
    // The program reads nothing after the name: a prefix that holds the whole name is
    // dropped; a shorter one hits an out-of-bounds read and takes the default verdict, PASS.
    let name_end = end_of(&packet, EVIL.as_bytes());
    let mut drops = 0;
    check_truncations(
        &h,
        &packet,
        |_| {},
        |len| {
            if len >= name_end {
                drops += 1;
                XDP_DROP
            } else {
                XDP_PASS
            }
        },
    );
    assert_eq!(h.run(&packet), XDP_DROP);
    assert_eq!(hits(&h, EVIL), Some(drops + 1), "only the drops counted");
}

#[test]
fn sni_filter_survives_random_mutations() {
    let Some(h) = sni_filter() else { return };
    let packet = tls_frame(EVIL);
    let name_end = end_of(&packet, EVIL.as_bytes());
    let verdicts = check_mutations(&h, &packet, 0x5eed_0001, 400);
    assert!(
        verdicts.contains(&XDP_DROP) && verdicts.contains(&XDP_PASS),
        "{verdicts:?}"
    );
    // Bytes the program never reads (MAC addresses, after the name) do not change the verdict.
    let mut rng = Rng::new(7);
    for _ in 0..100 {
        let mut p = packet.clone();
        let at = if rng.below(2) == 0 {
            rng.below(12)
        } else {
            name_end + rng.below(p.len() - name_end)
        };
        p[at] ^= 1 + rng.below(255) as u8;
        assert_eq!(h.run(&p), XDP_DROP, "byte {at} changed");
    }
}

// ---------------------------------------------------------------------------------------------
// counter: packets per IP protocol in a per-CPU array.

fn counts(h: &Harness) -> Vec<u64> {
    (0u32..256)
        .map(|k| h.percpu_sum_u64("counts", &k.to_le_bytes()))
        .collect()
}

#[test]
fn counter_counts_packets_per_protocol() {
    let Some(h) = Harness::example("counter") else {
        return;
    };
    assert_eq!(counts(&h), vec![0; 256], "starts empty");
    let tcp = tls_frame("a.example");
    let udp = udp_packet(CLIENT, SERVER, 5353, 53, b"query");
    let icmp = ipv4_packet(CLIENT, SERVER, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1]);
    for _ in 0..5 {
        assert_eq!(h.run(&tcp), XDP_PASS);
    }
    assert_eq!(h.run_repeat(&tcp, 7), XDP_PASS);
    for _ in 0..3 {
        assert_eq!(h.run(&udp), XDP_PASS);
        assert_eq!(h.run(&ipv6_frame()), XDP_PASS);
    }
    assert_eq!(h.run(&icmp), XDP_PASS);
    assert_eq!(h.run(&arp_frame()), XDP_PASS);
    // A 14-byte IPv6 frame is not IPv4: counted under 0 without reading further.
    assert_eq!(h.run(&ethernet(0x86dd, &[])), XDP_PASS);

    let mut expected = vec![0u64; 256];
    expected[6] = 12;
    expected[17] = 3;
    expected[1] = 1;
    expected[0] = 3 + 1 + 1;
    assert_eq!(counts(&h), expected);
}

#[test]
fn counter_truncated_ipv4_takes_the_default_verdict_uncounted() {
    let Some(h) = Harness::example("counter") else {
        return;
    };
    let udp = udp_packet(CLIENT, SERVER, 5353, 53, b"query");
    // The protocol byte is at 23: a shorter IPv4 frame is an out-of-bounds read, which takes
    // the default verdict (PASS) before anything is counted.
    check_truncations(&h, &udp[..24], |_| {}, |_| XDP_PASS);
    let mut expected = vec![0u64; 256];
    expected[17] = 1; // the 24-byte prefix holds the protocol byte
    assert_eq!(counts(&h), expected);
}

// ---------------------------------------------------------------------------------------------
// ua_filter: HTTP User-Agent blocklist.

const EVIL_AGENT: &str = "EvilBot/1.0";

fn ua_filter() -> Option<Harness> {
    let h = Harness::example("ua_filter")?;
    h.set("blocked_agents", &cstr(EVIL_AGENT, 64), &0u64.to_le_bytes());
    Some(h)
}

fn agent_hits(h: &Harness, agent: &str) -> Option<u64> {
    h.get_u64("blocked_agents", &cstr(agent, 64))
}

#[test]
fn ua_filter_drops_a_blocked_agent() {
    let Some(h) = ua_filter() else { return };
    assert_eq!(h.run(&http_frame(CLIENT, EVIL_AGENT, None)), XDP_DROP);
    assert_eq!(h.run(&http_frame(CLIENT, EVIL_AGENT, Some("x=1"))), XDP_DROP);
    assert_eq!(agent_hits(&h, EVIL_AGENT), Some(2));
    for agent in [
        "Mozilla/5.0 (X11; Linux x86_64)",
        "EvilBot/1.0 (compatible)",
        "EvilBot/1",
        "evilbot/1.0",
        "curl/8.0",
    ] {
        assert_eq!(h.run(&http_frame(CLIENT, agent, None)), XDP_PASS, "{agent}");
    }
    assert_eq!(h.keys("blocked_agents").len(), 1, "the program never adds agents");
    assert_eq!(agent_hits(&h, EVIL_AGENT), Some(2));
}

#[test]
fn ua_filter_passes_what_is_not_an_http_request() {
    let Some(h) = ua_filter() else { return };
    let request = http_request(EVIL_AGENT, None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TLS", tls_frame("evil.example")),
        ("the request over UDP", udp_packet(CLIENT, SERVER, 40000, 80, &request)),
        ("IPv6", ipv6_frame()),
        ("ARP", arp_frame()),
        ("TCP without payload", tcp_packet(CLIENT, SERVER, 40000, 80, &[], &[])),
        ("an Ethernet header alone", ethernet(0x0800, &[])),
    ];
    for (what, packet) in &cases {
        assert_eq!(h.run(packet), XDP_PASS, "{what}");
    }
    assert_eq!(agent_hits(&h, EVIL_AGENT), Some(0));
}

#[test]
fn ua_filter_every_truncation_passes_or_drops() {
    let Some(h) = ua_filter() else { return };
    let packet = http_frame(CLIENT, EVIL_AGENT, None);
    // The value runs to the next "\r" or the end of the packet: a prefix holding the whole
    // agent is dropped, a shorter one is a different agent (or no header at all) and passes.
    let agent_end = end_of(&packet, EVIL_AGENT.as_bytes());
    check_truncations(
        &h,
        &packet,
        |_| {},
        |len| if len >= agent_end { XDP_DROP } else { XDP_PASS },
    );
}

#[test]
fn ua_filter_survives_random_mutations() {
    let Some(h) = ua_filter() else { return };
    let packet = http_frame(CLIENT, EVIL_AGENT, None);
    let verdicts = check_mutations(&h, &packet, 0x5eed_0002, 300);
    assert!(
        verdicts.contains(&XDP_DROP) && verdicts.contains(&XDP_PASS),
        "{verdicts:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// cookie_guard: requests to port 80 must carry the client's cookie.

const COOKIE: &str = "s3cr3t";

fn cookie_guard() -> Option<Harness> {
    Harness::example("cookie_guard")
}

fn set_cookie(h: &Harness, ip: [u8; 4], cookie: &str) {
    h.set("cookies", &ip_key(ip), &cstr(cookie, 32));
}

fn is_blocked(h: &Harness, ip: [u8; 4]) -> bool {
    h.get("blocked", &ip_key(ip)).is_some()
}

fn ip(last: u8) -> [u8; 4] {
    [10, 0, 0, last]
}

#[test]
fn cookie_guard_passes_the_right_cookie() {
    let Some(h) = cookie_guard() else { return };
    set_cookie(&h, CLIENT, COOKIE);
    assert_eq!(h.run(&http_frame(CLIENT, "Mozilla/5.0", Some(COOKIE))), XDP_PASS);
    // The value ends at ';' (further cookies) as well as at the end of the line.
    assert_eq!(
        h.run(&http_frame(CLIENT, "Mozilla/5.0", Some("s3cr3t; theme=dark"))),
        XDP_PASS
    );
    // A cookie of the full 32 bytes.
    let full = "0123456789abcdef0123456789abcdef";
    set_cookie(&h, ip(9), full);
    assert_eq!(h.run(&http_frame(ip(9), "Mozilla/5.0", Some(full))), XDP_PASS);
    // Other traffic of an unblocked client passes.
    assert_eq!(h.run(&tls_frame("www.example")), XDP_PASS, "port 443");
    assert_eq!(h.run(&udp_packet(CLIENT, SERVER, 5353, 53, b"q")), XDP_PASS, "UDP");
    assert!(h.keys("blocked").is_empty(), "nobody blocked");
}

#[test]
fn cookie_guard_blocks_a_wrong_or_missing_cookie_and_then_everything_from_there() {
    let Some(h) = cookie_guard() else { return };
    set_cookie(&h, ip(3), "right");
    set_cookie(&h, ip(6), COOKIE);
    set_cookie(&h, ip(7), COOKIE);
    let cases: [([u8; 4], Option<&str>, &str); 5] = [
        (ip(3), Some("wrong"), "a wrong cookie"),
        (ip(4), None, "no cookie header, no cookie issued"),
        (ip(6), None, "no cookie header"),
        (ip(7), Some("s3cr3"), "a prefix of the cookie"),
        (ip(8), Some("s3cr3tX"), "the cookie and more"),
    ];
    set_cookie(&h, ip(8), COOKIE);
    for (src, cookie, what) in cases {
        assert!(!is_blocked(&h, src));
        assert_eq!(h.run(&http_frame(src, "Mozilla/5.0", cookie)), XDP_DROP, "{what}");
        let since = h.get_u64("blocked", &ip_key(src));
        assert!(
            since.is_some_and(|t| t > 0),
            "{what}: source blocked with a timestamp: {since:?}"
        );
        // Everything from a blocked source is dropped: HTTP with the right cookie, TLS, UDP,
        // a bare TCP handshake packet.
        let right = if src == ip(3) { "right" } else { COOKIE };
        assert_eq!(
            h.run(&http_frame(src, "Mozilla/5.0", Some(right))),
            XDP_DROP,
            "{what}: then the right cookie"
        );
        assert_eq!(
            h.run(&tcp_packet(
                src,
                SERVER,
                40000,
                443,
                &[],
                &client_hello("a.example", 12, 5)
            )),
            XDP_DROP,
            "{what}: then TLS"
        );
        assert_eq!(
            h.run(&udp_packet(src, SERVER, 5353, 53, b"q")),
            XDP_DROP,
            "{what}: then UDP"
        );
        assert_eq!(
            h.run(&tcp_packet(src, SERVER, 40001, 80, &[], &[])),
            XDP_DROP,
            "{what}: then a SYN"
        );
    }
    assert_eq!(h.keys("blocked").len(), cases.len());
    // Others are not affected.
    set_cookie(&h, CLIENT, COOKIE);
    assert_eq!(h.run(&http_frame(CLIENT, "Mozilla/5.0", Some(COOKIE))), XDP_PASS);
    // Unblocking from user space lets the client back in.
    assert!(h.delete("blocked", &ip_key(ip(3))));
    assert_eq!(h.run(&http_frame(ip(3), "Mozilla/5.0", Some("right"))), XDP_PASS);
}

#[test]
fn cookie_guard_only_the_exact_cookie_passes() {
    let Some(h) = cookie_guard() else { return };
    // A cookie of the full 32 bytes (c32), and longer values that start with it: only the
    // exact value may pass, or an attacker who learns a prefix rule gets in.
    let full = "0123456789abcdef0123456789abcdef";
    set_cookie(&h, CLIENT, full);
    for (i, presented) in [format!("{full}X"), format!("{full}0123")].iter().enumerate() {
        let src = ip(30 + i as u8);
        set_cookie(&h, src, full);
        assert_eq!(
            h.run(&http_frame(src, "Mozilla/5.0", Some(presented))),
            XDP_DROP,
            "presented {presented:?} for {full:?}"
        );
        assert!(is_blocked(&h, src));
    }
    assert_eq!(h.run(&http_frame(CLIENT, "Mozilla/5.0", Some(full))), XDP_PASS);
}

#[test]
fn cookie_guard_leaves_other_ports_handshakes_and_non_ipv4_alone() {
    let Some(h) = cookie_guard() else { return };
    let src = ip(20); // no cookie issued
    assert_eq!(
        h.run(&tcp_packet(
            src,
            SERVER,
            40000,
            443,
            &[],
            &client_hello("a.example", 12, 5)
        )),
        XDP_PASS,
        "port 443"
    );
    assert_eq!(
        h.run(&tcp_packet(src, SERVER, 40000, 8080, &[], b"GET / HTTP/1.1\r\n\r\n")),
        XDP_PASS,
        "port 8080"
    );
    assert_eq!(
        h.run(&udp_packet(src, SERVER, 40000, 80, b"GET / HTTP/1.1\r\n\r\n")),
        XDP_PASS,
        "UDP to port 80"
    );
    assert_eq!(
        h.run(&tcp_packet(src, SERVER, 40000, 80, &[], &[])),
        XDP_PASS,
        "handshake to port 80"
    );
    assert_eq!(h.run(&ipv6_frame()), XDP_PASS, "IPv6");
    assert_eq!(h.run(&arp_frame()), XDP_PASS, "ARP");
    assert!(h.keys("blocked").is_empty(), "nobody blocked");
}

#[test]
fn cookie_guard_every_truncation_passes_or_drops() {
    let Some(h) = cookie_guard() else { return };
    set_cookie(&h, CLIENT, COOKIE);
    let packet = http_frame(CLIENT, "Mozilla/5.0", Some(COOKIE));
    let payload = 14 + 20 + 20;
    let cookie_end = end_of(&packet, format!("bot={COOKIE}").as_bytes());
    // Headers and a bare TCP header pass (a read out of bounds takes the default verdict,
    // and a segment without payload is a handshake); a payload that stops before the whole
    // cookie has no (right) cookie and is dropped; from the whole cookie on, it passes.
    check_truncations(
        &h,
        &packet,
        |h| {
            h.delete("blocked", &ip_key(CLIENT));
        },
        |len| {
            if len <= payload || len >= cookie_end {
                XDP_PASS
            } else {
                XDP_DROP
            }
        },
    );
}

#[test]
fn cookie_guard_survives_random_mutations() {
    let Some(h) = cookie_guard() else { return };
    set_cookie(&h, CLIENT, COOKIE);
    let packet = http_frame(CLIENT, "Mozilla/5.0", Some(COOKIE));
    let mut rng = Rng::new(0x5eed_0003);
    for i in 0..300 {
        // Unblock everyone, so that each mutation is judged on its own.
        for k in h.keys("blocked") {
            h.delete("blocked", &k);
        }
        let mut p = packet.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(p.len());
            p[at] = rng.next() as u8;
        }
        if rng.below(2) == 0 {
            p.truncate(ETH_HLEN + rng.below(packet.len() - ETH_HLEN + 1));
        }
        let r = h
            .try_run(&p)
            .unwrap_or_else(|e| panic!("mutation #{i}: test run failed: {e}\n{}", hex(&p)));
        assert!(
            r.retval == XDP_PASS || r.retval == XDP_DROP,
            "mutation #{i}: verdict {}",
            r.retval
        );
    }
}

// ---------------------------------------------------------------------------------------------
// On the wire: attached with iproute2 to `lo` in a namespace, with real traffic.

/// Pins the first map of the program attached in `ns` (its only one for these examples) and
/// opens it.
fn attached_map(prog_id: u32, pin: &BpfPin) -> RawMap {
    let out = run_cmd("bpftool", &["prog", "show", "id", &prog_id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ids = text
        .split("map_ids ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no map_ids in: {text}"));
    let map_id = ids.split(',').next().unwrap();
    run_cmd("bpftool", &["map", "pin", "id", map_id, pin.as_str()]);
    RawMap::open_pinned(&pin.path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn counter_counts_real_traffic_on_lo() {
    if !kernel_or_skip() || !tool_or_skip("ip") || !tool_or_skip("bpftool") {
        return;
    }
    let dir = TempDir::new("counter");
    let ns = NetNs::new("counter");
    let prog = attach_with_ip("counter", &ns, &dir);
    let pin = BpfPin::new("counts");
    let counts = attached_map(prog, &pin);
    assert_eq!(counts.info().name, "counts");
    const N: usize = 10;
    ns.run_inside(|| {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..N {
            tx.send_to(&[i as u8; 32], rx.local_addr().unwrap()).expect("send");
            let mut buf = [0u8; 64];
            let n = rx.recv(&mut buf).expect("the counter passes every packet");
            assert_eq!(n, 32);
        }
    });
    let udp: u64 = counts
        .lookup_percpu(&17u32.to_le_bytes())
        .unwrap()
        .expect("array entries exist")
        .iter()
        .map(|v| le_u64(v))
        .sum();
    assert_eq!(udp, N as u64, "one count per UDP datagram on lo");
}

/// Sends a ClientHello for `sni` over a TCP connection on lo in `ns`; whether the server
/// received it within a second.
fn client_hello_arrives(ns: &NetNs, sni: &str) -> bool {
    let hello = client_hello(sni, 12, 5);
    ns.run_inside(move || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("the handshake (no payload) passes");
        let (mut server, _) = listener.accept().expect("accept");
        server.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        client.write_all(&hello).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < hello.len() {
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        if !got.is_empty() {
            assert_eq!(got, hello, "what arrives is what was sent");
        }
        !got.is_empty()
    })
}

#[test]
fn sni_filter_drops_real_client_hellos_on_lo() {
    if !kernel_or_skip() || !tool_or_skip("ip") || !tool_or_skip("bpftool") {
        return;
    }
    let dir = TempDir::new("sni_filter");
    let ns = NetNs::new("sni_filter");
    let prog = attach_with_ip("sni_filter", &ns, &dir);
    let pin = BpfPin::new("blocklist");
    let blocklist = attached_map(prog, &pin);
    blocklist
        .update(&cstr(EVIL, 64), &0u64.to_le_bytes(), UpdateMode::Any)
        .unwrap();
    assert!(
        client_hello_arrives(&ns, "good.example"),
        "a ClientHello for good.example"
    );
    assert!(!client_hello_arrives(&ns, EVIL), "a ClientHello for {EVIL}");
    let count = le_u64(&blocklist.lookup(&cstr(EVIL, 64)).unwrap().unwrap());
    assert!(count >= 1, "the drops are counted ({count}; TCP retransmits)");
}

// ---------------------------------------------------------------------------------------------
// tc_mark: skb->mark by destination port, at tc.

const TC_ACT_OK: u32 = 0;
/// `sizeof(struct __sk_buff)`; `mark` is at offset 8.
const SKB_CTX: usize = 192;

/// tc_mark loaded, with port 443 marked 42.
fn tc_mark() -> Option<Harness> {
    let h = Harness::example("tc_mark")?;
    h.set("marks", &443u16.to_le_bytes(), &42u32.to_le_bytes());
    Some(h)
}

/// Runs tc_mark on `packet` with `mark` already set; returns the verdict and the mark after.
fn run_marked(h: &Harness, packet: &[u8], mark: u32) -> (u32, u32) {
    let mut ctx = vec![0u8; SKB_CTX];
    ctx[8..12].copy_from_slice(&mark.to_le_bytes());
    let fd = h.loaded.program_fd(&h.program).unwrap();
    let r = luabpf_loader::test_run_with(
        fd,
        &luabpf_loader::TestRunInput {
            packet,
            ctx: Some(&ctx),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("tc_mark: test run failed: {e}\n{}", hex(packet)));
    let out = r.ctx_out.expect("the context comes back");
    (r.retval, u32::from_le_bytes(out[8..12].try_into().unwrap()))
}

#[test]
fn tc_mark_marks_tcp_and_udp_to_a_listed_port_and_counts_them() {
    let Some(h) = tc_mark() else {
        return;
    };
    let tls = tls_frame("a.example");
    let udp = udp_packet(CLIENT, SERVER, 5353, 443, b"quic");
    assert_eq!(run_marked(&h, &tls, 0), (TC_ACT_OK, 42));
    assert_eq!(
        run_marked(&h, &udp, 7),
        (TC_ACT_OK, 42),
        "a listed port overrides a mark"
    );
    assert_eq!(h.percpu_sum_u64("marked", &443u16.to_le_bytes()), 2);
    // The port behind IP options is found.
    let with_options = tcp_packet(CLIENT, SERVER, 40000, 443, &[1, 1, 1, 0], b"x");
    assert_eq!(run_marked(&h, &with_options, 0), (TC_ACT_OK, 42));
}

#[test]
fn tc_mark_leaves_other_packets_and_their_marks_alone() {
    let Some(h) = tc_mark() else {
        return;
    };
    let cases = [
        ("TCP to an unlisted port", http_frame(CLIENT, "curl/8", None)),
        (
            "the source port is listed, not the destination",
            tcp_packet(CLIENT, SERVER, 443, 80, &[], b"x"),
        ),
        (
            "ICMP",
            ipv4_packet(CLIENT, SERVER, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]),
        ),
        ("IPv6", ipv6_frame()),
        ("ARP", arp_frame()),
    ];
    for (what, packet) in &cases {
        assert_eq!(run_marked(&h, packet, 0), (TC_ACT_OK, 0), "{what}");
        assert_eq!(run_marked(&h, packet, 9), (TC_ACT_OK, 9), "{what} keeps its mark");
    }
    assert_eq!(h.keys("marked"), Vec::<Vec<u8>>::new());
}

#[test]
fn tc_mark_every_truncation_passes() {
    let Some(h) = tc_mark() else {
        return;
    };
    // Shorter than the port: an out-of-bounds read takes the default verdict, unmarked.
    let tls = tls_frame("a.example");
    let port_end = 14 + 20 + 4;
    // From a whole IPv4 header on: the kernel refuses tc test runs (EINVAL) of IPv4 frames
    // shorter than that, which the stack would not hand to tc either.
    for len in ETH_HLEN + 20..=tls.len().min(80) {
        let (verdict, mark) = run_marked(&h, &tls[..len], 0);
        assert_eq!(verdict, TC_ACT_OK, "{len}-byte prefix");
        assert_eq!(mark, if len >= port_end { 42 } else { 0 }, "{len}-byte prefix");
    }
}
