//! Program files written in the style of Lunatik's Lua-to-eBPF proposal
//! (luainkernel/lunatik doc/design/luaebpf/api.md) compile, pass the verifier and behave like
//! the same filters written in luabpf's usual style (tests/lunatik/*_luabpf.lua), packet for
//! packet, map for map. What Lunatik has and luabpf cannot support (`tc.runtime()`, a call
//! into Lunatik's kernel Lua runtime) is refused with a diagnostic pinned here.

use std::path::PathBuf;

use luabpf_compiler::compile::{compile_source, Options};
use luabpf_tests::harness::*;
use luabpf_tests::packets::*;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn lunatik_file(name: &str) -> PathBuf {
    workspace_root().join("tests/lunatik").join(format!("{name}.lua"))
}

/// Both styles loaded: (Lunatik style, luabpf style).
fn pair(name: &str) -> Option<(Harness, Harness)> {
    let lunatik = Harness::file(&lunatik_file(name))?;
    let luabpf = Harness::file(&lunatik_file(&format!("{name}_luabpf")))?;
    Some((lunatik, luabpf))
}

/// Runs `packet` through both and asserts the same verdict; returns it.
fn same_verdict(a: &Harness, b: &Harness, packet: &[u8], what: &str) -> u32 {
    let (va, vb) = (a.run(packet), b.run(packet));
    assert_eq!(
        va,
        vb,
        "{what}: {} gives {va}, {} gives {vb}\n{}",
        a.program,
        b.program,
        hex(packet)
    );
    va
}

#[test]
fn lunatik_style_files_compile_verify_and_name_things_as_lunatik_does() {
    let Some((sni, _)) = pair("sni") else { return };
    // No `name` option: the program is named after the file, the map after its local.
    assert_eq!(sni.loaded.program_names(), ["sni"]);
    assert!(sni.loaded.map("blocklist").is_ok());
    let Some((flows, _)) = pair("flows") else { return };
    assert_eq!(flows.loaded.program_names(), ["flows"]);
    assert!(flows.loaded.map("ports").is_ok() && flows.loaded.map("seen").is_ok());
    for h in [&sni, &flows] {
        eprintln!(
            "{}: {} instructions, verifier processed {:?}",
            h.program,
            h.object_insns(),
            h.verified_insns()
        );
    }
}

#[test]
fn a_lunatik_style_sni_filter_behaves_like_the_luabpf_style_one() {
    let Some((lunatik, luabpf)) = pair("sni") else { return };
    const EVIL: &str = "evil.example";
    for h in [&lunatik, &luabpf] {
        h.set("blocklist", &cstr(EVIL, 64), &0u64.to_le_bytes());
    }
    let src = [10, 0, 0, 1];
    let dst = [10, 0, 0, 2];
    let mut cases: Vec<(String, Vec<u8>, u32)> = vec![
        ("blocked".into(), tls_frame(EVIL), XDP_DROP),
        ("not blocked".into(), tls_frame("good.example"), XDP_PASS),
        ("a longer name".into(), tls_frame("evil.example.com"), XDP_PASS),
        ("HTTP".into(), http_frame(src, "curl/8.0", None), XDP_PASS),
        ("IPv6".into(), ipv6_frame(), XDP_PASS),
        (
            "UDP".into(),
            udp_packet(src, dst, 1, 443, &client_hello(EVIL, 12, 5)),
            XDP_PASS,
        ),
    ];
    for (n, pos) in [(12, 0), (12, 11), (32, 31), (33, 32), (12, 12)] {
        let expect = if pos < n.min(32) { XDP_DROP } else { XDP_PASS };
        let p = tcp_packet(src, dst, 40000, 443, &[], &client_hello(EVIL, n, pos));
        cases.push((format!("SNI as extension {pos} of {n}"), p, expect));
    }
    for options in [vec![1, 1, 1, 0], vec![1; 40]] {
        let p = tcp_packet(src, dst, 40000, 443, &options, &client_hello(EVIL, 12, 5));
        cases.push((format!("{} bytes of IP options", options.len()), p, XDP_DROP));
    }
    let mut drops = 0;
    for (what, packet, expect) in &cases {
        assert_eq!(same_verdict(&lunatik, &luabpf, packet, what), *expect, "{what}");
        drops += (*expect == XDP_DROP) as u64;
    }
    // Every truncation of a blocked ClientHello: the same verdict (both read nothing after the
    // name, so a prefix that holds it is dropped).
    let packet = tls_frame(EVIL);
    for len in 14..=packet.len() {
        if same_verdict(&lunatik, &luabpf, &packet[..len], &format!("first {len} bytes")) == XDP_DROP {
            drops += 1;
        }
    }
    for h in [&lunatik, &luabpf] {
        assert_eq!(
            h.get_u64("blocklist", &cstr(EVIL, 64)),
            Some(drops),
            "{} counts every drop",
            h.program
        );
    }
}

#[test]
fn a_lunatik_style_tc_classifier_behaves_like_the_luabpf_style_one() {
    let Some((lunatik, luabpf)) = pair("flows") else { return };
    for h in [&lunatik, &luabpf] {
        h.set("ports", &443u32.to_le_bytes(), &5u32.to_le_bytes());
        h.set("ports", &53u32.to_le_bytes(), &0u32.to_le_bytes());
    }
    let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let cases: Vec<(&str, Vec<u8>, u32, u64)> = vec![
        ("TCP to 443", tcp_packet(src, dst, 40000, 443, &[], b"x"), TC_ACT_OK, 1),
        ("UDP to 443", udp_packet(src, dst, 40000, 443, b"x"), TC_ACT_OK, 1),
        ("UDP to 53", udp_packet(src, dst, 40000, 53, b"q"), TC_ACT_SHOT, 1),
        ("TCP to 53", tcp_packet(src, dst, 40000, 53, &[], b""), TC_ACT_OK, 1),
        ("TCP to 80", tcp_packet(src, dst, 40000, 80, &[], b""), TC_ACT_OK, 0),
        (
            "ICMP",
            ipv4_packet(src, dst, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1]),
            TC_ACT_OK,
            0,
        ),
        ("IPv6", ipv6_frame(), TC_ACT_OK, 0),
        (
            "UDP to 53 behind IP options",
            {
                let mut p = udp_packet(src, dst, 40000, 53, b"q");
                p.splice(34..34, [1, 1, 1, 0]);
                p[14] = 0x46;
                p
            },
            TC_ACT_SHOT,
            1,
        ),
    ];
    let mut seen = 0;
    for (what, packet, verdict, counted) in &cases {
        assert_eq!(same_verdict(&lunatik, &luabpf, packet, what), *verdict, "{what}");
        seen += counted;
    }
    let udp = udp_packet(src, dst, 40000, 53, b"q");
    // The kernel's tc test run refuses an IPv4 frame shorter than its IP header; from there
    // on, the prefixes cut the UDP header at every byte.
    for len in 34..=udp.len() {
        if same_verdict(&lunatik, &luabpf, &udp[..len], &format!("first {len} bytes")) == TC_ACT_SHOT {
            seen += 1;
        }
    }
    for h in [&lunatik, &luabpf] {
        assert_eq!(
            h.get_u64("seen", &0u32.to_le_bytes()),
            Some(seen),
            "{} counts",
            h.program
        );
    }
}

/// Lunatik's `tc.runtime()` calls its kernel Lua runtime: luabpf refuses it where it is
/// called, with the way out.
#[test]
fn lunatiks_runtime_call_is_refused_with_a_diagnostic() {
    let src = r#"local tc = require("bpf.tc")
local action = require("linux.tc")
local lua = tc.runtime()
return tc.program(function(skb) return action.ACT_OK end)
"#;
    let failure = match compile_source(src, "prog.lua", &Options::default()) {
        Ok(_) => panic!("tc.runtime() compiled"),
        Err(f) => f,
    };
    let rendered = failure.render();
    insta::with_settings!({
        snapshot_path => "../../snapshots/lunatik",
        prepend_module_to_snapshot => false,
        description => src,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("tc_runtime", rendered);
    });
    let d = &failure.diags[0];
    assert_eq!(failure.sources.line_col(d.span.file, d.span.start), (3, 13));
}

/// The curried constructor still checks what it is given.
#[test]
fn the_curried_constructor_checks_its_function_and_options() {
    for (src, message) in [
        (
            "return require('bpf.xdp').program{ name = 'x' }(42)",
            "expects a function, got an integer",
        ),
        (
            "return require('bpf.xdp').program{ colour = 'x' }(function(ctx) return 2 end)",
            "unknown option `colour`",
        ),
    ] {
        let failure = match compile_source(src, "prog.lua", &Options::default()) {
            Ok(_) => panic!("compiled: {src}"),
            Err(f) => f,
        };
        assert!(failure.render().contains(message), "{src}:\n{}", failure.render());
    }
    let ok = "local a = require('linux.xdp')\nreturn require('bpf.xdp').program{ name = 'curried', default = a.DROP }(function(ctx) return a.TX end)";
    let compiled = compile_source(ok, "prog.lua", &Options::default()).unwrap_or_else(|f| panic!("{}", f.render()));
    assert_eq!(compiled.object.programs[0].name, "curried");
}
