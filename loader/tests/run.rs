//! `luabpf run`: packet captures through programs in the kernel, as a user runs it.
//!
//! The captures are built from tests/packets.rs and checked in under tests/pcaps/ (a test
//! checks that they are current; `LUABPF_UPDATE_PCAPS=1` rewrites them). Tests that load
//! programs need bpf(): they skip loudly without it, unless LUABPF_REQUIRE_KERNEL=1.

#[path = "../../tests/packets.rs"]
#[allow(dead_code)]
mod packets;

use std::collections::BTreeMap;
use std::path::PathBuf;

use luabpf_loader::pcap;
use luabpf_loader::require_kernel_or_skip;

mod common;
use common::command::{luabpf, workspace, Run, TempDir};

fn pcaps() -> PathBuf {
    workspace().join("tests").join("pcaps")
}

fn example(name: &str) -> String {
    workspace()
        .join("examples")
        .join(format!("{name}.lua"))
        .to_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// The SNI corpus: what each packet is, and its expected verdict with `evil.example` blocked.
fn sni_corpus() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (packets::tls_frame("evil.example"), "DROP"),
        (packets::tls_frame("good.example"), "PASS"),
        (packets::http_frame([10, 0, 0, 7], "curl/8.0", None), "PASS"),
        (packets::ipv6_frame(), "PASS"),
        (vec![0x02, 0, 0, 0, 0, 2, 0x08, 0, 0, 0], "skipped"), // 10 bytes: too short
        (
            packets::tcp_packet(
                [10, 0, 0, 3],
                [10, 0, 0, 2],
                40001,
                443,
                &[1, 1, 1, 0], // NOP NOP NOP EOL: IP options
                &packets::client_hello("evil.example", 8, 2),
            ),
            "DROP",
        ),
        (packets::tls_frame("evil.example.org"), "PASS"),
    ]
}

fn stamped(frames: &[Vec<u8>]) -> Vec<(&[u8], u64)> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_slice(), 1_700_000_000_000_000_000 + i as u64 * 1_000_123))
        .collect()
}

/// The checked-in captures, by file name, as the generator builds them.
fn generated_pcaps() -> Vec<(&'static str, Vec<u8>)> {
    let sni: Vec<Vec<u8>> = sni_corpus().into_iter().map(|(p, _)| p).collect();
    let classic = pcap::write(stamped(&sni));
    let truncated = classic[..classic.len() - 30].to_vec();
    let plain: Vec<Vec<u8>> = vec![
        packets::udp_packet([192, 168, 1, 1], [192, 168, 1, 2], 5353, 53, b"hello"),
        packets::tls_frame("good.example"),
        packets::ipv6_frame(),
    ];
    vec![
        ("sni.pcap", classic),
        ("sni-be.pcapng", pcap::write_pcapng(stamped(&sni), true)),
        ("sni-truncated.pcap", truncated),
        ("plain.pcap", pcap::write(stamped(&plain))),
    ]
}

fn pcap_path(name: &str) -> String {
    pcaps().join(name).to_str().unwrap().to_string()
}

#[test]
fn checked_in_pcaps_are_current() {
    let update = std::env::var("LUABPF_UPDATE_PCAPS").is_ok_and(|v| v == "1");
    for (name, bytes) in generated_pcaps() {
        let path = pcaps().join(name);
        if update {
            std::fs::create_dir_all(pcaps()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (LUABPF_UPDATE_PCAPS=1 writes it)", path.display()));
        assert!(
            on_disk == bytes,
            "{} is stale: run with LUABPF_UPDATE_PCAPS=1",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader for the --json lines (flat objects; nested objects for the summary).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Num(i64),
    Str(String),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(k),
            _ => None,
        }
    }
    fn num(&self, k: &str) -> Option<i64> {
        match self.get(k)? {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
    fn str(&self, k: &str) -> Option<&str> {
        match self.get(k)? {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn parse_json(line: &str) -> Json {
    fn value(s: &[u8], i: &mut usize) -> Json {
        match s[*i] {
            b'{' => {
                *i += 1;
                let mut m = BTreeMap::new();
                if s[*i] == b'}' {
                    *i += 1;
                    return Json::Obj(m);
                }
                loop {
                    let Json::Str(k) = value(s, i) else {
                        panic!("key expected at {i}")
                    };
                    assert_eq!(s[*i], b':', "colon at {i}");
                    *i += 1;
                    let v = value(s, i);
                    assert!(m.insert(k, v).is_none(), "duplicate key");
                    match s[*i] {
                        b',' => *i += 1,
                        b'}' => {
                            *i += 1;
                            return Json::Obj(m);
                        }
                        c => panic!("unexpected {:?} at {i}", c as char),
                    }
                }
            }
            b'"' => {
                *i += 1;
                let mut out = String::new();
                while s[*i] != b'"' {
                    if s[*i] == b'\\' {
                        *i += 1;
                        match s[*i] {
                            b'n' => out.push('\n'),
                            b'u' => {
                                let h = std::str::from_utf8(&s[*i + 1..*i + 5]).unwrap();
                                out.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap());
                                *i += 4;
                            }
                            c => out.push(c as char),
                        }
                    } else {
                        out.push(s[*i] as char);
                    }
                    *i += 1;
                }
                *i += 1;
                Json::Str(out)
            }
            _ => {
                let start = *i;
                while *i < s.len() && (s[*i] == b'-' || s[*i].is_ascii_digit()) {
                    *i += 1;
                }
                Json::Num(std::str::from_utf8(&s[start..*i]).unwrap().parse().unwrap())
            }
        }
    }
    let s = line.as_bytes();
    let mut i = 0;
    let v = value(s, &mut i);
    assert_eq!(i, s.len(), "trailing text in {line:?}");
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Errors found before the kernel is involved (no bpf() needed)

#[test]
fn truncated_capture_is_a_clear_usage_error() {
    let run = luabpf(&[
        "run",
        &example("sni_filter"),
        "--pcap",
        &pcap_path("sni-truncated.pcap"),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("sni-truncated.pcap: truncated capture")
            && run.stderr.contains("byte offset")
            && run.stderr.contains("packet 7"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn foreign_and_missing_captures() {
    let dir = TempDir::new("run");
    let text = dir.file("notes.pcap", b"this is not a capture\n");
    let run = luabpf(&["run", &example("sni_filter"), "--pcap", &text]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("not a pcap or pcapng file"), "{run:?}");

    let run = luabpf(&["run", &example("sni_filter"), "--pcap", "/nonexistent/x.pcap"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read /nonexistent/x.pcap"), "{run:?}");

    // Linux cooked capture (link type 113): named in the error.
    let mut sll = pcap::write(stamped(&[packets::ipv6_frame()]));
    sll[20] = 113;
    let sll = dir.file("sll.pcap", &sll);
    let run = luabpf(&["run", &example("sni_filter"), "--pcap", &sll]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("link type 113 (LINUX_SLL"), "{run:?}");
}

/// `--reference`: every packet also runs in the reference Lua interpreter; they agree on the
/// SNI corpus (a line per packet, then the reference's summary), and an object file is
/// refused (the reference runs the Lua file).
#[test]
fn reference_agrees_with_the_kernel() {
    if !require_kernel_or_skip("reference_agrees_with_the_kernel") {
        return;
    }
    let sni = example("sni_filter");
    let capture = pcap_path("sni.pcap");
    let args = [
        "run",
        &sni,
        "--pcap",
        &capture,
        "--map",
        "blocklist:evil.example=0",
        "--reference",
    ];
    let run = luabpf(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let compared = sni_corpus().iter().filter(|(_, v)| *v != "skipped").count();
    let last = run.stdout.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("reference: {compared} packets compared, 0 disagreements"),
        "{run:?}"
    );
    assert!(run.stdout.contains("DROP (1)"), "{run:?}");

    let json = luabpf(&[&args[..], &["--json"]].concat());
    assert_eq!(json.code, 0, "{json:?}");
    let last = json.stdout.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!("{{\"reference\":{{\"packets\":{compared},\"disagreements\":0,\"excused\":0}}}}"),
        "{json:?}"
    );

    let dir = TempDir::new("run");
    let obj = dir.0.join("sni.o");
    let c = luabpf(&["compile", &sni, "-o", obj.to_str().unwrap()]);
    assert_eq!(c.code, 0, "{c:?}");
    let from_o = luabpf(&["run", obj.to_str().unwrap(), "--pcap", &capture, "--reference"]);
    assert_eq!(from_o.code, 2, "{from_o:?}");
    assert!(
        from_o.stderr.contains("--reference runs the Lua program file"),
        "{from_o:?}"
    );
}

#[test]
fn bad_map_seeds_are_usage_errors() {
    let sni = example("sni_filter");
    let cap = pcap_path("sni.pcap");
    for (seed, want) in [
        ("nosuch:a=1", "no map `nosuch` in the program (it has: blocklist)"),
        ("blocklist:evil.example", "expected MAP:KEY=VALUE"),
        ("blocklist:evil.example=lots", "value: `lots` is not an integer"),
        ("blocklist:evil.example=-1", "value: -1 does not fit a I8"),
        (&*format!("blocklist:{}=1", "x".repeat(65)), "key: `xxxx"),
    ] {
        let run = luabpf(&["run", &sni, "--pcap", &cap, "--map", seed]);
        assert_eq!(run.code, 2, "{seed}: {run:?}");
        assert!(run.stderr.contains(want), "{seed}: want {want:?}: {run:?}");
    }
}

#[test]
fn diagnostics_are_exit_1() {
    let dir = TempDir::new("run");
    let bad = dir.file(
        "bad.lua",
        b"local xdp = require \"bpf.xdp\"\nlocal function f(ctx)\n  local y = 7 / 2\n  return 2\nend\nreturn xdp.program(f)\n",
    );
    let run = luabpf(&["run", &bad, "--pcap", &pcap_path("sni.pcap")]);
    assert_eq!(run.code, 1, "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Through the kernel

fn sni_run(capture: &str, json: bool) -> Run {
    let sni = example("sni_filter");
    let mut args = vec!["run", &sni, "--pcap", capture, "--map", "blocklist:evil.example=0"];
    if json {
        args.push("--json");
    }
    luabpf(&args)
}

#[test]
fn sni_filter_over_a_pcap() {
    if !require_kernel_or_skip("sni_filter_over_a_pcap") {
        return;
    }
    let run = sni_run(&pcap_path("sni.pcap"), false);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let corpus = sni_corpus();
    assert_eq!(lines.len(), corpus.len() + 1, "{run:?}");
    for (i, (_, want)) in corpus.iter().enumerate() {
        let n = i + 1;
        let expected = match *want {
            "DROP" => format!("{n} DROP (1)"),
            "PASS" => format!("{n} PASS (2)"),
            _ => format!("{n} skipped: 10 bytes, shorter than the 14-byte Ethernet header"),
        };
        assert!(
            lines[i].starts_with(&expected),
            "packet {n}: {:?}, want {expected:?}",
            lines[i]
        );
    }
    assert_eq!(
        lines[corpus.len()],
        "summary: 7 packets: 2 DROP, 4 PASS, 1 skipped (engine: kernel)",
        "{run:?}"
    );

    // Without the seed nothing is blocked.
    let run = luabpf(&["run", &example("sni_filter"), "--pcap", &pcap_path("sni.pcap")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .ends_with("summary: 7 packets: 6 PASS, 1 skipped (engine: kernel)\n"),
        "{run:?}"
    );
}

#[test]
fn sni_filter_json_and_pcapng_agree() {
    if !require_kernel_or_skip("sni_filter_json_and_pcapng_agree") {
        return;
    }
    let corpus = sni_corpus();
    let classic = sni_run(&pcap_path("sni.pcap"), true);
    assert_eq!(classic.code, 0, "{classic:?}");
    let objs: Vec<Json> = classic.stdout.lines().map(parse_json).collect();
    assert_eq!(objs.len(), corpus.len() + 1, "{classic:?}");
    for (i, (_, want)) in corpus.iter().enumerate() {
        let o = &objs[i];
        assert_eq!(o.num("packet"), Some(i as i64 + 1), "{o:?}");
        if *want == "skipped" {
            assert!(o.str("skipped").unwrap().contains("10 bytes"), "{o:?}");
            assert_eq!(o.get("verdict"), None);
        } else {
            assert_eq!(o.str("name"), Some(*want), "{o:?}");
            assert_eq!(o.num("verdict"), Some(if *want == "DROP" { 1 } else { 2 }), "{o:?}");
            assert_eq!(o.get("data_out"), None, "sni_filter does not rewrite: {o:?}");
        }
    }
    let summary = objs.last().unwrap().get("summary").expect("summary object");
    assert_eq!(summary.num("packets"), Some(7));
    assert_eq!(summary.num("DROP"), Some(2));
    assert_eq!(summary.num("PASS"), Some(4));
    assert_eq!(summary.num("skipped"), Some(1));
    assert_eq!(summary.num("errors"), Some(0));

    // The same packets in a big-endian pcapng file: the same answers.
    let ng = sni_run(&pcap_path("sni-be.pcapng"), true);
    assert_eq!(ng.code, 0, "{ng:?}");
    assert_eq!(ng.stdout, classic.stdout);
    let ng_text = sni_run(&pcap_path("sni-be.pcapng"), false);
    let classic_text = sni_run(&pcap_path("sni.pcap"), false);
    assert_eq!(ng_text.stdout, classic_text.stdout);
}

const SWAP_MACS: &str = r#"local xdp    = require "bpf.xdp"
local action = require "linux.xdp"

local function swap(ctx)
  local p = ctx:packet()
  local d0, d1 = p:getuint32(0), p:getuint16(4)
  local s0, s1 = p:getuint32(6), p:getuint16(10)
  p:setuint32(0, s0)
  p:setuint16(4, s1)
  p:setuint32(6, d0)
  p:setuint16(10, d1)
  return action.TX
end

return xdp.program(swap, { name = "swap_macs" })
"#;

fn swapped(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    q[..6].copy_from_slice(&p[6..12]);
    q[6..12].copy_from_slice(&p[..6]);
    q
}

#[test]
fn rewriting_program_with_out() {
    if !require_kernel_or_skip("rewriting_program_with_out") {
        return;
    }
    let dir = TempDir::new("run");
    let prog = dir.file("swap.lua", SWAP_MACS.as_bytes());
    let input = pcap::read(&std::fs::read(pcap_path("plain.pcap")).unwrap()).unwrap();
    let out = dir.0.join("out.pcap");
    let out_s = out.to_str().unwrap();

    let run = luabpf(&[
        "run",
        &prog,
        "--pcap",
        &pcap_path("plain.pcap"),
        "--json",
        "--out",
        out_s,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let objs: Vec<Json> = run.stdout.lines().map(parse_json).collect();
    assert_eq!(objs.len(), input.packets.len() + 1, "{run:?}");
    for (o, p) in objs.iter().zip(&input.packets) {
        assert_eq!(o.str("name"), Some("TX"), "{o:?}");
        assert_eq!(o.num("verdict"), Some(3), "{o:?}");
        assert_eq!(o.str("data_out"), Some(hex(&swapped(&p.data)).as_str()), "{o:?}");
    }
    let summary = objs.last().unwrap().get("summary").unwrap();
    assert_eq!(summary.num("TX"), Some(3));
    assert_eq!(summary.num("rewritten"), Some(3));

    let written = pcap::read(&std::fs::read(&out).expect("--out written")).unwrap();
    assert_eq!(written.packets.len(), input.packets.len());
    for (w, p) in written.packets.iter().zip(&input.packets) {
        assert_eq!(w.data, swapped(&p.data));
        // Microsecond timestamps in the output.
        assert_eq!(w.timestamp_ns, p.timestamp_ns / 1000 * 1000);
    }

    // Text mode says which packets were rewritten.
    let run = luabpf(&["run", &prog, "--pcap", &pcap_path("plain.pcap")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("1 TX (3), packet rewritten"), "{run:?}");
    assert!(
        run.stdout
            .ends_with("summary: 3 packets: 3 TX, 3 rewritten (engine: kernel)\n"),
        "{run:?}"
    );
}

#[test]
fn object_files_and_program_selection() {
    if !require_kernel_or_skip("object_files_and_program_selection") {
        return;
    }
    let dir = TempDir::new("run");
    let obj = dir.0.join("sni.o");
    let c = luabpf(&["compile", &example("sni_filter"), "-o", obj.to_str().unwrap()]);
    assert_eq!(c.code, 0, "{c:?}");
    let from_o = luabpf(&[
        "run",
        obj.to_str().unwrap(),
        "--pcap",
        &pcap_path("sni.pcap"),
        "--map",
        "blocklist:evil.example=0",
        "--program",
        "sni_filter",
    ]);
    assert_eq!(from_o.code, 0, "{from_o:?}");
    assert_eq!(from_o.stdout, sni_run(&pcap_path("sni.pcap"), false).stdout);

    let run = luabpf(&[
        "run",
        obj.to_str().unwrap(),
        "--pcap",
        &pcap_path("sni.pcap"),
        "--program",
        "nope",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--program nope: no such program"), "{run:?}");
}

const NTH_DROP: &str = r#"local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"

-- Passes the first two packets it sees, drops the rest: map state across packets.
local seen = map.array("seen", { key = "I4", value = "I8", entries = 1 })

local function f(ctx)
  local n = (seen[0] or 0) + 1
  seen[0] = n
  if n > 2 then return action.DROP end
  return action.PASS
end

return xdp.program(f, { name = "nth_drop" })
"#;

#[test]
fn map_changes_persist_between_packets_and_seeds_apply() {
    if !require_kernel_or_skip("map_changes_persist_between_packets_and_seeds_apply") {
        return;
    }
    let dir = TempDir::new("run");
    let prog = dir.file("nth.lua", NTH_DROP.as_bytes());
    let run = luabpf(&["run", &prog, "--pcap", &pcap_path("plain.pcap")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "1 PASS (2)\n2 PASS (2)\n3 DROP (1)\nsummary: 3 packets: 1 DROP, 2 PASS (engine: kernel)\n"
    );
    // Seeded past the threshold (integer key and value, hex accepted): everything dropped.
    let run = luabpf(&["run", &prog, "--pcap", &pcap_path("plain.pcap"), "--map", "seen:0=0x10"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.lines().last(),
        Some("summary: 3 packets: 3 DROP (engine: kernel)"),
        "{run:?}"
    );
}
