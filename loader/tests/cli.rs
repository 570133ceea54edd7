//! The `luabpf` command as a user runs it: the built binary, its outputs, its exit codes
//! (0 success, 1 diagnostics or verifier rejection, 2 usage or I/O error) and its messages.
//!
//! `verify` tests need bpf(): they skip loudly without it, unless LUABPF_REQUIRE_KERNEL=1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use luabpf_loader::require_kernel_or_skip;

mod common;
use common::command::{luabpf, luabpf_in, workspace, TempDir};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

const EXIT_REFUSED: i32 = 1;
const EXIT_USAGE: i32 = 2;

fn example(name: &str) -> PathBuf {
    workspace().join("examples").join(format!("{name}.lua"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A program file with a float division at line 3, column 13.
const BAD: &str = "local xdp = require \"bpf.xdp\"\n\
                   local function f(ctx)\n  \
                   local y = 7 / 2\n  \
                   return 2\n\
                   end\n\
                   return xdp.program(f)\n";

// ---------------------------------------------------------------------------------------------
// compile

#[test]
fn compile_writes_an_elf_object_named_after_the_file() {
    let dir = TempDir::new("cli");
    let run = luabpf_in(&dir.0, &["compile", s(&example("counter"))]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.is_empty() && run.stderr.is_empty(),
        "compile is quiet: {run:?}"
    );
    let bytes = std::fs::read(dir.0.join("counter.o")).expect("./counter.o written");
    let file = object::File::parse(&*bytes).expect("an ELF file");
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);
    assert!(file.section_by_name("xdp").is_some(), "section xdp");
    assert!(file.section_by_name(".maps").is_some(), "BTF-defined maps");
    assert!(file.section_by_name(".BTF").is_some(), "BTF");
    let license = file.section_by_name("license").expect("license");
    assert_eq!(license.data().unwrap(), b"GPL\0");
    assert!(
        file.symbols()
            .any(|s| s.name() == Ok("counter") && s.kind() == object::SymbolKind::Text),
        "program symbol"
    );
    assert!(file.symbols().any(|s| s.name() == Ok("counts")), "map symbol");
    // What the library produces, byte for byte.
    let lib =
        luabpf_compiler::compile::compile_path(&example("counter"), &Default::default()).expect("counter compiles");
    assert_eq!(bytes, lib.elf);
}

#[test]
fn compile_with_output_and_to_stdout() {
    let dir = TempDir::new("cli");
    let out = dir.0.join("sub-dir-less.o");
    let run = luabpf_in(&dir.0, &["compile", s(&example("sni_filter")), "-o", s(&out)]);
    assert_eq!(run.code, 0, "{run:?}");
    let written = std::fs::read(&out).expect("-o OUT written");
    assert!(written.starts_with(b"\x7fELF"));
    assert!(!dir.0.join("sni_filter.o").exists(), "only -o OUT is written");

    let run = luabpf_in(&dir.0, &["compile", s(&example("sni_filter")), "-o", "-"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.raw_stdout, written, "-o - writes the object to stdout");
}

#[test]
fn compile_refuses_to_overwrite_its_input() {
    let dir = TempDir::new("cli");
    let src = std::fs::read(example("counter")).unwrap();
    dir.file("c.o", &src);
    let run = luabpf_in(&dir.0, &["compile", "c.o"]);
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert!(run.stderr.contains("would overwrite the program file"), "{run:?}");
    assert_eq!(std::fs::read(dir.0.join("c.o")).unwrap(), src, "input untouched");
}

#[test]
fn compile_emit_asm_annotates_with_lua_lines() {
    let run = luabpf(&["compile", "examples/sni_filter.lua", "--emit", "asm"]);
    assert_eq!(run.code, 0, "{run:?}");
    let asm = run.out();
    assert!(asm.starts_with("sni_filter:  ; section xdp, "), "{asm}");
    assert!(asm.contains("; examples/sni_filter.lua:"), "{asm}");
    // Each annotation quotes its line.
    assert!(
        asm.contains("; examples/sni_filter.lua:23: local hits = blocklist[host]"),
        "{asm}"
    );
    assert!(asm.contains("call bpf_map_lookup_elem"), "{asm}");
    assert!(run.stderr.is_empty(), "{run:?}");
    // No object written.
    assert!(!workspace().join("sni_filter.o").exists());
}

#[test]
fn compile_emit_ir() {
    let run = luabpf(&["compile", "examples/counter.lua", "--emit", "ir"]);
    assert_eq!(run.code, 0, "{run:?}");
    let ir = run.out();
    assert!(ir.starts_with("function counter:"), "{ir}");
    assert!(ir.contains("b0:"), "{ir}");
}

#[test]
fn compile_with_diagnostics_exits_1_and_writes_nothing() {
    let dir = TempDir::new("cli");
    dir.file("bad.lua", BAD.as_bytes());
    let run = luabpf_in(&dir.0, &["compile", "bad.lua"]);
    assert_eq!(run.code, EXIT_REFUSED, "{run:?}");
    assert!(run.stderr.contains("bad.lua:3:13"), "{run:?}");
    assert!(!dir.0.join("bad.o").exists(), "no object for a refused program");
}

#[test]
fn compile_with_include_dirs() {
    let dir = TempDir::new("cli");
    std::fs::create_dir(dir.0.join("lib")).unwrap();
    dir.file("lib/consts.lua", b"return { PASS = 2 }\n");
    let prog = "local xdp = require \"bpf.xdp\"\n\
                local consts = require \"consts\"\n\
                local function f(ctx) return consts.PASS end\n\
                return xdp.program(f)\n";
    std::fs::create_dir_all(dir.0.join("src")).unwrap();
    dir.file("src/f.lua", prog.as_bytes());
    let without = luabpf_in(&dir.0, &["check", "src/f.lua"]);
    assert_eq!(
        without.code, EXIT_REFUSED,
        "`consts` is not found without -I: {without:?}"
    );
    let with = luabpf_in(&dir.0, &["check", "src/f.lua", "-I", "lib"]);
    assert_eq!(with.code, 0, "{with:?}");
    let missing = luabpf_in(&dir.0, &["check", "src/f.lua", "-I", "nope"]);
    assert_eq!(missing.code, EXIT_USAGE, "{missing:?}");
    assert!(
        missing.stderr.contains("error: -I nope: No such file or directory"),
        "{missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_prints_one_line_on_success() {
    let run = luabpf(&["check", "examples/sni_filter.lua"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.out(), "ok: 1 program (sni_filter), 1 map (blocklist)\n");
    assert!(run.stderr.is_empty(), "{run:?}");
    let run = luabpf(&["check", "examples/cookie_guard.lua"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.out(), "ok: 1 program (cookie_guard), 2 maps (cookies, blocked)\n");
}

#[test]
fn check_reports_file_line_col_and_exits_1() {
    let dir = TempDir::new("cli");
    dir.file("bad.lua", BAD.as_bytes());
    let run = luabpf_in(&dir.0, &["check", "bad.lua"]);
    assert_eq!(run.code, EXIT_REFUSED, "{run:?}");
    assert!(run.stdout.is_empty(), "diagnostics go to stderr: {run:?}");
    assert!(run.stderr.contains("error: `/` is float division"), "{run:?}");
    assert!(run.stderr.contains("bad.lua:3:13"), "file:line:col: {run:?}");
    assert!(run.stderr.contains("help: use `//`"), "the hint: {run:?}");
    assert!(
        !run.stderr.contains('\x1b'),
        "no colour when stderr is not a terminal: {run:?}"
    );
}

#[test]
fn check_reports_syntax_errors() {
    let dir = TempDir::new("cli");
    dir.file("syntax.lua", b"local x = = 1\n");
    let run = luabpf_in(&dir.0, &["check", "syntax.lua"]);
    assert_eq!(run.code, EXIT_REFUSED, "{run:?}");
    assert!(run.stderr.contains("syntax.lua:1:"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// I/O and usage errors

#[test]
fn a_missing_file_exits_2() {
    for cmd in ["compile", "check", "verify"] {
        let run = luabpf(&[cmd, "does/not/exist.lua"]);
        assert_eq!(run.code, EXIT_USAGE, "{cmd}: {run:?}");
        assert_eq!(
            run.stderr, "error: cannot read does/not/exist.lua: No such file or directory\n",
            "{cmd}"
        );
        assert!(run.stdout.is_empty());
    }
    let run = luabpf(&["verify", "does/not/exist.o"]);
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert!(
        run.stderr.starts_with("error: cannot read does/not/exist.o: "),
        "{run:?}"
    );
}

#[test]
fn a_directory_is_not_a_program_file() {
    let run = luabpf(&["check", "examples"]);
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert!(
        run.stderr.contains("error: cannot read examples: it is a directory"),
        "{run:?}"
    );
}

#[test]
fn an_unwritable_output_exits_2() {
    let run = luabpf(&["compile", "examples/counter.lua", "-o", "/nonexistent-dir/x.o"]);
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert!(
        run.stderr.starts_with("error: cannot write /nonexistent-dir/x.o: "),
        "{run:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["compile"],
        &["compile", "examples/counter.lua", "--emit", "elf"],
        &["check", "a.lua", "b.lua"],
        &["compile", "examples/counter.lua", "--bogus"],
    ] {
        let run = luabpf(args);
        assert_eq!(run.code, EXIT_USAGE, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}: says why");
    }
}

#[test]
fn help_describes_every_command() {
    let run = luabpf(&["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    let help = run.out();
    for word in ["compile", "check", "verify", "Exit status", "usage or I/O error"] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let run = luabpf(&["compile", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for word in ["--emit", "obj", "asm", "ir", "-I <DIR>", "-o, --output", "stem"] {
        assert!(run.out().contains(word), "{word}: {}", run.out());
    }
    let run = luabpf(&["verify", "--help"]);
    assert!(run.out().contains("processed"), "{}", run.out());
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    use std::os::fd::{FromRawFd, OwnedFd};
    // A pipe whose reader is already gone (`luabpf ... | head -0`): writes fail with EPIPE.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    for args in [
        &["compile", "examples/sni_filter.lua", "--emit", "asm"][..],
        &["check", "examples/counter.lua"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_luabpf"))
            .args(args)
            .current_dir(workspace())
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_full_stdout_exits_2() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_luabpf"))
        .args(["check", "examples/counter.lua"])
        .current_dir(workspace())
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write to standard output: "),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// verify

/// `NAME: verified, N instructions processed (M in the program)` -> N.
fn processed(line: &str, name: &str) -> u32 {
    let rest = line
        .strip_prefix(&format!("{name}: verified, "))
        .unwrap_or_else(|| panic!("unexpected verify line: {line:?}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn verify_a_program_file() {
    if !require_kernel_or_skip("verify_a_program_file") {
        return;
    }
    let run = luabpf(&["verify", "examples/sni_filter.lua"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line per program: {out}");
    let n = processed(lines[0], "sni_filter");
    assert!(n > 0 && n < 1_000_000, "{out}");
    assert!(
        lines[0].contains(" instructions processed (") && lines[0].ends_with(" in the program)"),
        "{out}"
    );
    assert!(run.stderr.is_empty(), "{run:?}");
}

#[test]
fn verify_an_object() {
    if !require_kernel_or_skip("verify_an_object") {
        return;
    }
    let dir = TempDir::new("cli");
    let run = luabpf_in(&dir.0, &["compile", s(&example("counter"))]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = luabpf_in(&dir.0, &["verify", "counter.o"]);
    assert_eq!(run.code, 0, "{run:?}");
    processed(run.out().trim_end(), "counter");
}

#[test]
fn verify_refuses_what_is_not_an_object() {
    let dir = TempDir::new("cli");
    dir.file("junk.o", b"not an object");
    let run = luabpf_in(&dir.0, &["verify", "junk.o"]);
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert_eq!(run.stderr, "error: junk.o is not an ELF object\n");
}

#[test]
fn verify_reports_diagnostics_like_check() {
    let dir = TempDir::new("cli");
    dir.file("bad.lua", BAD.as_bytes());
    let run = luabpf_in(&dir.0, &["verify", "bad.lua"]);
    assert_eq!(run.code, EXIT_REFUSED, "{run:?}");
    assert!(run.stderr.contains("bad.lua:3:13"), "{run:?}");
}

/// An object whose program reads an uninitialised register: the verifier refuses it.
fn rejected_object() -> Vec<u8> {
    use runtime_bpf::isa::{Insn, R0, R2};
    use runtime_bpf::object::{Object, ProgramCode, SourceLoc};
    let insns = vec![Insn::mov64_reg(R0, R2), Insn::exit()];
    let obj = Object {
        programs: vec![ProgramCode {
            name: "uninit".into(),
            section: "xdp".into(),
            locs: vec![SourceLoc::default(); insns.len()],
            insns,
            map_relocs: vec![],
            kfunc_relocs: vec![],
            subfunctions: Vec::new(),
        }],
        maps: vec![],
        sources: vec![],
        license: "GPL".into(),
    };
    runtime_bpf::elf::try_write(&obj).expect("a writable object")
}

#[test]
fn verify_prints_the_verifiers_reason_and_exits_1() {
    if !require_kernel_or_skip("verify_prints_the_verifiers_reason_and_exits_1") {
        return;
    }
    let dir = TempDir::new("cli");
    dir.file("uninit.o", &rejected_object());
    let run = luabpf_in(&dir.0, &["verify", "uninit.o"]);
    assert_eq!(run.code, EXIT_REFUSED, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: the kernel refused program `uninit`: EACCES (Permission denied): R2 !read_ok"),
        "{run:?}"
    );
    assert!(run.stderr.contains("verifier log"), "{run:?}");
    let full = luabpf_in(&dir.0, &["verify", "uninit.o", "--full-log"]);
    assert_eq!(full.code, EXIT_REFUSED, "{full:?}");
    assert!(
        full.stderr.contains("R2 !read_ok") && full.stderr.contains("processed "),
        "{full:?}"
    );
}

/// Diagnostics are coloured on a terminal (run under `script`, which gives the command a
/// pseudo-terminal), and never with NO_COLOR set.
#[test]
fn diagnostics_are_coloured_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: diagnostics_are_coloured_only_on_a_terminal: no `script` (util-linux)");
        return;
    }
    let dir = TempDir::new("cli");
    dir.file("bad.lua", BAD.as_bytes());
    let in_pty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} check bad.lua", env!("CARGO_BIN_EXE_luabpf")),
            "/dev/null",
        ])
        .current_dir(&dir.0)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().expect("run script");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = in_pty(false);
    assert_eq!(code, Some(EXIT_REFUSED), "{text}");
    assert!(
        text.contains("\x1b[") && text.contains("float division"),
        "coloured: {text:?}"
    );
    let (code, text) = in_pty(true);
    assert_eq!(code, Some(EXIT_REFUSED), "{text}");
    assert!(
        !text.contains('\x1b') && text.contains("bad.lua:3:13"),
        "NO_COLOR: {text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Never a crash: corrupted inputs end in a diagnostic or an error, with exit 1 or 2.

/// xorshift64*: reproducible corruption.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn corrupt(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut b = original.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(b.len());
        b[at] = rng.below(256) as u8;
    }
    if rng.below(5) == 0 {
        b.truncate(rng.below(b.len()));
    }
    b
}

#[test]
fn check_never_crashes_on_corrupted_sources() {
    let dir = TempDir::new("cli");
    let original = std::fs::read(example("sni_filter")).unwrap();
    let mut rng = Rng(0x5eed_c0de);
    for i in 0..150 {
        let bytes = corrupt(&mut rng, &original);
        dir.file("m.lua", &bytes);
        let run = luabpf_in(&dir.0, &["check", "m.lua"]);
        assert!(
            run.code == 0 || (run.code == EXIT_REFUSED && run.stderr.starts_with("error: ")),
            "mutation #{i}: {run:?}\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn verify_never_crashes_on_corrupted_objects() {
    if !require_kernel_or_skip("verify_never_crashes_on_corrupted_objects") {
        return;
    }
    let dir = TempDir::new("cli");
    let original = luabpf_compiler::compile::compile_path(&example("sni_filter"), &Default::default())
        .expect("sni_filter compiles")
        .elf;
    let mut rng = Rng(0x0b1e_c7ed);
    for i in 0..100 {
        let bytes = corrupt(&mut rng, &original);
        let path = dir.file("m.o", &bytes);
        let run = luabpf_in(&dir.0, &["verify", "m.o"]);
        if !(run.code == 0 || (run.code == EXIT_REFUSED || run.code == EXIT_USAGE) && run.stderr.starts_with("error: "))
        {
            let keep = std::env::temp_dir().join(format!("luabpf-crash-{i}.o"));
            let _ = std::fs::copy(&path, &keep);
            panic!("mutation #{i} (kept as {}): {run:?}", keep.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// disasm

#[test]
fn disasm_of_an_object_shows_lua_lines_and_map_names() {
    let dir = std::env::temp_dir().join(format!("luabpf-cli-disasm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("sni.o");
    let run = luabpf(&["compile", "examples/sni_filter.lua", "-o", s(&obj)]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = luabpf(&["disasm", s(&obj)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 0, "{run:?}");
    let asm = run.out();
    // The line info travels in the object: the same annotation as `--emit asm`.
    assert!(
        asm.contains("; examples/sni_filter.lua:23: local hits = blocklist[host]"),
        "{asm}"
    );
    assert!(asm.contains("map[blocklist]"), "{asm}");
    assert!(asm.contains("call bpf_map_lookup_elem"), "{asm}");
}

#[test]
fn disasm_of_a_program_file_and_of_garbage() {
    let run = luabpf(&["disasm", "examples/counter.lua"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.out()
            .contains("; examples/counter.lua:20: counts[proto] = (counts[proto] or 0) + 1"),
        "{}",
        run.out()
    );
    let dir = std::env::temp_dir().join(format!("luabpf-cli-disasm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.o");
    std::fs::write(&bad, b"not an object").unwrap();
    let run = luabpf(&["disasm", s(&bad)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("not a readable BPF object"), "{run:?}");
}
