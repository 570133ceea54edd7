//! The compiler's model of the verifier's walk (compiler/src/verifier_walk.rs) against the
//! kernel: its count of processed instructions next to the kernel's `verified_insns`, on the
//! examples (every test run) and on generated programs (`calibration`, ignored: a
//! measurement, see docs/fuzzing.md).

use luabpf_compiler::compile::{compile_path, compile_source, walk_object, Options, WALK_LIMITS};
use luabpf_compiler::verifier_walk::{Limits, Verdict};
use luabpf_loader::{load, require_kernel_or_skip};
use luabpf_tests::harness::{example_names, example_path, workspace_root};
use luabpf_tests::programs::{exploding_paths, random_program};

/// The kernel's count for an object (all its programs), or its refusal.
fn kernel_count(elf: &[u8]) -> Result<u64, String> {
    match load(elf) {
        Ok(l) => Ok(l.programs().iter().map(|p| p.verified_insns.unwrap_or(0) as u64).sum()),
        Err(e) => Err(e.to_string()),
    }
}

const FAR: Limits = Limits {
    insns: 2_000_000,
    pending: 16_384,
};

/// Every example and stdlib probe the compiler accepts: the walk's count stays within a
/// factor of the kernel's (it must neither refuse them nor be blind to their cost).
#[test]
fn examples_walk_close_to_the_kernel() {
    if !require_kernel_or_skip("examples_walk_close_to_the_kernel") {
        return;
    }
    let mut files: Vec<std::path::PathBuf> = example_names().iter().map(|n| example_path(n)).collect();
    files.push(workspace_root().join("examples/netfilter/sni_filter.lua"));
    for path in files {
        let compiled = compile_path(&path, &Options::default()).unwrap_or_else(|f| panic!("{}:\n{f}", path.display()));
        let model: u64 = walk_object(&compiled.object, FAR).iter().map(|w| w.processed).sum();
        let kernel = kernel_count(&compiled.elf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{}: model {model}, kernel {kernel}", path.display());
        assert!(
            model * 2 >= kernel && model <= kernel * 3 + 1000,
            "{}: the model walks {model} instructions, the kernel {kernel}",
            path.display()
        );
    }
}

/// The path explosion of the `paths_that_cannot_merge` snapshot is real: without the check the
/// kernel gives up on it; with it, `luabpf check` refuses it.
#[test]
fn an_explosion_the_kernel_gives_up_on_is_refused() {
    if !require_kernel_or_skip("an_explosion_the_kernel_gives_up_on_is_refused") {
        return;
    }
    let src = exploding_paths();
    let skip = Options {
        skip_walk: true,
        ..Options::default()
    };
    let unchecked = compile_source(&src, "explode.lua", &skip).unwrap_or_else(|f| panic!("{f}"));
    let refusal = kernel_count(&unchecked.elf).expect_err("the kernel gives up on it");
    assert!(refusal.contains("too large"), "{refusal}");
    let failure = compile_source(&src, "explode.lua", &Options::default()).expect_err("check refuses it");
    assert!(
        failure
            .render()
            .contains("has too many paths for the kernel's verifier"),
        "{failure}"
    );
}

/// Generated programs, compiled without the walk, walked and loaded: prints the model's count
/// next to the kernel's, and what the refusal threshold does. `LUABPF_WALK_N` programs
/// (default 500) from seed `LUABPF_WALK_SEED`.
#[test]
#[ignore = "a measurement (docs/fuzzing.md): run with --ignored --nocapture"]
fn calibration() {
    if !require_kernel_or_skip("calibration") {
        return;
    }
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = env("LUABPF_WALK_N", 500);
    let base = env("LUABPF_WALK_SEED", 7);
    let skip = Options {
        skip_walk: true,
        ..Options::default()
    };
    let (mut compiled_n, mut verified, mut refused) = (0, 0, 0);
    let (mut false_refusals, mut misses) = (0, 0);
    let mut ratios = Vec::new();
    // LUABPF_WALK_FILES: program files to measure instead (separated by ':').
    let files: Vec<String> = std::env::var("LUABPF_WALK_FILES")
        .map(|v| {
            v.split(':')
                .map(|p| std::fs::read_to_string(p).expect("readable"))
                .collect()
        })
        .unwrap_or_default();
    let n = if files.is_empty() { n } else { files.len() as u64 };
    for i in 0..n {
        let seed = base * 1_000_000_007 + i;
        let src = match files.get(i as usize) {
            Some(f) => f.clone(),
            None => random_program(seed, i % 2 == 1),
        };
        if let Ok(dir) = std::env::var("LUABPF_WALK_DUMP") {
            std::fs::write(format!("{dir}/{seed}.lua"), &src).expect("write");
        }
        let Ok(c) = compile_source(&src, "gen.lua", &skip) else {
            continue;
        };
        compiled_n += 1;
        if let Ok(dir) = std::env::var("LUABPF_WALK_DUMP") {
            std::fs::write(format!("{dir}/{seed}.o"), &c.elf).expect("write");
        }
        let walks = walk_object(&c.object, FAR);
        let model: u64 = walks.iter().map(|w| w.processed).sum();
        if std::env::var("LUABPF_WALK_TRACE").is_ok() {
            for (i, n) in walks[0].per_insn.iter().enumerate().filter(|(_, n)| **n > 0) {
                println!("trace {i} {n}");
            }
        }
        let pending = walks.iter().map(|w| w.max_pending).max().unwrap_or(0);
        let refuses = model > WALK_LIMITS.insns
            || pending > WALK_LIMITS.pending
            || walks.iter().any(|w| w.verdict != Verdict::Fits);
        match kernel_count(&c.elf) {
            Ok(k) => {
                verified += 1;
                ratios.push(model as f64 / k.max(1) as f64);
                if refuses {
                    false_refusals += 1;
                }
                println!("seed {seed}: model {model} pending {pending}, kernel {k}");
            }
            Err(e) => {
                refused += 1;
                let why = e
                    .lines()
                    .find(|l| l.contains("too large") || l.contains("too complex"))
                    .unwrap_or("other");
                if !refuses {
                    misses += 1;
                }
                println!("seed {seed}: model {model} pending {pending}, kernel REFUSED ({why})");
            }
        }
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        ratios
            .get(((ratios.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{n} generated, {compiled_n} compiled without the walk: {verified} verified, {refused} refused by the kernel"
    );
    println!(
        "model/kernel on verified: min {:.2} p1 {:.2} p10 {:.2} median {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        q(0.0),
        q(0.01),
        q(0.1),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    println!(
        "at the threshold ({} insns, {} pending): {false_refusals} false refusals, {misses} kernel refusals missed",
        WALK_LIMITS.insns, WALK_LIMITS.pending
    );
}
