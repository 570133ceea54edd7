//! Netfilter programs through the kernel: the verifier accepts them, and under
//! BPF_PROG_TEST_RUN they read the same bytes as the same code compiled for XDP (the packet
//! starts at the IP header instead of the Ethernet header), with XDP's runtime-error semantics
//! (a read out of range takes the default verdict), over IPv4 and IPv6 packets and their
//! truncations. The wire test (real traffic, attach/replace/detach) is loader/tests/netfilter.rs.
//!
//! Kernel tests skip loudly when bpf() is unavailable, unless LUABPF_REQUIRE_KERNEL=1.

use luabpf_compiler::compile::{compile_source, Options};
use luabpf_loader::netfilter::{self, Family};
use luabpf_tests::harness::*;
use luabpf_tests::packets::*;
use luabpf_tests::programs::{
    as_netfilter, probe_packet, random_program, xdp_example_as_netfilter, NETFILTER_PROBE as PROBE,
};

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const ETH_HLEN: usize = 14;
const EVIL: &str = "evil.example";

/// Verifier caps (processed instructions), a few times today's cost on 6.18: sni_nf 1,725,
/// probe_nf 763.
const SNI_NF_CAP: u32 = 6_000;
const PROBE_NF_CAP: u32 = 2_000;

/// A netfilter test run of `ip` (from the IP header on); panics if the kernel refuses it.
fn run_nf(h: &Harness, program: &str, ip: &[u8], family: Family) -> u32 {
    let fd = h.loaded.program_fd(program).expect("program loaded");
    netfilter::test_run(fd, ip, family, 1)
        .unwrap_or_else(|e| panic!("{program}: test run of {} bytes failed: {e}\n{}", ip.len(), hex(ip)))
        .retval
}

fn run_xdp(h: &Harness, program: &str, frame: &[u8]) -> u32 {
    let fd = h.loaded.program_fd(program).expect("program loaded");
    test_run(fd, frame, 1)
        .unwrap_or_else(|e| panic!("{program}: test run failed: {e}"))
        .retval
}

/// An XDP verdict as the netfilter verdict with the same meaning.
fn as_nf(xdp: u32) -> u32 {
    match xdp {
        XDP_DROP => NF_DROP,
        XDP_PASS => NF_ACCEPT,
        other => panic!("unexpected XDP verdict {other}"),
    }
}

fn verified(h: &Harness, program: &str) -> u32 {
    h.loaded
        .programs()
        .iter()
        .find(|p| p.name == program)
        .and_then(|p| p.verified_insns)
        .expect("the kernel reports verified_insns")
}

fn compile(text: &str, name: &str) -> Option<Harness> {
    if !kernel_or_skip() {
        return None;
    }
    let compiled = compile_source(text, name, &Options::default())
        .unwrap_or_else(|f| panic!("{name} does not compile:\n{}", f.render()));
    Some(Harness::from_compiled(compiled, name))
}

// ---------------------------------------------------------------------------------------------
// The dual-hook SNI filter example.

#[test]
fn netfilter_sni_filter_asm_snapshot() {
    let asm = example_asm("netfilter/sni_filter");
    // Packet bytes come through one dynptr made at entry: slices for fixed-size reads, a copy
    // for the string; no direct packet access.
    assert!(asm.contains("call bpf_dynptr_from_skb"), "{asm}");
    assert!(asm.contains("call bpf_dynptr_slice"), "{asm}");
    assert!(asm.contains("call bpf_dynptr_read"), "{asm}");
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        description => "luabpf compile examples/netfilter/sni_filter.lua --emit asm",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("netfilter_sni_filter.asm", asm);
    });
}

/// The example's programs: `sni_xdp` and `sni_nf`, sharing `blocklist`.
fn sni_dual() -> Option<Harness> {
    let h = Harness::example("netfilter/sni_filter")?;
    assert_eq!(h.loaded.program_names(), ["sni_nf", "sni_xdp"]);
    h.set("blocklist", &cstr(EVIL, 64), &0u64.to_le_bytes());
    Some(h)
}

#[test]
fn sni_filter_verdicts_agree_between_xdp_and_netfilter() {
    let Some(h) = sni_dual() else { return };
    let nf = verified(&h, "sni_nf");
    eprintln!("sni_nf: verifier processed {nf}; sni_xdp: {}", verified(&h, "sni_xdp"));
    assert!(
        nf <= SNI_NF_CAP,
        "sni_nf: the verifier processed {nf}, cap {SNI_NF_CAP}"
    );

    let hello = |sni: &str, n_ext, pos| {
        tcp_packet(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            40000,
            443,
            &[],
            &client_hello(sni, n_ext, pos),
        )
    };
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("blocked name", tls_frame(EVIL), NF_DROP),
        ("other name", tls_frame("good.example"), NF_ACCEPT),
        ("blocked name first of 1", hello(EVIL, 1, 0), NF_DROP),
        ("blocked name 30th of 32", hello(EVIL, 32, 29), NF_DROP),
        ("blocked name beyond 32 extensions", hello(EVIL, 40, 35), NF_ACCEPT),
        (
            "blocked name behind IP options",
            tcp_packet(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                1,
                443,
                &[1, 1, 1, 0, 7, 7, 4, 0],
                &client_hello(EVIL, 12, 5),
            ),
            NF_DROP,
        ),
        ("prefix of a blocked name", tls_frame("evil.exampl"), NF_ACCEPT),
        (
            "not TLS",
            tcp_packet([10, 0, 0, 1], [10, 0, 0, 2], 1, 80, &[], b"GET / HTTP/1.1\r\n\r\n"),
            NF_ACCEPT,
        ),
        (
            "UDP",
            udp_packet([10, 0, 0, 1], [10, 0, 0, 2], 53, 53, &[0; 40]),
            NF_ACCEPT,
        ),
    ];
    let mut drops = 0;
    for (what, frame, want) in &cases {
        let x = as_nf(run_xdp(&h, "sni_xdp", frame));
        let n = run_nf(&h, "sni_nf", &frame[ETH_HLEN..], Family::Ipv4);
        assert_eq!(n, *want, "netfilter, {what}");
        assert_eq!(x, *want, "XDP, {what}");
        if *want == NF_DROP {
            drops += 2;
        }
    }
    // Both programs count into the one map.
    assert_eq!(h.get_u64("blocklist", &cstr(EVIL, 64)), Some(drops));
}

#[test]
fn every_truncation_of_a_blocked_hello_agrees_between_hooks() {
    let Some(h) = sni_dual() else { return };
    let frame = tls_frame(EVIL);
    // The kernel's netfilter test run needs an IPv4 header's worth of bytes.
    let mut dropped = 0;
    for len in ETH_HLEN + 20..=frame.len() {
        let cut = &frame[..len];
        let x = as_nf(run_xdp(&h, "sni_xdp", cut));
        let n = run_nf(&h, "sni_nf", &cut[ETH_HLEN..], Family::Ipv4);
        assert_eq!(n, x, "truncated to {len} bytes: netfilter {n}, XDP {x}");
        if n == NF_DROP {
            dropped += 1;
        }
    }
    // Only the cuts that still hold the whole name are dropped: the last bytes after the SNI
    // extension (the other extensions) are not needed.
    assert!(
        dropped > 0 && dropped < frame.len() - ETH_HLEN - 20,
        "{dropped} truncations dropped"
    );
    assert_eq!(run_nf(&h, "sni_nf", &frame[ETH_HLEN..], Family::Ipv4), NF_DROP);
}

// ---------------------------------------------------------------------------------------------
// Every getter, at both hooks, over seeded random packets.

fn out_map(h: &Harness) -> Vec<i64> {
    (0u32..16)
        .map(|k| {
            let v = h.get("out", &k.to_le_bytes()).expect("array entry");
            i64::from_le_bytes(v[..8].try_into().unwrap())
        })
        .collect()
}

fn clear_out(h: &Harness) {
    for k in 0u32..16 {
        h.set("out", &k.to_le_bytes(), &(-7i64).to_le_bytes());
    }
}

#[test]
fn getters_read_the_same_bytes_at_both_hooks() {
    let Some(h) = compile(PROBE, "probe.lua") else { return };
    let nf = verified(&h, "probe_nf");
    eprintln!(
        "probe_nf: verifier processed {nf}; probe_xdp: {}",
        verified(&h, "probe_xdp")
    );
    assert!(
        nf <= PROBE_NF_CAP,
        "probe_nf: the verifier processed {nf}, cap {PROBE_NF_CAP}"
    );
    let mut rng = Rng::new(0x6e66);
    let (mut completed, mut errors) = (0, 0);
    for i in 0..300 {
        let (ip, family) = probe_packet(&mut rng, i);
        let len = ip.len();
        let frame = ethernet(if family == Family::Ipv4 { 0x0800 } else { 0x86dd }, &ip);

        clear_out(&h);
        let x = as_nf(run_xdp(&h, "probe_xdp", &frame));
        let at_xdp = out_map(&h);
        clear_out(&h);
        let n = run_nf(&h, "probe_nf", &ip, family);
        let at_nf = out_map(&h);
        assert_eq!(n, x, "verdicts differ on {}", hex(&ip));
        assert_eq!(at_nf, at_xdp, "reads differ on {}", hex(&ip));
        assert_eq!(at_nf[0], len as i64, "#packet is the IP packet's length");
        if n == NF_DROP {
            completed += 1;
        } else {
            errors += 1;
            assert!(
                ip[0] == 0xee
                    || ip[0] == 0xef
                    || (ip[0] & 0x1f) as usize + 2 > len
                    || 2 + (ip[1] & 0x0f) as usize > len,
                "a runtime error on a packet every read fits: {}",
                hex(&ip)
            );
        }
    }
    // Both outcomes were exercised.
    assert!(
        completed > 100 && errors >= 60,
        "{completed} completed, {errors} runtime errors"
    );
}

// ---------------------------------------------------------------------------------------------
// IPv6 at netfilter.

const DNS6: &str = r#"
local netfilter = require "bpf.netfilter"
local verdict = require "linux.netfilter"
local bo = require "linux.byteorder"

-- Drops IPv6 UDP datagrams to port 53 (no extension headers).
return netfilter.program(function(ctx)
  local p = ctx:packet()
  if p:getbyte(0) >> 4 == 6 and p:getbyte(6) == 17 and bo.ntoh16(p:getuint16(42)) == 53 then
    return verdict.DROP
  end
  return verdict.ACCEPT
end, { name = "dns6", family = "ipv6", hook = "prerouting", priority = 10 })
"#;

fn ipv6_udp(dport: u16) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
    ip.extend_from_slice(&[0xfd; 16]);
    ip.extend_from_slice(&[0xfe; 16]);
    ip.extend_from_slice(&4000u16.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    ip
}

#[test]
fn ipv6_packets_and_their_truncations() {
    let Some(h) = compile(DNS6, "dns6.lua") else { return };
    assert_eq!(
        h.compiled.object.programs[0].section, "netfilter/ipv6:prerouting:10",
        "the section names the hook"
    );
    assert_eq!(run_nf(&h, "dns6", &ipv6_udp(53), Family::Ipv6), NF_DROP);
    assert_eq!(run_nf(&h, "dns6", &ipv6_udp(54), Family::Ipv6), NF_ACCEPT);
    let full = ipv6_udp(53);
    for len in 20..full.len() {
        let want = if len >= 44 { NF_DROP } else { NF_ACCEPT };
        assert_eq!(
            run_nf(&h, "dns6", &full[..len], Family::Ipv6),
            want,
            "truncated to {len} bytes"
        );
    }
}

#[test]
fn a_netfilter_program_that_never_reads_the_packet_calls_no_kfunc() {
    let src = r#"
local netfilter = require "bpf.netfilter"
local verdict = require "linux.netfilter"
return netfilter.program(function(ctx) return verdict.DROP end, { name = "drop_all" })
"#;
    let compiled =
        compile_source(src, "drop_all.lua", &Options::default()).unwrap_or_else(|f| panic!("{}", f.render()));
    assert!(compiled.object.programs[0].kfunc_relocs.is_empty());
    if !kernel_or_skip() {
        return;
    }
    let h = Harness::from_compiled(compiled, "drop_all.lua");
    assert_eq!(run_nf(&h, "drop_all", &ipv6_udp(1), Family::Ipv6), NF_DROP);
}

#[test]
fn a_verdict_other_than_drop_or_accept_takes_the_default() {
    // The verifier refuses netfilter programs that may return anything but 0 or 1: the compiler
    // turns other values into the default verdict, so what `check` accepts loads.
    for (default, want_for_7) in [("", NF_ACCEPT), (", default = verdict.DROP", NF_DROP)] {
        let src = format!(
            r#"
local netfilter = require "bpf.netfilter"
local verdict = require "linux.netfilter"
return netfilter.program(function(ctx) return ctx:packet():getbyte(0) end, {{ name = "byte0"{default} }})
"#
        );
        let Some(h) = compile(&src, "byte0.lua") else { return };
        let mut ip = ipv6_udp(1);
        for (first, want) in [(0u8, NF_DROP), (1, NF_ACCEPT), (7, want_for_7), (255, want_for_7)] {
            ip[0] = first;
            assert_eq!(
                run_nf(&h, "byte0", &ip, Family::Ipv6),
                want,
                "first byte {first}, opts{default}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Functions verified on their own (a loop called in a loop) make their own dynptr.

const SCORE: &str = r#"
local netfilter = require "bpf.netfilter"
local xdp = require "bpf.xdp"
local na = require "linux.netfilter"
local xa = require "linux.xdp"

-- How many of the 16 bytes at `from` equal `b`: a loop, called in a loop, so it becomes a
-- function of its own that the verifier checks once.
local function count_byte(p, from, b)
  local n = 0
  for i = 0, 15 do
    if p:getbyte(from + i) == b then n = n + 1 end
  end
  return n
end

local function score(p, base)
  local total = 0
  for r = 0, 7 do
    total = total + count_byte(p, base + r * 16, p:getbyte(base + r))
  end
  return total
end

return {
  netfilter.program(function(ctx) if score(ctx:packet(), 0) > 20 then return na.DROP end return na.ACCEPT end, { name = "score_nf" }),
  xdp.program(function(ctx) if score(ctx:packet(), 14) > 20 then return xa.DROP end return xa.PASS end, { name = "score_xdp" }),
}
"#;

#[test]
fn outlined_functions_read_the_packet_at_netfilter_too() {
    let compiled = compile_source(SCORE, "score.lua", &Options::default()).unwrap_or_else(|f| panic!("{}", f.render()));
    let nf = compiled.object.programs.iter().find(|p| p.name == "score_nf").unwrap();
    assert_eq!(nf.subfunctions.len(), 1, "count_byte is a separately verified function");
    let kfuncs: Vec<&str> = nf.kfunc_relocs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        kfuncs.iter().filter(|n| **n == "bpf_dynptr_from_skb").count(),
        2,
        "the entry and the function each make a dynptr: {kfuncs:?}"
    );
    if !kernel_or_skip() {
        return;
    }
    let h = Harness::from_compiled(compiled, "score.lua");
    eprintln!("score_nf: verifier processed {}", verified(&h, "score_nf"));
    let mut rng = Rng::new(0x5c0e);
    let mut seen = [0usize; 2];
    for _ in 0..200 {
        let len = 20 + rng.below(150);
        // Few distinct byte values, so that counts cross the threshold either way.
        let ip: Vec<u8> = (0..len).map(|_| *rng.pick(&[1u8, 2, 3, 4])).collect();
        let x = as_nf(run_xdp(&h, "score_xdp", &ethernet(0x0800, &ip)));
        let n = run_nf(&h, "score_nf", &ip, Family::Ipv4);
        assert_eq!(n, x, "verdicts differ on {}", hex(&ip));
        seen[n as usize] += 1;
    }
    assert!(seen[0] > 10 && seen[1] > 10, "both verdicts exercised: {seen:?}");
}

#[test]
fn a_refused_netfilter_program_shows_its_lua_lines() {
    // Remove the null test after the first slice: the kernel must refuse the load through a
    // maybe-null pointer, and its log (with the BTF line info luabpf loads) names the Lua line.
    use runtime_bpf::isa::{Insn, JmpOp, BPF_JMP, BPF_K};
    if !kernel_or_skip() {
        return;
    }
    let mut compiled = compile_example("netfilter/sni_filter");
    let nf = compiled
        .object
        .programs
        .iter_mut()
        .find(|p| p.name == "sni_nf")
        .unwrap();
    let slice = nf
        .kfunc_relocs
        .iter()
        .find(|(_, n)| n == "bpf_dynptr_slice")
        .map(|(s, _)| *s)
        .expect("a slice");
    let jeq0 = BPF_JMP | JmpOp::Jeq as u8 | BPF_K;
    let test = (slice + 1..slice + 4)
        .find(|&i| nf.insns[i].code == jeq0 && nf.insns[i].imm == 0)
        .expect("the null test follows the slice");
    nf.insns[test] = Insn::ja(0);
    let elf = runtime_bpf::elf::write(&compiled.object);
    let err = load(&elf).expect_err("the verifier must refuse a load through a maybe-null pointer");
    let v = err
        .verifier()
        .unwrap_or_else(|| panic!("not a verifier refusal: {err}"));
    assert_eq!(v.program, "sni_nf");
    assert!(v.log.contains("mem_or_null"), "{}", v.log);
    assert!(
        v.log.contains("p:getbyte(ip) >> 4 ~= 4"),
        "the log names the Lua line:\n{}",
        v.log
    );
}

// ---------------------------------------------------------------------------------------------
// What compiles for netfilter verifies.

#[test]
fn random_programs_that_compile_for_netfilter_verify() {
    if !kernel_or_skip() {
        return;
    }
    let (mut verified, mut refused) = (0, 0);
    for seed in 0..100u64 {
        let src = as_netfilter(&random_program(seed, seed % 3 == 0));
        assert!(!src.contains("p:set") && src.contains("netfilter.program("), "{src}");
        let compiled = match compile_source(&src, "random.lua", &Options::default()) {
            Ok(c) => c,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        if let Err(e) = load(&compiled.elf) {
            panic!("random program #{seed} compiled for netfilter but did not load: {e}\n{src}");
        }
        verified += 1;
    }
    eprintln!("random netfilter programs: {verified} verified, {refused} refused by the compiler");
    // The compiler refuses the same seeds for XDP (loop budgets): about a fifth.
    assert!(verified >= 70, "{verified} of 100 compiled");
}

/// The program without its packet writes, for `hook` (`xdp` or `netfilter`).
fn without_writes(xdp_program: &str, hook: &str) -> String {
    let nf = as_netfilter(xdp_program);
    match hook {
        "netfilter" => nf,
        _ => nf
            .replace(
                "local netfilter = require \"bpf.netfilter\"",
                "local xdp = require \"bpf.xdp\"",
            )
            .replace("netfilter.program(", "xdp.program("),
    }
}

#[test]
fn random_programs_agree_between_xdp_and_netfilter() {
    // The same code over the same bytes (the netfilter test run takes the data as the packet
    // from its first byte, so both hooks see identical packets): the same map contents, and the
    // same verdict where netfilter can return it (other values are its default verdict, 1).
    if !kernel_or_skip() {
        return;
    }
    let mut rng = Rng::new(0xd1ff);
    let mut compared = 0;
    for seed in 0..60u64 {
        let program = random_program(seed, seed % 3 == 0);
        let compile = |hook| compile_source(&without_writes(&program, hook), "random.lua", &Options::default());
        let (Ok(x), Ok(n)) = (compile("xdp"), compile("netfilter")) else {
            continue;
        };
        let (hx, hn) = (
            Harness::from_compiled(x, "random xdp"),
            Harness::from_compiled(n, "random nf"),
        );
        for _ in 0..4 {
            let len = 20 + rng.below(100);
            let packet = rng.bytes(len);
            let vx = run_xdp(&hx, "t", &packet);
            let vn = run_nf(&hn, "t", &packet, Family::Ipv4);
            let want = if vx <= 1 { vx } else { NF_ACCEPT };
            assert_eq!(
                vn,
                want,
                "seed {seed}: XDP {vx}, netfilter {vn} on {}\n{program}",
                hex(&packet)
            );
        }
        let dump = |h: &Harness| {
            let mut m: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                h.keys("m").into_iter().map(|k| (k.clone(), h.get("m", &k))).collect();
            m.sort();
            let counts: Vec<u64> = (0u32..4)
                .map(|k| h.percpu_sum_u64("counts", &k.to_le_bytes()))
                .collect();
            (m, counts)
        };
        assert_eq!(dump(&hn), dump(&hx), "seed {seed}: maps differ\n{program}");
        compared += 1;
    }
    assert!(compared >= 40, "{compared} of 60 programs compared");
}

#[test]
fn every_example_compiled_for_netfilter_verifies() {
    // The examples are XDP programs; with the hook swapped (the module, and PASS for ACCEPT) they
    // exercise netfilter reads in loops the size of real filters. Their verifier cost stays
    // close to XDP's (on 6.18: ua_filter 61,202 against 49,883; cookie_guard 111,623 against
    // 100,640).
    if !kernel_or_skip() {
        return;
    }
    for example in example_names() {
        let src = std::fs::read_to_string(example_path(&example)).unwrap();
        let Some(src) = xdp_example_as_netfilter(&src) else {
            continue; // tc examples read __sk_buff fields netfilter has no counterpart for
        };
        let compiled = compile_source(&src, &format!("{example}.lua"), &Options::default())
            .unwrap_or_else(|f| panic!("{example} for netfilter does not compile:\n{}", f.render()));
        let section = &compiled.object.programs[0].section;
        assert!(section.starts_with("netfilter/"), "{example}: section {section}");
        let h = Harness::from_compiled(compiled, &example);
        let n = verified(&h, &h.program);
        eprintln!("{example} at netfilter: verifier processed {n}");
        assert!(n <= 300_000, "{example} at netfilter: {n} processed");
    }
}
