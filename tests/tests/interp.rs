//! The BPF interpreter (runtime-bpf's `interp`) against the kernel: the same compiled object
//! runs in both, packet by packet, and they must agree on the verdict, the packet bytes the
//! program leaves, and the contents of every map (including static tables and seeds).
//!
//! Corpus: every example on realistic packets (TLS ClientHellos, HTTP requests, IP options,
//! VLAN tags, IPv6, UDP, the checked-in captures), every truncation of each, and seeded random
//! byte mutations; a tc program for the `__sk_buff` fields and the skb helpers; and random
//! program files (tests/programs.rs) on random packets. Netfilter programs (the dual-hook SNI
//! example, every getter, the XDP examples and random programs compiled for netfilter) run on
//! the IP packets of the same corpus, IPv4 and IPv6, as `luabpf run` hands them over. The test thread is pinned to CPU 0 so
//! that the kernel's per-CPU map values and `bpf.cpu()` are those of the interpreter (CPU 0).
//!
//! Needs bpf() for the kernel side: skips loudly without it (fails with
//! LUABPF_REQUIRE_KERNEL=1).

use std::collections::BTreeMap;

use luabpf_compiler::compile::{compile_source, Compiled, Options};
use luabpf_loader::netfilter::{self, Family};
use luabpf_loader::{TestRunError, TestRunResult};
use luabpf_tests::harness::{compile_example, cstr, example_names, hex, kernel_or_skip, Harness, Rng};
use luabpf_tests::packets::{
    client_hello, ethernet, http_frame, http_request, ipv6_frame, tcp_packet, tls_frame, udp_packet,
};
use luabpf_tests::programs::{as_netfilter, probe_packet, random_program, xdp_example_as_netfilter, NETFILTER_PROBE};
use runtime_bpf::interp::{InterpError, Machine, RunResult};

/// Maps whose values are `bpf.ktime()` stamps: only their keys can agree.
const TIME_VALUED: &[(&str, &str)] = &[("cookie_guard", "blocked")];

/// Runs BPF_PROG_TEST_RUN on this thread's CPU: pin it to CPU 0, the interpreter's CPU.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(
        ok,
        "cannot pin the test thread to CPU 0: {}",
        std::io::Error::last_os_error()
    );
}

/// A program loaded into the kernel and into the interpreter, and what they did so far.
struct Pair {
    label: String,
    h: Harness,
    m: Machine,
    /// Maps compared by keys only.
    time_valued: Vec<String>,
    runs: usize,
    /// Packets both engines refused (too short or too long for a test run).
    refused: usize,
    verdicts: BTreeMap<u32, usize>,
    disagreements: Vec<String>,
}

impl Pair {
    fn new(label: &str, compiled: Compiled) -> Pair {
        let m = Machine::new(&compiled.object).unwrap_or_else(|e| panic!("{label}: interpreter: {e}"));
        let h = Harness::from_compiled(compiled, label);
        Pair {
            label: label.to_string(),
            h,
            m,
            time_valued: Vec::new(),
            runs: 0,
            refused: 0,
            verdicts: BTreeMap::new(),
            disagreements: Vec::new(),
        }
    }

    /// Runs program `name` of the file instead of the first.
    fn with_program(mut self, name: &str) -> Pair {
        self.h = self.h.with_program(name);
        self
    }

    fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) {
        self.h.set(map, key, value);
        self.m
            .map_mut(map)
            .unwrap_or_else(|| panic!("{}: no map {map} in the interpreter", self.label))
            .update(key, value, 0)
            .unwrap_or_else(|e| panic!("{}: seeding {map}: errno {e}", self.label));
    }

    fn disagree(&mut self, what: String) {
        if self.disagreements.len() < 20 {
            self.disagreements.push(format!("{}: {what}", self.label));
        } else if self.disagreements.len() == 20 {
            self.disagreements
                .push(format!("{}: (more disagreements left out)", self.label));
        }
    }

    /// One packet through both engines.
    fn packet(&mut self, what: &str, packet: &[u8]) {
        let kernel = self.h.try_run(packet);
        let interp = self.m.run(&self.h.program.clone(), packet);
        self.compare(what, packet, kernel, interp);
    }

    /// One IP packet of `family` through both engines, as a netfilter test run.
    fn ip_packet(&mut self, what: &str, packet: &[u8], family: Family) {
        let fd = self.h.loaded.program_fd(&self.h.program).expect("program loaded");
        let kernel = netfilter::test_run(fd, packet, family, 1);
        let interp = self.m.run_netfilter(&self.h.program.clone(), packet, family.pf() as u8);
        self.compare(&format!("{what} ({})", family.name()), packet, kernel, interp);
    }

    fn compare(
        &mut self,
        what: &str,
        packet: &[u8],
        kernel: Result<TestRunResult, TestRunError>,
        interp: Result<RunResult, InterpError>,
    ) {
        self.runs += 1;
        match (kernel, interp) {
            (Ok(k), Ok(i)) => {
                *self.verdicts.entry(k.retval).or_default() += 1;
                if k.retval != i.retval || k.data_out != i.data_out {
                    self.disagree(format!(
                        "{what}: kernel {} / interpreter {}{}\n  packet {}",
                        k.retval,
                        i.retval,
                        if k.data_out != i.data_out {
                            format!(
                                "; packets out differ:\n  kernel {}\n  interp {}",
                                hex(&k.data_out),
                                hex(&i.data_out)
                            )
                        } else {
                            String::new()
                        },
                        hex(packet)
                    ));
                }
            }
            // Both refuse the packet itself (too short or too long for a test run).
            (Err(_), Err(InterpError::Packet(_))) => self.refused += 1,
            (k, i) => self.disagree(format!(
                "{what}: kernel {:?} / interpreter {:?}\n  packet {}",
                k.map(|r| r.retval),
                i.map(|r| r.retval),
                hex(packet)
            )),
        }
    }

    /// Every map's contents, compared; per-CPU values must be all on CPU 0.
    fn compare_maps(&mut self, when: &str) {
        let specs = self.h.compiled.object.maps.clone();
        for spec in specs {
            let mut kernel: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for key in self.h.keys(&spec.name) {
                let value = if spec.kind.is_percpu() {
                    let per_cpu = self.h.map(&spec.name).lookup_percpu(&key).expect("per-CPU lookup");
                    let per_cpu = per_cpu.unwrap_or_default();
                    if per_cpu.iter().skip(1).any(|v| v.iter().any(|&b| b != 0)) {
                        self.disagree(format!("{when}: map {}: values on a CPU other than 0", spec.name));
                    }
                    per_cpu.into_iter().next().unwrap_or_default()
                } else {
                    self.h.get(&spec.name, &key).unwrap_or_default()
                };
                kernel.push((key, value));
            }
            kernel.sort();
            let mut interp = self.m.map(&spec.name).expect("same maps").entries();
            if self.time_valued.contains(&spec.name) {
                for (_, v) in kernel.iter_mut().chain(interp.iter_mut()) {
                    v.clear();
                }
            }
            if kernel != interp {
                let show = |e: &[(Vec<u8>, Vec<u8>)]| {
                    e.iter()
                        .take(8)
                        .map(|(k, v)| format!("{}={}", hex(k), hex(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                self.disagree(format!(
                    "{when}: map {} differs ({} entries in the kernel, {} in the interpreter)\n  kernel {}\n  interp {}",
                    spec.name,
                    kernel.len(),
                    interp.len(),
                    show(&kernel),
                    show(&interp)
                ));
            }
        }
    }

    fn summary(&self) -> String {
        let verdicts: Vec<String> = self.verdicts.iter().map(|(v, n)| format!("{n}x{v}")).collect();
        format!(
            "{}: {} packets ({} refused by both), verdicts {}",
            self.label,
            self.runs,
            self.refused,
            verdicts.join(" ")
        )
    }
}

/// Base packets for the examples: positive and negative cases of each.
fn base_packets() -> Vec<(String, Vec<u8>)> {
    let a = [10, 0, 0, 1];
    let b = [10, 0, 0, 7];
    let vlan = |frame: &[u8]| {
        let mut inner = vec![0x00, 0x05];
        inner.extend_from_slice(&frame[12..]);
        ethernet(0x8100, &inner)
    };
    let options = [0x01, 0x01, 0x44, 0x08, 0x09, 0x00, 0x00, 0x00];
    let mut out = vec![
        ("tls evil".into(), tls_frame("evil.example")),
        ("tls good".into(), tls_frame("good.example")),
        ("tls long sni".into(), tls_frame(&"x".repeat(60))),
        (
            "tls sni first".into(),
            tcp_packet(a, b, 40000, 443, &[], &client_hello("evil.example", 3, 0)),
        ),
        (
            "tls with ip options".into(),
            tcp_packet(a, b, 40000, 443, &options, &client_hello("evil.example", 8, 7)),
        ),
        ("http evil agent".into(), http_frame(a, "EvilBot/1.0", None)),
        ("http good cookie".into(), http_frame(a, "Mozilla/5.0", Some("s3cr3t"))),
        ("http bad cookie".into(), http_frame(b, "Mozilla/5.0", Some("wrong"))),
        ("http after block".into(), http_frame(b, "Mozilla/5.0", Some("s3cr3t"))),
        ("udp".into(), udp_packet(a, b, 5353, 53, b"\x12\x34\x01\x00\x00\x01")),
        ("ipv6".into(), ipv6_frame()),
        ("vlan tls".into(), vlan(&tls_frame("evil.example"))),
        // Past XDP's 3520-byte linear part (the rest is in fragments) and tc's 3712 bytes.
        (
            "jumbo http".into(),
            tcp_packet(
                a,
                b,
                40000,
                80,
                &[],
                &[http_request("EvilBot/1.0", None), vec![b'x'; 5000]].concat(),
            ),
        ),
    ];
    for name in ["sni.pcap", "sni-be.pcapng", "plain.pcap"] {
        let path = luabpf_tests::harness::workspace_root().join("tests/pcaps").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let capture = luabpf_loader::pcap::read(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, p) in capture.packets.into_iter().enumerate() {
            out.push((format!("{name} #{}", i + 1), p.data));
        }
    }
    out
}

/// Seeds that make an example's blocking paths reachable, and its time-valued maps.
fn seed_example(pair: &mut Pair, example: &str) {
    for (name, map) in TIME_VALUED {
        if *name == example {
            pair.time_valued.push(map.to_string());
        }
    }
    match example {
        "sni_filter" | "netfilter/sni_filter" => pair.seed("blocklist", &cstr("evil.example", 64), &0u64.to_le_bytes()),
        "ua_filter" => pair.seed("blocked_agents", &cstr("EvilBot/1.0", 64), &0u64.to_le_bytes()),
        "cookie_guard" => {
            for ip in [[10, 0, 0, 1], [10, 0, 0, 7]] {
                pair.seed("cookies", &ip, &cstr("s3cr3t", 32));
            }
        }
        _ => {}
    }
}

/// Every base packet, then each one's truncations and a few random mutations.
fn run_corpus(pair: &mut Pair, rng: &mut Rng) {
    for (name, base) in base_packets() {
        pair.packet(&name, &base);
        // Every truncation of an ordinary frame; around the size limits of a jumbo one.
        let cuts: Vec<usize> = if base.len() <= 2000 {
            (0..base.len()).rev().collect()
        } else {
            vec![base.len() - 1, 3713, 3712, 3521, 3520, 3519, 1514, 100, 14, 13]
        };
        for len in cuts {
            pair.packet(&format!("{name} cut to {len}"), &base[..len]);
        }
        for k in 0..12 {
            let mut p = base.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            pair.packet(&format!("{name} mutation {k}"), &p);
        }
        pair.compare_maps(&format!("after {name}"));
    }
}

fn finish(pairs: &[Pair]) {
    let mut all = Vec::new();
    for p in pairs {
        println!("{}", p.summary());
        all.extend(p.disagreements.iter().cloned());
    }
    assert!(all.is_empty(), "kernel and interpreter disagree:\n{}", all.join("\n"));
}

#[test]
fn examples_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let mut rng = Rng::new(0x1a7e_5eed);
    let mut pairs = Vec::new();
    for name in example_names() {
        let mut pair = Pair::new(&name, compile_example(&name));
        seed_example(&mut pair, &name);
        run_corpus(&mut pair, &mut rng);
        pairs.push(pair);
    }
    assert!(pairs.len() >= 4, "examples found: {}", pairs.len());
    finish(&pairs);
    // The corpus and seeds reach both verdicts of the filtering examples.
    for p in &pairs {
        if ["sni_filter", "ua_filter", "cookie_guard"].contains(&p.label.as_str()) {
            assert!(p.verdicts.len() >= 2, "{}", p.summary());
        }
    }
}

/// The stdlib's parsers (net.eth with VLAN tags, net.ipv4, net.tcp, net.tls) in one program.
const ETH_PROGRAM: &str = r#"
local xdp = require "bpf.xdp"
local eth, ipv4, tcp, tls = require "net.eth", require "net.ipv4", require "net.tcp", require "net.tls"
local function f(ctx)
  local p = ctx:packet()
  local off, t = eth.payload(p)
  if t == eth.VLAN or t == eth.QINQ then p:setbyte(0, off) return 3 end
  if t == eth.IPV6 then return 4 end
  local ip = eth.ipv4(p)
  if not ip then return 1 end
  local sni, n = tls.sni(p, tcp.payload(p, ipv4.tcp(p, ip)))
  if sni then p:setbyte(1, n) return 3 end
  return 2
end
return xdp.program(f, { name = "eth" })
"#;

#[test]
fn stdlib_parsers_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let compiled = compile_source(ETH_PROGRAM, "eth.lua", &Options::default())
        .unwrap_or_else(|f| panic!("eth program does not compile:\n{}", f.render()));
    let mut pair = Pair::new("net.eth", compiled);
    run_corpus(&mut pair, &mut Rng::new(11));
    let verdicts = pair.verdicts.len();
    let summary = pair.summary();
    finish(&[pair]);
    assert!(verdicts >= 4, "{summary}");
}

/// A tc program reading and writing `__sk_buff` fields and going through the skb helpers.
/// (`ctx.hash` once compiled to a load of `tc_index`; the interpreter refused that access.)
const TC_PROGRAM: &str = r#"
local tc = require "bpf.tc"
local act = require "linux.tc"
local map = require "bpf.map"
local seen = map.hash("seen", { key = "I4", value = "I8", entries = 16 })
local function f(ctx)
  local p = ctx:packet()
  ctx.mark = ctx.len * 3 + ctx.protocol
  ctx.priority = ctx.ifindex + ctx.vlan_tci + ctx.hash
  seen[ctx.protocol] = (seen[ctx.protocol] or 0) + ctx.len
  if #p < 40 then return act.ACT_OK end
  local s = p:getstring(42, 6)
  if s == "abcdef" then return act.ACT_SHOT end
  p:setstring(#p - 4, "wxyz")
  if ctx.mark % 5 == 0 then return act.ACT_REDIRECT end
  return act.ACT_PIPE
end
return tc.program(f, { name = "tc_fields" })
"#;

#[test]
fn tc_context_and_skb_helpers_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let compiled = compile_source(TC_PROGRAM, "tc_fields.lua", &Options::default())
        .unwrap_or_else(|f| panic!("tc program does not compile:\n{}", f.render()));
    let mut pair = Pair::new("tc_fields", compiled);
    let mut rng = Rng::new(7);
    run_corpus(&mut pair, &mut rng);
    let mut marked = udp_packet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, b"abcdef-and-more");
    pair.packet("udp abcdef", &marked);
    marked[42] = b'X';
    pair.packet("udp Xbcdef", &marked);
    for proto in [0x0000u16, 0x05ff, 0x0600, 0x86dd] {
        let mut p = ethernet(proto, &[0xff; 50]);
        pair.packet(&format!("ethertype {proto:#06x}"), &p);
        p[14] = 0;
        pair.packet(&format!("ethertype {proto:#06x}, not raw 802.3"), &p);
    }
    pair.compare_maps("at the end");
    let verdicts = pair.verdicts.len();
    let summary = pair.summary();
    finish(&[pair]);
    assert!(verdicts >= 4, "{summary}");
}

/// What a campaign of random program files did.
#[derive(Default)]
struct Campaign {
    compiled: usize,
    verified: usize,
    /// Verified programs that are tc programs.
    tc: usize,
    runs: usize,
    /// Per disagreeing program: the disagreements and the source.
    disagreements: Vec<String>,
}

/// Programs `program(seed)` for `seeds` seeds: every one that compiles and verifies runs the
/// packets `packets` gives it in both engines, then their maps are compared.
fn random_campaign(seeds: u64, program: impl Fn(u64) -> String, packets: impl Fn(&mut Pair, &mut Rng)) -> Campaign {
    let mut c = Campaign::default();
    let mut rng = Rng::new(0xd1ff);
    for seed in 0..seeds {
        let src = program(seed);
        let Ok(compiled) = compile_source(&src, "prog.lua", &Options::default()) else {
            continue;
        };
        c.compiled += 1;
        if luabpf_loader::load(&compiled.elf).is_err() {
            continue; // the robustness tests hold the verifier to what compiles
        }
        c.verified += 1;
        if compiled.object.programs[0].section == "classifier" {
            c.tc += 1;
        }
        let mut pair = Pair::new(&format!("random program {seed}"), compiled);
        packets(&mut pair, &mut rng);
        pair.compare_maps("after the packets");
        c.runs += pair.runs;
        if !pair.disagreements.is_empty() {
            c.disagreements
                .push(format!("{}\n{src}", pair.disagreements.join("\n")));
        }
    }
    c
}

/// Seeds for a random campaign: LUABPF_INTERP_PROGRAMS=N runs a longer one.
fn campaign_seeds(default: u64) -> u64 {
    std::env::var("LUABPF_INTERP_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn assert_campaign(what: &str, seeds: u64, c: &Campaign) {
    println!(
        "{what}: {seeds} generated, {} compiled, {} verified ({} of them tc), {} packets run in both \
         engines, {} disagreeing programs",
        c.compiled,
        c.verified,
        c.tc,
        c.runs,
        c.disagreements.len()
    );
    assert!(
        c.verified >= seeds as usize / 2,
        "too few programs verified: {} of {seeds}",
        c.verified
    );
    assert!(
        c.disagreements.is_empty(),
        "kernel and interpreter disagree:\n{}",
        c.disagreements.join("\n\n")
    );
}

/// Random program files: every one that compiles and verifies gives the same results in the
/// kernel and the interpreter on random packets.
#[test]
fn random_programs_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let seeds = campaign_seeds(300);
    let c = random_campaign(
        seeds,
        |seed| {
            let src = random_program(2_000_000 + seed, seed % 3 == 2);
            // Every fourth program as a tc program: the same code through `__sk_buff` and the
            // skb helpers (the generator's verdicts 0..4 are tc verdicts too).
            if seed % 4 == 3 {
                return src.replace("require \"bpf.xdp\"", "require \"bpf.tc\"");
            }
            src
        },
        |pair, rng| {
            for k in 0..8 {
                let len = 14 + rng.below(90);
                let p = if k == 0 { tls_frame("abc") } else { rng.bytes(len) };
                pair.packet(&format!("random packet {k}"), &p);
            }
        },
    );
    assert_campaign("random programs", seeds, &c);
    assert!(c.tc > 0, "no tc program among the random programs");
}

// ---------------------------------------------------------------------------------------------
// Netfilter programs: the packet is the IP packet (from its header on), read through the dynptr
// kfuncs and `bpf_dynptr_read`.

/// The IP packet of an Ethernet frame and its family, as `luabpf run` hands it to a netfilter
/// program; `None` for frames that carry neither IPv4 nor IPv6.
fn ip_of(frame: &[u8]) -> Option<(Vec<u8>, Family)> {
    let family = match frame.get(12..14)? {
        [0x08, 0x00] => Family::Ipv4,
        [0x86, 0xdd] => Family::Ipv6,
        _ => return None,
    };
    Some((frame[14..].to_vec(), family))
}

/// A whole frame as a netfilter packet (IPv4): the test run at LOCAL_OUT does not look at the
/// bytes, so programs written for XDP find their Ethernet header where they expect it.
fn whole_frame(frame: &[u8]) -> Option<(Vec<u8>, Family)> {
    Some((frame.to_vec(), Family::Ipv4))
}

/// [`run_corpus`] for a netfilter program: the packets `packet_of` makes of the base frames,
/// every truncation (including those the test run refuses, under 20 bytes), a few random
/// mutations, and each packet once more as the other family.
fn run_nf_corpus(pair: &mut Pair, rng: &mut Rng, packet_of: fn(&[u8]) -> Option<(Vec<u8>, Family)>) {
    for (name, frame) in base_packets() {
        let Some((base, family)) = packet_of(&frame) else {
            continue;
        };
        pair.ip_packet(&name, &base, family);
        let other = if family == Family::Ipv4 {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        pair.ip_packet(&format!("{name} as the other family"), &base, other);
        let cuts: Vec<usize> = if base.len() <= 2000 {
            (0..base.len()).rev().collect()
        } else {
            vec![base.len() - 1, 3713, 3712, 1500, 100, 20, 19]
        };
        for len in cuts {
            pair.ip_packet(&format!("{name} cut to {len}"), &base[..len], family);
        }
        for k in 0..12 {
            let mut p = base.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(p.len());
                p[at] = rng.next() as u8;
            }
            pair.ip_packet(&format!("{name} mutation {k}"), &p, family);
        }
        pair.compare_maps(&format!("after {name}"));
    }
}

#[test]
fn netfilter_sni_filter_agrees_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let name = "netfilter/sni_filter";
    let mut pair = Pair::new(name, compile_example(name)).with_program("sni_nf");
    seed_example(&mut pair, name);
    run_nf_corpus(&mut pair, &mut Rng::new(0x5e1f), ip_of);
    let verdicts = pair.verdicts.len();
    let summary = pair.summary();
    finish(&[pair]);
    assert_eq!(verdicts, 2, "both DROP and ACCEPT reached: {summary}");
}

#[test]
fn netfilter_getters_agree_with_the_kernel() {
    // Every getter and getstring, with run-time offsets and lengths, on random IPv4 and IPv6
    // packets and their truncations: the verdict and every value read (the `out` map).
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let compiled = compile_source(NETFILTER_PROBE, "probe.lua", &Options::default())
        .unwrap_or_else(|f| panic!("the probe does not compile:\n{}", f.render()));
    let mut pair = Pair::new("probe_nf", compiled).with_program("probe_nf");
    let mut rng = Rng::new(0x6e67);
    for i in 0..200 {
        let (ip, family) = probe_packet(&mut rng, i);
        pair.ip_packet(&format!("random packet {i}"), &ip, family);
        pair.compare_maps(&format!("after random packet {i}"));
        if i % 20 == 0 {
            for cut in (0..ip.len()).rev() {
                pair.ip_packet(&format!("random packet {i} cut to {cut}"), &ip[..cut], family);
                pair.compare_maps(&format!("after random packet {i} cut to {cut}"));
            }
        }
    }
    let verdicts = pair.verdicts.len();
    let summary = pair.summary();
    finish(&[pair]);
    assert_eq!(verdicts, 2, "reads that complete and runtime errors: {summary}");
}

#[test]
fn xdp_examples_compiled_for_netfilter_agree_with_the_kernel() {
    // The XDP examples with the hook swapped: real filters' reads in loops, at netfilter. They
    // parse from the Ethernet header, so they are handed whole frames.
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let mut rng = Rng::new(0x6e68);
    let mut pairs = Vec::new();
    for name in example_names() {
        let src = std::fs::read_to_string(luabpf_tests::harness::example_path(&name)).unwrap();
        let Some(src) = xdp_example_as_netfilter(&src) else {
            continue;
        };
        let compiled = compile_source(&src, &format!("{name}.lua"), &Options::default())
            .unwrap_or_else(|f| panic!("{name} for netfilter does not compile:\n{}", f.render()));
        let mut pair = Pair::new(&format!("{name} at netfilter"), compiled);
        seed_example(&mut pair, &name);
        run_nf_corpus(&mut pair, &mut rng, whole_frame);
        pairs.push(pair);
    }
    assert!(pairs.len() >= 3, "XDP examples found: {}", pairs.len());
    finish(&pairs);
    // The filtering examples reach both verdicts at netfilter too.
    for p in &pairs {
        if p.label.starts_with("sni_filter") || p.label.starts_with("ua_filter") {
            assert!(p.verdicts.len() >= 2, "{}", p.summary());
        }
    }
}

/// Random program files compiled for netfilter (packet writes become map updates) on random
/// IPv4 and IPv6 packets.
#[test]
fn random_programs_compiled_for_netfilter_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    let seeds = campaign_seeds(300) / 2;
    let c = random_campaign(
        seeds,
        |seed| as_netfilter(&random_program(3_000_000 + seed, seed % 3 == 2)),
        |pair, rng| {
            for k in 0..8 {
                let len = 20 + rng.below(90);
                let p = if k == 0 {
                    tls_frame("abc")[14..].to_vec()
                } else {
                    rng.bytes(len)
                };
                let family = if k % 2 == 0 { Family::Ipv4 } else { Family::Ipv6 };
                pair.ip_packet(&format!("random packet {k}"), &p, family);
            }
        },
    );
    assert_campaign("random netfilter programs", seeds, &c);
}
