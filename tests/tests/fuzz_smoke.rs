//! A bounded, seeded run of both fuzz targets (tests/fuzzing.rs) on stable Rust, so that the
//! test command exercises them on every machine; long coverage-guided campaigns use the
//! cargo-fuzz crate in fuzz/ (docs/fuzzing.md).
//!
//! - the byte-level target on mutants of every example and of generated programs: the
//!   compiler answers each with an object or diagnostics, never a panic;
//! - the structured target on generated programs and on mutants of them: each one the
//!   compiler accepts passes the kernel's verifier.
//!
//! `LUABPF_FUZZ_N` scales both (default: 600 byte-level mutants, 120 generated programs and
//! 120 mutants of generated programs); `LUABPF_FUZZ_SEED` moves the seeds, so that a long
//! campaign can run in slices. The kernel part skips loudly without bpf() unless
//! LUABPF_REQUIRE_KERNEL=1.

use std::panic::{catch_unwind, AssertUnwindSafe};

use luabpf_loader::require_kernel_or_skip;
use luabpf_tests::fuzzing::{compile_bytes, generated_program, mutate, verify_generated, verify_program, Outcome};
use luabpf_tests::harness::{example_names, example_path, workspace_root, Rng};

fn scale() -> u64 {
    std::env::var("LUABPF_FUZZ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn seed_base() -> u64 {
    std::env::var("LUABPF_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Counts per outcome, and the inputs that broke an invariant (with what they did).
#[derive(Default)]
struct Tally {
    refused: u64,
    compiled: u64,
    verified: u64,
    failures: Vec<String>,
}

impl Tally {
    fn run(&mut self, label: &str, input: &[u8], body: impl FnOnce() -> Outcome) {
        let done = self.refused + self.compiled + self.verified + self.failures.len() as u64;
        if done > 0 && done % 1000 == 0 {
            // Progress for long campaigns (LUABPF_FUZZ_N), visible with --nocapture.
            eprintln!(
                "  {done} inputs: {} refused, {} compiled, {} verified, {} failures",
                self.refused,
                self.compiled,
                self.verified,
                self.failures.len()
            );
        }
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(Outcome::Refused) => self.refused += 1,
            Ok(Outcome::Compiled) => self.compiled += 1,
            Ok(Outcome::Verified) => self.verified += 1,
            Err(p) => self.failures.push(format!(
                "[{label}] {}\n--- input ({} bytes) ---\n{}",
                panic_text(p),
                input.len(),
                String::from_utf8_lossy(input)
            )),
        }
    }

    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} refused by the compiler, {} compiled, {} verified by the kernel, {} failures",
            self.refused,
            self.compiled,
            self.verified,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} inputs broke an invariant:\n\n{}",
            self.failures.len(),
            self.failures.join("\n\n")
        );
    }
}

/// Byte-level target: mutants of the examples and of generated programs never panic the
/// compiler, and each refusal carries a diagnostic.
#[test]
fn byte_level_target_never_panics() {
    let mut seeds: Vec<(String, Vec<u8>)> = example_names()
        .into_iter()
        .map(|n| {
            let text = std::fs::read(example_path(&n)).expect("example readable");
            (n, text)
        })
        .collect();
    for s in 0..4u64 {
        seeds.push((
            format!("generated #{s}"),
            generated_program(&s.to_le_bytes()).into_bytes(),
        ));
    }
    let n = 600 * scale();
    let base = seed_base();
    let mut t = Tally::default();
    let mut rng = Rng::new(0xb17e_f022 ^ base.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for i in 0..n {
        let (name, text) = &seeds[(i as usize) % seeds.len()];
        let input = mutate(text, &mut rng);
        t.run(&format!("mutant #{i} of {name}"), &input, || compile_bytes(&input));
    }
    // Mutants must reach past the parser sometimes, or this tests only the parser.
    assert!(t.compiled + t.refused > 0);
    t.finish("byte-level target");
}

/// Structured target: every generated program the compiler accepts, and every accepted
/// mutant of one, passes the kernel's verifier.
#[test]
fn generated_programs_that_compile_verify() {
    if !require_kernel_or_skip("generated_programs_that_compile_verify") {
        return;
    }
    let n = 120 * scale();
    let base = seed_base();
    let mut generated = Tally::default();
    for i in 0..n {
        let input = (base * 1_000_000_007 + i).to_le_bytes();
        generated.run(&format!("generated program #{i}"), &input, || verify_generated(&input));
    }
    let mut mutants = Tally::default();
    let mut rng = Rng::new(0x6e4e_5eed ^ base);
    for i in 0..n {
        let src = generated_program(&(base * 1_000_000_007 + i).to_le_bytes());
        let mutant = mutate(src.as_bytes(), &mut rng);
        let text = String::from_utf8_lossy(&mutant).into_owned();
        mutants.run(&format!("mutant of generated program #{i}"), &mutant, || {
            verify_program(&text)
        });
    }
    // The generator is meant to produce valid programs: most must get to the kernel.
    assert!(
        generated.verified * 2 > n,
        "only {} of {n} generated programs verified: the generator no longer makes valid programs",
        generated.verified
    );
    mutants.finish("structured target, mutants of generated programs");
    generated.finish("structured target, generated programs");
}

/// Every program file in tests/fuzz_findings/DIR, sorted: (name, text).
fn findings(dir: &str) -> Vec<(String, String)> {
    let dir = workspace_root().join("tests/fuzz_findings").join(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    out
}

fn check_findings(dir: &str) {
    let files = findings(dir);
    assert!(!files.is_empty(), "no findings in {dir}");
    let mut t = Tally::default();
    for (name, text) in &files {
        t.run(name, text.as_bytes(), || verify_program(text));
    }
    t.finish(dir);
}

/// Inputs the byte-level campaigns found: three made full_moon panic (caught, reported as
/// "the Lua parser failed"), one gets a diagnosed internal limitation (docs/fuzzing.md). Each
/// is answered with a diagnostic, and no panic.
#[test]
fn byte_level_findings_get_diagnostics() {
    let files = findings("bytes");
    assert!(!files.is_empty());
    let mut t = Tally::default();
    for (name, text) in &files {
        t.run(name, text.as_bytes(), || compile_bytes(text.as_bytes()));
    }
    assert_eq!(
        t.refused,
        files.len() as u64,
        "each finding is refused with a diagnostic"
    );
    t.finish("byte-level findings");
}

/// Programs the campaigns found that `luabpf check` accepted and the kernel refused, since
/// fixed: check now refuses each (with a diagnostic), or the kernel accepts it.
#[test]
fn fixed_campaign_findings_stay_fixed() {
    if !require_kernel_or_skip("fixed_campaign_findings_stay_fixed") {
        return;
    }
    check_findings("fixed");
}
