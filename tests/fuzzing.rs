//! The bodies of luabpf's two fuzz targets, shared by the cargo-fuzz crate (fuzz/, nightly,
//! coverage-guided, long campaigns) and the bounded, seeded run in tests/tests/fuzz_smoke.rs
//! (stable Rust, part of the test command). See docs/fuzzing.md.
//!
//! - [`compile_bytes`]: any bytes as a program file. The compiler must answer with an object
//!   or with at least one diagnostic that renders, and never panic.
//! - [`verify_generated`]: a valid-looking program generated from the bytes (the generator of
//!   tests/programs.rs). Whatever the compiler accepts, the kernel's verifier must accept.
//!
//! Both panic on a violation: that is what libFuzzer records as a crash.

use luabpf_compiler::compile::{compile_source, Compiled, Options};
use luabpf_loader::{kernel_available, load};

use crate::harness::Rng;
use crate::programs::random_program;

/// What one input did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The compiler refused it with diagnostics.
    Refused,
    /// It compiled (and, for generated programs with a kernel at hand, verified).
    Compiled,
    /// It compiled and the kernel's verifier accepted it.
    Verified,
}

/// The name generated and fuzzed programs are compiled under (relative `require`s resolve
/// from the current directory, which holds no Lua modules in the fuzz runs).
pub const FILE_NAME: &str = "fuzz.lua";

/// The diagnostics the compiler gives when it caught a panic of its own.
/// The messages (whole, not substrings: a program may well contain these words in a name the
/// diagnostic quotes) of the diagnostics that stand for a panic the compiler caught.
const CAUGHT_PANICS: &[&str] = &[
    "internal error: the Lua parser failed on this file",
    "internal error: the evaluation of this file crashed",
];

/// Compiles `text`; panics if the compiler fails without a diagnostic, with a panic it caught,
/// or with diagnostics that do not render. (A panic inside the compiler propagates as itself.)
pub fn compile_text(text: &str) -> Result<Compiled, ()> {
    match compile_source(text, FILE_NAME, &Options::default()) {
        Ok(c) => Ok(c),
        Err(f) => {
            assert!(
                !f.diags.is_empty(),
                "the compiler refused a program without a diagnostic"
            );
            // A panic the compiler caught (in full_moon or the evaluation) is still a finding.
            if let Some(d) = f.diags.iter().find(|d| CAUGHT_PANICS.contains(&d.message.as_str())) {
                panic!("the compiler caught a panic: {}", d.message);
            }
            let rendered = f.render();
            assert!(rendered.contains("error"), "a diagnostic rendered as {rendered:?}");
            Err(())
        }
    }
}

/// Target (a): arbitrary bytes as a program file (invalid UTF-8 replaced, as a reader
/// would).
pub fn compile_bytes(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    match compile_text(&text) {
        Ok(_) => Outcome::Compiled,
        Err(()) => Outcome::Refused,
    }
}

/// The program the generator makes of `data`: the bytes seed it (so every input is a
/// distinct, reproducible program) and the first byte's low bit allows run-time loops.
pub fn generated_program(data: &[u8]) -> String {
    // FNV-1a: any change to the input gives another program.
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let runtime_loops = data.first().is_some_and(|b| b & 1 == 1);
    random_program(seed, runtime_loops)
}

/// Target (b): a generated program; if the compiler accepts it, the kernel must too (when
/// bpf() is available here: otherwise only the compiler is exercised).
pub fn verify_generated(data: &[u8]) -> Outcome {
    verify_program(&generated_program(data))
}

/// Compiles `src` and, when it compiles and bpf() works here, loads it into the kernel;
/// panics with the verifier's rendered refusal (Lua lines included) if the kernel refuses.
pub fn verify_program(src: &str) -> Outcome {
    let Ok(compiled) = compile_text(src) else {
        return Outcome::Refused;
    };
    if kernel_available().is_err() {
        return Outcome::Compiled;
    }
    match load(&compiled.elf) {
        Ok(_) => Outcome::Verified,
        Err(e) => panic!("`luabpf check` accepted a program the kernel refused:\n{e}\n--- program ---\n{src}"),
    }
}

/// A mutation of `text` for the bounded runs: byte flips, deletions, duplications and
/// insertions of Lua tokens, so that most mutants stay close to a program.
pub fn mutate(text: &[u8], rng: &mut Rng) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        " end ",
        " then ",
        " do ",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " local ",
        " function ",
        " return ",
        "nil",
        " and ",
        " or ",
        " not ",
        "..",
        "#",
        "//",
        "%",
        "<<",
        ">>",
        "~",
        "0x7fffffffffffffff",
        "-1",
        "256",
        "\"",
        "'",
        "--",
        "--[[",
        "]]",
        "\n",
        ":",
        ".",
        ",",
        "=",
        "==",
        "~=",
        " while true ",
        " for i = 1, 1e9 ",
        "p:getbyte(",
        "ctx:packet()",
        "require \"bpf.map\"",
        " goto x ",
        "::x::",
        "\0",
        "\u{fffd}",
    ];
    let mut out = text.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if out.is_empty() { 0 } else { rng.below(out.len() + 1) };
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let end = (at + 1 + rng.below(40)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(60)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, piece);
            }
            _ => {
                let t = rng.pick(TOKENS).as_bytes();
                out.splice(at..at, t.iter().copied());
            }
        }
    }
    out
}
