//! `luabpf run --engine`: the BPF interpreter runs programs without privileges, says so, and
//! prints what the kernel prints for the same program, capture and seeds.
//!
//! The unprivileged runs use `setpriv` (util-linux) to become `nobody` when the tests run as
//! root; the binary, program and capture are copied to a world-readable temporary directory
//! first, so that the checkout's own permissions do not matter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use luabpf_loader::require_kernel_or_skip;

mod common;
use common::command::{luabpf, output, workspace, Run, TempDir};

/// Runs `binary args` as an unprivileged user: `nobody` through setpriv when we are root.
fn unprivileged(dir: &TempDir, binary: &str, args: &[&str]) -> Run {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        assert!(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "setpriv (util-linux) is needed to run luabpf as nobody; scripts/test installs it"
        );
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            binary,
        ]);
        c
    } else {
        Command::new(binary)
    };
    output(cmd.args(args).current_dir(&dir.0))
}

fn example(name: &str) -> PathBuf {
    workspace().join("examples").join(format!("{name}.lua"))
}

fn pcap(name: &str) -> PathBuf {
    workspace().join("tests").join("pcaps").join(name)
}

/// The interpreter works for a user without bpf(), and every way of asking for an engine
/// says which one ran.
#[test]
fn interpreter_runs_without_privileges() {
    let dir = TempDir::new("engines");
    let bin = dir.copy(Path::new(env!("CARGO_BIN_EXE_luabpf")), true);
    let prog = dir.copy(&example("sni_filter"), false);
    let capture = dir.copy(&pcap("sni.pcap"), false);
    let seed = "blocklist:evil.example=0";

    let run = unprivileged(
        &dir,
        &bin,
        &["run", &prog, "--pcap", &capture, "--engine", "interp", "--map", seed],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.lines().last(),
        Some("summary: 7 packets: 2 DROP, 4 PASS, 1 skipped (engine: interpreter)"),
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");

    // auto: bpf() fails for nobody, so the interpreter runs, with a note saying why.
    let run = unprivileged(&dir, &bin, &["run", &prog, "--pcap", &capture, "--json", "--map", seed]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.starts_with("note: bpf() is unavailable here (")
            && run.stderr.contains("running the program in luabpf's BPF interpreter"),
        "{run:?}"
    );
    let summary = run.stdout.lines().last().unwrap();
    assert!(
        summary.contains("\"DROP\":2") && summary.ends_with(",\"engine\":\"interpreter\"}}"),
        "{run:?}"
    );

    // kernel: a usage error that points at the interpreter.
    let run = unprivileged(&dir, &bin, &["run", &prog, "--pcap", &capture, "--engine", "kernel"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("cannot use bpf() here") && run.stderr.contains("--engine interp"),
        "{run:?}"
    );
    assert_eq!(run.stdout, "", "{run:?}");
}

const NTH_DROP: &str = r#"local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local seen = map.array("seen", { key = "I4", value = "I8", entries = 1 })
local T = { [3] = 1 }
local function f(ctx)
  local n = (seen[0] or 0) + 1
  seen[0] = n
  if T[n] then return action.TX end
  if n > 2 then return action.DROP end
  return action.PASS
end
return xdp.program(f, { name = "nth_drop" })
"#;

/// Same program, capture and seeds: the kernel and the interpreter print the same lines, but
/// for the engine in the summary (map state carried between packets, a static table, seeds,
/// the JSON form, a rewritten packet written with --out).
#[test]
fn kernel_and_interpreter_print_the_same() {
    if !require_kernel_or_skip("kernel_and_interpreter_print_the_same") {
        return;
    }
    let dir = TempDir::new("engines");
    let nth = dir.0.join("nth.lua");
    std::fs::write(&nth, NTH_DROP).unwrap();
    let nth = nth.to_str().unwrap().to_string();
    let plain = pcap("plain.pcap").to_str().unwrap().to_string();
    let sni = pcap("sni.pcap").to_str().unwrap().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec![nth.clone(), "--pcap".into(), plain.clone()],
        vec![
            nth.clone(),
            "--pcap".into(),
            plain.clone(),
            "--map".into(),
            "seen:0=1".into(),
            "--json".into(),
        ],
        vec![
            example("sni_filter").to_str().unwrap().into(),
            "--pcap".into(),
            sni.clone(),
            "--map".into(),
            "blocklist:evil.example=0".into(),
        ],
        vec![
            example("ua_filter").to_str().unwrap().into(),
            "--pcap".into(),
            plain.clone(),
            "--json".into(),
        ],
    ];
    for case in cases {
        let mut outputs = Vec::new();
        for engine in ["kernel", "interp"] {
            let mut args: Vec<&str> = vec!["run"];
            args.extend(case.iter().map(String::as_str));
            let out = dir.0.join(format!("out-{engine}.pcap"));
            args.extend(["--engine", engine, "--out", out.to_str().unwrap()]);
            let run = luabpf(&args);
            assert_eq!(run.code, 0, "{run:?}");
            let name = if engine == "interp" { "interpreter" } else { "kernel" };
            assert!(
                run.stdout.trim_end().ends_with(&format!("{name})"))
                    || run.stdout.contains(&format!("\"engine\":\"{name}\"")),
                "{run:?}"
            );
            let text = run
                .stdout
                .replace(&format!("engine: {name}"), "engine")
                .replace(&format!("\"engine\":\"{name}\""), "\"engine\"");
            outputs.push((text, std::fs::read(&out).unwrap()));
        }
        assert_eq!(outputs[0], outputs[1], "kernel and interpreter differ on {case:?}");
    }
    // The static table and the seed are seen by the interpreter: packet 3 is TX, and a seeded
    // count of 1 makes packet 2 the third.
    let run = luabpf(&["run", &nth, "--pcap", &plain, "--engine", "interp", "--map", "seen:0=1"]);
    assert_eq!(
        run.stdout,
        "1 PASS (2)\n2 TX (3)\n3 DROP (1)\nsummary: 3 packets: 1 DROP, 1 PASS, 1 TX (engine: interpreter)\n",
        "{run:?}"
    );
}

/// An IPv6 netfilter program: drops UDP datagrams with 8 bytes of payload (the payload length
/// read through a string copy).
const V6_TCP: &str = r#"local netfilter = require "bpf.netfilter"
local verdict   = require "linux.netfilter"
return netfilter.program(function(ctx)
  local p = ctx:packet()
  local s = p:getstring(4, 2)
  if p:getbyte(6) == 17 and #s == 2 and s:byte(2) == 8 and #p >= 48 then return verdict.DROP end
  return verdict.ACCEPT
end, { name = "v6_tcp", family = "ipv6" })
"#;

/// A netfilter program run by nobody in the interpreter prints what root's kernel run prints
/// (the IP packets of the capture's frames of the program's family, through the dynptr
/// kfuncs), but for the engine in the summary.
#[test]
fn netfilter_programs_run_as_nobody_print_what_the_kernel_prints() {
    if !require_kernel_or_skip("netfilter_programs_run_as_nobody_print_what_the_kernel_prints") {
        return;
    }
    let dir = TempDir::new("engines");
    let bin = dir.copy(Path::new(env!("CARGO_BIN_EXE_luabpf")), true);
    let sni_nf = dir.copy(&example("netfilter/sni_filter"), false);
    let v6 = dir.0.join("v6_tcp.lua");
    std::fs::write(&v6, V6_TCP).unwrap();
    std::fs::set_permissions(&v6, std::fs::Permissions::from_mode(0o644)).unwrap();
    let v6 = v6.to_str().unwrap().to_string();
    let capture = dir.copy(&pcap("sni.pcap"), false);
    let seed = ["--map", "blocklist:evil.example=0"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&[sni_nf.as_str(), "--program", "sni_nf"][..], &seed[..]].concat(),
            "2 DROP",
        ),
        (
            [&[sni_nf.as_str(), "--program", "sni_nf", "--json"][..], &seed[..]].concat(),
            "\"DROP\":2",
        ),
        (vec![v6.as_str()], "1 DROP"),
    ];
    for (case, drops) in cases {
        let mut args = vec!["run", "--pcap", capture.as_str()];
        args.extend(&case);
        let kernel = luabpf(&[&args[..], &["--engine", "kernel"]].concat());
        let interp = unprivileged(&dir, &bin, &[&args[..], &["--engine", "interp"]].concat());
        assert_eq!((kernel.code, interp.code), (0, 0), "{kernel:?}\n{interp:?}");
        assert_eq!(interp.stderr, "", "{interp:?}");
        assert!(kernel.stdout.contains(drops), "{case:?}: {kernel:?}");
        assert!(interp.stdout.contains("interpreter"), "{interp:?}");
        assert_eq!(
            kernel
                .stdout
                .replace("engine: kernel", "engine")
                .replace("\"engine\":\"kernel\"", "\"engine\""),
            interp
                .stdout
                .replace("engine: interpreter", "engine")
                .replace("\"engine\":\"interpreter\"", "\"engine\""),
            "{case:?}"
        );
    }
}
