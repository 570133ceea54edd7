//! The BPF interpreter (runtime-bpf's `interp`) against the kernel: the same compiled object
//! runs in both, packet by packet, and they must agree on the verdict, the packet bytes the
//! program leaves, and the contents of every map (including static tables and seeds).
//!
//! Corpus: every example on realistic packets (TLS ClientHellos, HTTP requests, IP options,
//! VLAN tags, IPv6, UDP, the checked-in captures), every truncation of each, and seeded random
//! byte mutations; a tc program for the `__sk_buff` fields and the skb helpers; and random
//! program files (tests/programs.rs) on random packets. The test thread is pinned to CPU 0 so
//! that the kernel's per-CPU map values and `bpf.cpu()` are those of the interpreter (CPU 0).
//!
//! Needs bpf() for the kernel side: skips loudly without it (fails with
//! LUABPF_REQUIRE_KERNEL=1).

use std::collections::BTreeMap;

use luabpf_compiler::compile::{compile_source, Compiled, Options};
use luabpf_tests::harness::{compile_example, cstr, example_names, hex, kernel_or_skip, Harness, Rng};
use luabpf_tests::packets::{
    client_hello, ethernet, http_frame, http_request, ipv6_frame, tcp_packet, tls_frame, udp_packet,
};
use luabpf_tests::programs::random_program;
use runtime_bpf::interp::{InterpError, Machine};
use runtime_bpf::progtypes::ProgType;

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
            verdicts: BTreeMap::new(),
            disagreements: Vec::new(),
        }
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
        self.runs += 1;
        let kernel = self.h.try_run(packet);
        let interp = self.m.run(&self.h.program.clone(), packet);
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
            (Err(_), Err(InterpError::Packet(_))) => {}
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
        format!("{}: {} packets, verdicts {}", self.label, self.runs, verdicts.join(" "))
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
        let compiled = compile_example(&name);
        let section = &compiled.object.programs[0].section;
        if ProgType::from_section(section) == Some(ProgType::Netfilter) {
            println!("{name}: a netfilter program, which the interpreter does not run");
            continue;
        }
        let mut pair = Pair::new(&name, compiled);
        for (example, map) in TIME_VALUED {
            if *example == name {
                pair.time_valued.push(map.to_string());
            }
        }
        // Seeds that make each example's blocking paths reachable.
        match name.as_str() {
            "sni_filter" => pair.seed("blocklist", &cstr("evil.example", 64), &0u64.to_le_bytes()),
            "ua_filter" => pair.seed("blocked_agents", &cstr("EvilBot/1.0", 64), &0u64.to_le_bytes()),
            "cookie_guard" => {
                for ip in [[10, 0, 0, 1], [10, 0, 0, 7]] {
                    pair.seed("cookies", &ip, &cstr("s3cr3t", 32));
                }
            }
            _ => {}
        }
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

/// Random program files: every one that compiles and verifies gives the same results in the
/// kernel and the interpreter on random packets.
#[test]
fn random_programs_agree_with_the_kernel() {
    if !kernel_or_skip() {
        return;
    }
    pin_to_cpu0();
    // LUABPF_INTERP_PROGRAMS=N runs a longer campaign.
    let seeds: u64 = std::env::var("LUABPF_INTERP_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (mut compiled, mut verified, mut as_tc, mut runs) = (0, 0, 0, 0);
    let mut disagreements = Vec::new();
    let mut rng = Rng::new(0xd1ff);
    for seed in 0..seeds {
        let runtime_loops = seed % 3 == 2;
        let mut src = random_program(2_000_000 + seed, runtime_loops);
        // Every fourth program as a tc program: the same code through `__sk_buff` and the skb
        // helpers (the generator's verdicts 0..4 are tc verdicts too).
        if seed % 4 == 3 {
            src = src.replace("require \"bpf.xdp\"", "require \"bpf.tc\"");
        }
        let Ok(c) = compile_source(&src, "prog.lua", &Options::default()) else {
            continue;
        };
        compiled += 1;
        if luabpf_loader::load(&c.elf).is_err() {
            continue; // the robustness tests hold the verifier to what compiles
        }
        verified += 1;
        if c.object.programs[0].section == "classifier" {
            as_tc += 1;
        }
        let mut pair = Pair::new(&format!("random program {seed}"), c);
        for k in 0..8 {
            let len = 14 + rng.below(90);
            let mut p = rng.bytes(len);
            if k == 0 {
                p = tls_frame("abc");
            }
            pair.packet(&format!("random packet {k}"), &p);
        }
        pair.compare_maps("after the packets");
        runs += pair.runs;
        if !pair.disagreements.is_empty() {
            disagreements.push(format!("{}\n{src}", pair.disagreements.join("\n")));
        }
    }
    println!(
        "random programs: {seeds} generated, {compiled} compiled, {verified} verified ({as_tc} of them tc), \
         {runs} packets run in both engines, {} disagreeing programs",
        disagreements.len()
    );
    assert!(as_tc > 0, "no tc program among the random programs");
    assert!(
        verified >= seeds as usize / 2,
        "too few programs verified: {verified} of {seeds}"
    );
    assert!(
        disagreements.is_empty(),
        "kernel and interpreter disagree:\n{}",
        disagreements.join("\n\n")
    );
}
